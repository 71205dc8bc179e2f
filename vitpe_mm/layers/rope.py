"""Rotary position embedding (RoPE) for 2-D token grids, as pure functions of explicit token positions.

"Rotary Position Embedding for Vision Transformer" (RoPE-ViT, Heo et al., ECCV 2024, arXiv:2403.13298): axial
frequencies (x/y halves, `axial_rope_angles`) and learnable per-head 2-D frequencies (RoPE-Mixed,
`mixed_rope_angles`); DINOv3 (arXiv:2508.10104) rotates by normalised, 0.5-centred coordinates
(`dinov3_rope_angles`). The numerics follow timm 1.0.31's `RotaryEmbeddingCat`, `RotaryEmbeddingMixed` and
`RotaryEmbeddingDinoV3` (same operations in the same order).

Positions are float (N, 2) tensors of (y, x) coordinates in patch units, so that every attention kind rotates by
*global* positions: windowed attention gathers the positions of its (shifted, padded) windows from the padded
grid (`window_positions`), spatial-reduction attention puts its keys at the centres of the reduced cells
(`reduced_positions`). An angle table holds one angle per rotated pair, shape (..., N, d / 2); `rope_sin_cos`
turns it into the (sin, cos) that `apply_rope` rotates q and k with.
"""
import math
from typing import Optional, Sequence, Tuple

import torch
import torch.nn.functional as F

from ._checks import Size2, check_choice, to_2tuple

NORMALIZE_COORDS = ('separate', 'min', 'max')


def grid_positions(hw_shape: Size2, extent: Optional[Size2] = None, normalize: Optional[str] = None,
                   device: Optional[torch.device] = None) -> torch.Tensor:
    """(y, x) positions of the tokens of an H x W grid, row-major: float32 of shape (Hp * Wp, 2).

    Args:
        hw_shape: the grid (H, W) the coordinates refer to.
        extent: the grid (Hp, Wp) >= (H, W) whose positions are returned (a grid padded at the bottom/right, e.g.
            to window multiples: the padding continues the coordinates past the border); defaults to `hw_shape`.
        normalize: None for patch indices (0, 1, ..., as timm's 'index' grid); 'separate', 'min' or 'max' for
            DINOv3's 0.5-centred coordinates mapped to [-1, 1] by H and W each, by min(H, W) or by max(H, W)
            (timm's 'centered' grid).
    """
    h, w = to_2tuple(hw_shape, 'hw_shape')
    hp, wp = to_2tuple(extent, 'extent') if extent is not None else (h, w)
    if hp < h or wp < w:
        raise ValueError(f'extent={(hp, wp)} must cover hw_shape={(h, w)}')
    if normalize is None:
        ys = torch.arange(hp, device=device, dtype=torch.int64).to(torch.float32)
        xs = torch.arange(wp, device=device, dtype=torch.int64).to(torch.float32)
    else:
        check_choice(normalize, 'normalize', NORMALIZE_COORDS)
        denom = {'separate': (h, w), 'min': (min(h, w),) * 2, 'max': (max(h, w),) * 2}[normalize]
        ys = torch.arange(0.5, hp, device=device, dtype=torch.float32) / float(denom[0])
        xs = torch.arange(0.5, wp, device=device, dtype=torch.float32) / float(denom[1])
    grid = torch.stack(torch.meshgrid(ys, xs, indexing='ij'), dim=-1)  # Hp, Wp, 2
    if normalize is not None:
        grid = 2.0 * grid - 1.0  # [0, 1] -> [-1, 1]
    return grid.reshape(-1, 2)


