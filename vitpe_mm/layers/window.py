"""Window partition / reverse with padding, and the attention mask for shifted windows.

"Swin Transformer" (arXiv:2103.14030): the B, H, W, C map is zero-padded at the bottom/right to
multiples of the window, cut into Mh x Mw windows, and, in shifted blocks, rolled by (-sh, -sw) first;
the mask keeps tokens that were not neighbours before the roll from attending to each other.
"""
import functools
from typing import Sequence, Tuple

import torch
import torch.nn.functional as F

from ._checks import Size2, to_2tuple


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


@functools.lru_cache(maxsize=64)
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

    Built once per (padded size, window, shift, device, dtype) and cached; regions follow the Swin
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
    return _shift_mask((hp, wp), (mh, mw), (sh, sw), torch.device(device), dtype)
