"""CPVT-v2 / Twins-PCPVT: a four-stage pyramid of spatial-reduction attention with a PEG per stage.

"Conditional Positional Encodings for Vision Transformers" (CPVT, arXiv:2102.10882) and its pyramid
form PCPVT in "Twins: Revisiting the Design of Spatial Attention in Vision Transformers"
(arXiv:2104.13840): non-overlapping patch embeddings (4, 2, 2, 2) + LayerNorm start each stage, the
blocks use spatial-reduction attention (sr 8, 4, 2, 1), and a positional encoding generator (PEG, a
depthwise 3x3 conv with zero padding) follows the first block of every stage.
"""
from typing import Dict, List, Optional, Sequence, Tuple, Union

import torch
import torch.nn as nn
import torch.utils.checkpoint as cp
from mmengine.registry import MODELS

from ..layers import (
    BlockPE,
    BlockSpec,
    DropPath,
    Mlp,
    PatchEmbed,
    StageSpec,
    build_pos_encoding,
    check_choice,
    linear_drop_path_rates,
    to_2tuple,
)
from ..layers.pos_encoding import PEG_POSITIONS
from ..layers.sr_attention import SpatialReductionAttention
from .base import PEBackbone, init_linear_and_norm
from .toolbox_args import CPVT_ARGS, with_presets

# Twins-PCPVT presets (Twins Table 1 / timm `twins_pcpvt_*`): widths, heads, MLP ratios and spatial
# reductions are shared, depths differ.
_PCPVT_COMMON = dict(embed_dims=(64, 128, 320, 512), num_heads=(1, 2, 5, 8), mlp_ratios=(8, 8, 4, 4),
                     sr_ratios=(8, 4, 2, 1), patch_sizes=(4, 2, 2, 2))
ARCH_SETTINGS: Dict[str, dict] = {
    'small': dict(_PCPVT_COMMON, depths=(3, 4, 6, 3)),
    'base': dict(_PCPVT_COMMON, depths=(3, 4, 18, 3)),
    'large': dict(_PCPVT_COMMON, depths=(3, 8, 27, 3)),
}
ARCH_KEYS = ('embed_dims', 'num_heads', 'mlp_ratios', 'sr_ratios', 'patch_sizes', 'depths')
NORM_AFTER_STAGE = ('last', True, False)


def _parse_arch(arch: Union[str, dict]) -> Dict[str, Tuple]:
    """A preset name, or a dict overriding keys of the 'small' preset; all per-stage tuples of one length."""
    if isinstance(arch, str):
        if arch not in ARCH_SETTINGS:
            raise ValueError(f'arch={arch!r} is not a CPVTv2 preset; accepted: {", ".join(map(repr, ARCH_SETTINGS))} '
                             f'or a dict with keys {", ".join(ARCH_KEYS)}')
        settings = dict(ARCH_SETTINGS[arch])
    elif isinstance(arch, dict):
        unknown = sorted(set(arch) - set(ARCH_KEYS))
        if unknown:
            raise ValueError(f'arch has unknown key(s) {unknown}; accepted: {", ".join(ARCH_KEYS)} '
                             '(missing keys default to the "small" preset)')
        settings = dict(ARCH_SETTINGS['small'], **arch)
    else:
        raise ValueError(f'arch must be a preset name ({", ".join(ARCH_SETTINGS)}) or a dict, got {arch!r}')
    out = {}
    for key in ARCH_KEYS:
        value = settings[key]
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            value = (value,)
        if not isinstance(value, (tuple, list)) or not value:
            raise ValueError(f'arch[{key!r}] must be a non-empty list with one value per stage, got {value!r}')
        out[key] = tuple(value)
    lengths = {key: len(value) for key, value in out.items()}
    if len(set(lengths.values())) != 1:
        raise ValueError(f'arch lists must have one value per stage, got lengths {lengths}')
    for key in ('embed_dims', 'num_heads', 'sr_ratios', 'patch_sizes', 'depths'):
        if not all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in out[key]):
            raise ValueError(f'arch[{key!r}] must hold positive ints, got {out[key]}')
    for dims, heads in zip(out['embed_dims'], out['num_heads']):
        if dims % heads:
            raise ValueError(f'num_heads {out["num_heads"]} must divide embed_dims {out["embed_dims"]} stage by stage')
    if not all(v > 0 for v in out['mlp_ratios']):
        raise ValueError(f'arch["mlp_ratios"] must be positive, got {out["mlp_ratios"]}')
    return out


