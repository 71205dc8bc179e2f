"""Absolute positional encodings: learned and fixed 2-D sin-cos tables, resampled to any grid.

Learned PE as in "An Image is Worth 16x16 Words" (ViT, arXiv:2010.11929) and DeiT (arXiv:2012.12877);
resampling to another grid as DINO's `interpolate_pos_encoding` (arXiv:2104.14294): bicubic on the
2-D table, prefix tokens (cls, dist) kept as they are, computed in float32.
"""
import math
from typing import Optional, Sequence, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F

from ._cache import SIZE_CACHE
from ._checks import Size2, check_choice, to_2tuple

INTERPOLATIONS = ('bicubic', 'bilinear', 'nearest', 'area')


def resample_abs_pos_embed(
    posemb: torch.Tensor,
    new_size: Size2,
    old_size: Optional[Size2] = None,
    num_prefix_tokens: int = 1,
    interpolation: str = 'bicubic',
    antialias: bool = True,
) -> torch.Tensor:
    """Resamples a 1, prefix + H*W, C absolute PE table from grid `old_size` to grid `new_size`.

    The *grid* decides whether to resample, not the token count: a 32x32 table asked for 16x64 is
    resampled although both have 1024 tokens. On the same grid the input is returned as it is.

    Args:
        posemb: table of shape (1, num_prefix_tokens + old_h * old_w, C).
        new_size: target grid (h, w).
        old_size: grid of `posemb`; when None it must be square.
        num_prefix_tokens: leading tokens (cls, distillation) copied unchanged.
        interpolation: 'bicubic' (DINO, timm), 'bilinear', 'nearest' or 'area'.
        antialias: low-pass when downsampling (bicubic/bilinear only), as timm.

    Returns:
        Table of shape (1, num_prefix_tokens + new_h * new_w, C), in the dtype of `posemb`.
    """
    new_size = to_2tuple(new_size, 'new_size')
    check_choice(interpolation, 'interpolation', INTERPOLATIONS)
    if posemb.dim() != 3 or posemb.shape[0] != 1:
        raise ValueError(f'posemb must have shape (1, N, C), got {tuple(posemb.shape)}')
    if num_prefix_tokens < 0:
        raise ValueError(f'num_prefix_tokens must be >= 0, got {num_prefix_tokens}')
    num_grid = posemb.shape[1] - num_prefix_tokens
    if old_size is None:
        side = math.isqrt(max(num_grid, 0))
        if side * side != num_grid or side == 0:
            raise ValueError(
                f'posemb holds {num_grid} grid tokens after {num_prefix_tokens} prefix tokens, which is not '
                'a square grid; pass old_size=(h, w)')
        old_size = (side, side)
    old_size = to_2tuple(old_size, 'old_size')
    if old_size[0] * old_size[1] != num_grid:
        raise ValueError(
            f'old_size={old_size} needs {old_size[0] * old_size[1]} grid tokens but posemb holds {num_grid} '
            f'(shape {tuple(posemb.shape)}, num_prefix_tokens={num_prefix_tokens})')
    if new_size == old_size:
        return posemb

    prefix, grid = posemb[:, :num_prefix_tokens], posemb[:, num_prefix_tokens:]
    embed_dims = posemb.shape[-1]
    # 1, h*w, C -> 1, C, h, w
    grid = grid.float().reshape(1, old_size[0], old_size[1], embed_dims).permute(0, 3, 1, 2)
    kwargs = dict(antialias=antialias) if interpolation in ('bicubic', 'bilinear') else {}
    if interpolation in ('bicubic', 'bilinear'):
        kwargs['align_corners'] = False
    grid = F.interpolate(grid, size=new_size, mode=interpolation, **kwargs)
    # 1, C, h', w' -> 1, h'*w', C
    grid = grid.permute(0, 2, 3, 1).reshape(1, new_size[0] * new_size[1], embed_dims).to(posemb.dtype)
    return torch.cat([prefix, grid], dim=1) if num_prefix_tokens else grid


def build_sincos_2d_pos_embed(
    grid_size: Size2,
    embed_dims: int,
    temperature: float = 10000.0,
    dtype: torch.dtype = torch.float32,
    device: Optional[torch.device] = None,
) -> torch.Tensor:
    """Fixed 2-D sin-cos table of shape (1, h*w, embed_dims), as MoCo v3 / MAE.

    The first half of the channels encodes the column (x), the second half the row (y); each half is
    [sin(pos * omega), cos(pos * omega)] over embed_dims // 4 frequencies.
    """
    h, w = to_2tuple(grid_size, 'grid_size')
    if embed_dims <= 0 or embed_dims % 4 != 0:
        raise ValueError(f'embed_dims must be a positive multiple of 4 for a 2-D sin-cos PE, got {embed_dims}')
    ys, xs = torch.meshgrid(torch.arange(h, dtype=torch.float32, device=device),
                            torch.arange(w, dtype=torch.float32, device=device), indexing='ij')
    quarter = embed_dims // 4
    omega = 1.0 / temperature ** (torch.arange(quarter, dtype=torch.float32, device=device) / quarter)
    out_x = xs.reshape(-1, 1) * omega
    out_y = ys.reshape(-1, 1) * omega
    table = torch.cat([out_x.sin(), out_x.cos(), out_y.sin(), out_y.cos()], dim=1)
    return table.unsqueeze(0).to(dtype)


