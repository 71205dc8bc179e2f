"""Checkpoint formats of Twins-PCPVT / CPVT-v2 ("Twins", arXiv:2104.13840) for the `CPVTv2` backbone.

'timm': timm `twins_pcpvt_*` and the official Meituan-AutoML/Twins releases (the same keys: timm
    loads the official files without a filter; PCPVT deletes PVT's `pos_embeds` and `cls_token`),
    and vitpe_mm's own state dicts. Our names are timm's, so the map is the identity except the
    classifier `head.*` (dropped) and, for a model built with other options, the PEG and final norm
    slots (`pos_block.{i}` -> `pos_block.{i}.0` for peg_position='every_block'; `norm` <->
    `norm_list.{last}` by the model's norm_after_stage; the final `norm` is dropped with the head for
    norm_after_stage=False). Other keys the model has no slot for (a PEG into pe_type='none', stage
    norms into a model without them) are left to the loader, which refuses them unless
    allow_unexpected=True.
'mmseg': mmseg's `PCPVT` (and `tools/model_converters/twins2mmseg.py` output): `patch_embeds.{i}.projection`,
    `layers.{i}.{j}.attn.attn.in_proj_*` (q, k, v stacked: our `q` is the first C rows, `kv` the rest),
    `attn.attn.out_proj`, `ffn.layers.0.0` / `ffn.layers.1`, `position_encodings.{i}.proj`, `norm_list.{i}`.

A format named explicitly that the keys do not fit (`format='mmseg'` for a timm file) raises a CheckpointError.
Keys outside a format's layout are passed on unchanged: the loader refuses them by name as keys the model does
not have, unless allow_unexpected=True (then they are logged and ignored, as for the other families).
"""
import logging
import re
from typing import Callable, List, Mapping, Optional, Tuple

import torch
import torch.nn as nn

from .loader import CheckpointError, StateDict, formats_for, register_format

logger = logging.getLogger('vitpe_mm')

FAMILY = 'cpvt'

_SUFFIX = r'(weight|bias)'
# Our (= timm/official) layout, with the slots vitpe_mm adds for other PE types and norm placements.
_TIMM_KEYS = [re.compile(p) for p in (
    rf'patch_embeds\.\d+\.(proj|norm)\.{_SUFFIX}',
    rf'blocks\.\d+\.\d+\.(norm1|norm2|attn\.(q|kv|sr|norm|proj)|mlp\.(fc1|fc2))\.{_SUFFIX}',
    r'rel_pos_bias\.\d+\.\d+\.relative_position_bias_table',
    rf'pos_block\.\d+\.(\d+\.)?proj\.0\.{_SUFFIX}',
    r'pos_embed\.\d+\.pos_embed',
    rf'(norm|norm_list\.\d+)\.{_SUFFIX}',
)]

# mmseg PCPVT key -> our key (regex, replacement); in_proj is split separately.
_MMSEG_MAP: List[Tuple[re.Pattern, str]] = [(re.compile(p), r) for p, r in (
    (rf'patch_embeds\.(\d+)\.projection\.{_SUFFIX}', r'patch_embeds.\1.proj.\2'),
    (rf'patch_embeds\.(\d+)\.norm\.{_SUFFIX}', r'patch_embeds.\1.norm.\2'),
    (rf'layers\.(\d+)\.(\d+)\.(norm1|norm2)\.{_SUFFIX}', r'blocks.\1.\2.\3.\4'),
    (rf'layers\.(\d+)\.(\d+)\.attn\.attn\.out_proj\.{_SUFFIX}', r'blocks.\1.\2.attn.proj.\3'),
    (rf'layers\.(\d+)\.(\d+)\.attn\.(sr|norm)\.{_SUFFIX}', r'blocks.\1.\2.attn.\3.\4'),
    (rf'layers\.(\d+)\.(\d+)\.ffn\.layers\.0\.0\.{_SUFFIX}', r'blocks.\1.\2.mlp.fc1.\3'),
    (rf'layers\.(\d+)\.(\d+)\.ffn\.layers\.1\.{_SUFFIX}', r'blocks.\1.\2.mlp.fc2.\3'),
    (rf'position_encodings\.(\d+)\.proj\.{_SUFFIX}', r'pos_block.\1.proj.0.\2'),
    (rf'norm_list\.(\d+)\.{_SUFFIX}', r'norm_list.\1.\2'),
    (rf'norm\.{_SUFFIX}', r'norm.\1'),
)]
_MMSEG_IN_PROJ = re.compile(r'layers\.(\d+)\.(\d+)\.attn\.attn\.in_proj_(weight|bias)')


# vitpe_mm's names before one PE interface (layers/pos_encoding.py) -> today's
_LEGACY_MAP: List[Tuple[re.Pattern, str]] = [(re.compile(p), r) for p, r in (
    (r'pos_embeds\.(\d+)\.pos_embed', r'pos_embed.\1.pos_embed'),
    (r'blocks\.(\d+)\.(\d+)\.attn\.rel_pos_bias\.relative_position_bias_table',
     r'rel_pos_bias.\1.\2.relative_position_bias_table'),
)]