def window_positions(positions: torch.Tensor, padded_hw: Size2, window_size: Size2,
                     shift_size: Size2 = 0) -> torch.Tensor:
    """Positions of the window tokens of a padded map rolled by (-sh, -sw), in `window_partition` order.

    Args:
        positions: (Hp * Wp, 2) positions of the padded grid (`grid_positions(hw, extent=padded_hw)`).
        padded_hw: (Hp, Wp), multiples of the window.
        window_size: (Mh, Mw).
        shift_size: (sh, sw) roll of a shifted-window block (Swin), 0 for none.

    Returns:
        (nW, Mh * Mw, 2): the global position of every window slot, padding slots included.
    """
    hp, wp = to_2tuple(padded_hw, 'padded_hw')
    mh, mw = to_2tuple(window_size, 'window_size')
    sh, sw = (shift_size, shift_size) if isinstance(shift_size, int) else tuple(shift_size)
    if hp % mh or wp % mw:
        raise ValueError(f'padded_hw={(hp, wp)} must be multiples of window_size={(mh, mw)}')
    if positions.shape != (hp * wp, 2):
        raise ValueError(f'positions must have shape ({hp * wp}, 2) for padded_hw={(hp, wp)}, '
                         f'got {tuple(positions.shape)}')
    grid = positions.view(hp, wp, 2)
    if sh or sw:
        grid = torch.roll(grid, shifts=(-sh, -sw), dims=(0, 1))
    # Hp, Wp, 2 -> nH, Mh, nW, Mw, 2 -> nWin, Mh*Mw, 2
    return grid.view(hp // mh, mh, wp // mw, mw, 2).transpose(1, 2).reshape(-1, mh * mw, 2)


def reduced_positions(positions: torch.Tensor, hw_shape: Size2, sr_ratio: int) -> torch.Tensor:
    """Key positions of spatial-reduction attention: the centres of the floor(H / sr) x floor(W / sr) cells.

    A k = s = sr convolution turns each sr x sr cell into one key; its position is the mean of the cell's
    positions (the centre, since positions are affine in the indices). Trailing rows/columns that fill no whole
    cell are dropped, as the convolution drops them. positions: (H * W, 2). Returns (H' * W', 2).
    """
    h, w = to_2tuple(hw_shape, 'hw_shape')
    if positions.shape != (h * w, 2):
        raise ValueError(f'positions must have shape ({h * w}, 2) for hw_shape={(h, w)}, got {tuple(positions.shape)}')
    if sr_ratio == 1:
        return positions
    # H*W, 2 -> 1, 2, H, W -> 1, 2, H', W' -> H'*W', 2
    grid = positions.t().reshape(1, 2, h, w)
    return F.avg_pool2d(grid, sr_ratio, sr_ratio).reshape(2, -1).t()


def axial_rope_bands(head_dims: int, temperature: float = 100.0) -> torch.Tensor:
    """(head_dims // 4,) axial frequencies 1 / temperature ** (i / (head_dims / 4)) (timm `freq_bands`, RoPE-ViT)."""
    if head_dims % 4:
        raise ValueError(f'2-D RoPE needs a head dimension divisible by 4, got {head_dims}')
    num_bands = head_dims // 4
    exp = torch.arange(0, num_bands, 1, dtype=torch.int64).to(torch.float32) / num_bands
    return 1.0 / (float(temperature) ** exp)


def axial_rope_angles(positions: torch.Tensor, bands: torch.Tensor) -> torch.Tensor:
    """RoPE-Axial angles: x * bands for the first half of the pairs, y * bands for the second.

    positions: (..., N, 2) (y, x); bands: (d / 4,). Returns (..., N, d / 2), for the interleaved layout.
    """
    pos = positions.flip(-1).unsqueeze(-1) * bands.to(positions.device)  # ..., N, (x, y), d/4
    return pos.flatten(-2)


def mixed_rope_init(head_dims: int, num_heads: int, depth: int = 1, temperature: float = 10.0,
                    rotate: bool = True) -> torch.Tensor:
    """RoPE-Mixed initial frequencies (2, depth, nH, d / 2): (x, y) components of d / 4 magnitudes
    1 / temperature ** (4i / d) along a random direction per head and block and its orthogonal
    (timm `init_random_2d_freqs`, RoPE-ViT `init_2d_freqs`)."""
    if head_dims % 4:
        raise ValueError(f'2-D RoPE needs a head dimension divisible by 4, got {head_dims}')
    mag = 1.0 / (temperature ** (torch.arange(0, head_dims, 4, dtype=torch.float32) / head_dims))
    mag = mag.view(1, 1, -1)
    if rotate:
        angles = torch.rand(depth, num_heads, 1) * 2 * torch.pi
    else:
        angles = torch.zeros(depth, num_heads, 1)
    fx = torch.cat([mag * torch.cos(angles), mag * torch.cos(angles + torch.pi / 2)], dim=-1)
    fy = torch.cat([mag * torch.sin(angles), mag * torch.sin(angles + torch.pi / 2)], dim=-1)
    return torch.stack([fx, fy], dim=0)


def mixed_rope_angles(positions: torch.Tensor, freqs: torch.Tensor) -> torch.Tensor:
    """RoPE-Mixed angles x * f_x + y * f_y, computed in float32.

    positions: (..., N, 2) (y, x); freqs: (2, nH, d / 2) learnable (x, y) frequencies of one block.
    Returns (..., nH, N, d / 2), for the interleaved layout.
    """
    freqs = freqs.float()
    pos = positions.float().unsqueeze(-3)  # ..., 1, N, 2
    # elementwise outer products (no matmul, so autocast keeps float32), as timm's get_mixed_freqs
    return pos[..., 1:2] * freqs[0].unsqueeze(-2) + pos[..., 0:1] * freqs[1].unsqueeze(-2)


def dinov3_rope_periods(head_dims: int, temperature: Optional[float] = 100.0, min_period: Optional[float] = None,
                        max_period: Optional[float] = None) -> torch.Tensor:
    """(head_dims // 4,) periods of DINOv3's RoPE: temperature ** (2i / (d / 2)), or a geometric series from
    min_period to max_period when both are given (timm `RotaryEmbeddingDinoV3._compute_periods`)."""
    if head_dims % 4:
        raise ValueError(f'2-D RoPE needs a head dimension divisible by 4, got {head_dims}')
    num = head_dims // 4
    if min_period is not None and max_period is not None:
        exponents = torch.linspace(0, 1, num, dtype=torch.float32)
        return min_period * ((max_period / min_period) ** exponents)
    if temperature is None:
        raise ValueError('dinov3_rope_periods needs temperature, or both min_period and max_period')
    exponents = 2.0 * torch.arange(num, dtype=torch.float32) / (head_dims // 2)
    return temperature ** exponents


def dinov3_rope_angles(positions: torch.Tensor, periods: torch.Tensor) -> torch.Tensor:
    """DINOv3 angles 2 pi * coordinate / period, y for the first half of the pairs, x for the second.

    positions: (..., N, 2) normalised (y, x) (`grid_positions(..., normalize=...)`); periods: (d / 4,).
    Returns (..., N, d / 2), for the half layout.
    """
    angles = 2 * math.pi * positions.unsqueeze(-1) / periods.to(positions.device)  # ..., N, 2, d/4
    return angles.flatten(-2)


def rope_sin_cos(angles: torch.Tensor, dtype: Optional[torch.dtype] = None) -> Tuple[torch.Tensor, torch.Tensor]:
    """(sin, cos) of an angle table (..., N, d / 2), each evaluated once per pair (not repeated per channel)."""
    sin, cos = angles.sin(), angles.cos()
    if dtype is not None:
        sin, cos = sin.to(dtype), cos.to(dtype)
    return sin, cos


def apply_rope(x: torch.Tensor, sin: torch.Tensor, cos: torch.Tensor, half: bool = False,
               num_prefix_tokens: int = 0) -> torch.Tensor:
    """Rotates the channel pairs of q or k by the angles whose sin and cos are given.

    Args:
        x: (B, nH, N, d) queries or keys (any leading dims).
        sin, cos: (..., N - num_prefix_tokens, d / 2), one value per pair, broadcasting to x's leading dims; or,
            for B = batch * nW windows, (nW, nH or 1, N, d / 2): x is then viewed as (batch, nW, ...) so the table
            is not repeated per image.
        half: pairs (i, i + d/2) (timm's rotate_half layout, DINOv3) instead of the interleaved (2i, 2i + 1).
        num_prefix_tokens: leading tokens (cls) left unrotated, as timm's Eva attention.

    Returns:
        The rotated tensor, shape and dtype of x; the rotation runs in the promoted dtype of x and sin/cos.
    """
    if num_prefix_tokens:
        rest = apply_rope(x[..., num_prefix_tokens:, :], sin, cos, half)
        return torch.cat([x[..., :num_prefix_tokens, :], rest], dim=-2)
    if sin.shape[-1] * 2 != x.shape[-1] or cos.shape != sin.shape:
        raise ValueError(f'sin/cos must have shape (..., N, {x.shape[-1] // 2}) for x of shape {tuple(x.shape)}, '
                         f'got {tuple(sin.shape)} and {tuple(cos.shape)}')
    shape = x.shape
    if sin.dim() == x.dim() == 4 and sin.shape[0] not in (1, x.shape[0]):
        if x.shape[0] % sin.shape[0]:
            raise ValueError(f'sin/cos hold {sin.shape[0]} windows, which does not divide the batch of '
                             f'{x.shape[0]} windows')
        x = x.view(-1, sin.shape[0], *x.shape[1:])  # B*nW, ... -> B, nW, ...
    if half:
        x1, x2 = x.chunk(2, dim=-1)
        out = torch.cat([x1 * cos - x2 * sin, x2 * cos + x1 * sin], dim=-1)
    else:
        x1, x2 = x[..., 0::2], x[..., 1::2]
        out = torch.stack([x1 * cos - x2 * sin, x2 * cos + x1 * sin], dim=-1).flatten(-2)
    return out.to(x.dtype).view(shape)


__all__ = [
    'NORMALIZE_COORDS', 'apply_rope', 'axial_rope_angles', 'axial_rope_bands', 'dinov3_rope_angles',
    'dinov3_rope_periods', 'grid_positions', 'mixed_rope_angles', 'mixed_rope_init', 'reduced_positions',
    'rope_sin_cos', 'window_positions',
]
