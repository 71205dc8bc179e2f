"""Swin Transformer backbone with a switchable positional encoding (default: learned relative position bias).

"Swin Transformer: Hierarchical Vision Transformer using Shifted Windows" (Liu et al., arXiv:2103.14030):
4x4 patch embedding, four stages of window attention with shifted windows every other block, 2x2 patch
merging between stages, and a LayerNorm on every returned feature map (as MMDetection's Swin).
"""
from typing import Dict, Optional, Sequence, Tuple, Union

import torch
import torch.nn as nn
import torch.nn.functional as F
import torch.utils.checkpoint as cp
from mmengine.registry import MODELS

from ..layers import (
    BlockPE,
    BlockSpec,
    DropPath,
    Mlp,
    MultiheadSelfAttention,
    PatchEmbed,
    PEContext,
    PositionalEncodings,
    StageSpec,
    attention_with_bias,
    build_pos_encoding,
    linear_drop_path_rates,
    padded_size,
    shifted_window_attn_mask,
    to_2tuple,
    window_token_positions,
)
from ..layers._compat import is_compiling
from ..layers.attention import rotate_qk
from ..layers.window import tokens_from_windows, window_partition, window_reverse, window_rows, windows_from_qkv
from .base import PEBackbone, init_linear_and_norm
from .toolbox_args import SWIN_ARGS, with_presets

Size2 = Union[int, Sequence[int]]

# embed_dims of stage 0 (doubled by every patch merging), blocks and heads per stage.
ARCH_SETTINGS: Dict[str, Dict[str, object]] = {
    'tiny': dict(embed_dims=96, depths=(2, 2, 6, 2), num_heads=(3, 6, 12, 24)),
    'small': dict(embed_dims=96, depths=(2, 2, 18, 2), num_heads=(3, 6, 12, 24)),
    'base': dict(embed_dims=128, depths=(2, 2, 18, 2), num_heads=(4, 8, 16, 32)),
    'large': dict(embed_dims=192, depths=(2, 2, 18, 2), num_heads=(6, 12, 24, 48)),
}
ARCH_KEYS = ('embed_dims', 'depths', 'num_heads')


