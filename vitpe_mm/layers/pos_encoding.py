"""Positional encodings as one mechanism: a layer object per encoding, built by one factory from its name,
with four hooks that every backbone and every attention kind calls the same way.

Encodings implemented here: absolute tables (ViT / DeiT, arXiv:2010.11929 / 2012.12877: 'abs' resampled,
'abs_nointerp' cropped; MoCo v3 / MAE 2-D sin-cos: 'sincos'), the PEG of CPVT (arXiv:2102.10882: 'peg'),
the relative position bias of Swin (arXiv:2103.14030: 'rel_bias') and 'none'. Rotary encodings (RoPE-ViT,
arXiv:2403.13298) live in `rope.py` and register themselves the same way.

Building
--------
A backbone describes itself with one `StageSpec` per stage (channels, heads, the token grid at the
pre-training size, one `BlockSpec` per block: windowed, spatial-reduction or global attention) and calls
`build_pos_encoding(pe_type, stages=..., **options)`. `pe_type` is a name or a list of names
(`['abs', 'rope_mixed']`, `['rel_bias', 'abs']`); the result is a `PositionalEncodings` holding one
`PositionalEncoding` module per name. `PositionalEncodings.attach(backbone)` registers each under its
`kind`, the same attribute name on every backbone: 'pos_embed' (absolute tables, `pos_embed.{stage}`),
'pos_block' (PEG, `pos_block.{stage}`), 'rel_pos_bias' (`rel_pos_bias.{stage}.{block}`), 'rope'.
Backbones contain no `pe_type` comparisons: only these calls. Adding an encoding is one subclass of
`PositionalEncoding` and one `@register_pos_encoding(name)` line.

Calling (the backbone, once per stage and forward)
--------------------------------------------------
    ctx = pe.prepare(stage, hw_shape, x)       # derived tensors of this forward: resampled tables, ...
    x = pe.add_to_tokens(x, hw_shape, num_prefix_tokens, ctx)   # after the patch embedding of the stage
    x = pe.after_block(x, hw_shape, -1, ctx)   # before the first block (CPVT's PEG position -1)
    for j, block in enumerate(blocks):
        x = block(x, hw_shape, pe.block(ctx, j))   # a BlockPE: the attention's view of the encoding
        x = pe.after_block(x, hw_shape, j, ctx)
Tensors derived from learnable parameters are computed in these calls, every forward, and never cached
across calls (EMA / MeanTeacher hooks write through `p.data`, invisible to any version check). Only tensors
that depend on sizes alone (indices, masks, positions) are cached, in `_cache.SIZE_CACHE` (bounded in
bytes, never inference tensors). A stage whose tokens do not come from a patch embedding (Swin's stages
after patch merging: `StageSpec.embeds_patches=False`) gets nothing from `add_to_tokens`. `frozen_stages`
freezes `pe.freeze_at(stage)` (the stage input: absolute tables) and `pe.freeze_at(stage, j)` (block j's
parts, -1 before the first block) through each encoding's `modules_at` / `parameters_at`.

Calling (the attention, with `bpe = pe.block(ctx, j)`)
------------------------------------------------------
`bpe.attn_bias(query_grid, key_grid)` returns an additive (nH, Nq, Nk) bias over grid tokens, or None;
`bpe.rotation(q_pos, k_pos)` returns a `Rotation` (sin / cos for q and for k) or None, and the attention
applies it with `rope.apply_rope` (`attention.rotate_qk`). Positions are float32 tensors (..., N, 2) of
(row, column) patch indices of the stage grid `ctx.hw_shape` (an encoding that wants normalised
coordinates, as DINOv3, maps them with `ctx.hw_shape`), built by the cached helpers below and computed
only when `bpe.rotates`. Per attention kind:
- global (ViT): `attn_bias(hw, hw)`; the attention gives prefix tokens (cls, dist) a zero bias row/column.
  `rotation(grid_token_positions(hw), grid_token_positions(hw))`; prefix tokens are not rotated.
- windowed (Swin W-MSA / SW-MSA, ViTDet windows): `attn_bias(window, window)`, one (nH, N, N) bias for
  every window (Swin's shift mask is added by the attention); for a window clamped to a small map the bias
  is the crop of the full window's. `rotation(pos, pos)` with `pos = window_token_positions(hw, window, shift)`
  of shape (nW, N, 2): the GLOBAL (un-rolled, padded-map) coordinates of every window slot, windows in the
  order of the attention's batch (after the roll), so shifted and padded windows stay correct; padding
  slots sit at rows >= H / columns >= W. The rotation has a leading nW dimension (`apply_rope` views the
  (B * nW, nH, N, d) q / k as (B, nW, nH, N, d)).
- spatial reduction (PVT / Twins GSA): `attn_bias(hw, key_hw)` with the reduced key grid;
  `rotation(grid_token_positions(hw), reduced_key_positions(hw, sr))`: key (i, j) sits at the centre
  (i * sr + (sr - 1) / 2, j * sr + (sr - 1) / 2) of its sr x sr cell.
`Rotation` tensors carry a head dimension (nH or 1) before N: (nH|1, N, d / 2), (nW, nH|1, N, d / 2).
"""
from typing import Any, Callable, Dict, Iterator, List, NamedTuple, Optional, Sequence, Tuple, Type, Union

