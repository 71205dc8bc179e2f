"""Swin Transformer checkpoint formats -> SwinRPB keys ("Swin Transformer", arXiv:2103.14030).

SwinRPB follows the official Microsoft layout (`layers.{i}.blocks.{j}`, `layers.{i}.downsample` at the end
of stage i, `patch_embed.proj`), so the key maps are short:

- 'timm': timm 1.0 `SwinTransformer` (downsample at the start of stage i+1, `head.fc`, see timm's
  `checkpoint_filter_fn`).
- 'official': the Microsoft release (`attn_mask` / `relative_position_index` buffers in the file, `head`),
  and its detection release (official block keys plus `norm{i}` output norms).
- 'mmdet': MMDetection's (and MMSegmentation's, same keys) SwinTransformer: `stages`, `attn.w_msa`,
  `ffn.layers`, `patch_embed.projection`, and patch merging on `nn.Unfold`, whose 4C input channels are
  ordered (C, kh, kw) instead of the official [x0, x1, x2, x3] blocks: reordered back here (the inverse
  of mmdet's `swin_converter`). 'mmseg' names the same converter explicitly.

Our own keys ('vitpe_mm') load without conversion (vitpe_mm.checkpoint.loader); a checkpoint of ours with
keys the model lacks is read by the 'official' map, which leaves our keys as they are.

Everywhere: the relative-bias table of block j of stage i moves to `rel_pos_bias.{i}.{j}.` (resampled on load
by the module for another window), an absolute PE `absolute_pos_embed` to `pos_embed.0.pos_embed` (resampled for
another grid; layers/pos_encoding.py names every PE the same on all backbones; vitpe_mm's names from before that,
`attn.relative_position_bias.`, `absolute_pos_embed.pos_embed`, `layers.{i}.pos_block.`, are renamed too), the
classifier's final `norm` becomes the last stage's output norm `norm{last}` (it normalises exactly that stage's
output), and classification heads, derived buffers
and the weights of stages the model does not build (after its last out index) are dropped.
"""
import re
from typing import Mapping, Optional

import torch
import torch.nn as nn

from .loader import StateDict, register_format

FAMILY = 'swin'
_DROPPED = re.compile(r'(^head\.|\.relative_position_index$|\.attn_mask$)')
# official / timm / mmdet (after renaming) bias tables, and ours before the PE interface (`.relative_position_bias.`)
_BIAS_TABLE = re.compile(r'layers\.(\d+)\.blocks\.(\d+)\.attn\.'
                         r'(?:relative_position_bias\.)?relative_position_bias_table')
_UNFOLD_TO_OFFICIAL = [0, 2, 1, 3]  # (kh, kw) row-major -> x0 (0,0), x1 (1,0), x2 (0,1), x3 (1,1)


def _is_swin_v2(state: Mapping[str, torch.Tensor]) -> bool:
    return any('logit_scale' in k or 'cpb_mlp' in k for k in state)


def _has_blocks(state: Mapping[str, torch.Tensor], prefix: str) -> bool:
    return any(k.startswith(prefix) and '.blocks.' in k for k in state)


def _detect_timm(state: Mapping[str, torch.Tensor]) -> bool:
    downsample_stages = {int(m.group(1)) for m in (re.match(r'layers\.(\d+)\.downsample\.', k) for k in state) if m}
    return (_has_blocks(state, 'layers.') and not _is_swin_v2(state) and bool(downsample_stages)
            and 0 not in downsample_stages)


def _detect_official(state: Mapping[str, torch.Tensor]) -> bool:
    return _has_blocks(state, 'layers.') and not _is_swin_v2(state)


def _detect_mmdet(state: Mapping[str, torch.Tensor]) -> bool:
    return _has_blocks(state, 'stages.') and (
        any('.attn.w_msa.' in k for k in state) or 'patch_embed.projection.weight' in state)