def stage_window_and_shift(hw_shape: Tuple[int, int], window_size: Tuple[int, int], shifted: bool,
                           clamp_window: bool) -> Tuple[Tuple[int, int], Tuple[int, int]]:
    """Window and shift a block uses on an H x W map.

    With `clamp_window` (official Swin / timm), an axis whose map side is not larger than the window gets a
    window of that side and no shift (per axis, as timm; for square maps this is the official rule
    `window = min(resolution)`, `shift = 0`). Without it (MMDetection / MMSegmentation Swin), the window
    and the shift are kept and the map is padded up to the window.
    """
    shift = tuple(m // 2 if shifted else 0 for m in window_size)
    if not clamp_window:
        return window_size, shift
    window = tuple(min(s, m) for s, m in zip(hw_shape, window_size))
    shift = tuple(0 if s <= m else t for s, m, t in zip(hw_shape, window_size, shift))
    return window, shift


class WindowAttention(MultiheadSelfAttention):
    """Window multi-head self-attention (W-MSA / SW-MSA); the positional encoding (a relative position bias, a
    rotation) comes from the block's `BlockPE` (layers/pos_encoding.py).

    Parameter names follow the official Swin code (`qkv`, `proj`); the bias tables live in the backbone's
    `rel_pos_bias.{stage}.{block}` (the converters move them there).

    Args:
        embed_dims: channels C.
        num_heads: heads.
        window_size: the window (Mh, Mw) of the block.
        **kwargs: qkv_bias, qk_scale, attn_drop_rate, proj_drop_rate of `MultiheadSelfAttention`.
    """

    def __init__(self, embed_dims: int, num_heads: int, window_size: Tuple[int, int], **kwargs) -> None:
        super().__init__(embed_dims, num_heads, **kwargs)
        self.window_size = window_size

    @staticmethod
    def window_bias(pe: Optional[BlockPE], window_size: Tuple[int, int],
                    shift_mask: Optional[torch.Tensor]) -> Optional[torch.Tensor]:
        """Additive attention bias for windows of `window_size`: (nH, N, N), or (nW, nH|1, N, N) with a mask."""
        bias = pe.attn_bias(window_size, window_size) if pe is not None else None  # nH, N, N
        if shift_mask is None:
            return bias
        shift_mask = shift_mask.unsqueeze(1)  # nW, N, N -> nW, 1, N, N
        return shift_mask if bias is None else bias + shift_mask  # nW, nH, N, N

    @staticmethod
    def rotate(q: torch.Tensor, k: torch.Tensor, pe: Optional[BlockPE], hw_shape: Tuple[int, int],
               window_size: Tuple[int, int], shift_size: Tuple[int, int]) -> Tuple[torch.Tensor, torch.Tensor]:
        """q, k (B*nW, nH, N, d) rotated by the global positions of their window slots (a rotary PE), else as given."""
        if pe is None or not pe.rotates:
            return q, k
        pos = window_token_positions(hw_shape, window_size, shift_size, q.device)  # nW, N, 2
        return rotate_qk(q, k, pe.rotation(pos, pos))

    def forward_map(self, x: torch.Tensor, hw_shape: Tuple[int, int], window_size: Tuple[int, int],
                    shift_size: Tuple[int, int], pe: Optional[BlockPE] = None) -> torch.Tensor:
        """W-MSA / SW-MSA on B, H*W, C (normalised) tokens of the grid `hw_shape`. Returns B, H*W, C.

        Same as padding the map at the bottom/right to window multiples (zeros), rolling it by (-sh, -sw),
        attending within windows and undoing all three, but the token <-> window moves are two cached
        gathers, and the qkv / output projections run on the real tokens only (a zero padding token's
        q, k, v are the qkv bias).
        """
        b, _, c = x.shape
        hp, wp = padded_size(hw_shape, window_size)
        mask = None
        if shift_size != (0, 0):
            mask = shifted_window_attn_mask((hp, wp), window_size, shift_size, x.device, x.dtype)  # nW, N, N
        if is_compiling():
            # torch.compile: the same computation as plain pad / roll / partition (traceable, and inductor
            # fuses the moves), instead of the cached index maps that are built outside the graph.
            return self.proj_drop(self.proj(self._windows_plain(x, hw_shape, window_size, shift_size, mask, pe)))
        rows = window_rows(hw_shape, window_size, shift_size, self.num_heads, x.device)
        # B, H*W, 3C -> 3 x B*nW, nH, N, d
        q, k, v = windows_from_qkv(self.qkv(x), self.qkv.bias, rows, self.num_heads)
        q, k = self.rotate(q, k, pe, hw_shape, window_size, shift_size)
        out = attention_with_bias(q, k, v, self.window_bias(pe, window_size, mask),
                                  self.attn_drop_rate if self.training else 0.0, self.scale)
        out = tokens_from_windows(out, rows, b)  # B*nW, nH, N, d -> B, H*W, C
        return self.proj_drop(self.proj(out))

    def _windows_plain(self, x: torch.Tensor, hw_shape: Tuple[int, int], window_size: Tuple[int, int],
                       shift_size: Tuple[int, int], mask: Optional[torch.Tensor],
                       pe: Optional[BlockPE] = None) -> torch.Tensor:
        """W-MSA / SW-MSA before the output projection, written as pad -> roll -> partition -> attention ->
        reverse -> roll back -> crop (the reference code); `forward_map` runs it under torch.compile."""
        b, _, c = x.shape
        (h, w), (sh, sw) = hw_shape, shift_size
        m = x.view(b, h, w, c)
        hp, wp = padded_size(hw_shape, window_size)
        if (hp, wp) != (h, w):
            m = F.pad(m, (0, 0, 0, wp - w, 0, hp - h))  # zero tokens: their q, k, v are the qkv bias
        if (sh, sw) != (0, 0):
            m = torch.roll(m, (-sh, -sw), (1, 2))
        windows, _ = window_partition(m, window_size)  # B*nW, N, C
        nw, n = windows.shape[:2]
        q, k, v = self.qkv(windows).view(nw, n, 3, self.num_heads, -1).permute(2, 0, 3, 1, 4).unbind(0)
        q, k = self.rotate(q, k, pe, hw_shape, window_size, shift_size)
        out = attention_with_bias(q, k, v, self.window_bias(pe, window_size, mask),
                                  self.attn_drop_rate if self.training else 0.0, self.scale)
        out = out.transpose(1, 2).reshape(nw, n, c)  # B*nW, nH, N, d -> B*nW, N, C
        m = window_reverse(out, window_size, (hp, wp), (hp, wp))
        if (sh, sw) != (0, 0):
            m = torch.roll(m, (sh, sw), (1, 2))
        return m[:, :h, :w].reshape(b, h * w, c)


class SwinBlock(nn.Module):
    """Pre-norm Swin block: x + W-MSA(norm1(x)) then x + MLP(norm2(x)); odd blocks shift the windows.

    The B, H, W, C map is zero-padded at the bottom/right to window multiples, rolled by (-sh, -sw)
    in shifted blocks (pad first, as the official detection code and MMDetection), cut into windows,
    and put back and cropped after attention.
    """

    def __init__(self, embed_dims: int, num_heads: int, window_size: Tuple[int, int], shifted: bool,
                 mlp_ratio: float = 4.0, qkv_bias: bool = True, qk_scale: Optional[float] = None,
                 drop_rate: float = 0.0, attn_drop_rate: float = 0.0, drop_path_rate: float = 0.0,
                 clamp_window: bool = True) -> None:
        super().__init__()
        self.window_size = window_size
        self.shifted = shifted
        self.clamp_window = clamp_window
        self.norm1 = nn.LayerNorm(embed_dims)
        self.attn = WindowAttention(embed_dims, num_heads, window_size, qkv_bias=qkv_bias,
                                    qk_scale=qk_scale, attn_drop_rate=attn_drop_rate, proj_drop_rate=drop_rate)
        self.drop_path = DropPath(drop_path_rate) if drop_path_rate > 0 else nn.Identity()
        self.norm2 = nn.LayerNorm(embed_dims)
        self.mlp = Mlp(embed_dims, int(embed_dims * mlp_ratio), act_layer=nn.GELU, drop=drop_rate)

    def forward(self, x: torch.Tensor, hw_shape: Tuple[int, int], pe: Optional[BlockPE] = None) -> torch.Tensor:
        """x: B, H*W, C tokens on the grid `hw_shape`; `pe` the block's positional encoding. Returns the same shape."""
        window, shift = stage_window_and_shift(hw_shape, self.window_size, self.shifted, self.clamp_window)
        x = x + self.drop_path(self.attn.forward_map(self.norm1(x), hw_shape, window, shift, pe))
        return x + self.drop_path(self.mlp(self.norm2(x)))


class PatchMerging(nn.Module):
    """2x2 patch merging: concat of the neighbours [x(0,0), x(1,0), x(0,1), x(1,1)] (official order),
    `norm` over 4C, then `reduction` Linear 4C -> 2C. Odd sizes are zero-padded at the bottom/right."""

    def __init__(self, in_channels: int, out_channels: Optional[int] = None, use_norm: bool = True) -> None:
        super().__init__()
        self.in_channels = in_channels
        self.out_channels = out_channels or 2 * in_channels
        self.norm = nn.LayerNorm(4 * in_channels) if use_norm else None
        self.reduction = nn.Linear(4 * in_channels, self.out_channels, bias=False)

    def forward(self, x: torch.Tensor, hw_shape: Tuple[int, int]) -> Tuple[torch.Tensor, Tuple[int, int]]:
        b, _, c = x.shape
        h, w = hw_shape
        x = x.view(b, h, w, c)
        if h % 2 or w % 2:
            x = F.pad(x, (0, 0, 0, w % 2, 0, h % 2))
        ho, wo = (h + 1) // 2, (w + 1) // 2
        # B, 2Ho, 2Wo, C -> B, Ho, Wo, (dx, dy, C) = [x0, x1, x2, x3] -> B, Ho*Wo, 4C
        x = x.view(b, ho, 2, wo, 2, c).permute(0, 1, 3, 4, 2, 5).reshape(b, ho * wo, 4 * c)
        if self.norm is not None:
            x = self.norm(x)
        return self.reduction(x), (ho, wo)


class SwinStage(nn.Module):
    """One stage: `blocks`, then the optional `downsample` patch merging that the next stage consumes (official
    layout: downsample at the END)."""

    def __init__(self, embed_dims: int, depth: int, num_heads: int, window_size: Tuple[int, int],
                 drop_path_rates: Sequence[float], downsample: bool, patch_norm: bool,
                 with_cp: bool = False, **block_kwargs) -> None:
        super().__init__()
        self.with_cp = with_cp
        self.blocks = nn.ModuleList([
            SwinBlock(embed_dims, num_heads, window_size, shifted=j % 2 == 1, drop_path_rate=drop_path_rates[j],
                      **block_kwargs) for j in range(depth)])
        self.downsample = PatchMerging(embed_dims, 2 * embed_dims, patch_norm) if downsample else None

    def forward(self, x: torch.Tensor, hw_shape: Tuple[int, int], pe: Optional[PositionalEncodings] = None,
                ctx: Optional[PEContext] = None) -> torch.Tensor:
        """Runs the blocks (not the downsample) on B, H*W, C tokens, with the positional encoding's hooks."""
        if pe is not None:
            x = pe.after_block(x, hw_shape, -1, ctx)
        for j, block in enumerate(self.blocks):
            block_pe = pe.block(ctx, j) if pe is not None else None
            if self.with_cp and torch.is_grad_enabled():
                x = cp.checkpoint(block, x, hw_shape, block_pe, use_reentrant=False)
            else:
                x = block(x, hw_shape, block_pe)
            if pe is not None:
                x = pe.after_block(x, hw_shape, j, ctx)
        return x


@MODELS.register_module()
class SwinRPB(PEBackbone):
    """Swin Transformer (arXiv:2103.14030) with a switchable positional encoding.

    Returns a tuple of B, C_i, H_i, W_i maps for `out_indices`, each normalised by its own LayerNorm
    `norm{i}` (as MMDetection's Swin). Any input of at least one patch (4x4 by default) works: the
    image, the window grids and odd maps before patch merging are zero-padded at the bottom/right and
    cropped back, so stage i has stride s_i = patch_size * 2**i and ceil(H / s_i) x ceil(W / s_i) tokens.

    Maps not larger than the window: with `clamp_window=True` (default, official Swin and timm) an axis
    whose side is <= the window uses a window of that side and no shift along it; the bias is then the
    crop of the full-window bias (same relative offsets, no resampling; the official code and timm
    instead build a smaller table resampled from the checkpoint when the model is built for that size).
    `clamp_window=False` reproduces MMDetection/MMSegmentation's Swin and the official detection code:
    the window and shift are kept and the map is padded (zeros, unmasked in plain blocks; a shifted
    block's mask keeps the padded band apart). Both agree whenever every map is larger than the window;
    e.g. at 224x224 Swin-T's last map (7x7) is one unshifted window with clamping but a padded, shifted
    one without.

    Positional encodings (`pe_type`):
        - 'rel_bias' (default, the paper's model): learned relative position bias in every window attention
          (`rel_pos_bias.{i}.{j}`).
        - 'abs': Swin's optional absolute PE (`ape`, `pos_embed.0.pos_embed`) added after the patch embedding,
          learned for the `pretrain_img_size` grid and resampled (bicubic) to the input grid; no relative bias.
        - 'abs_nointerp': the same table cropped to the grid (ValueError for a grid larger than it).
        - 'sincos': fixed 2-D sin-cos PE computed for the input grid, added after the patch embedding.
        - 'peg': CPVT's PosConvEncoding (depthwise 3x3, zero padding) after the first block of each stage,
          as CPVT's Swin variant ("Conditional Positional Encodings for Vision Transformers",
          arXiv:2102.10882), `pos_block.{i}`; no relative bias.
        - 'none': no positional information except the zero padding of the windows.
        - a list composes encodings of different kinds (vitpe_mm.layers.pos_encoding): ['rel_bias', 'abs'] is
          mmdet's Swin with `use_abs_pos_embed=True`.

    Args:
        arch: 'tiny', 'small', 'base', 'large' or a dict with all of embed_dims, depths, num_heads.
        pretrain_img_size: image size the absolute PE table is made for ('abs', 'abs_nointerp').
        in_channels: image channels.
        patch_size: patch embedding kernel and stride.
        window_size: attention window (int or (Mh, Mw)); checkpoints trained with another (square) window
            load with their bias tables resampled.
        mlp_ratio: MLP hidden width / embed dims.
        out_indices: stages to return (0-3, negative counts from the end), returned in stage order; a stage
            given twice is an error. Stages after the last one are not built.
        qkv_bias: bias on the qkv projection.
        qk_scale: override of head_dims ** -0.5.
        patch_norm: LayerNorm after the patch embedding and inside patch merging.
        drop_rate: dropout after the PE, in the MLP and after the attention projection.
        attn_drop_rate: dropout on attention weights.
        drop_path_rate: stochastic depth, increasing linearly from 0 over all blocks to this value.
        pe_type: one of vitpe_mm.layers.PE_TYPES or a list of them (above).
        clamp_window: official/timm small-map rule (True) or MMDetection's padding (False), see above.
        with_cp: gradient checkpointing per block (same outputs and gradients, less memory).
        frozen_stages: -1 trains everything; 0 freezes the patch embedding (and absolute PE); i > 0 also
            freezes stages 0..i-1 (with their patch merging and output norms).
        init_cfg: dict(type='Pretrained', checkpoint=PATH[, format='auto'|'official'|'timm'|'mmdet'|...]).

    mmdet / mmseg `SwinTransformer` configs work with only `type='SwinRPB'` (vitpe_mm.models.toolbox_args):
    `embed_dims`, `depths`, `num_heads` are taken at the top level as well as in `arch`, `pretrained=PATH`
    becomes init_cfg Pretrained, `convert_weights` is accepted (checkpoint formats are detected), and
    `strides`, `use_abs_pos_embed`, `act_cfg`, `norm_cfg` are accepted with the values we honour
    ((patch_size, 2, 2, 2), False, GELU, LN). Sizes at the top level mean a config written for the toolboxes:
    `clamp_window` then defaults to False (their padding rule).
    """

    family = 'swin'
    # mmdet / mmseg SwinTransformer's argument names (sizes, strides, pretrained=, ...): models/toolbox_args.py
    toolbox_args = with_presets(SWIN_ARGS, ARCH_SETTINGS)

    def __init__(
        self,
        arch: Union[str, dict] = 'tiny',
        pretrain_img_size: Size2 = 224,
        in_channels: int = 3,
        patch_size: int = 4,
        window_size: Size2 = 7,
        mlp_ratio: float = 4.0,
        out_indices: Sequence[int] = (0, 1, 2, 3),
        qkv_bias: bool = True,
        qk_scale: Optional[float] = None,
        patch_norm: bool = True,
        drop_rate: float = 0.0,
        attn_drop_rate: float = 0.0,
        drop_path_rate: float = 0.1,
        pe_type: str = 'rel_bias',
        clamp_window: bool = True,
        with_cp: bool = False,
        frozen_stages: int = -1,
        init_cfg: Optional[dict] = None,
    ) -> None:
        super().__init__(pe_type, frozen_stages, init_cfg)
        settings = self._parse_arch(arch)
        embed_dims, depths, num_heads = settings['embed_dims'], settings['depths'], settings['num_heads']
        num_stages = len(depths)
        self.window_size = to_2tuple(window_size, 'window_size')
        self.pretrain_img_size = to_2tuple(pretrain_img_size, 'pretrain_img_size')
        self.patch_size = to_2tuple(patch_size, 'patch_size')
        self.out_indices = self._parse_out_indices(out_indices, num_stages)
        if not -1 <= frozen_stages <= num_stages:
            raise ValueError(f'frozen_stages must be in [-1, {num_stages}], got {frozen_stages}')
        if not 0.0 <= drop_path_rate < 1.0:
            raise ValueError(f'drop_path_rate must be in [0, 1), got {drop_path_rate}')
        self.embed_dims = [embed_dims * 2 ** i for i in range(num_stages)]
        for i, (dims, heads) in enumerate(zip(self.embed_dims, num_heads)):
            if dims % heads:
                raise ValueError(f'stage {i}: num_heads={heads} does not divide its {dims} channels')
        self.out_channels = tuple(self.embed_dims[i] for i in self.out_indices)
        self.with_cp = with_cp

        self.patch_embed = PatchEmbed(in_channels, embed_dims, self.patch_size,
                                      norm_layer=nn.LayerNorm if patch_norm else None)
        self.drop_after_pos = nn.Dropout(drop_rate)

        total = sum(depths)
        rates = linear_drop_path_rates(drop_path_rate, total)
        num_built = max(self.out_indices) + 1  # stages after the last returned one would be dead weight
        self.layers = nn.ModuleList()
        for i in range(num_built):
            start = sum(depths[:i])
            self.layers.append(SwinStage(
                self.embed_dims[i], depths[i], num_heads[i], self.window_size, rates[start:start + depths[i]],
                downsample=i < num_built - 1, patch_norm=patch_norm, with_cp=with_cp,
                mlp_ratio=mlp_ratio, qkv_bias=qkv_bias, qk_scale=qk_scale, drop_rate=drop_rate,
                attn_drop_rate=attn_drop_rate, clamp_window=clamp_window))
        # pos_embed.0 (abs / sincos, after the patch embedding), pos_block.{i} (PEG after the first block of each
        # stage), rel_pos_bias.{i}.{j} (windows): layers/pos_encoding.py
        grid = (self.pretrain_img_size[0] // self.patch_size[0], self.pretrain_img_size[1] // self.patch_size[1])
        self.pos_encoding = build_pos_encoding(pe_type, [
            StageSpec(self.embed_dims[i], num_heads[i], (-(-grid[0] // 2 ** i), -(-grid[1] // 2 ** i)),
                      (BlockSpec(window_size=self.window_size),) * depths[i], embeds_patches=i == 0)
            for i in range(num_built)])
        self.pos_encoding.attach(self)
        for i in self.out_indices:
            self.add_module(f'norm{i}', nn.LayerNorm(self.embed_dims[i]))
        self.apply(init_linear_and_norm)  # official Swin / timm initialisation

    @staticmethod
    def _parse_arch(arch: Union[str, dict]) -> Dict[str, object]:
        if isinstance(arch, str):
            if arch not in ARCH_SETTINGS:
                raise ValueError(f'arch={arch!r} is not a Swin preset; accepted: {", ".join(ARCH_SETTINGS)} '
                                 f'or a dict with keys {", ".join(ARCH_KEYS)}')
            return dict(ARCH_SETTINGS[arch])
        if not isinstance(arch, dict):
            raise ValueError(f'arch must be a preset name or a dict, got {arch!r}')
        unknown, missing = set(arch) - set(ARCH_KEYS), set(ARCH_KEYS) - set(arch)
        if unknown or missing:
            raise ValueError(f'arch dict must have exactly the keys {", ".join(ARCH_KEYS)}; '
                             f'unknown: {sorted(unknown)}, missing: {sorted(missing)}')
        depths, num_heads = tuple(arch['depths']), tuple(arch['num_heads'])
        if len(depths) != len(num_heads) or not depths or min(depths) < 1:
            raise ValueError(f'arch depths {depths} and num_heads {num_heads} must be non-empty, of equal '
                             'length, with at least one block per stage')
        if int(arch['embed_dims']) <= 0:
            raise ValueError(f'arch embed_dims must be positive, got {arch["embed_dims"]}')
        return dict(embed_dims=int(arch['embed_dims']), depths=depths, num_heads=num_heads)

    @staticmethod
    def _parse_out_indices(out_indices: Union[int, Sequence[int]], num_stages: int) -> Tuple[int, ...]:
        """Sorted stage indices (negative counts from the end, as CPVTv2); repeats are refused."""
        indices = (out_indices,) if isinstance(out_indices, int) else tuple(out_indices)
        if not indices or any(isinstance(i, bool) or not isinstance(i, int) or not -num_stages <= i < num_stages
                              for i in indices):
            raise ValueError(f'out_indices must be stage indices in [{-num_stages}, {num_stages - 1}], '
                             f'got {out_indices!r}')
        normalised = [i % num_stages for i in indices]
        if len(set(normalised)) != len(normalised):
            raise ValueError(f'out_indices {out_indices!r} name a stage twice; give each stage once')
        return tuple(sorted(normalised))

    def forward(self, x: torch.Tensor) -> Tuple[torch.Tensor, ...]:
        """x: B, C_in, H, W images. Returns B, C_i, ceil(H/s_i), ceil(W/s_i) maps for `out_indices`."""
        if x.dim() == 4 and (x.shape[-2] < self.patch_size[0] or x.shape[-1] < self.patch_size[1]):
            raise ValueError(f'{type(self).__name__} needs an input of at least {self.patch_size[0]}x'
                             f'{self.patch_size[1]} pixels (one patch), got {x.shape[-2]}x{x.shape[-1]}')
        x, hw_shape = self.patch_embed(x)  # B, C, H, W -> B, N, C
        pe = self.pos_encoding
        outs = []
        for i, stage in enumerate(self.layers):
            ctx = pe.prepare(i, hw_shape, x)  # this forward's tables for stage i
            if i == 0:
                x = self.drop_after_pos(pe.add_to_tokens(x, hw_shape, 0, ctx))
            x = stage(x, hw_shape, pe, ctx)
            if i in self.out_indices:
                out = getattr(self, f'norm{i}')(x)
                # B, N, C -> B, C, H, W
                outs.append(out.view(-1, *hw_shape, out.shape[-1]).permute(0, 3, 1, 2).contiguous())
            if stage.downsample is not None:
                x, hw_shape = stage.downsample(x, hw_shape)
        return tuple(outs)

    def _freeze_stages(self) -> None:
        self.freeze(self.patch_embed)
        self.pos_encoding.freeze_at(0)
        self.drop_after_pos.eval()
        for i in range(min(self.frozen_stages, len(self.layers))):
            self.freeze(self.layers[i])
            for j in range(-1, len(self.layers[i].blocks)):
                self.pos_encoding.freeze_at(i, j)
            if i in self.out_indices:
                self.freeze(getattr(self, f'norm{i}'))