import torch
import torch.nn as nn

from ._cache import SIZE_CACHE
from ._checks import check_choice
from .peg import PosConvEncoding
from .pos_embed import INTERPOLATIONS, AbsolutePositionEmbedding, SinCosPositionEmbedding
from .rel_pos_bias import RelativePositionBias

Grid = Tuple[int, int]


# ------------------------------------------------------------------------------------------------ descriptions
class BlockSpec(NamedTuple):
    """The attention of one block: `window_size` (windowed), `sr_ratio` > 1 (spatial reduction) or global."""

    window_size: Optional[Grid] = None
    sr_ratio: int = 1


class StageSpec(NamedTuple):
    """One stage of a backbone, as the encodings need to know it.

    Attributes:
        embed_dims: channels C of the stage's tokens.
        num_heads: attention heads of its blocks.
        grid_size: token grid of the pre-training image (absolute tables, global / SR bias tables).
        blocks: one BlockSpec per block.
        num_prefix_tokens: leading tokens (cls, dist) before the grid.
        embeds_patches: the stage starts with a patch embedding (absolute encodings are added there).
    """

    embed_dims: int
    num_heads: int
    grid_size: Grid
    blocks: Tuple[BlockSpec, ...]
    num_prefix_tokens: int = 0
    embeds_patches: bool = True


class PEContext(NamedTuple):
    """What one forward derived for one stage: `data[kind]` holds each encoding's tensors."""

    stage: int
    hw_shape: Grid
    data: Dict[str, Any]


class Rotation(NamedTuple):
    """sin / cos of the rotations of queries and keys, as `rope.apply_rope(t, sin, cos, half)` takes them:
    (nH|1, N, d / 2), or (nW, nH|1, N, d / 2) for windows; `half`: rotate_half pairs (i, i + d/2)."""

    q_sin: torch.Tensor
    q_cos: torch.Tensor
    k_sin: torch.Tensor
    k_cos: torch.Tensor
    half: bool = False


# ------------------------------------------------------------------------------------------------ positions
# Size-only, so cached (SIZE_CACHE); the positions themselves are rope.py's pure functions (imported when
# called: rope.py registers its encodings here, so it imports this module).
def grid_token_positions(hw_shape: Sequence[int], device: Optional[torch.device] = None) -> torch.Tensor:
    """(H*W, 2) float32 (row, column) of every token of an H x W grid, row-major (`rope.grid_positions`)."""
    from . import rope
    h, w = int(hw_shape[0]), int(hw_shape[1])
    return SIZE_CACHE.get(('positions', 'grid', h, w, torch.device(device or 'cpu')),
                          lambda: rope.grid_positions((h, w), device=device))


def reduced_key_positions(hw_shape: Sequence[int], sr_ratio: int,
                          device: Optional[torch.device] = None) -> torch.Tensor:
    """(h'*w', 2) positions of the keys of a spatial-reduction attention (h' = H // sr): the cell centres
    (i * sr + (sr - 1) / 2, j * sr + (sr - 1) / 2) in the units of the query grid (`rope.reduced_positions`)."""
    from . import rope
    h, w = int(hw_shape[0]), int(hw_shape[1])
    return SIZE_CACHE.get(('positions', 'reduced', h, w, int(sr_ratio), torch.device(device or 'cpu')),
                          lambda: rope.reduced_positions(rope.grid_positions((h, w), device=device), (h, w),
                                                         sr_ratio))


