"""Plain ViT / DeiT backbone with a switchable positional encoding, for classification-pretrained weights
in dense prediction.

"An Image is Worth 16x16 Words" (ViT, arXiv:2010.11929) and "Training data-efficient image transformers &
distillation through attention" (DeiT, arXiv:2012.12877); for detection, windowed blocks with a few global
blocks and a simple feature pyramid as "Exploring Plain Vision Transformer Backbones for Object Detection"
(ViTDet, arXiv:2203.16527). Parameter names follow timm's `VisionTransformer`, so timm / DeiT checkpoints
load with a trivial key map (vitpe_mm.checkpoint.vit).
"""
from typing import Optional, Sequence, Tuple, Union

import torch
import torch.nn as nn
import torch.utils.checkpoint as cp
from mmengine.registry import MODELS

from ..layers import (
    BlockPE,
    BlockSpec,
    DropPath,
    LayerNorm2d,
    Mlp,
    MultiheadSelfAttention,
    PatchEmbed,
    StageSpec,
    build_pos_encoding,
    check_choice,
    grid_token_positions,
    linear_drop_path_rates,
    to_2tuple,
    window_partition,
    window_reverse,
    window_token_positions,
)
from ..layers._checks import Size2
from ..layers.attention import pad_prefix_bias
from .base import PEBackbone
from .toolbox_args import VIT_ARGS, with_presets

OUT_TYPES = ('featmap', 'sfp')
# Pyramid levels of out_type='sfp': (name, scale relative to the patch grid); strides 4, 8, 16, 32 for patch 16.
SFP_LEVELS = (('fpn1', 4.0), ('fpn2', 2.0), ('fpn3', 1.0), ('fpn4', 0.5))


class ViTBlock(nn.Module):
    """Pre-norm transformer block (timm names `norm1`, `attn.qkv`, `attn.proj`, `norm2`, `mlp.fc1/fc2`).

    Global attention over all tokens, or, with `window_size`, attention inside non-overlapping windows of the
    token grid (ViTDet): the normalised B, H, W, C map is zero-padded at the bottom/right to window multiples,
    the padded tokens take part as keys as in ViTDet, and the output is cropped back.

    Args:
        embed_dims: channels C.
        num_heads: attention heads.
        mlp_ratio: hidden width of the MLP over C.
        qkv_bias: bias on the qkv projection.
        drop_rate: dropout after the attention projection and in the MLP.
        attn_drop_rate: dropout on attention weights.
        drop_path_rate: stochastic depth of both residual branches.
        norm_eps: LayerNorm epsilon.
        window_size: (Mh, Mw) window, or None for global attention.
        num_prefix_tokens: leading tokens (cls) of a global block; they take a zero relative bias and no rotation.

    The positional encoding reaches the attention through `forward(..., pe)` (layers/pos_encoding.py): a bias
    for the window (windowed) or the grid (global), a rotation by the tokens' global grid positions.
    """

    def __init__(self, embed_dims: int, num_heads: int, mlp_ratio: float = 4.0, qkv_bias: bool = True,
                 drop_rate: float = 0.0, attn_drop_rate: float = 0.0, drop_path_rate: float = 0.0,
                 norm_eps: float = 1e-6, window_size: Optional[Tuple[int, int]] = None,
                 num_prefix_tokens: int = 0) -> None:
        super().__init__()
        if window_size is not None and num_prefix_tokens:
            raise ValueError('windowed attention works on the patch grid only: it takes no prefix (cls) tokens')
        self.window_size = window_size
        self.num_prefix_tokens = num_prefix_tokens
        self.norm1 = nn.LayerNorm(embed_dims, eps=norm_eps)
        self.attn = MultiheadSelfAttention(embed_dims, num_heads, qkv_bias=qkv_bias, attn_drop_rate=attn_drop_rate,
                                           proj_drop_rate=drop_rate)
        self.drop_path = DropPath(drop_path_rate) if drop_path_rate > 0 else nn.Identity()
        self.norm2 = nn.LayerNorm(embed_dims, eps=norm_eps)
        self.mlp = Mlp(embed_dims, int(embed_dims * mlp_ratio), act_layer=nn.GELU, drop=drop_rate)

    def forward(self, x: torch.Tensor, hw_shape: Tuple[int, int], pe: Optional[BlockPE] = None) -> torch.Tensor:
        """x: (B, prefix + H*W, C) tokens of the grid `hw_shape`; `pe` the block's positional encoding.
        Returns the same shape."""
        shortcut = x
        x = self.norm1(x)
        rotates = pe is not None and pe.rotates
        if self.window_size is not None:
            b, n, c = x.shape
            bias = pe.attn_bias(self.window_size) if pe is not None else None  # nH, N, N for every window
            rotation = None
            if rotates:  # the global positions of the window slots (padding included)
                pos = window_token_positions(hw_shape, self.window_size, (0, 0), x.device)
                rotation = pe.rotation(pos, pos)
            # B, H*W, C -> B*nW, Mh*Mw, C
            x, padded_hw = window_partition(x.view(b, hw_shape[0], hw_shape[1], c), self.window_size)
            x = self.attn(x, bias, rotation)
            x = window_reverse(x, self.window_size, padded_hw, hw_shape).reshape(b, n, c)
        else:
            p = self.num_prefix_tokens
            bias = pad_prefix_bias(pe.attn_bias(hw_shape), p) if pe is not None else None  # nH, p+N, p+N
            rotation = None
            if rotates:
                pos = grid_token_positions(hw_shape, x.device)
                rotation = pe.rotation(pos, pos)
            x = self.attn(x, bias, rotation, p)
        x = shortcut + self.drop_path(x)
        return x + self.drop_path(self.mlp(self.norm2(x)))