def _drop_unbuilt_stages(state: StateDict, model: nn.Module) -> StateDict:
    """Drops stages after the model's last out index (not built) and the patch merging that would feed them."""
    num_built = len(model.layers)

    def built(key: str) -> bool:
        m = re.match(r'(?:layers|rel_pos_bias|pos_block)\.(\d+)\.', key)
        if m is None:
            return True
        i = int(m.group(1))
        return i < num_built and not (i == num_built - 1 and key.startswith(f'layers.{i}.downsample.'))

    return {k: v for k, v in state.items() if built(k)}


def _final_norm_key(key: str, model: nn.Module) -> Optional[str]:
    """The classifier's final `norm` follows the last stage of the full arch: it becomes that stage's output
    norm when the model returns that stage; None (dropped) otherwise."""
    final_norm = f'norm{len(model.embed_dims) - 1}'
    return final_norm + key[len('norm'):] if hasattr(model, final_norm) else None


def _convert_official(state: StateDict, model: nn.Module) -> StateDict:
    out = {}
    for k, v in state.items():
        if _DROPPED.search(k):
            continue
        m = _BIAS_TABLE.fullmatch(k)
        if m:
            k = f'rel_pos_bias.{m[1]}.{m[2]}.relative_position_bias_table'
        elif k in ('absolute_pos_embed', 'absolute_pos_embed.pos_embed'):
            k = 'pos_embed.0.pos_embed'
        elif re.match(r'layers\.\d+\.pos_block\.', k):
            k = re.sub(r'^layers\.(\d+)\.pos_block\.', r'pos_block.\1.', k)
        elif k in ('norm.weight', 'norm.bias'):
            k = _final_norm_key(k, model)
            if k is None:
                continue
        out[k] = v
    return _drop_unbuilt_stages(out, model)


def _convert_timm(state: StateDict, model: nn.Module) -> StateDict:
    # timm merges patches at the start of stage i+1; the official layout (ours) at the end of stage i.
    moved = {re.sub(r'^layers\.(\d+)\.downsample\.', lambda m: f'layers.{int(m.group(1)) - 1}.downsample.', k): v
             for k, v in state.items()}
    return _convert_official(moved, model)


def _unfold_to_official(v: torch.Tensor) -> torch.Tensor:
    """Reorders the last dim of a patch-merging weight from nn.Unfold's (C, kh, kw) to [x0, x1, x2, x3] x C."""
    lead, four_c = v.shape[:-1], v.shape[-1]
    v = v.reshape(*lead, four_c // 4, 4).transpose(-1, -2)  # ..., C, 4 -> ..., 4 (kh, kw), C
    return v[..., _UNFOLD_TO_OFFICIAL, :].reshape(*lead, four_c)


_MMDET_RENAMES = (('.attn.w_msa.', '.attn.'), ('.ffn.layers.0.0.', '.mlp.fc1.'), ('.ffn.layers.1.', '.mlp.fc2.'))


def _convert_mmdet(state: StateDict, model: nn.Module) -> StateDict:
    """mmdet/mmseg keys -> the official layout (the inverse of mmdet's `swin_converter`) -> ours."""
    official = {}
    for k, v in state.items():
        if k.startswith('patch_embed.projection.'):
            k = k.replace('patch_embed.projection.', 'patch_embed.proj.', 1)
        elif k.startswith('stages.'):
            k = 'layers.' + k[len('stages.'):]
            for old, new in _MMDET_RENAMES:
                if old in k:
                    k = k.replace(old, new)
                    break
            if re.search(r'\.downsample\.(reduction\.weight|norm\.weight|norm\.bias)$', k):
                v = _unfold_to_official(v)
        official[k] = v
    return _convert_official(official, model)


register_format(FAMILY, 'timm', _detect_timm, _convert_timm)
register_format(FAMILY, 'official', _detect_official, _convert_official)
register_format(FAMILY, 'mmdet', _detect_mmdet, _convert_mmdet)
# MMSegmentation's Swin has the same keys: auto-detection reports 'mmdet'; 'mmseg' can be named explicitly.
register_format(FAMILY, 'mmseg', lambda state: False, _convert_mmdet)
