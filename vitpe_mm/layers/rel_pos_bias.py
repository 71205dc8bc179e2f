"""Learned relative position bias for attention within a window (or a whole grid).

"Swin Transformer" (arXiv:2103.14030): a table of (2*Mh - 1) * (2*Mw - 1) entries per head, indexed
by the relative offset (dy, dx) between two tokens of an Mh x Mw window; the index is built as in the
paper's code (and the seed's 2x2 worked example): shift offsets to start at 0, then
index = (dy + Mh - 1) * (2*Mw - 1) + (dx + Mw - 1). When the window changes, the table is resampled
bicubically as a (2*Mh - 1) x (2*Mw - 1) image per head.
"""
from typing import Optional, Sequence, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F

from ._cache import SIZE_CACHE
from ._checks import Size2, to_2tuple


def relative_position_index(window_size: Size2, key_size: Optional[Size2] = None) -> torch.Tensor:
    """Index into a relative-bias table for every (query, key) pair of a window.

    Args:
        window_size: query grid (Mh, Mw).
        key_size: key grid (Kh, Kw) when keys live on a coarser grid (e.g. spatial-reduction attention);
            query (i, j) is placed at (floor(i * Kh / Mh), floor(j * Kw / Mw)) on it. Defaults to the
            query grid.

    Returns:
        Long tensor of shape (Mh*Mw, Kh*Kw) with values in [0, (2*Kh - 1) * (2*Kw - 1)).
    """
    mh, mw = to_2tuple(window_size, 'window_size')
    kh, kw = to_2tuple(key_size, 'key_size') if key_size is not None else (mh, mw)
    qy = torch.div(torch.arange(mh) * kh, mh, rounding_mode='floor')
    qx = torch.div(torch.arange(mw) * kw, mw, rounding_mode='floor')
    q = torch.stack(torch.meshgrid(qy, qx, indexing='ij')).flatten(1)  # 2, Mh*Mw
    k = torch.stack(torch.meshgrid(torch.arange(kh), torch.arange(kw), indexing='ij')).flatten(1)  # 2, Kh*Kw
    rel = (q[:, :, None] - k[:, None, :]).permute(1, 2, 0)  # Mh*Mw, Kh*Kw, 2 with dy, dx
    return (rel[..., 0] + kh - 1) * (2 * kw - 1) + (rel[..., 1] + kw - 1)