def window_token_positions(hw_shape: Sequence[int], window_size: Sequence[int], shift_size: Sequence[int] = (0, 0),
                           device: Optional[torch.device] = None) -> torch.Tensor:
    """(nW, Mh*Mw, 2) global positions of the window slots of an H x W map zero-padded at the bottom/right to
    window multiples, rolled by (-sh, -sw) and cut into windows (the order of `window.window_partition` /
    `window.window_token_index`); a padding slot gets its padded-map position (row >= H or column >= W)."""
    from . import rope
    h, w = int(hw_shape[0]), int(hw_shape[1])
    (mh, mw), (sh, sw) = (int(v) for v in window_size), (int(v) for v in shift_size)

    def build() -> torch.Tensor:
        hp, wp = -(-h // mh) * mh, -(-w // mw) * mw
        positions = rope.grid_positions((h, w), extent=(hp, wp), device=device)
        return rope.window_positions(positions, (hp, wp), (mh, mw), (sh, sw))
    return SIZE_CACHE.get(('positions', 'window', h, w, mh, mw, sh, sw, torch.device(device or 'cpu')), build)


# ------------------------------------------------------------------------------------------------ the interface
class PositionalEncoding(nn.Module):
    """One positional encoding for all stages of a backbone; every hook defaults to doing nothing.

    Subclasses set `kind` (the backbone attribute they are registered under; two encodings of one kind do not
    compose), `rotates = True` if they implement `rotation`, and take `(stages, pe_type, **options)` in
    `__init__`, ignoring options that are not theirs (backbones pass all of theirs).
    """

    kind: str = ''
    rotates: bool = False

    def __init__(self, stages: Sequence[StageSpec], pe_type: str, **options: Any) -> None:
        super().__init__()
        self.stages = tuple(stages)
        self.pe_type = pe_type

    def prepare(self, ctx: PEContext, like: torch.Tensor) -> None:
        """Derives this forward's tensors for stage `ctx.stage` into `ctx.data[self.kind]` (once per forward)."""

    def add_to_tokens(self, x: torch.Tensor, hw_shape: Grid, num_prefix_tokens: int, ctx: PEContext) -> torch.Tensor:
        """x: (B, prefix + H*W, C) tokens right after the stage's patch embedding."""
        return x

    def after_block(self, x: torch.Tensor, hw_shape: Grid, block_index: int, ctx: PEContext) -> torch.Tensor:
        """x after block `block_index` of stage `ctx.stage` (-1: before the first block)."""
        return x

    def attn_bias(self, ctx: PEContext, block_index: int, query_grid: Grid,
                  key_grid: Grid) -> Optional[torch.Tensor]:
        """(nH, Nq, Nk) additive bias between the grid tokens of `query_grid` and `key_grid`, or None."""
        return None

    def rotation(self, ctx: PEContext, block_index: int, q_pos: torch.Tensor,
                 k_pos: torch.Tensor) -> Optional[Rotation]:
        """The rotation of queries at `q_pos` and keys at `k_pos` (see the module docstring), or None."""
        return None

    def modules_at(self, stage: int, block: Optional[int] = None) -> List[nn.Module]:
        """Submodules that belong to the input of `stage` (block None) or to its block `block` (-1: before the
        first block), for `frozen_stages` (put in eval mode and frozen)."""
        return []

    def parameters_at(self, stage: int, block: Optional[int] = None) -> List[nn.Parameter]:
        """Parameters that belong there (default: those of `modules_at`), frozen with `frozen_stages`."""
        return [p for m in self.modules_at(stage, block) for p in m.parameters()]


class BlockPE(NamedTuple):
    """The encoding as one block's attention sees it (`PositionalEncodings.block(ctx, j)`)."""

    encodings: 'PositionalEncodings'
    ctx: PEContext
    block_index: int

    @property
    def rotates(self) -> bool:
        return self.encodings.rotates

    def attn_bias(self, query_grid: Grid, key_grid: Optional[Grid] = None) -> Optional[torch.Tensor]:
        return self.encodings.attn_bias(self.ctx, self.block_index, tuple(query_grid),
                                        tuple(key_grid if key_grid is not None else query_grid))

    def rotation(self, q_pos: torch.Tensor, k_pos: torch.Tensor) -> Optional[Rotation]:
        return self.encodings.rotation(self.ctx, self.block_index, q_pos, k_pos)


class PositionalEncodings:
    """The encodings a backbone was built with (a name or a list): the hooks of all, in the order given.

    Not a module itself: `attach(backbone)` registers every part on the backbone under its `kind` (and sets the
    other kinds to None), so that parameter names do not depend on how many encodings are composed.
    """

    def __init__(self, parts: Sequence[PositionalEncoding]) -> None:
        self.parts = tuple(parts)
        self.rotates = any(p.rotates for p in self.parts)
        self.pe_types = tuple(p.pe_type for p in self.parts)

    def attach(self, module: nn.Module) -> None:
        """Registers every part on `module` under its kind; the kinds not used are set to None there."""
        for kind in {cls.kind for cls in PE_REGISTRY.values() if cls.kind}:
            if hasattr(module, kind):
                raise ValueError(f'{type(module).__name__} already has an attribute {kind!r}')
            setattr(module, kind, None)
        for part in self.parts:
            delattr(module, part.kind)
            module.add_module(part.kind, part)

    def prepare(self, stage: int, hw_shape: Sequence[int], like: torch.Tensor) -> PEContext:
        ctx = PEContext(stage, (int(hw_shape[0]), int(hw_shape[1])), {})
        for part in self.parts:
            part.prepare(ctx, like)
        return ctx

    def add_to_tokens(self, x: torch.Tensor, hw_shape: Grid, num_prefix_tokens: int, ctx: PEContext) -> torch.Tensor:
        for part in self.parts:
            x = part.add_to_tokens(x, hw_shape, num_prefix_tokens, ctx)
        return x

    def after_block(self, x: torch.Tensor, hw_shape: Grid, block_index: int, ctx: PEContext) -> torch.Tensor:
        for part in self.parts:
            x = part.after_block(x, hw_shape, block_index, ctx)
        return x

    def block(self, ctx: PEContext, block_index: int) -> BlockPE:
        return BlockPE(self, ctx, block_index)

    def attn_bias(self, ctx: PEContext, block_index: int, query_grid: Grid, key_grid: Grid) -> Optional[torch.Tensor]:
        bias = None
        for part in self.parts:
            b = part.attn_bias(ctx, block_index, query_grid, key_grid)
            if b is not None:
                bias = b if bias is None else bias + b
        return bias

    def rotation(self, ctx: PEContext, block_index: int, q_pos: torch.Tensor,
                 k_pos: torch.Tensor) -> Optional[Rotation]:
        for part in self.parts:
            if part.rotates:
                return part.rotation(ctx, block_index, q_pos, k_pos)
        return None

    def parameters_at(self, stage: int, block: Optional[int] = None) -> List[nn.Parameter]:
        return [p for part in self.parts for p in part.parameters_at(stage, block)]

    def freeze_at(self, stage: int, block: Optional[int] = None) -> None:
        """Freezes what belongs to the input of `stage` (block None) or to its block `block` (frozen_stages)."""
        for part in self.parts:
            for m in part.modules_at(stage, block):
                m.eval()
        for p in self.parameters_at(stage, block):
            p.requires_grad = False

    def __repr__(self) -> str:
        return f'PositionalEncodings({list(self.pe_types)})'


# ------------------------------------------------------------------------------------------------ the registry
PE_REGISTRY: Dict[str, Type[PositionalEncoding]] = {}


def register_pos_encoding(*names: str) -> Callable[[Type[PositionalEncoding]], Type[PositionalEncoding]]:
    """Class decorator: `@register_pos_encoding('abs', 'abs_nointerp')` makes the names valid `pe_type`s."""
    def decorator(cls: Type[PositionalEncoding]) -> Type[PositionalEncoding]:
        for name in names:
            if name in PE_REGISTRY and PE_REGISTRY[name] is not cls:
                raise ValueError(f'pe_type {name!r} is already registered by {PE_REGISTRY[name].__name__}')
            PE_REGISTRY[name] = cls
        return cls
    return decorator


def registered_pe_types() -> Tuple[str, ...]:
    """Every accepted `pe_type` name, in registration order."""
    return tuple(PE_REGISTRY)


def parse_pe_type(pe_type: Union[str, Sequence[str]]) -> Union[str, Tuple[str, ...]]:
    """Checks a `pe_type` (a name or a list of names) and returns it as a name or a tuple of names."""
    accepted = ', '.join(map(repr, PE_REGISTRY))
    names = (pe_type,) if isinstance(pe_type, str) else pe_type
    if not isinstance(names, (tuple, list)) or not names or not all(isinstance(n, str) for n in names):
        raise ValueError(f'pe_type must be a name or a non-empty list of names; accepted names: {accepted}; '
                         f'got {pe_type!r}')
    for name in names:
        check_choice(name, 'pe_type', tuple(PE_REGISTRY))
    if len(names) > 1:
        if 'none' in names:
            raise ValueError(f"pe_type {list(names)}: 'none' does not compose with other encodings")
        kinds: Dict[str, str] = {}
        for name in names:
            kind = PE_REGISTRY[name].kind
            if kind in kinds:
                raise ValueError(f'pe_type {list(names)}: {kinds[kind]!r} and {name!r} are both {kind!r} encodings '
                                 '(one of each kind composes)')
            kinds[kind] = name
        if sum(PE_REGISTRY[n].rotates for n in names) > 1:
            raise ValueError(f'pe_type {list(names)}: at most one rotary encoding composes')
    return pe_type if isinstance(pe_type, str) else tuple(names)


def build_pos_encoding(pe_type: Union[str, Sequence[str]], stages: Sequence[StageSpec],
                       **options: Any) -> PositionalEncodings:
    """Builds the encoding(s) named by `pe_type` for a backbone described by `stages` (see the module docstring).

    `options` are the backbone's PE options (e.g. interpolation, antialias, peg_position, peg_kernel_size);
    each encoding takes the ones it knows.
    """
    parsed = parse_pe_type(pe_type)
    names = (parsed,) if isinstance(parsed, str) else parsed
    parts = [PE_REGISTRY[name](stages, name, **options) for name in names if PE_REGISTRY[name].kind]
    return PositionalEncodings(parts)


# ------------------------------------------------------------------------------------------------ encodings
class _PerStage(PositionalEncoding):
    """An encoding whose modules are its children '0', '1', ... (names `kind.{i}...` on the backbone)."""

    def _add(self, index: int, module: nn.Module) -> None:
        self.add_module(str(index), module)

    def __getitem__(self, index: int) -> nn.Module:
        return self._modules[str(index)]

    def __len__(self) -> int:
        return len(self._modules)

    def __iter__(self) -> Iterator[nn.Module]:
        return iter(self._modules.values())


@register_pos_encoding('abs', 'abs_nointerp')
class AbsolutePE(_PerStage):
    """Learned absolute table per patch-embedding stage (`pos_embed.{n}.pos_embed`, n counting those stages; prefix
    rows first), made for the stage's pre-training grid; 'abs' resamples it to the input grid (bicubic by
    default, as DINO / timm), 'abs_nointerp' crops it (a larger grid is a ValueError)."""

    kind = 'pos_embed'

    def __init__(self, stages: Sequence[StageSpec], pe_type: str, interpolation: str = 'bicubic',
                 antialias: bool = True, **options: Any) -> None:
        super().__init__(stages, pe_type)
        check_choice(interpolation, 'interpolation', INTERPOLATIONS)
        self.slots = {i: n for n, i in enumerate(i for i, s in enumerate(stages) if s.embeds_patches)}
        for i, n in self.slots.items():
            s = stages[i]
            self._add(n, self._table(s, pe_type, interpolation, antialias))

    @staticmethod
    def _table(s: StageSpec, pe_type: str, interpolation: str, antialias: bool) -> nn.Module:
        return AbsolutePositionEmbedding(s.grid_size, s.embed_dims, s.num_prefix_tokens, interpolate=pe_type == 'abs',
                                         interpolation=interpolation, antialias=antialias)

    def prepare(self, ctx: PEContext, like: torch.Tensor) -> None:
        slot = self.slots.get(ctx.stage)
        if slot is not None:  # 1, p + H*W, C, computed every forward from the parameter
            ctx.data[self.kind] = self[slot](ctx.hw_shape)

    def add_to_tokens(self, x: torch.Tensor, hw_shape: Grid, num_prefix_tokens: int, ctx: PEContext) -> torch.Tensor:
        table = ctx.data.get(self.kind)
        return x if table is None else x + table

    def modules_at(self, stage: int, block: Optional[int] = None) -> List[nn.Module]:
        slot = self.slots.get(stage)
        return [self[slot]] if block is None and slot is not None else []


@register_pos_encoding('sincos')
class SinCosPE(AbsolutePE):
    """Fixed 2-D sin-cos table (MoCo v3 / MAE) computed for the input grid at every patch-embedding stage; the
    prefix tokens get zeros. No parameters."""

    @staticmethod
    def _table(s: StageSpec, pe_type: str, interpolation: str, antialias: bool) -> nn.Module:
        return SinCosPositionEmbedding(s.embed_dims, s.num_prefix_tokens)

    def prepare(self, ctx: PEContext, like: torch.Tensor) -> None:
        slot = self.slots.get(ctx.stage)
        if slot is not None:
            ctx.data[self.kind] = self[slot](ctx.hw_shape, like)


PEG_POSITIONS = ('after_first', 'before_first', 'every_block')


@register_pos_encoding('peg')
class PEGEncoding(_PerStage):
    """CPVT's positional encoding generator (depthwise k x k conv + residual) per stage: `pos_block.{i}` after the
    first block ('after_first', CPVT / Twins), on the stage input ('before_first', CPVT's position -1), or one
    after every block ('every_block', `pos_block.{i}.{j}`)."""

    kind = 'pos_block'

    def __init__(self, stages: Sequence[StageSpec], pe_type: str, peg_position: str = 'after_first',
                 peg_kernel_size: int = 3, **options: Any) -> None:
        super().__init__(stages, pe_type)
        self.peg_position = check_choice(peg_position, 'peg_position', PEG_POSITIONS)
        if isinstance(peg_kernel_size, bool) or not isinstance(peg_kernel_size, int) or peg_kernel_size < 3 \
                or peg_kernel_size % 2 == 0:
            raise ValueError(f'peg_kernel_size must be an odd int >= 3, got {peg_kernel_size!r}')
        self.peg_kernel_size = peg_kernel_size
        for i, s in enumerate(stages):
            if peg_position == 'every_block':
                self._add(i, nn.ModuleList([PosConvEncoding(s.embed_dims, peg_kernel_size, s.num_prefix_tokens)
                                            for _ in s.blocks]))
            else:
                self._add(i, PosConvEncoding(s.embed_dims, peg_kernel_size, s.num_prefix_tokens))
        self._position = -1 if peg_position == 'before_first' else 0

    def _peg(self, stage: int, block_index: int) -> Optional[nn.Module]:
        if self.peg_position == 'every_block':
            return self[stage][block_index] if block_index >= 0 else None
        return self[stage] if block_index == self._position else None

    def after_block(self, x: torch.Tensor, hw_shape: Grid, block_index: int, ctx: PEContext) -> torch.Tensor:
        peg = self._peg(ctx.stage, block_index)
        return x if peg is None else peg(x, hw_shape)

    def modules_at(self, stage: int, block: Optional[int] = None) -> List[nn.Module]:
        peg = self._peg(stage, block) if block is not None else None
        return [peg] if peg is not None else []


@register_pos_encoding('rel_bias')
class RelPosBiasEncoding(_PerStage):
    """Swin's learned relative position bias, one table per block (`rel_pos_bias.{i}.{j}`): made for the window of
    windowed blocks (a window clamped to a smaller map takes the crop of the full window's bias), for the
    pre-training grid of global blocks and for the reduced pre-training key grid of spatial-reduction blocks
    (both resampled bicubically to other grids, every forward)."""

    kind = 'rel_pos_bias'

    def __init__(self, stages: Sequence[StageSpec], pe_type: str, **options: Any) -> None:
        super().__init__(stages, pe_type)
        for i, s in enumerate(stages):
            self._add(i, nn.ModuleList([
                RelativePositionBias(b.window_size or (s.grid_size[0] // b.sr_ratio, s.grid_size[1] // b.sr_ratio),
                                     s.num_heads) for b in s.blocks]))

    def attn_bias(self, ctx: PEContext, block_index: int, query_grid: Grid, key_grid: Grid) -> Optional[torch.Tensor]:
        module = self[ctx.stage][block_index]
        if self.stages[ctx.stage].blocks[block_index].window_size is not None:
            return module.window_bias(query_grid)
        return module(query_grid, key_grid)

    def modules_at(self, stage: int, block: Optional[int] = None) -> List[nn.Module]:
        return [self[stage][block]] if block is not None and block >= 0 else []


@register_pos_encoding('none')
class NoPE(PositionalEncoding):
    """No positional encoding (nothing is registered on the backbone)."""
