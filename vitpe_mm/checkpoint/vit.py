"""Checkpoint formats of plain ViT / DeiT (arXiv:2010.11929, arXiv:2012.12877) -> `ViTPE` keys.

'timm': timm `VisionTransformer` keys (also the official DeiT releases: the same keys wrapped in `model`,
unwrapped by the loader). 'mmseg': MMSegmentation `VisionTransformer` keys (`patch_embed.projection`,
`layers.{i}.ln1`, `attn.attn.in_proj_weight`, `ffn.layers.0.0`, final norm `ln1`).

Both converters map keys explicitly, then fit the prefix tokens and the PE table to the target model:
classification heads (`head.*`, `head_dist.*`, `fc_norm.*`, `pre_logits.*`) are dropped; a distilled DeiT's
`dist_token` and its PE row are kept for a model built with `with_dist_token=True` (then its features are the
distilled model's own) and dropped with a logged note otherwise (the patch features then no longer see the
distillation token); the cls token and its PE row are dropped for a model without a cls token; a prefix token of
the model that the checkpoint's table has no row for gets a zero row (logged); a PE table is dropped (logged) for
a model that has none; a missing
patch-embedding bias (mmseg's default `patch_bias=False`) becomes zeros. A table made for another square grid
is resampled by the model's `AbsolutePositionEmbedding` load hook. Keys left that the model does not have
(e.g. layer scale `ls1.gamma`, register tokens, mmseg's `pre_ln`) make the loader raise a `CheckpointError`
naming them (or are logged with init_cfg allow_unexpected=True).
"""
import logging
import re
from typing import List, Mapping, Sequence, Tuple

import torch
import torch.nn as nn

from .loader import CheckpointError, StateDict, register_format

logger = logging.getLogger('vitpe_mm')

HEAD_PREFIXES = ('head.', 'head_dist.', 'fc_norm.', 'pre_logits.')
PREFIX_TOKENS = ('cls_token', 'dist_token')  # their order in the token sequence and in the PE table
POS_EMBED = 'pos_embed.0.pos_embed'  # the model's absolute table (layers/pos_encoding.py)

# (pattern, replacement) applied in order with re.sub, first match wins; keys are anchored.
TIMM_KEY_MAP: Tuple[Tuple[str, str], ...] = (
    (r'^pos_embed$', 'pos_embed.0.pos_embed'),
    # vitpe_mm's own names from before one PE interface (layers/pos_encoding.py); CPVT's ViT PEG `pos_block.proj`
    (r'^pos_embed\.pos_embed$', 'pos_embed.0.pos_embed'),
    (r'^pos_block\.proj\.', 'pos_block.0.proj.'),
    (r'^blocks\.(\d+)\.rel_pos_bias\.', r'rel_pos_bias.0.\1.'),
)
MMSEG_KEY_MAP: Tuple[Tuple[str, str], ...] = (
    (r'^patch_embed\.projection\.', 'patch_embed.proj.'),
    (r'^layers\.(\d+)\.ln1\.', r'blocks.\1.norm1.'),
    (r'^layers\.(\d+)\.ln2\.', r'blocks.\1.norm2.'),
    (r'^layers\.(\d+)\.attn\.attn\.in_proj_(weight|bias)$', r'blocks.\1.attn.qkv.\2'),
    (r'^layers\.(\d+)\.attn\.attn\.out_proj\.', r'blocks.\1.attn.proj.'),
    (r'^layers\.(\d+)\.ffn\.layers\.0\.0\.', r'blocks.\1.mlp.fc1.'),
    (r'^layers\.(\d+)\.ffn\.layers\.1\.', r'blocks.\1.mlp.fc2.'),
    (r'^ln1\.', 'norm.'),
    (r'^pos_embed$', 'pos_embed.0.pos_embed'),
)


def _rename(state: StateDict, key_map: Sequence[Tuple[str, str]]) -> StateDict:
    out = {}
    for key, value in state.items():
        for pattern, repl in key_map:
            new, count = re.subn(pattern, repl, key)
            if count:
                key = new
                break
        out[key] = value
    return out


