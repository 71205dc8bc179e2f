"""Window partition / reverse with padding, and the attention mask for shifted windows.

"Swin Transformer" (arXiv:2103.14030): the B, H, W, C map is zero-padded at the bottom/right to
multiples of the window, cut into Mh x Mw windows, and, in shifted blocks, rolled by (-sh, -sw) first;
the mask keeps tokens that were not neighbours before the roll from attending to each other.
"""
import functools
from typing import NamedTuple, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch.autograd.function import once_differentiable

from ._cache import SIZE_CACHE
from ._checks import Size2, to_2tuple
from ._compat import compiler_disable


def padded_size(hw_shape: Sequence[int], window_size: Size2) -> Tuple[int, int]:
    """(H, W) rounded up to multiples of the window."""
    h, w = to_2tuple(tuple(hw_shape), 'hw_shape')
    mh, mw = to_2tuple(window_size, 'window_size')
    return -(-h // mh) * mh, -(-w // mw) * mw


def window_partition(x: torch.Tensor, window_size: Size2) -> Tuple[torch.Tensor, Tuple[int, int]]:
    """Pads a B, H, W, C map to window multiples and cuts it into windows.

    Returns:
        windows of shape (B * nW, Mh * Mw, C), windows ordered row-major per image, and the padded
        (Hp, Wp).
    """
    if x.dim() != 4:
        raise ValueError(f'x must be a B, H, W, C map, got shape {tuple(x.shape)}')
    mh, mw = to_2tuple(window_size, 'window_size')
    b, h, w, c = x.shape
    hp, wp = padded_size((h, w), (mh, mw))
    if (hp, wp) != (h, w):
        x = F.pad(x, (0, 0, 0, wp - w, 0, hp - h))
    # B, Hp, Wp, C -> B, nH, Mh, nW, Mw, C -> B*nWin, Mh*Mw, C
    x = x.view(b, hp // mh, mh, wp // mw, mw, c).transpose(2, 3)
    return x.reshape(-1, mh * mw, c), (hp, wp)


def window_reverse(windows: torch.Tensor, window_size: Size2, padded_hw: Sequence[int],
                   hw_shape: Sequence[int]) -> torch.Tensor:
    """Inverse of `window_partition`: (B * nW, Mh * Mw, C) windows -> B, H, W, C map, padding cropped."""
    mh, mw = to_2tuple(window_size, 'window_size')
    hp, wp = to_2tuple(tuple(padded_hw), 'padded_hw')
    h, w = to_2tuple(tuple(hw_shape), 'hw_shape')
    if hp % mh or wp % mw or h > hp or w > wp:
        raise ValueError(f'padded_hw={(hp, wp)} must be window multiples of {(mh, mw)} covering hw_shape={(h, w)}')
    c = windows.shape[-1]
    # B*nWin, Mh*Mw, C -> B, nH, nW, Mh, Mw, C -> B, Hp, Wp, C
    x = windows.view(-1, hp // mh, wp // mw, mh, mw, c).transpose(2, 3).reshape(-1, hp, wp, c)
    if (hp, wp) != (h, w):
        x = x[:, :h, :w].contiguous()
    return x


def _shift_mask(padded_hw: Tuple[int, int], window_size: Tuple[int, int], shift_size: Tuple[int, int],
                device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    hp, wp = padded_hw
    (mh, mw), (sh, sw) = window_size, shift_size
    region = torch.zeros(1, hp, wp, 1, device=device)
    label = 0
    # an axis without shift is one band (a window clamped to a small map shifts along the other axis only)
    h_bands = (slice(0, hp - mh), slice(hp - mh, hp - sh), slice(hp - sh, hp)) if sh else (slice(0, hp),)
    w_bands = (slice(0, wp - mw), slice(wp - mw, wp - sw), slice(wp - sw, wp)) if sw else (slice(0, wp),)
    for hs in h_bands:
        for ws in w_bands:
            region[:, hs, ws] = label
            label += 1
    windows, _ = window_partition(region, (mh, mw))
    windows = windows.squeeze(-1)  # nW, Mh*Mw
    different = windows[:, None, :] != windows[:, :, None]  # nW, N, N
    mask = torch.zeros(different.shape, dtype=dtype, device=device)
    return mask.masked_fill_(different, float('-inf') if dtype.is_floating_point else -100)


def shifted_window_attn_mask(padded_hw: Sequence[int], window_size: Size2, shift_size: Size2,
                             device: torch.device = torch.device('cpu'),
                             dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Additive mask (nW, N, N) for windows of a map rolled by (-sh, -sw): 0 within a region, -inf across.

    Built once per (padded size, window, shift, device, dtype) and cached (`SIZE_CACHE`, bounded in bytes, never
    an inference tensor); regions follow the Swin
    code (three bands per axis: [0, Hp-Mh), [Hp-Mh, Hp-sh), [Hp-sh, Hp)); a zero shift along one axis
    (timm's per-axis rule for a window clamped to a small map) leaves that axis one band. Treat the result
    as read-only.
    """
    hp, wp = to_2tuple(tuple(padded_hw), 'padded_hw')
    mh, mw = to_2tuple(window_size, 'window_size')
    sh, sw = (shift_size, shift_size) if isinstance(shift_size, int) else tuple(shift_size)
    if min(sh, sw) < 0 or not (sh or sw):
        raise ValueError(f'shift_size must be >= 0 on each axis and > 0 on one, got {shift_size!r}')
    if hp % mh or wp % mw:
        raise ValueError(f'padded_hw={(hp, wp)} must be multiples of window_size={(mh, mw)}')
    if sh >= mh or sw >= mw:
        raise ValueError(f'shift_size={(sh, sw)} must be smaller than window_size={(mh, mw)}')
    key = ('shift_mask', (hp, wp), (mh, mw), (sh, sw), torch.device(device), dtype)
    return SIZE_CACHE.get(key, lambda: _shift_mask((hp, wp), (mh, mw), (sh, sw), torch.device(device), dtype))


# ---------------------------------------------------------------------------------------------------------------
# Windows as one gather: pad + roll + partition (and back) folded into index maps built once per size
# ---------------------------------------------------------------------------------------------------------------
def _rolled_slot(y: torch.Tensor, x: torch.Tensor, window_size: Tuple[int, int], shift_size: Tuple[int, int],
                 padded_hw: Tuple[int, int]) -> torch.Tensor:
    """Window slot (window * Mh*Mw + position in the window) of the padded-map position (y, x) after the roll."""
    (mh, mw), (sh, sw), (hp, wp) = window_size, shift_size, padded_hw
    i, j = (y - sh) % hp, (x - sw) % wp  # torch.roll(x, -s) puts x[(i + s) % n] at i
    return ((i // mh) * (wp // mw) + j // mw) * (mh * mw) + (i % mh) * mw + j % mw


def window_token_index(hw_shape: Sequence[int], window_size: Size2,
                       shift_size: Size2 = 0) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Where the tokens of an H x W map go when it is zero-padded at the bottom/right to window multiples,
    rolled by (-sh, -sw) and cut into windows (the order of `window_partition`). Index arithmetic only (no
    data-dependent ops), so it traces under torch.compile.

    Returns:
        source: (nW * Mh*Mw,) long, the row-major token index (in H x W) held by every window slot, -1 for
            a padding slot.
        slots: (H*W,) long, the window slot (window * Mh*Mw + position in the window) of every token.
        pad_slots: (Hp*Wp - H*W,) long, the window slots that hold padding.
    """
    h, w = to_2tuple(tuple(hw_shape), 'hw_shape')
    mh, mw = to_2tuple(window_size, 'window_size')
    sh, sw = (shift_size, shift_size) if isinstance(shift_size, int) else tuple(shift_size)
    hp, wp = padded_size((h, w), (mh, mw))
    geometry = ((mh, mw), (sh, sw), (hp, wp))
    # slot order: window row, window column, row in the window, column in the window
    i = torch.arange(hp // mh).view(-1, 1, 1, 1) * mh + torch.arange(mh).view(1, 1, -1, 1)
    j = torch.arange(wp // mw).view(1, -1, 1, 1) * mw + torch.arange(mw).view(1, 1, 1, -1)
    i, j = i.expand(-1, wp // mw, -1, mw), j.expand(hp // mh, -1, mh, -1)
    y, x = (i + sh) % hp, (j + sw) % wp
    source = torch.where((y < h) & (x < w), y * w + x, -1).reshape(-1)
    slots = _rolled_slot(torch.arange(h).view(-1, 1), torch.arange(w).view(1, -1), *geometry).reshape(-1)
    # padding of the un-rolled map: rows h..Hp-1 (all columns), then columns w..Wp-1 of rows 0..h-1
    pad_y = torch.cat([torch.arange(h, hp).repeat_interleave(wp), torch.arange(h).repeat_interleave(wp - w)])
    pad_x = torch.cat([torch.arange(wp).repeat(hp - h), torch.arange(w, wp).repeat(h)])
    pad_slots = _rolled_slot(pad_y, pad_x, *geometry)
    return source, slots, pad_slots


class WindowRows(NamedTuple):
    """Row maps between (B, H*W, 3, nH, d) qkv / (B, H*W, nH, d) outputs and (B*nW, nH, [3,] N, d) windows."""

    num_windows: int
    qkv_index: torch.Tensor  # (nW*nH*3*N,) qkv row read by each window row; padding reads row 0
    qkv_inverse: torch.Tensor  # (H*W*3*nH,) window row of each qkv row
    pad_rows: torch.Tensor  # (3*nH*P,) window rows of the P padding slots, ordered (s, h, slot): qkv bias row s*nH+h
    out_index: torch.Tensor  # (H*W*nH,) window output row read by each token row
    out_inverse: torch.Tensor  # (nW*nH*N,) token row of each window output row; padding reads row 0
    out_pad_rows: torch.Tensor  # (nH*P,) window output rows that are padding


def _window_rows(hw_shape: Tuple[int, int], window_size: Tuple[int, int], shift_size: Tuple[int, int],
                 num_heads: int, device: torch.device) -> WindowRows:
    source, slots, pad_slots = window_token_index(hw_shape, window_size, shift_size)
    n = window_size[0] * window_size[1]
    num_windows = source.numel() // n
    token = source.clamp(min=0).view(num_windows, 1, 1, n)
    s = torch.arange(3).view(1, 1, 3, 1)
    h = torch.arange(num_heads).view(1, num_heads, 1, 1)
    # window row (w, h, s, n) <- qkv row (token, s, h)
    qkv_index = ((token * 3 + s) * num_heads + h).expand(num_windows, num_heads, 3, n).reshape(-1)
    w_pad, n_pad = (pad_slots // n).view(1, 1, -1), (pad_slots % n).view(1, 1, -1)
    s_p, h_p = torch.arange(3).view(3, 1, 1), torch.arange(num_heads).view(1, num_heads, 1)
    pad_rows = (((w_pad * num_heads + h_p) * 3 + s_p) * n + n_pad).reshape(-1)  # 3, nH, P -> window rows
    w_of, n_of = (slots // n).view(-1, 1, 1), (slots % n).view(-1, 1, 1)  # per token
    s_t, h_t = torch.arange(3).view(1, 3, 1), torch.arange(num_heads).view(1, 1, num_heads)
    qkv_inverse = (((w_of * num_heads + h_t) * 3 + s_t) * n + n_of).reshape(-1)  # (token, s, h) -> window row
    # token row (token, h) <- output row (w, h, n)
    out_index = ((w_of.view(-1, 1) * num_heads + h_t.view(1, -1)) * n + n_of.view(-1, 1)).reshape(-1)
    out_inverse = (token.view(num_windows, 1, n) * num_heads + h.view(1, num_heads, 1)).reshape(-1)
    out_pad_rows = ((w_pad.view(1, -1) * num_heads + torch.arange(num_heads).view(-1, 1)) * n
                    + n_pad.view(1, -1)).reshape(-1)  # nH, P
    to = functools.partial(torch.Tensor.to, device=device)
    return WindowRows(num_windows, to(qkv_index), to(qkv_inverse), to(pad_rows), to(out_index), to(out_inverse),
                      to(out_pad_rows))


@compiler_disable
def window_rows(hw_shape: Sequence[int], window_size: Size2, shift_size: Size2, num_heads: int,
                device: torch.device = torch.device('cpu')) -> WindowRows:
    """Index maps of `windows_from_qkv` / `tokens_from_windows` for an H x W map (built once per size, cached in
    `SIZE_CACHE`: bounded in bytes, never inference tensors, so a size first seen under inference_mode trains).

    Runs outside torch.compile graphs: the maps enter them as inputs (inductor fusing the index arithmetic
    into the gathers fails on its value ranges in torch 2.13)."""
    sh, sw = (shift_size, shift_size) if isinstance(shift_size, int) else tuple(shift_size)
    args = (to_2tuple(tuple(hw_shape), 'hw_shape'), to_2tuple(window_size, 'window_size'), (int(sh), int(sw)),
            int(num_heads), torch.device(device))
    return SIZE_CACHE.get(('window_rows',) + args, lambda: _window_rows(*args))


class _GatherRows(torch.autograd.Function):
    """out[:, i] = x[:, index[i]] for x of shape (B, R, d), where `index` maps onto distinct rows, so the
    backward is a gather too (`inverse`), not a scatter-add. The output rows `fill_rows`, grouped as
    (F, P) for the F rows of `fill` (F, d), take fill[f] (zeros when `fill` is None); rows `zero_rows` of
    the input gradient are zero."""

    @staticmethod
    def forward(ctx, x, fill, index, inverse, fill_rows, zero_rows):
        b, d = x.shape[0], x.shape[-1]
        out = x[0].index_select(0, index).unsqueeze(0) if b == 1 else x.index_select(1, index)
        if fill_rows is not None and fill_rows.numel():
            if fill is None:
                out.index_fill_(1, fill_rows, 0)
            else:
                per_row = fill_rows.numel() // fill.shape[0]
                values = fill.view(1, -1, 1, d).expand(b, -1, per_row, -1).reshape(b, -1, d)
                out.index_copy_(1, fill_rows, values)
        ctx.save_for_backward(inverse, fill_rows, zero_rows)
        ctx.fill_shape = None if fill is None else fill.shape
        return out

    @staticmethod
    @once_differentiable
    def backward(ctx, grad):
        inverse, fill_rows, zero_rows = ctx.saved_tensors
        grad_x = grad[0].index_select(0, inverse).unsqueeze(0) if grad.shape[0] == 1 else grad.index_select(1, inverse)
        if zero_rows is not None and zero_rows.numel():
            grad_x.index_fill_(1, zero_rows, 0)
        grad_fill = None
        if ctx.needs_input_grad[1]:
            if fill_rows.numel():
                rows, d = ctx.fill_shape[0], grad.shape[-1]
                grad_fill = grad.index_select(1, fill_rows).view(grad.shape[0], rows, -1, d).sum((0, 2))
            else:
                grad_fill = grad.new_zeros(ctx.fill_shape)
        return grad_x, grad_fill, None, None, None, None


def windows_from_qkv(qkv: torch.Tensor, qkv_bias: Optional[torch.Tensor], rows: WindowRows,
                     num_heads: int) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(B, H*W, 3C) qkv of the real tokens -> q, k, v of shape (B*nW, nH, N, d) on the padded, rolled windows.

    One gather replaces pad + roll + partition + the head split. A padding token is a zero vector before the
    qkv projection, so its q, k, v are the projection's bias (`qkv_bias`, or zeros): the projection runs on
    the real tokens only, and the bias still receives the gradient of the padding rows.
    """
    b, tokens, c3 = qkv.shape
    d = c3 // (3 * num_heads)
    n = rows.qkv_index.numel() // (3 * num_heads * rows.num_windows)
    # under autocast the projection's output is bf16/fp16 while its bias stays fp32 (a zero token's qkv is the bias
    # in the output's dtype, as the padded-map computation gives)
    fill = qkv_bias.to(qkv.dtype).view(3 * num_heads, d) if qkv_bias is not None else None
    # B, H*W*3*nH, d -> B, nW*nH*3*N, d
    windows = _GatherRows.apply(qkv.reshape(b, tokens * 3 * num_heads, d), fill, rows.qkv_index, rows.qkv_inverse,
                                rows.pad_rows, None)
    q, k, v = windows.view(b * rows.num_windows, num_heads, 3, n, d).unbind(2)
    return q, k, v


def tokens_from_windows(out: torch.Tensor, rows: WindowRows, batch: int) -> torch.Tensor:
    """(B*nW, nH, N, d) attention outputs -> (B, H*W, nH*d) tokens: reverse, roll back and crop in one gather."""
    num_heads, d = out.shape[1], out.shape[-1]
    flat = out.reshape(batch, -1, d)  # B, nW*nH*N, d
    tokens = _GatherRows.apply(flat, None, rows.out_index, rows.out_inverse, None, rows.out_pad_rows)
    return tokens.view(batch, -1, num_heads * d)