class AbsolutePositionEmbedding(nn.Module):
    """Learned absolute PE table made for `grid_size`, returned for any grid.

    `forward(hw_shape)` returns the (1, prefix + H*W, C) table for the token grid `hw_shape`:
    resampled when `interpolate=True`, otherwise the top-left H x W crop of the table (an error when
    the grid is larger than the table). The parameter is named `pos_embed` as in ViT/DeiT/timm.

    The table for another grid is computed from the parameter at every call, never cached: the parameter can
    change without a trace (EMA weights written through `.data` keep the version counter and the storage).
    """

    def __init__(
        self,
        grid_size: Size2,
        embed_dims: int,
        num_prefix_tokens: int = 1,
        interpolate: bool = True,
        interpolation: str = 'bicubic',
        antialias: bool = True,
    ) -> None:
        super().__init__()
        self.grid_size = to_2tuple(grid_size, 'grid_size')
        self.embed_dims = embed_dims
        self.num_prefix_tokens = num_prefix_tokens
        self.interpolate = interpolate
        self.interpolation = check_choice(interpolation, 'interpolation', INTERPOLATIONS)
        self.antialias = antialias
        num_tokens = num_prefix_tokens + self.grid_size[0] * self.grid_size[1]
        self.pos_embed = nn.Parameter(torch.zeros(1, num_tokens, embed_dims))
        nn.init.trunc_normal_(self.pos_embed, std=0.02)

    def _resampled(self, hw_shape: Tuple[int, int]) -> torch.Tensor:
        if self.interpolate:
            return resample_abs_pos_embed(self.pos_embed, hw_shape, self.grid_size, self.num_prefix_tokens,
                                          self.interpolation, self.antialias)
        h, w = hw_shape
        if h > self.grid_size[0] or w > self.grid_size[1]:
            raise ValueError(
                f'token grid {hw_shape} is larger than the absolute PE grid {self.grid_size} and '
                'interpolation is off (interpolate=False); use a grid within it or interpolate=True')
        p = self.num_prefix_tokens
        grid = self.pos_embed[:, p:].reshape(1, self.grid_size[0], self.grid_size[1], -1)[:, :h, :w]
        return torch.cat([self.pos_embed[:, :p], grid.reshape(1, h * w, -1)], dim=1)

    def forward(self, hw_shape: Sequence[int]) -> torch.Tensor:
        hw = to_2tuple(tuple(hw_shape), 'hw_shape')
        if hw == self.grid_size:
            return self.pos_embed
        return self._resampled(hw)

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys,
                              error_msgs):
        # A learned table saved for another (square) grid is resampled to this module's grid.
        key = prefix + 'pos_embed'
        table = state_dict.get(key)
        if table is not None and table.shape != self.pos_embed.shape:
            try:
                state_dict[key] = resample_abs_pos_embed(table, self.grid_size, None, self.num_prefix_tokens,
                                                         self.interpolation, self.antialias)
            except ValueError as err:
                error_msgs.append(f'{key}: shape {tuple(table.shape)} cannot be resampled to '
                                  f'{tuple(self.pos_embed.shape)}: {err}')
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys,
                                      error_msgs)

    def extra_repr(self) -> str:
        return (f'grid_size={self.grid_size}, embed_dims={self.embed_dims}, num_prefix_tokens='
                f'{self.num_prefix_tokens}, interpolate={self.interpolate}')


class SinCosPositionEmbedding(nn.Module):
    """Fixed 2-D sin-cos PE computed for the token grid it is asked for (no parameters, nothing saved).

    Sin-cos values depend only on a token's (row, column), so the table for an h x w grid is computed, not
    resampled; zero rows lead for the prefix tokens (a cls token gets no PE). Cached per grid, device, dtype
    (`SIZE_CACHE`: it depends on sizes only).
    """

    def __init__(self, embed_dims: int, num_prefix_tokens: int = 0) -> None:
        super().__init__()
        if embed_dims <= 0 or embed_dims % 4:
            raise ValueError(f"a 2-D sin-cos PE needs embed_dims divisible by 4, got {embed_dims}")
        self.embed_dims = embed_dims
        self.num_prefix_tokens = num_prefix_tokens

    def _table(self, hw_shape: Tuple[int, int], device: torch.device, dtype: torch.dtype) -> torch.Tensor:
        table = build_sincos_2d_pos_embed(hw_shape, self.embed_dims, device=device)
        return F.pad(table, (0, 0, self.num_prefix_tokens, 0)).to(dtype)

    def forward(self, hw_shape: Sequence[int], like: torch.Tensor) -> torch.Tensor:
        """Returns the (1, prefix + H*W, C) table in the device and dtype of `like`."""
        hw = to_2tuple(tuple(hw_shape), 'hw_shape')
        key = ('sincos', hw, self.embed_dims, self.num_prefix_tokens, like.device, like.dtype)
        return SIZE_CACHE.get(key, lambda: self._table(hw, like.device, like.dtype))

    def extra_repr(self) -> str:
        return f'embed_dims={self.embed_dims}, num_prefix_tokens={self.num_prefix_tokens}'