def _fit_to_model(state: StateDict, model: nn.Module, num_prefix_in_pe: int) -> StateDict:
    """Drops heads and fits prefix tokens / PE rows / patch bias / final norm to `model`.

    Args:
        state: checkpoint in our key names; `pos_embed.0.pos_embed` holds `num_prefix_in_pe` leading rows
            (cls, then dist: those of the checkpoint's prefix tokens), the rest is the grid.
    """
    own = model.state_dict()
    notes: List[str] = []
    heads = [k for k in state if k.startswith(HEAD_PREFIXES)]
    for key in heads:
        del state[key]
    if heads:
        logger.info('dropped classification head keys: %s', ', '.join(heads))

    table = state.pop(POS_EMBED, None)
    # the prefix tokens in table order (cls, then dist), of the checkpoint and of the model
    ckpt_tokens = [name for name in PREFIX_TOKENS if name in state]
    model_tokens = [name for name in PREFIX_TOKENS if name in own]
    for name in ckpt_tokens:
        token = state.pop(name)
        if name in own:
            state[name] = token
        elif name == 'dist_token':
            notes.append('dist_token (distilled DeiT) dropped with its PE row: the model has with_dist_token=False '
                         '(set it True to keep the distilled model\'s features exact)')
        else:
            notes.append('cls_token dropped: the model has no cls token (with_cls_token=False)')
    if table is not None:
        if POS_EMBED in own:
            if table.dim() != 3 or table.shape[1] <= num_prefix_in_pe:
                raise CheckpointError(f'pos_embed of shape {tuple(table.shape)} is not a (1, N, C) table with '
                                      f'{num_prefix_in_pe} prefix row(s)')
            # 1, p_ckpt + h*w, C -> 1, p_model + h*w, C: the rows of the model's prefix tokens (a zero row where
            # the table has none: no_embed_class tables, a token the checkpoint lacks), then the grid
            row_names = ckpt_tokens if len(ckpt_tokens) == num_prefix_in_pe else PREFIX_TOKENS[:num_prefix_in_pe]
            rows = dict(zip(row_names, table[:, :num_prefix_in_pe].split(1, dim=1))) if num_prefix_in_pe else {}
            zero_rows = [name for name in model_tokens if name not in rows]
            if num_prefix_in_pe and zero_rows:
                notes.append(f'pos_embed has no row for {", ".join(zero_rows)}: zero row(s) used')
            prefix = [rows.get(name, table.new_zeros(1, 1, table.shape[2])) for name in model_tokens]
            state[POS_EMBED] = torch.cat(prefix + [table[:, num_prefix_in_pe:]], dim=1)
        else:
            notes.append(f'pos_embed dropped: pe_type={getattr(model, "pe_type", "?")!r} has no learned table')
    if 'patch_embed.proj.bias' in own and 'patch_embed.proj.bias' not in state and 'patch_embed.proj.weight' in state:
        state['patch_embed.proj.bias'] = torch.zeros_like(own['patch_embed.proj.bias'])
    if 'norm.weight' in state and 'norm.weight' not in own:
        state.pop('norm.weight')
        state.pop('norm.bias', None)
        notes.append('final norm dropped: the model has final_norm=False')
    for note in notes:
        logger.warning('vit checkpoint: %s', note)
    return state


def _is_timm(state: Mapping[str, torch.Tensor]) -> bool:
    return ('patch_embed.proj.weight' in state and any(k.startswith('blocks.0.attn.qkv.') for k in state)
            and not _is_timm_eva(state))


def _convert_timm(state: StateDict, model: nn.Module) -> StateDict:
    """timm / official DeiT `VisionTransformer(Distilled)` keys -> ViTPE keys (names are shared but `pos_embed`).

    Our own checkpoints also pass (their `pos_embed.0.pos_embed` is taken as a table with the model's prefix).
    """
    if POS_EMBED in state or 'pos_embed.pos_embed' in state:  # a ViTPE checkpoint (today's or older names)
        num_prefix = sum(name in state for name in PREFIX_TOKENS)
    else:
        num_prefix = _timm_pe_prefix(state)
    return _fit_to_model(_rename(state, TIMM_KEY_MAP), model, num_prefix)


def _timm_pe_prefix(state: Mapping[str, torch.Tensor]) -> int:
    """Prefix rows of a timm pos_embed: cls + dist tokens, or 0 when the table has none (no_embed_class)."""
    table = state.get('pos_embed')
    tokens = int('cls_token' in state) + int('dist_token' in state)
    if table is None or not tokens:
        return tokens
    n = table.shape[1]
    is_square = lambda m: m > 0 and int(round(m ** 0.5)) ** 2 == m  # noqa: E731
    if not is_square(n - tokens) and is_square(n):
        return 0  # deit3 / no_embed_class: the table holds grid rows only
    return tokens


def _is_mmseg(state: Mapping[str, torch.Tensor]) -> bool:
    return 'patch_embed.projection.weight' in state and any(
        k.startswith('layers.0.attn.attn.in_proj_') for k in state)


def _convert_mmseg(state: StateDict, model: nn.Module) -> StateDict:
    """mmseg `VisionTransformer` keys -> ViTPE keys; mmseg's pos_embed always holds one cls row."""
    return _fit_to_model(_rename(state, MMSEG_KEY_MAP), model, 1 if 'pos_embed' in state else 0)


register_format('vit', 'timm', _is_timm, _convert_timm)
register_format('vit', 'mmseg', _is_mmseg, _convert_mmseg)