def _stage_grids(size: int, patch_sizes: Sequence[int]) -> List[int]:
    """Token grid side of every stage for an input side `size` (patch embeddings pad: ceil)."""
    grids = []
    for p in patch_sizes:
        size = -(-size // p)
        grids.append(size)
    return grids


def min_input_size(patch_sizes: Sequence[int], sr_ratios: Sequence[int]) -> int:
    """Smallest image side every stage accepts: each patch embedding needs an input of at least its patch
    size, and each spatial reduction a grid of at least sr_ratio (its conv floors, as the reference)."""
    size = 1
    while True:
        grids, ok, side = _stage_grids(size, patch_sizes), True, size
        for p, sr, grid in zip(patch_sizes, sr_ratios, grids):
            ok = ok and side >= p and grid >= sr
            side = grid
        if ok:
            return size
        size += 1


class CPVTBlock(nn.Module):
    """Pre-norm transformer block with spatial-reduction attention (timm names `norm1`, `attn`, `norm2`, `mlp`)."""

    def __init__(self, embed_dims: int, num_heads: int, mlp_ratio: float, sr_ratio: int, qkv_bias: bool = True,
                 drop_rate: float = 0.0, attn_drop_rate: float = 0.0, drop_path_rate: float = 0.0,
                 norm_eps: float = 1e-6) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(embed_dims, eps=norm_eps)
        self.attn = SpatialReductionAttention(embed_dims, num_heads, sr_ratio, qkv_bias, None, attn_drop_rate,
                                              drop_rate)
        self.drop_path = DropPath(drop_path_rate) if drop_path_rate > 0 else nn.Identity()
        self.norm2 = nn.LayerNorm(embed_dims, eps=norm_eps)
        self.mlp = Mlp(embed_dims, int(embed_dims * mlp_ratio), drop=drop_rate)

    def forward(self, x: torch.Tensor, hw_shape: Tuple[int, int], pe: Optional[BlockPE] = None) -> torch.Tensor:
        x = x + self.drop_path(self.attn(self.norm1(x), hw_shape, pe))
        return x + self.drop_path(self.mlp(self.norm2(x)))


@MODELS.register_module()
class CPVTv2(PEBackbone):
    """CPVT-v2 / Twins-PCPVT backbone: four stages at strides 4, 8, 16, 32 with a PEG per stage.

    Any H x W: every patch embedding pads its input at the bottom/right to a multiple of its patch
    size, so the stage at stride s outputs ceil(H / s) x ceil(W / s) maps (no crop needed: the padded
    border is part of the grid, as mmseg's `PCPVT` with corner padding). The spatial-reduction conv
    floors as in Twins/timm/mmseg, so each stage needs a grid of at least sr_ratio: the smallest input
    is `self.min_input_size` (29 x 29 for the presets: ceil(29 / 4) = 8 = sr of stage 1); below it a
    ValueError names the minimum.

    Outputs and norms (`norm_after_stage`):
        'last' (default): intermediate stages are returned as they leave their blocks (as timm and
            mmseg's PCPVT) and the last stage goes through the final `norm` (timm `forward_features`;
            the ImageNet checkpoints train that norm).
        False: no norm after any stage (mmseg's PCPVT configs for Twins, `norm_after_stage=False`).
        True: a LayerNorm `norm_list.{i}` after every stage (mmseg `norm_after_stage=True`).

    Positional encodings (`pe_type`), a like-for-like switch (other types have no PEG):
        'peg' (default, the paper): `pos_block.{i}` PosConvEncoding per stage, placed by
            `peg_position`: 'after_first' (after the first block, Twins/CPVT), 'before_first' (on the
            stage input, CPVT's position -1), 'every_block' (one PEG after every block,
            `pos_block.{i}.{j}`); `peg_kernel_size` odd >= 3.
        'abs' / 'abs_nointerp': PVT-style learned absolute PE per stage (`pos_embed.{i}.pos_embed`),
            made for the grid of an `img_size` image and added after the patch embedding; resampled
            (bicubic) to other grids, or cropped ('abs_nointerp': a grid larger than the table fails).
        'sincos': fixed 2-D sin-cos table per stage, computed for the actual grid.
        'rel_bias': a learned relative position bias in every attention between the query grid and
            the reduced key grid (`rel_pos_bias.{i}.{j}`); its table is made for the key grid of an
            `img_size` image and resampled to others.
        'none': no positional encoding.
        A list composes encodings of different kinds (vitpe_mm.layers.pos_encoding), e.g. ['peg', 'rel_bias'].

    Args:
        arch: 'small', 'base', 'large' or a dict overriding keys of 'small' (embed_dims, num_heads,
            mlp_ratios, sr_ratios, patch_sizes, depths; one value per stage).
        in_channels: image channels.
        out_indices: stages to return (negative counts from the end); stages after the last one asked
            are not run.
        qkv_bias: bias on the q / kv projections (True in Twins).
        drop_rate: dropout after the patch embeddings, the attention projection and in the MLP.
        attn_drop_rate: dropout on attention weights.
        drop_path_rate: stochastic depth, rising linearly over all blocks to this value.
        norm_cfg: LayerNorm of the blocks and the stage norms: dict(type='LN', eps=...); eps 1e-6 as
            Twins/timm (mmseg's PCPVT uses 1e-5). Patch embedding and key norms keep eps 1e-5 as in
            every reference.
        norm_after_stage: 'last', True or False (above).
        pe_type: one of vitpe_mm.layers.PE_TYPES (above), or a list of them to compose (e.g. ['peg', 'abs']).
        peg_position: 'after_first', 'before_first' or 'every_block' (pe_type 'peg' only).
        peg_kernel_size: PEG kernel size (odd >= 3).
        img_size: pre-training image size the 'abs' / 'rel_bias' tables are made for.
        with_cp: gradient checkpointing per block while training.
        frozen_stages: -1 for none; k >= 0 freezes `patch_embeds.0..k` (with their absolute PE) and the
            blocks, PEGs and stage norms of the first k stages (Swin's convention: a stage's
            downsampling into the next belongs to it); k = number of stages freezes everything.
        init_cfg: dict(type='Pretrained', checkpoint=PATH[, format='timm'|'mmseg']); format detected.

    mmseg `PCPVT` configs work with only `type='CPVTv2'` (vitpe_mm.models.toolbox_args): the sizes
    (`embed_dims`, `num_heads`, `mlp_ratios`, `sr_ratios`, `patch_sizes`, `depths`; mmdet PVT's `num_layers`
    and int `embed_dims`) are taken at the top level as well as in `arch`, `pretrained=PATH` becomes init_cfg
    Pretrained, `strides` must equal the patch sizes. Sizes at the top level mean a config written for
    mmseg: what it leaves out takes PCPVT's defaults where ours differ (its sizes, qkv_bias=False,
    norm_cfg=dict(type='LN'), norm_after_stage=False), and norm_cfg must then be LN with eps 1e-5 (PCPVT puts
    norm_cfg on the patch embeddings, CPVTv2 on the blocks: only then do both mean the same).
    """

    family = 'cpvt'
    # mmseg PCPVT's (and mmdet PVTv2's) argument names: vitpe_mm.models.toolbox_args
    toolbox_args = with_presets(CPVT_ARGS, ARCH_SETTINGS)

    def __init__(
        self,
        arch: Union[str, dict] = 'small',
        in_channels: int = 3,
        out_indices: Sequence[int] = (0, 1, 2, 3),
        qkv_bias: bool = True,
        drop_rate: float = 0.0,
        attn_drop_rate: float = 0.0,
        drop_path_rate: float = 0.0,
        norm_cfg: Optional[dict] = None,
        norm_after_stage: Union[str, bool] = 'last',
        pe_type: str = 'peg',
        peg_position: str = 'after_first',
        peg_kernel_size: int = 3,
        img_size: Union[int, Sequence[int]] = 224,
        with_cp: bool = False,
        frozen_stages: int = -1,
        init_cfg: Optional[dict] = None,
    ) -> None:
        super().__init__(pe_type, frozen_stages, init_cfg)
        settings = _parse_arch(arch)
        self.arch_settings = settings
        num_stages = len(settings['depths'])
        self.num_stages = num_stages
        self.embed_dims = settings['embed_dims']
        self.depths = settings['depths']
        self.patch_sizes = settings['patch_sizes']
        self.sr_ratios = settings['sr_ratios']
        if isinstance(in_channels, bool) or not isinstance(in_channels, int) or in_channels <= 0:
            raise ValueError(f'in_channels must be a positive int, got {in_channels!r}')

        if isinstance(out_indices, int):
            out_indices = (out_indices,)
        indices = []
        for index in out_indices:
            if isinstance(index, bool) or not isinstance(index, int) or not -num_stages <= index < num_stages:
                raise ValueError(f'out_indices {tuple(out_indices)} must be stage indices in '
                                 f'[{-num_stages}, {num_stages - 1}]')
            indices.append(index % num_stages)
        if not indices or len(set(indices)) != len(indices):
            raise ValueError(f'out_indices must be non-empty and without repeats, got {tuple(out_indices)}')
        self.out_indices = tuple(sorted(indices))
        self.out_channels = tuple(self.embed_dims[i] for i in self.out_indices)
        self._run_stages = self.out_indices[-1] + 1

        if norm_after_stage not in NORM_AFTER_STAGE or (isinstance(norm_after_stage, int)
                                                        and not isinstance(norm_after_stage, bool)):
            raise ValueError(f'norm_after_stage={norm_after_stage!r} is not supported; accepted: '
                             "'last' (final norm on the last stage, timm), False (none, mmseg PCPVT), "
                             'True (a norm after every stage)')
        self.norm_after_stage = norm_after_stage
        norm_cfg = dict(type='LN', eps=1e-6) if norm_cfg is None else dict(norm_cfg)
        if norm_cfg.get('type') != 'LN' or set(norm_cfg) - {'type', 'eps'}:
            raise ValueError(f"norm_cfg must be dict(type='LN'[, eps=...]) (LayerNorm over channels), got {norm_cfg!r}")
        norm_eps = float(norm_cfg.get('eps', 1e-5))
        check_choice(peg_position, 'peg_position', PEG_POSITIONS)
        self.peg_position = peg_position
        self.peg_kernel_size = peg_kernel_size
        for name, rate in (('drop_rate', drop_rate), ('attn_drop_rate', attn_drop_rate),
                           ('drop_path_rate', drop_path_rate)):
            if not 0.0 <= rate < 1.0:
                raise ValueError(f'{name} must be in [0, 1), got {rate}')
        if not -1 <= frozen_stages <= num_stages:
            raise ValueError(f'frozen_stages must be in [-1, {num_stages}], got {frozen_stages}')
        self.img_size = to_2tuple(img_size, 'img_size')
        self.with_cp = with_cp
        self.min_input_size = min_input_size(self.patch_sizes[:self._run_stages], self.sr_ratios[:self._run_stages])
        if min(self.img_size) < min_input_size(self.patch_sizes, self.sr_ratios):
            raise ValueError(f'img_size={self.img_size} is below the smallest input the architecture accepts '
                             f'({min_input_size(self.patch_sizes, self.sr_ratios)})')
        # Token grids of an img_size image, which the 'abs' and 'rel_bias' tables are made for.
        pretrain_grids = list(zip(_stage_grids(self.img_size[0], self.patch_sizes),
                                  _stage_grids(self.img_size[1], self.patch_sizes)))

        self.patch_embeds = nn.ModuleList()
        self.pos_drops = nn.ModuleList()
        prev = in_channels
        for i in range(num_stages):
            self.patch_embeds.append(PatchEmbed(prev, self.embed_dims[i], self.patch_sizes[i],
                                                norm_layer=nn.LayerNorm))
            self.pos_drops.append(nn.Dropout(drop_rate))
            prev = self.embed_dims[i]

        total = sum(self.depths)
        rates = linear_drop_path_rates(drop_path_rate, total)
        self.blocks = nn.ModuleList()
        cur = 0
        for i in range(num_stages):
            self.blocks.append(nn.ModuleList([
                CPVTBlock(self.embed_dims[i], settings['num_heads'][i], settings['mlp_ratios'][i],
                          self.sr_ratios[i], qkv_bias, drop_rate, attn_drop_rate, rates[cur + j], norm_eps)
                for j in range(self.depths[i])]))
            cur += self.depths[i]

        # pos_embed.{i} (abs / sincos), pos_block.{i} (PEG), rel_pos_bias.{i}.{j}: layers/pos_encoding.py
        self.pos_encoding = build_pos_encoding(
            pe_type, [StageSpec(dims, heads, grid, (BlockSpec(sr_ratio=sr),) * depth)
                      for dims, heads, grid, sr, depth in zip(self.embed_dims, settings['num_heads'], pretrain_grids,
                                                              self.sr_ratios, self.depths)],
            peg_position=peg_position, peg_kernel_size=peg_kernel_size)
        self.pos_encoding.attach(self)

        self.norm = nn.LayerNorm(self.embed_dims[-1], eps=norm_eps) if norm_after_stage == 'last' else None
        self.norm_list = (nn.ModuleList([nn.LayerNorm(dims, eps=norm_eps) for dims in self.embed_dims])
                          if norm_after_stage is True else None)

        self.apply(self._init_module)
        if frozen_stages >= 0:
            self._freeze_stages()

    @staticmethod
    def _init_module(m: nn.Module) -> None:
        """Twins/timm initialisation (the PE tables keep their own trunc-normal init): linear and norm layers as
        Swin / timm, convolutions normal with fan-out variance."""
        init_linear_and_norm(m)
        if isinstance(m, nn.Conv2d):
            fan_out = m.kernel_size[0] * m.kernel_size[1] * m.out_channels // m.groups
            nn.init.normal_(m.weight, 0.0, (2.0 / fan_out) ** 0.5)
            if m.bias is not None:
                nn.init.zeros_(m.bias)

    def _freeze_stages(self) -> None:
        k = self.frozen_stages
        for i in range(min(k + 1, self.num_stages)):
            self.freeze(self.patch_embeds[i])
            self.pos_drops[i].eval()
            self.pos_encoding.freeze_at(i)
        for i in range(min(k, self.num_stages)):
            self.freeze(self.blocks[i])
            for j in range(-1, self.depths[i]):
                self.pos_encoding.freeze_at(i, j)
            if self.norm_list is not None:
                self.freeze(self.norm_list[i])
        if k >= self.num_stages and self.norm is not None:
            self.freeze(self.norm)

    def _run_block(self, block: CPVTBlock, x: torch.Tensor, hw_shape: Tuple[int, int], pe: BlockPE) -> torch.Tensor:
        if self.with_cp and self.training and x.requires_grad:
            return cp.checkpoint(block, x, hw_shape, pe, use_reentrant=False)
        return block(x, hw_shape, pe)

    def forward(self, x: torch.Tensor) -> Tuple[torch.Tensor, ...]:
        """x: (B, in_channels, H, W). Returns one (B, C_i, ceil(H / s_i), ceil(W / s_i)) map per out index."""
        if x.dim() != 4:
            raise ValueError(f'CPVTv2 expects a B, C, H, W image batch, got shape {tuple(x.shape)}')
        h, w = x.shape[-2:]
        if h < self.min_input_size or w < self.min_input_size:
            raise ValueError(f'input of {h}x{w} is smaller than the smallest input CPVTv2 accepts with these '
                             f'patch sizes {self.patch_sizes} and sr_ratios {self.sr_ratios}: '
                             f'{self.min_input_size}x{self.min_input_size}')
        b = x.shape[0]
        outs = []
        for i in range(self._run_stages):
            x, hw_shape = self.patch_embeds[i](x)  # B, C, H, W -> B, h*w, C
            pe = self.pos_encoding
            ctx = pe.prepare(i, hw_shape, x)  # this forward's resampled tables etc. for stage i
            x = self.pos_drops[i](pe.add_to_tokens(x, hw_shape, 0, ctx))
            x = pe.after_block(x, hw_shape, -1, ctx)
            for j, block in enumerate(self.blocks[i]):
                x = self._run_block(block, x, hw_shape, pe.block(ctx, j))
                x = pe.after_block(x, hw_shape, j, ctx)
            if self.norm_list is not None:
                x = self.norm_list[i](x)
            elif self.norm is not None and i == self.num_stages - 1:
                x = self.norm(x)
            x = x.transpose(1, 2).reshape(b, -1, *hw_shape).contiguous()  # B, h*w, C -> B, C, h, w
            if i in self.out_indices:
                outs.append(x)
        return tuple(outs)