@MODELS.register_module()
class ViTPE(PEBackbone):
    """Plain ViT / DeiT backbone returning stride-16 maps or a ViTDet simple feature pyramid.

    Patch embedding (16x16, stride 16) -> optional cls token -> positional encoding (`pe_type`) -> transformer
    blocks -> optional final LayerNorm (`final_norm`) -> outputs. Works for any H x W: the image is zero-padded
    at the bottom/right to a multiple of the patch size (the token grid is ceil(H/16) x ceil(W/16)), windowed
    blocks pad the grid to window multiples and crop back, and the pyramid maps are cropped so that a stride-s
    output is ceil(H/s) x ceil(W/s). The smallest input is one patch (16 x 16); smaller raises a ValueError.

    Outputs (`out_type`):
        'featmap' (default, mmseg `VisionTransformer`-like): for each block index in `out_indices` (default: the
            last block) the patch tokens of that block as a B, C, ceil(H/16), ceil(W/16) map, the cls token
            dropped; blocks after the last index are not run (nor trained: DDP needs find_unused_parameters).
            `final_norm` normalises the last block's tokens (as mmseg), so with the defaults the output
            is timm's `forward_features` without the cls token. out_channels = (C,) * len(out_indices).
        'sfp' (ViTDet simple feature pyramid, for Mask R-CNN + FPN / UperNet): from the last block's map (after
            `final_norm`) at stride 16, `out_indices` picks among four levels (default all): 0 = stride 4
            (ConvTranspose 2x2 -> LayerNorm -> GELU -> ConvTranspose 2x2, C/4 channels, `fpn1`), 1 = stride 8
            (ConvTranspose 2x2, C/2, `fpn2`), 2 = stride 16 (identity, C), 3 = stride 32 (2x2 max-pool with ceil
            mode, C). out_channels = (C/4, C/2, C, C) for the default out_indices.

    Positional encodings (`pe_type`):
        'abs' (default, ViT/DeiT): learned table `pos_embed.0.pos_embed` made for the `img_size` grid (with a row
            for the cls token), resampled to the input grid at forward time (bicubic, `interpolate_mode`,
            `antialias`; timm's dynamic_img_size resampling is bicubic with antialias=True, mmseg's is bicubic
            without: set antialias=False to reproduce mmseg) once per forward (never cached: EMA weights written
            through `.data` stay visible); a checkpoint's table made for another square grid is resampled on load.
        'abs_nointerp': the same table, cropped to the input grid (top-left); a grid larger than the table is a
            ValueError.
        'sincos': fixed 2-D sin-cos PE computed for the input grid (MoCo v3 / MAE); the cls token gets none.
        'peg': CPVT's ViT variant ("Conditional Positional Encodings for Vision Transformers", arXiv:2102.10882):
            a 3x3 depthwise PosConvEncoding (`pos_block.0`) after the first block, the cls token passed through
            unchanged, no absolute table.
        'rel_bias': a learned relative position bias per block (`rel_pos_bias.0.{i}`), no absolute table.
            Global blocks hold a table made for the `img_size` grid and resample it to the input grid (every
            forward); the cls token gets a zero bias. Windowed blocks hold a window-sized table.
        'none': no positional encoding.

    Windowed attention (ViTDet): with `window_size`, every block not listed in `global_attn_indexes` attends
    within non-overlapping windows of the token grid (default global blocks: the last block of each quarter of
    the depth, (2, 5, 8, 11) for 12 blocks). Windows work on the patch grid only, so they need
    `with_cls_token=False`; checkpoints with a cls token then load without it (the cls token and its PE row
    are dropped, as ViTDet does).

    mmseg `VisionTransformer` configs work with only `type='ViTPE'` (vitpe_mm.models.toolbox_args): its sizes
    (`embed_dims`, `num_layers`, `num_heads`, `mlp_ratio`) are taken at the top level as well as in `arch`, and
    `pretrained=PATH` becomes init_cfg Pretrained; `act_cfg`, `patch_pad`, `patch_norm`, `pre_norm`, `num_fcs`,
    `frozen_exclude` are accepted with the values we honour (GELU, 'corner', False, False, 2, ['all']). Sizes at
    the top level mean a config written for mmseg: what it leaves out takes mmseg's defaults where ours differ
    (ViT-B sizes, final_norm=False, patch_bias=False, antialias=False, norm_cfg=dict(type='LN')).

    Args:
        arch: preset name ('deit-ti', 'deit-s', 'deit-b', 'vit-b') or a dict with `embed_dims`, `num_layers`,
            `num_heads` and optionally `mlp_ratio` (default 4); the same four may be given as top-level
            arguments (mmseg), see above.
        img_size: pre-training image size; decides the grid of the absolute PE table and of the global
            relative-bias tables (ceil(img_size / patch_size)).
        patch_size: patch size and stride of the patch embedding.
        in_channels: input channels; another count raises a ValueError.
        qkv_bias: bias on the qkv projections.
        with_cls_token: prepend a learned cls token (DeiT/ViT); it is never part of an output map.
        with_dist_token: also prepend DeiT's distillation token after the cls token (a distilled DeiT,
            timm `deit_*_distilled_*`): the patch tokens attend to both, so the features of a distilled checkpoint
            are its own only with it. Needs `with_cls_token`; like the cls token, it gets a PE row (abs) or a
            zero bias (rel_bias) and is never part of an output map.
        pe_type: one of vitpe_mm.layers.PE_TYPES, see above, or a list composing encodings of different kinds
            (vitpe_mm.layers.pos_encoding), e.g. ['abs', 'rel_bias'].
        interpolate_mode: resampling mode of the absolute PE ('bicubic', 'bilinear', 'nearest', 'area').
        antialias: low-pass filter when the absolute PE is downsampled (bicubic / bilinear).
        window_size: window (int or pair) for ViTDet windowed blocks; None or 0 = all blocks global.
        global_attn_indexes: blocks that keep global attention when `window_size` is set.
        out_type: 'featmap' or 'sfp', see above.
        out_indices: block indices ('featmap', negative counts from the end) or pyramid levels 0..3 ('sfp');
            None picks the default of the out_type.
        final_norm: apply the final LayerNorm `norm` to the last block's tokens.
        out_origin: also return, first, the map of the embedded input (after the PE, before the blocks), as mmseg.
        output_cls_token: every output is [map, B x C cls token] instead of the map (mmseg; needs the cls token).
        patch_bias: bias on the patch-embedding convolution (timm has one, mmseg's default has none).
        norm_eval: keep the LayerNorms in eval mode in train() (mmseg's option; LayerNorm has no running
            statistics, so it only matters to code that checks `training`).
        drop_rate: dropout after the PE, after attention projections and in the MLPs.
        attn_drop_rate: dropout on attention weights.
        drop_path_rate: stochastic depth, increasing linearly from 0 to this over the blocks.
        norm_cfg: dict(type='LN'[, eps=...]) for every LayerNorm; None = LN with eps 1e-6 (timm, DeiT);
            dict(type='LN') has PyTorch's / mmcv's eps 1e-5 (mmseg).
        with_cp: gradient checkpointing per block (same outputs and gradients, less memory).
        frozen_stages: -1 none; 0 freezes the patch embedding, cls (and dist) token and PE; k > 0 also blocks 0..k-1
            (and the PEG, which follows block 0); num_layers also freezes the final norm.
        init_cfg: dict(type='Pretrained', checkpoint=PATH[, format='timm'|'mmseg']) loads a foreign checkpoint.
    """

    family = 'vit'
    arch_zoo = {
        'deit-ti': dict(embed_dims=192, num_layers=12, num_heads=3, mlp_ratio=4.0),
        'deit-s': dict(embed_dims=384, num_layers=12, num_heads=6, mlp_ratio=4.0),
        'deit-b': dict(embed_dims=768, num_layers=12, num_heads=12, mlp_ratio=4.0),
        'vit-b': dict(embed_dims=768, num_layers=12, num_heads=12, mlp_ratio=4.0),
    }
    arch_keys = ('embed_dims', 'num_layers', 'num_heads', 'mlp_ratio')
    # mmseg VisionTransformer's argument names (sizes, pretrained=, act_cfg, ...): vitpe_mm.models.toolbox_args
    toolbox_args = with_presets(VIT_ARGS, arch_zoo)

    def __init__(
        self,
        arch: Union[str, dict] = 'deit-s',
        img_size: Size2 = 224,
        patch_size: int = 16,
        in_channels: int = 3,
        qkv_bias: bool = True,
        with_cls_token: bool = True,
        with_dist_token: bool = False,
        pe_type: str = 'abs',
        interpolate_mode: str = 'bicubic',
        antialias: bool = True,
        window_size: Optional[Size2] = None,
        global_attn_indexes: Optional[Sequence[int]] = None,
        out_type: str = 'featmap',
        out_indices: Optional[Union[int, Sequence[int]]] = None,
        final_norm: bool = True,
        out_origin: bool = False,
        output_cls_token: bool = False,
        patch_bias: bool = True,
        norm_eval: bool = False,
        drop_rate: float = 0.0,
        attn_drop_rate: float = 0.0,
        drop_path_rate: float = 0.0,
        norm_cfg: Optional[dict] = None,
        with_cp: bool = False,
        frozen_stages: int = -1,
        init_cfg: Optional[dict] = None,
    ) -> None:
        super().__init__(pe_type=pe_type, frozen_stages=frozen_stages, init_cfg=init_cfg)
        arch = self._parse_arch(arch)
        self.embed_dims = embed_dims = arch['embed_dims']
        self.num_layers = num_layers = arch['num_layers']
        self.num_heads = num_heads = arch['num_heads']
        self.mlp_ratio = arch['mlp_ratio']
        if embed_dims % num_heads:
            raise ValueError(f'arch: num_heads={num_heads} must divide embed_dims={embed_dims}')
        self.out_type = check_choice(out_type, 'out_type', OUT_TYPES)
        if out_type == 'sfp' and embed_dims % 4:
            raise ValueError(f"out_type='sfp' needs embed_dims divisible by 4 (C/4 channels at stride 4), "
                             f'got {embed_dims}')
        if not -1 <= frozen_stages <= num_layers:
            raise ValueError(f'frozen_stages={frozen_stages} must be in [-1, num_layers={num_layers}]')
        if not 0.0 <= drop_path_rate < 1.0:
            raise ValueError(f'drop_path_rate must be in [0, 1), got {drop_path_rate}')
        norm_eps = self._parse_norm_cfg(norm_cfg)

        if isinstance(patch_size, bool) or not isinstance(patch_size, int) or patch_size <= 0:
            raise ValueError(f'patch_size must be a positive int (square patches), got {patch_size!r}')
        self.img_size = to_2tuple(img_size, 'img_size')
        self.patch_size = patch_size
        self.grid_size = (-(-self.img_size[0] // patch_size), -(-self.img_size[1] // patch_size))
        if with_dist_token and not with_cls_token:
            raise ValueError('with_dist_token=True needs with_cls_token=True (DeiT puts the distillation token '
                             'after the cls token)')
        self.with_cls_token = with_cls_token
        self.with_dist_token = with_dist_token
        self.num_prefix_tokens = int(with_cls_token) + int(with_dist_token)
        self.final_norm = final_norm
        if (out_origin or output_cls_token) and out_type != 'featmap':
            raise ValueError("out_origin and output_cls_token work with out_type='featmap' only")
        if output_cls_token and not with_cls_token:
            raise ValueError('output_cls_token=True needs with_cls_token=True (as mmseg)')
        self.out_origin = bool(out_origin)
        self.output_cls_token = bool(output_cls_token)
        self.norm_eval = bool(norm_eval)
        self.with_cp = with_cp
        self.window_size = to_2tuple(window_size, 'window_size') if window_size else None
        self.global_attn_indexes = self._parse_global_attn_indexes(global_attn_indexes)
        if self.window_size is not None and with_cls_token:
            raise ValueError('windowed attention (window_size) works on the patch grid only: set '
                             'with_cls_token=False (a checkpoint cls token and its PE row are dropped on load)')
        self.out_indices = self._parse_out_indices(out_indices)

        self.patch_embed = PatchEmbed(in_channels, embed_dims, patch_size, bias=patch_bias)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, embed_dims)) if with_cls_token else None
        self.dist_token = nn.Parameter(torch.zeros(1, 1, embed_dims)) if with_dist_token else None
        self.pos_drop = nn.Dropout(drop_rate)

        dpr = linear_drop_path_rates(drop_path_rate, num_layers)
        self.blocks = nn.ModuleList()
        for i in range(num_layers):
            windowed = self.window_size is not None and i not in self.global_attn_indexes
            self.blocks.append(ViTBlock(
                embed_dims, num_heads, self.mlp_ratio, qkv_bias, drop_rate, attn_drop_rate, dpr[i], norm_eps,
                window_size=self.window_size if windowed else None,
                num_prefix_tokens=0 if windowed else self.num_prefix_tokens))
        # pos_embed.0 (abs / sincos, with prefix rows), pos_block.0 (PEG after block 0), rel_pos_bias.0.{i},
        # rope: layers/pos_encoding.py
        self.pos_encoding = build_pos_encoding(
            pe_type, [StageSpec(embed_dims, num_heads, self.grid_size,
                                tuple(BlockSpec(window_size=b.window_size) for b in self.blocks),
                                num_prefix_tokens=self.num_prefix_tokens)],
            interpolation=interpolate_mode, antialias=antialias)
        self.pos_encoding.attach(self)
        self.norm = nn.LayerNorm(embed_dims, eps=norm_eps) if final_norm else None

        if out_type == 'sfp':
            for level in self.out_indices:
                name, _ = SFP_LEVELS[level]
                self.add_module(name, self._make_sfp_level(level, embed_dims, norm_eps))
            self.out_channels = tuple((embed_dims // 4, embed_dims // 2, embed_dims, embed_dims)[i]
                                      for i in self.out_indices)
        else:
            self.out_channels = (embed_dims,) * (len(self.out_indices) + int(self.out_origin))
        self._init_vit_weights()

    # ----------------------------------------------------------------------------------------- config parsing
    def _parse_arch(self, arch: Union[str, dict]) -> dict:
        if isinstance(arch, str):
            if arch not in self.arch_zoo:
                raise ValueError(f'arch={arch!r} is not a preset; accepted: {", ".join(map(repr, self.arch_zoo))} '
                                 f'or a dict with keys {self.arch_keys}')
            return dict(self.arch_zoo[arch])
        if not isinstance(arch, dict):
            raise ValueError(f'arch must be a preset name or a dict, got {arch!r}')
        unknown = set(arch) - set(self.arch_keys)
        required = {'embed_dims', 'num_layers', 'num_heads'}
        if unknown or not required <= set(arch):
            raise ValueError(f'arch dict {arch} must have keys {sorted(required)} and may have mlp_ratio; '
                             f'unknown: {sorted(unknown)}, missing: {sorted(required - set(arch))}')
        parsed = {'mlp_ratio': 4.0, **arch}
        for key in ('embed_dims', 'num_layers', 'num_heads'):
            if isinstance(parsed[key], bool) or not isinstance(parsed[key], int) or parsed[key] <= 0:
                raise ValueError(f'arch[{key!r}] must be a positive int, got {parsed[key]!r}')
        return parsed

    @staticmethod
    def _parse_norm_cfg(norm_cfg: Optional[dict]) -> float:
        if norm_cfg is None:
            return 1e-6
        if not isinstance(norm_cfg, dict) or norm_cfg.get('type') != 'LN' or set(norm_cfg) - {'type', 'eps'}:
            raise ValueError(f"norm_cfg must be dict(type='LN'[, eps=...]) (LayerNorm), got {norm_cfg!r}")
        return float(norm_cfg.get('eps', 1e-5))

    def _parse_global_attn_indexes(self, indexes: Optional[Sequence[int]]) -> Tuple[int, ...]:
        if self.window_size is None:
            if indexes:
                raise ValueError('global_attn_indexes needs window_size (the other blocks are windowed)')
            return tuple(range(self.num_layers))
        if indexes is None:
            step = self.num_layers / 4
            return tuple(sorted({max(int(round(step * (k + 1))) - 1, 0) for k in range(4)}))
        indexes = tuple(indexes)
        bad = [i for i in indexes if isinstance(i, bool) or not isinstance(i, int) or not 0 <= i < self.num_layers]
        if bad:
            raise ValueError(f'global_attn_indexes {bad} must be block indices in [0, {self.num_layers})')
        return tuple(sorted(set(indexes)))

    def _parse_out_indices(self, out_indices: Optional[Union[int, Sequence[int]]]) -> Tuple[int, ...]:
        if out_indices is None:
            return (0, 1, 2, 3) if self.out_type == 'sfp' else (self.num_layers - 1,)
        indices = (out_indices,) if isinstance(out_indices, int) else tuple(out_indices)
        count = len(SFP_LEVELS) if self.out_type == 'sfp' else self.num_layers
        what = 'pyramid levels (0: stride 4 ... 3: stride 32)' if self.out_type == 'sfp' else 'block indices'
        if not indices or any(isinstance(i, bool) or not isinstance(i, int) or not -count <= i < count
                              for i in indices):
            raise ValueError(f'out_indices={out_indices!r} must be {what} in [{-count}, {count}) for '
                             f'out_type={self.out_type!r}')
        normalised = tuple(i % count for i in indices)
        if len(set(normalised)) != len(normalised) or list(normalised) != sorted(normalised):
            raise ValueError(f'out_indices={out_indices!r} must be increasing without repeats')
        return normalised

    # ----------------------------------------------------------------------------------------- building
    @staticmethod
    def _make_sfp_level(level: int, embed_dims: int, norm_eps: float) -> nn.Module:
        c = embed_dims
        if level == 0:
            return nn.Sequential(nn.ConvTranspose2d(c, c // 2, 2, 2), LayerNorm2d(c // 2, eps=norm_eps), nn.GELU(),
                                 nn.ConvTranspose2d(c // 2, c // 4, 2, 2))
        if level == 1:
            return nn.ConvTranspose2d(c, c // 2, 2, 2)
        if level == 2:
            return nn.Identity()
        return nn.MaxPool2d(2, 2, ceil_mode=True)

    def _init_vit_weights(self) -> None:
        """timm's ViT initialisation: truncated normal (std 0.02) linear weights, zero biases."""
        for block in self.blocks:
            for m in block.modules():
                if isinstance(m, nn.Linear):
                    nn.init.trunc_normal_(m.weight, std=0.02)
                    if m.bias is not None:
                        nn.init.zeros_(m.bias)
        if self.cls_token is not None:
            nn.init.normal_(self.cls_token, std=1e-6)
        if self.dist_token is not None:
            nn.init.trunc_normal_(self.dist_token, std=0.02)

    def _freeze_stages(self) -> None:
        if self.frozen_stages >= 0:
            self.freeze(self.patch_embed)
            for token in (self.cls_token, self.dist_token):
                if token is not None:
                    token.requires_grad = False
            self.pos_encoding.freeze_at(0)
        for i in range(min(self.frozen_stages, self.num_layers)):
            self.freeze(self.blocks[i])
            for j in ((-1, 0) if i == 0 else (i,)):
                self.pos_encoding.freeze_at(0, j)
        if self.frozen_stages == self.num_layers and self.norm is not None:
            self.freeze(self.norm)

    # ----------------------------------------------------------------------------------------- forward
    def _to_map(self, x: torch.Tensor, hw_shape: Tuple[int, int]) -> torch.Tensor:
        b, _, c = x.shape
        # B, p + H*W, C -> B, C, H, W
        return x[:, self.num_prefix_tokens:].reshape(b, hw_shape[0], hw_shape[1], c).permute(0, 3, 1, 2)

    def _featmap_output(self, x: torch.Tensor, hw_shape: Tuple[int, int]) -> Union[torch.Tensor, list]:
        """One 'featmap' output: the B, C, H, W map, or [map, B, C cls token] with output_cls_token (mmseg)."""
        out = self._to_map(x, hw_shape).contiguous()
        return [out, x[:, 0]] if self.output_cls_token else out

    def forward(self, x: torch.Tensor) -> Tuple[torch.Tensor, ...]:
        """x: (B, in_channels, H, W). Returns the maps of `out_indices` (see the class docstring)."""
        img_hw = x.shape[-2:]
        x, hw_shape = self.patch_embed(x)  # B, C_in, H, W -> B, h*w, C
        prefix = [t.expand(x.shape[0], -1, -1) for t in (self.cls_token, self.dist_token) if t is not None]
        if prefix:  # B, p + h*w, C: cls, then dist, then the grid
            x = torch.cat(prefix + [x], dim=1)
        pe = self.pos_encoding
        ctx = pe.prepare(0, hw_shape, x)  # this forward's resampled table etc.
        x = self.pos_drop(pe.add_to_tokens(x, hw_shape, self.num_prefix_tokens, ctx))
        x = pe.after_block(x, hw_shape, -1, ctx)

        outs = [self._featmap_output(x, hw_shape)] if self.out_origin else []  # the embedded input (mmseg)
        # 'featmap' stops after the last block it returns (later blocks would be computed for nothing)
        depth = self.out_indices[-1] + 1 if self.out_type == 'featmap' else self.num_layers
        for i, block in enumerate(self.blocks[:depth]):
            if self.with_cp and x.requires_grad:
                x = cp.checkpoint(block, x, hw_shape, pe.block(ctx, i), use_reentrant=False)
            else:
                x = block(x, hw_shape, pe.block(ctx, i))
            x = pe.after_block(x, hw_shape, i, ctx)
            if i == self.num_layers - 1 and self.norm is not None:
                x = self.norm(x)
            if self.out_type == 'featmap' and i in self.out_indices:
                outs.append(self._featmap_output(x, hw_shape))
        if self.out_type == 'featmap':
            return tuple(outs)

        feat = self._to_map(x, hw_shape)  # B, C, ceil(H/p), ceil(W/p)
        for level in self.out_indices:
            name, scale = SFP_LEVELS[level]
            out = getattr(self, name)(feat)
            if scale > 1:  # crop the upsampled grid back to ceil(H/s) x ceil(W/s)
                f = int(scale)
                out = out[..., :-(-img_hw[0] * f // self.patch_size), :-(-img_hw[1] * f // self.patch_size)]
            outs.append(out.contiguous())
        return tuple(outs)
