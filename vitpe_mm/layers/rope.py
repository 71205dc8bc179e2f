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

The encodings 'rope_axial', 'rope_mixed' and 'rope_dinov3' (`AxialRoPE`, `MixedRoPE`, `DinoV3RoPE`, at the end)
wrap these functions in the positional-encoding interface of `pos_encoding.py` (its `rotation` hook), so they run
in every backbone and attention kind and compose with the other encodings (`pe_type=['abs', 'rope_mixed']`).
"""
import math
from typing import Any, List, Optional, Sequence, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F

from ._cache import SIZE_CACHE
from ._checks import Size2, check_choice, to_2tuple
from .pos_encoding import PEContext, PositionalEncoding, Rotation, StageSpec, register_pos_encoding

NORMALIZE_COORDS = ('separate', 'min', 'max')


def grid_positions(hw_shape: Size2, extent: Optional[Size2] = None, normalize: Optional[str] = None,
                   device: Optional[torch.device] = None) -> torch.Tensor:
    """(y, x) positions of the tokens of an H x W grid, row-major: float32 of shape (Hp * Wp, 2).

    Args:
        hw_shape: the grid (H, W) the coordinates refer to.
        extent: the grid (Hp, Wp) >= (H, W) whose positions are returned (a grid padded at the bottom/right, e.g.
            to window multiples: the padding continues the coordinates past the border); defaults to `hw_shape`.
        normalize: None for patch indices (0, 1, ..., as timm's 'index' grid), else as `normalize_positions`.
    """
    h, w = to_2tuple(hw_shape, 'hw_shape')
    hp, wp = to_2tuple(extent, 'extent') if extent is not None else (h, w)
    if hp < h or wp < w:
        raise ValueError(f'extent={(hp, wp)} must cover hw_shape={(h, w)}')
    ys = torch.arange(hp, device=device, dtype=torch.int64).to(torch.float32)
    xs = torch.arange(wp, device=device, dtype=torch.int64).to(torch.float32)
    grid = torch.stack(torch.meshgrid(ys, xs, indexing='ij'), dim=-1).reshape(-1, 2)  # Hp*Wp, 2
    return grid if normalize is None else normalize_positions(grid, (h, w), normalize)


def normalize_positions(positions: torch.Tensor, hw_shape: Size2, normalize: str = 'separate') -> torch.Tensor:
    """DINOv3's coordinates of patch-index positions (..., 2): 0.5-centred, divided by H and W ('separate'), by
    min(H, W) or by max(H, W), mapped from [0, 1] to [-1, 1] (timm's 'centered' grid, same operations); positions
    past the grid (padding) continue linearly."""
    h, w = to_2tuple(hw_shape, 'hw_shape')
    check_choice(normalize, 'normalize', NORMALIZE_COORDS)
    denom = {'separate': (h, w), 'min': (min(h, w),) * 2, 'max': (max(h, w),) * 2}[normalize]
    scale = torch.tensor([float(denom[0]), float(denom[1])], device=positions.device)
    return 2.0 * ((positions + 0.5) / scale) - 1.0


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
    if sin.shape[-1] * 2 != x.shape[-1] or cos.shape != sin.shape:
        raise ValueError(f'sin/cos must have shape (..., N, {x.shape[-1] // 2}) for x of shape {tuple(x.shape)}, '
                         f'got {tuple(sin.shape)} and {tuple(cos.shape)}')
    if num_prefix_tokens:  # the identity rotation (sin 0, cos 1) for them: no copy of x to put them back
        sin = F.pad(sin, (0, 0, num_prefix_tokens, 0))
        cos = F.pad(cos, (0, 0, num_prefix_tokens, 0), value=1.0)
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


# ------------------------------------------------------------------------------------------------ the encodings
class _RoPE(PositionalEncoding):
    """Shared part of the rotary encodings (`kind` 'rope': parameters are `rope.*` on every backbone).

    `rotation(ctx, j, q_pos, k_pos)` turns the positions an attention passes (patch indices of the stage grid:
    global tokens, global positions of window slots, centres of reduced key cells) into sin / cos of the angles
    `_angles(ctx, j, positions)` gives. Encodings whose angles do not depend on the block (`per_block = False`)
    compute them once per stage and forward for each positions tensor and reuse them in the other blocks.
    """

    kind = 'rope'
    rotates = True
    half = False  # timm's rotate_half pair layout
    per_block = False
    default_temperature = 100.0

    def __init__(self, stages: Sequence[StageSpec], pe_type: str, rope_temperature: Optional[float] = None,
                 **options: Any) -> None:
        super().__init__(stages, pe_type)
        for i, s in enumerate(self.stages):
            if s.embed_dims % s.num_heads or (s.embed_dims // s.num_heads) % 4:
                raise ValueError(f'pe_type={pe_type!r} rotates (y, x) pairs: the head dimension must be divisible '
                                 f'by 4, stage {i} has embed_dims={s.embed_dims}, num_heads={s.num_heads}')
        temperature = self.default_temperature if rope_temperature is None else rope_temperature
        if isinstance(temperature, bool) or not isinstance(temperature, (int, float)) or temperature <= 0:
            raise ValueError(f'rope_temperature must be a positive number, got {rope_temperature!r}')
        self.temperature = float(temperature)

    def head_dims(self, stage: int) -> int:
        return self.stages[stage].embed_dims // self.stages[stage].num_heads

    def _angles(self, ctx: PEContext, block_index: int, positions: torch.Tensor) -> torch.Tensor:
        """(..., [nH,] N, d / 2) angles of (..., N, 2) positions."""
        raise NotImplementedError

    def _sin_cos(self, ctx: PEContext, block_index: int, positions: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        angles = self._angles(ctx, block_index, positions)
        if angles.dim() == positions.dim():  # no head dimension: one rotation for all heads
            angles = angles.unsqueeze(-3)  # ..., N, d/2 -> ..., 1, N, d/2
        return rope_sin_cos(angles)

    def rotation(self, ctx: PEContext, block_index: int, q_pos: torch.Tensor, k_pos: torch.Tensor) -> Rotation:
        memo: Optional[List[Tuple[torch.Tensor, torch.Tensor, Rotation]]] = None
        if not self.per_block:  # this forward's rotations of the stage, reused by its other blocks
            memo = ctx.data.setdefault(self.kind, [])
            for q_seen, k_seen, rotation in memo:
                if q_seen is q_pos and k_seen is k_pos:
                    return rotation
        q_sin, q_cos = self._sin_cos(ctx, block_index, q_pos)
        k_sin, k_cos = (q_sin, q_cos) if k_pos is q_pos else self._sin_cos(ctx, block_index, k_pos)
        rotation = Rotation(q_sin, q_cos, k_sin, k_cos, self.half)
        if memo is not None:
            memo.append((q_pos, k_pos, rotation))
        return rotation

    def extra_repr(self) -> str:
        return f'pe_type={self.pe_type!r}, temperature={self.temperature}'


@register_pos_encoding('rope_axial')
class AxialRoPE(_RoPE):
    """RoPE-Axial (RoPE-ViT, arXiv:2403.13298): fixed frequencies 1 / temperature ** (i / (d / 4)), the first
    half of the pairs rotated by the column x, the second by the row y; no parameters. Equal to timm's
    `RotaryEmbeddingCat(in_pixels=False, grid_indexing='xy')` as its Eva `vit_*_patch16_rope_*` models use it
    (`rope_temperature` 100 as RoPE-ViT)."""

    def _angles(self, ctx: PEContext, block_index: int, positions: torch.Tensor) -> torch.Tensor:
        d, device = self.head_dims(ctx.stage), positions.device
        bands = SIZE_CACHE.get(('rope_axial_bands', d, self.temperature, device),
                               lambda: axial_rope_bands(d, self.temperature).to(device))
        return axial_rope_angles(positions, bands)


@register_pos_encoding('rope_mixed')
class MixedRoPE(_RoPE):
    """RoPE-Mixed (RoPE-ViT, arXiv:2403.13298): learnable 2-D frequencies per block and head,
    angle = x * f_x + y * f_y, initialised along a random direction per head (`rope_temperature` 10 as RoPE-ViT).
    Parameters `rope.freqs.{stage}.{block}` of shape (2, nH, d / 2) ((x, y) components; timm's `rope.freqs`
    (2, depth, nH, d / 2) split per block). Equal to timm's `RotaryEmbeddingMixed(grid_indexing='xy')`. The
    angles are computed from the parameters in every forward (nothing is cached across calls)."""

    per_block = True
    default_temperature = 10.0

    def __init__(self, stages: Sequence[StageSpec], pe_type: str, rope_temperature: Optional[float] = None,
                 **options: Any) -> None:
        super().__init__(stages, pe_type, rope_temperature)
        self.freqs = nn.ModuleList()
        for i, s in enumerate(self.stages):
            init = mixed_rope_init(self.head_dims(i), s.num_heads, len(s.blocks), self.temperature)
            self.freqs.append(nn.ParameterList([nn.Parameter(f.clone()) for f in init.unbind(1)]))

    def _angles(self, ctx: PEContext, block_index: int, positions: torch.Tensor) -> torch.Tensor:
        return mixed_rope_angles(positions, self.freqs[ctx.stage][block_index])

    def parameters_at(self, stage: int, block: Optional[int] = None) -> List[nn.Parameter]:
        return [self.freqs[stage][block]] if block is not None and block >= 0 else []


@register_pos_encoding('rope_dinov3')
class DinoV3RoPE(_RoPE):
    """DINOv3's RoPE (arXiv:2508.10104): positions 0.5-centred and normalised to [-1, 1] by the stage grid
    (`rope_normalize_coords` 'separate': by H and W; 'min' / 'max'), periods temperature ** (2i / (d / 2))
    (`rope_temperature` 100 as DINOv3), y for the first half of the pairs, x for the second, rotate_half pairs;
    no parameters. Equal to timm's `RotaryEmbeddingDinoV3` (without its training-time coordinate augmentation).
    Padding slots of windows continue the coordinates past +1."""

    half = True

    def __init__(self, stages: Sequence[StageSpec], pe_type: str, rope_temperature: Optional[float] = None,
                 rope_normalize_coords: str = 'separate', **options: Any) -> None:
        super().__init__(stages, pe_type, rope_temperature)
        self.normalize_coords = check_choice(rope_normalize_coords, 'rope_normalize_coords', NORMALIZE_COORDS)

    def _angles(self, ctx: PEContext, block_index: int, positions: torch.Tensor) -> torch.Tensor:
        d, device = self.head_dims(ctx.stage), positions.device
        periods = SIZE_CACHE.get(('rope_dinov3_periods', d, self.temperature, device),
                                 lambda: dinov3_rope_periods(d, self.temperature).to(device))
        return dinov3_rope_angles(normalize_positions(positions, ctx.hw_shape, self.normalize_coords), periods)

    def extra_repr(self) -> str:
        return f'{super().extra_repr()}, normalize_coords={self.normalize_coords!r}'


__all__ = [
    'NORMALIZE_COORDS', 'AxialRoPE', 'DinoV3RoPE', 'MixedRoPE', 'apply_rope', 'axial_rope_angles',
    'axial_rope_bands', 'dinov3_rope_angles', 'dinov3_rope_periods', 'grid_positions', 'mixed_rope_angles',
    'mixed_rope_init', 'normalize_positions', 'reduced_positions', 'rope_sin_cos', 'window_positions',
]