def resize_rel_pos_bias_table(
    table: torch.Tensor,
    new_window_size: Size2,
    old_window_size: Optional[Size2] = None,
    interpolation: str = 'bicubic',
) -> torch.Tensor:
    """Resamples a ((2*Mh - 1) * (2*Mw - 1), num_heads) table to another window (non-square too).

    The identity when the window is unchanged; the head count is kept. `old_window_size` defaults to
    the square window the table size implies.
    """
    new_h, new_w = to_2tuple(new_window_size, 'new_window_size')
    if table.dim() != 2:
        raise ValueError(f'table must have shape ((2*Mh-1)*(2*Mw-1), num_heads), got {tuple(table.shape)}')
    if old_window_size is None:
        side = int(round(table.shape[0] ** 0.5))
        if side * side != table.shape[0] or side % 2 == 0:
            raise ValueError(
                f'a table of {table.shape[0]} rows is not (2*M-1)^2 for a square window; pass old_window_size')
        old_window_size = ((side + 1) // 2, (side + 1) // 2)
    old_h, old_w = to_2tuple(old_window_size, 'old_window_size')
    if table.shape[0] != (2 * old_h - 1) * (2 * old_w - 1):
        raise ValueError(
            f'table has {table.shape[0]} rows but old_window_size={(old_h, old_w)} needs '
            f'(2*{old_h}-1)*(2*{old_w}-1) = {(2 * old_h - 1) * (2 * old_w - 1)}')
    if (new_h, new_w) == (old_h, old_w):
        return table
    num_heads = table.shape[1]
    # L, nH -> 1, nH, 2Mh-1, 2Mw-1
    grid = table.float().transpose(0, 1).reshape(1, num_heads, 2 * old_h - 1, 2 * old_w - 1)
    kwargs = {'align_corners': False} if interpolation in ('bicubic', 'bilinear') else {}
    grid = F.interpolate(grid, size=(2 * new_h - 1, 2 * new_w - 1), mode=interpolation, **kwargs)
    return grid.reshape(num_heads, -1).transpose(0, 1).contiguous().to(table.dtype)


class RelativePositionBias(nn.Module):
    """Relative position bias for an Mh x Mw window: returns the (num_heads, N, N) additive bias.

    The table parameter is `relative_position_bias_table` and the index buffer
    `relative_position_index` (not saved: rebuilt from the window size), as in Swin/timm/mmdet; a module built on
    the meta device rebuilds it when a state dict is loaded (`load_state_dict(..., assign=True)`).
    `forward(window_size)` with another window resamples the table to it (e.g. ViT global attention
    on a grid that changes with the input); `window_bias(window)` crops it for a smaller window (Swin's clamped
    windows). Biases are computed from the table at every call, never cached (the table can change without a
    trace, e.g. EMA weights written through `.data`); the index of another size is cached (`SIZE_CACHE`).

    Args:
        window_size: window (Mh, Mw) the table is made for.
        num_heads: one table column per head.
    """

    def __init__(self, window_size: Size2, num_heads: int) -> None:
        super().__init__()
        if num_heads <= 0:
            raise ValueError(f'num_heads must be positive, got {num_heads}')
        self.window_size = to_2tuple(window_size, 'window_size')
        self.num_heads = num_heads
        mh, mw = self.window_size
        self.relative_position_bias_table = nn.Parameter(torch.zeros((2 * mh - 1) * (2 * mw - 1), num_heads))
        nn.init.trunc_normal_(self.relative_position_bias_table, std=0.02)
        self.register_buffer('relative_position_index', relative_position_index(self.window_size), persistent=False)

    def _bias(self, window_size: Tuple[int, int], key_size: Optional[Tuple[int, int]]) -> torch.Tensor:
        table = self.relative_position_bias_table
        if window_size == self.window_size and key_size is None:
            index = self.relative_position_index
        else:
            grid = key_size or window_size
            table = resize_rel_pos_bias_table(table, grid, self.window_size)
            index = SIZE_CACHE.get(('rel_pos_index', window_size, key_size, table.device),
                                   lambda: relative_position_index(window_size, key_size).to(table.device))
        n_q = window_size[0] * window_size[1]
        bias = table[index.reshape(-1)].reshape(n_q, -1, self.num_heads)
        return bias.permute(2, 0, 1).contiguous()  # Nq, Nk, nH -> nH, Nq, Nk

    def forward(self, window_size: Optional[Sequence[int]] = None,
                key_size: Optional[Sequence[int]] = None) -> torch.Tensor:
        window = self.window_size if window_size is None else to_2tuple(tuple(window_size), 'window_size')
        keys = None if key_size is None else to_2tuple(tuple(key_size), 'key_size')
        if keys == window:
            keys = None
        return self._bias(window, keys)

    def window_bias(self, window_size: Sequence[int]) -> torch.Tensor:
        """(nH, N, N) bias of a window not larger than the table's: the top-left crop of the full window's bias
        (the same relative offsets keep the same bias, no resampling)."""
        h, w = to_2tuple(tuple(window_size), 'window_size')
        bias = self._bias(self.window_size, None)  # nH, Mh*Mw, Mh*Mw
        if (h, w) == self.window_size:
            return bias
        mh, mw = self.window_size
        if h > mh or w > mw:
            raise ValueError(f'window {(h, w)} is larger than the relative-bias window {self.window_size}')
        # nH, Mh, Mw, Mh, Mw -> nH, h, w, h, w -> nH, N, N
        return bias.view(-1, mh, mw, mh, mw)[:, :h, :w, :h, :w].reshape(-1, h * w, h * w)

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys,
                              error_msgs):
        # A table saved for another window (e.g. a Swin checkpoint at window 7 loaded with window 12) is
        # resampled to this module's window instead of failing on the shape.
        key = prefix + 'relative_position_bias_table'
        table = state_dict.get(key)
        if table is not None and table.shape != self.relative_position_bias_table.shape:
            if table.dim() != 2 or table.shape[1] != self.num_heads:
                error_msgs.append(
                    f'{key}: shape {tuple(table.shape)} cannot be reconciled with '
                    f'{tuple(self.relative_position_bias_table.shape)} (head count {self.num_heads})')
            else:
                state_dict[key] = resize_rel_pos_bias_table(table, self.window_size)
        state_dict.pop(prefix + 'relative_position_index', None)
        if self.relative_position_index.is_meta:  # built on the meta device: the index is not saved, rebuild it
            device = table.device if table is not None and not table.is_meta else 'cpu'
            self.relative_position_index = relative_position_index(self.window_size).to(device)
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys,
                                      error_msgs)

    def extra_repr(self) -> str:
        return f'window_size={self.window_size}, num_heads={self.num_heads}'