def _is_head(key: str) -> bool:
    return key.startswith('head.')


def _check_layout(state: Mapping[str, torch.Tensor], fmt: str, detect: Callable[[Mapping[str, torch.Tensor]], bool],
                  unknown: List[str]) -> None:
    """Refuses a state dict that is not in the format at all; keys outside the layout are logged and left to the
    loader (refused there unless allow_unexpected=True)."""
    if not detect(state):
        raise CheckpointError(
            f'the checkpoint is not in the {fmt} Twins-PCPVT layout (first keys: {", ".join(sorted(state)[:8])}). '
            f'Is this a PCPVT checkpoint (not SVT / PVT)? Known formats: {", ".join(formats_for(FAMILY))}.')
    if unknown:
        logger.info('%d key(s) are not part of the %s Twins-PCPVT layout: %s', len(unknown), fmt,
                    ', '.join(sorted(unknown)[:10]))


def _fit_to_model(state: StateDict, model: nn.Module) -> StateDict:
    """Moves the PEG and final-norm entries into the slots the model's options use."""
    if getattr(model, 'peg_position', None) == 'every_block' and getattr(model, 'pos_block', None) is not None:
        moved = {}
        for key, value in state.items():
            m = re.fullmatch(r'pos_block\.(\d+)\.proj\.0\.(weight|bias)', key)
            moved[f'pos_block.{m[1]}.0.proj.0.{m[2]}' if m else key] = value
        state = moved
    blocks = getattr(model, 'blocks', None)
    if blocks is None:
        return state
    last = f'norm_list.{len(blocks) - 1}.'
    norm_after_stage = getattr(model, 'norm_after_stage', None)
    if norm_after_stage is True and 'norm.weight' in state and last + 'weight' not in state:
        state = {(last + k[len('norm.'):] if k.startswith('norm.') else k): v for k, v in state.items()}
    elif norm_after_stage == 'last' and 'norm.weight' not in state and last + 'weight' in state:
        state = {('norm.' + k[len(last):] if k.startswith(last) else k): v for k, v in state.items()}
    elif norm_after_stage is False:
        # The ImageNet final norm feeds the classifier; a model without stage norms (mmseg's PCPVT
        # configs) has no use for it, like the head.
        state = {k: v for k, v in state.items() if not k.startswith('norm.')}
    return state


def detect_timm(state: Mapping[str, torch.Tensor]) -> bool:
    return 'patch_embeds.0.proj.weight' in state and any(
        re.fullmatch(r'blocks\.\d+\.\d+\.attn\.q\.weight', k) for k in state)


def convert_timm(state: StateDict, model: nn.Module) -> StateDict:
    # classifier: not part of a backbone; our names of before the PE interface renamed
    out = {_map_key(k, _LEGACY_MAP) or k: v for k, v in state.items() if not _is_head(k)}
    _check_layout(state, 'timm', detect_timm, [k for k in out if not any(p.fullmatch(k) for p in _TIMM_KEYS)])
    return _fit_to_model(out, model)


def detect_mmseg(state: Mapping[str, torch.Tensor]) -> bool:
    return any(_MMSEG_IN_PROJ.fullmatch(k) for k in state) or 'patch_embeds.0.projection.weight' in state


def _map_key(key: str, table: List[Tuple[re.Pattern, str]]) -> Optional[str]:
    for pattern, repl in table:
        if pattern.fullmatch(key):
            return pattern.sub(repl, key)
    return None


def convert_mmseg(state: StateDict, model: nn.Module) -> StateDict:
    out, unknown = {}, []
    for key, value in state.items():
        if _is_head(key):
            continue
        m = _MMSEG_IN_PROJ.fullmatch(key)
        if m:
            # 3C(, C) stacked q, k, v -> q: first C rows; kv: k and v rows, in timm's kv order.
            dims = value.shape[0] // 3
            if value.shape[0] != 3 * dims:
                raise CheckpointError(f'{key}: expected 3*C rows (q, k, v stacked), got shape {tuple(value.shape)}')
            prefix = f'blocks.{m[1]}.{m[2]}.attn.'
            out[prefix + 'q.' + m[3]] = value[:dims]
            out[prefix + 'kv.' + m[3]] = value[dims:]
            continue
        new = _map_key(key, _MMSEG_MAP)
        if new is None:
            unknown.append(key)
        out[key if new is None else new] = value
    _check_layout(state, 'mmseg', detect_mmseg, unknown)
    return _fit_to_model(out, model)


register_format(FAMILY, 'timm', detect_timm, convert_timm)
register_format(FAMILY, 'mmseg', detect_mmseg, convert_mmseg)