# ---------------------------------------------------------------------------------------------------------------
# timm `Eva` layout of the RoPE-ViT checkpoints ("Rotary Position Embedding for Vision Transformer", arXiv:2403.13298;
# timm vit_{small,base,large}_patch16_rope[_mixed][_ape]_224.naver_in1k)
# ---------------------------------------------------------------------------------------------------------------
# Eva keys that ViTPE has no counterpart for (other Eva variants: EVA-02, DINOv3, PE): refused with their names.
EVA_UNSUPPORTED = re.compile(r'^(norm_pre|reg_token|attn_pool)|\.(q_norm|k_norm|attn\.norm|mlp\.norm|attn\.gate)\.'
                             r'|\.(q_proj|k_proj|v_proj|mlp\.fc1_g|mlp\.fc1_x|mlp\.w12|mlp\.w3)\.')


def _is_timm_eva(state: Mapping[str, torch.Tensor]) -> bool:
    """An Eva state dict: separate q/v biases (no k bias), layer scale `gamma_1/2` or RoPE-Mixed `rope.freqs`."""
    return 'patch_embed.proj.weight' in state and (
        'blocks.0.attn.q_bias' in state or 'blocks.0.gamma_1' in state or 'rope.freqs' in state)


def _convert_timm_eva(state: StateDict, model: nn.Module) -> StateDict:
    """timm `Eva` keys of the RoPE-ViT models -> ViTPE keys, then as the 'timm' format (heads, prefix, PE table).

    - `attn.q_bias`, `attn.v_bias` -> `attn.qkv.bias` = [q_bias, 0, v_bias] (Eva has no key bias);
    - layer scale folded into the layer before it (exact: gamma (W x + b) = (gamma W) x + gamma b):
      `gamma_1` into `attn.proj`, `gamma_2` into `mlp.fc2`;
    - RoPE-Mixed `rope.freqs` (2, depth, nH, d/2) -> one (2, nH, d/2) tensor per block, `rope.freqs.0.{j}`
      (pe_type 'rope_mixed'); RoPE-Axial has no tensors (pe_type 'rope_axial');
    - the `_ape` variants' table has no cls row (no_embed_class): the cls token gets a zero row.
    Build the model as the checkpoint was trained: `pe_type='rope_axial'` / `'rope_mixed'`, with `'abs'` first for
    `_ape` (e.g. `['abs', 'rope_mixed']`); a mismatch raises a CheckpointError.
    """
    unsupported = sorted(k for k in state if EVA_UNSUPPORTED.search(k))
    if unsupported:
        raise CheckpointError(f'timm Eva checkpoint with parts ViTPE does not have: {", ".join(unsupported[:6])}; '
                              'the RoPE-ViT layout (vit_*_patch16_rope*_224.naver_in1k) is supported')
    own = model.state_dict()
    has_freqs = 'rope.freqs' in state
    model_mixed = any(k.startswith('rope.freqs.') for k in own)
    has_table, model_table = 'pos_embed' in state, any(k.startswith('pos_embed.') for k in own)
    if has_freqs != model_mixed or has_table != model_table or not hasattr(model, 'rope'):
        wanted = 'rope_mixed' if has_freqs else 'rope_axial'
        wanted = ['abs', wanted] if has_table else wanted
        raise CheckpointError(f'this timm Eva checkpoint was trained with pe_type={wanted!r} '
                              f'({"learned" if has_freqs else "no"} rope.freqs, {"a" if has_table else "no"} pos_embed)'
                              f' but the model has pe_type={getattr(model, "pe_type", "?")!r}: build ViTPE with '
                              f'pe_type={wanted!r}')
    out: StateDict = {}
    for key, value in state.items():
        if key == 'rope.freqs':
            for j, block in enumerate(value.unbind(1)):  # 2, depth, nH, d/2 -> depth x (2, nH, d/2)
                out[f'rope.freqs.0.{j}'] = block.clone()
            continue
        match = re.match(r'^blocks\.(\d+)\.(attn\.q_bias|attn\.v_bias|gamma_1|gamma_2)$', key)
        if match is None:
            out.setdefault(key, value)
            continue
        i, what = match.groups()
        if what == 'attn.q_bias':
            v_bias = state[f'blocks.{i}.attn.v_bias']
            out[f'blocks.{i}.attn.qkv.bias'] = torch.cat([value, torch.zeros_like(value), v_bias])
        elif what.startswith('gamma'):
            layer = f'blocks.{i}.attn.proj' if what == 'gamma_1' else f'blocks.{i}.mlp.fc2'
            out[f'{layer}.weight'] = state[f'{layer}.weight'] * value[:, None]
            if f'{layer}.bias' in state:
                out[f'{layer}.bias'] = state[f'{layer}.bias'] * value
    return _convert_timm(out, model)


register_format('vit', 'timm_eva', _is_timm_eva, _convert_timm_eva)
