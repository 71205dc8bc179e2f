"""The OpenMMLab argument names of the backbones our registered ones replace, so that a stock MMDetection /
MMSegmentation config works with only `type=` changed.

One explicit table per family: each toolbox argument name either sets one of ours (`target`, a size of
`arch=dict(...)` written 'arch.<key>', with an optional value translator) or, when it has no counterpart, is
checked against the only values we can honour and dropped. `PEBackbone`'s checked __init__ applies the
table of its class (`toolbox_args`) before the unknown-option check.

Toolbox style: a config that gives the sizes as the toolbox's top-level names (`embed_dims=`, `depths=`,
`num_heads=`, ... instead of our `arch=`) is written for the toolbox backbone; the arguments it leaves out
then take that backbone's defaults where ours differ (`ToolboxArgs.defaults`, in our names: mmseg's ViT has
no final norm and no patch bias, its PCPVT no qkv bias, ...), so it builds the network the toolbox builds.
With `arch=` or no sizes, our documented defaults apply. Sizes may be given both ways; a size given with two
different values is an error.
"""
from dataclasses import dataclass, field, replace
from typing import Any, Callable, Dict, Mapping, Optional, Tuple

# A translator may return DROP: the toolbox argument is accepted and sets nothing (e.g. pretrained=None).
DROP = object()


@dataclass(frozen=True)
class ToolboxArg:
    """One toolbox argument.

    Args:
        name: the toolbox's argument name.
        target: our argument it sets ('arch.<key>' for a size), or None: checked with `accepts`, then dropped.
        convert: (value, passed arguments) -> our value, or DROP; raises ValueError for a value it refuses.
        accepts: (value, resolved arguments) -> whether the value can be honoured (target None only).
        accepted: what is accepted, for the error message.
        why: why other values are refused (the toolbox behaviour we do not have), for the error message.
    """

    name: str
    target: Optional[str] = None
    convert: Optional[Callable[[Any, Mapping[str, Any]], Any]] = None
    accepts: Optional[Callable[[Any, Mapping[str, Any]], bool]] = None
    accepted: str = ''
    why: str = ''


@dataclass(frozen=True)
class ToolboxArgs:
    """The toolbox argument table of one backbone family.

    Args:
        replaces: the toolbox backbones, for messages (e.g. 'mmseg VisionTransformer').
        args: the toolbox arguments we accept.
        arch_keys: the keys of our `arch=dict(...)`.
        arch_presets: our arch presets (name -> sizes), to compare sizes given both ways.
        arch_base: the preset an arch dict's missing keys come from (CPVTv2), or None (all keys required).
        defaults: our arguments' values in toolbox style where our defaults differ ('arch': the toolbox's sizes).
        style_check: (resolved arguments) -> an error text, or None; run in toolbox style only.
    """

    replaces: str
    args: Tuple[ToolboxArg, ...]
    arch_keys: Tuple[str, ...]
    arch_presets: Mapping[str, Mapping[str, Any]]
    arch_base: Optional[str] = None
    defaults: Mapping[str, Any] = field(default_factory=dict)
    style_check: Optional[Callable[[Mapping[str, Any]], Optional[str]]] = None

    @property
    def names(self) -> Tuple[str, ...]:
        return tuple(arg.name for arg in self.args)

    def targets(self) -> Tuple[str, ...]:
        """Our argument names the table sets (arch sizes as 'arch')."""
        return tuple(sorted({a.target.split('.')[0] for a in self.args if a.target} | set(self.defaults)))

    def help(self) -> str:
        """The sentence the unknown-option error adds."""
        sizes = ', '.join(f'{k}=...' for k in self.arch_keys)
        return (f'sizes go into arch=dict({sizes}) or a preset ({", ".join(map(repr, self.arch_presets))}); '
                f'also accepted, with the meaning they have in {self.replaces}: {", ".join(self.names)}')

    def translate(self, cls_name: str, passed: Dict[str, Any], signature_defaults: Mapping[str, Any]) -> Dict[str, Any]:
        """The keyword arguments `passed` to `cls_name` with the toolbox names turned into ours.

        Raises:
            ValueError: a value we cannot honour, a size given twice with different values, a toolbox name given
                together with our name for the same thing.
        """
        by_name = {arg.name: arg for arg in self.args}
        toolbox = {k: v for k, v in passed.items() if k in by_name}
        if not toolbox:
            return passed
        ours = {k: v for k, v in passed.items() if k not in by_name}
        sizes: Dict[str, Tuple[str, Any]] = {}  # arch key -> (toolbox name, value)
        renamed: Dict[str, Tuple[str, Any]] = {}  # our argument -> (toolbox name, value)
        for name, value in toolbox.items():
            arg = by_name[name]
            if arg.target is None:
                continue
            if arg.convert is not None:
                try:
                    value = arg.convert(value, passed)
                except ValueError as e:
                    raise ValueError(f'{cls_name}: {name}={value!r}: {e}') from None
            if value is DROP:
                continue
            if arg.target.startswith('arch.'):
                key = arg.target[len('arch.'):]
                if key in sizes and _norm(sizes[key][1]) != _norm(value):
                    raise ValueError(f'{cls_name}: {sizes[key][0]}={sizes[key][1]!r} and {name}={value!r} set the same '
                                     f'size ({key}) differently; give one')
                sizes[key] = (name, value)
                continue
            if ours.get(arg.target) is not None or arg.target in renamed:  # an explicit None is "not given"
                other = f'{arg.target}={ours[arg.target]!r}' if arg.target in ours else \
                    f'{renamed[arg.target][0]}={renamed[arg.target][1]!r}'
                raise ValueError(f'{cls_name}: {name}={toolbox[name]!r} and {other} set the same thing '
                                 f'({arg.target}); give one')
            renamed[arg.target] = (name, value)

        out = dict(ours)
        out.update({target: value for target, (_, value) in renamed.items()})
        style = bool(sizes)
        if style:
            for key, value in self.defaults.items():
                if key != 'arch' and key not in out:
                    out[key] = value
            out['arch'] = self._merge_arch(cls_name, ours.get('arch'), sizes)

        resolved = dict(signature_defaults, **out)
        resolved['arch'] = self._expand(resolved.get('arch'))
        for name, value in toolbox.items():
            arg = by_name[name]
            if arg.target is None and arg.accepts is not None and not arg.accepts(value, resolved):
                why = f' ({arg.why})' if arg.why else ''
                raise ValueError(f'{cls_name} cannot honour {name}={value!r}{why}; accepted: {arg.accepted}')
        if style and self.style_check is not None:
            error = self.style_check(resolved)
            if error:
                raise ValueError(f'{cls_name}: {error}')
        return out

    def _expand(self, arch: Any) -> Dict[str, Any]:
        """Our arch argument as a dict of sizes ({} for what the backbone will refuse itself)."""
        if isinstance(arch, str):
            return dict(self.arch_presets.get(arch, {}))
        if isinstance(arch, Mapping):
            base = dict(self.arch_presets[self.arch_base]) if self.arch_base else {}
            return dict(base, **arch)
        return {}

    def _merge_arch(self, cls_name: str, arch: Any, sizes: Mapping[str, Tuple[str, Any]]) -> Dict[str, Any]:
        """The toolbox sizes over the user's arch (or over the toolbox defaults when no arch is given)."""
        if arch is None:
            merged = dict(self.defaults.get('arch', {}))
        else:
            if not isinstance(arch, (str, Mapping)) or (isinstance(arch, str) and arch not in self.arch_presets):
                return arch  # the backbone's own parser names what is accepted
            given = self._expand(arch) if isinstance(arch, str) else dict(arch)
            conflicts = [f'{name}={value!r} vs arch[{key!r}]={given[key]!r}' for key, (name, value) in sizes.items()
                         if key in given and _norm(given[key]) != _norm(value)]
            if conflicts:
                raise ValueError(f'{cls_name}: sizes given both as top-level names and in arch={arch!r} differ: '
                                 f'{"; ".join(conflicts)}; give each size once')
            merged = given  # a partial CPVTv2 arch dict keeps its base preset for the rest
        merged.update({key: value for key, (_, value) in sizes.items()})
        return merged


def _norm(value: Any) -> Any:
    """Lists and tuples compare equal (configs write lists, presets hold tuples)."""
    if isinstance(value, (list, tuple)):
        return tuple(_norm(v) for v in value)
    return value


# ---------------------------------------------------------------------------------------------- translators
def _pretrained(value: Any, passed: Mapping[str, Any]) -> Any:
    """`pretrained=PATH` (mmseg's EncoderDecoder copies its own `pretrained` into the backbone) -> init_cfg."""
    if value is None:
        return DROP
    if not isinstance(value, str):
        raise ValueError('pretrained must be a checkpoint path / URL string or None (deprecated in the toolboxes: '
                         "prefer init_cfg=dict(type='Pretrained', checkpoint=...))")
    if passed.get('init_cfg'):
        raise ValueError('init_cfg and pretrained cannot be set at the same time (as in the toolboxes)')
    return dict(type='Pretrained', checkpoint=value)


def _is_bool(value: Any, resolved: Mapping[str, Any]) -> bool:
    return isinstance(value, bool)


def _equals(expected: Any) -> Callable[[Any, Mapping[str, Any]], bool]:
    return lambda value, resolved: _norm(value) == _norm(expected)


def _is_gelu(value: Any, resolved: Mapping[str, Any]) -> bool:
    return isinstance(value, Mapping) and dict(value) in (dict(type='GELU'), dict(type='GELU', approximate='none'))


def _is_plain_ln(value: Any, resolved: Mapping[str, Any]) -> bool:
    """LayerNorm with PyTorch's default eps (what our blocks use where the toolbox applies its norm_cfg)."""
    if not isinstance(value, Mapping) or value.get('type') != 'LN':
        return False
    extra = set(value) - {'type', 'eps', 'requires_grad'}
    return not extra and float(value.get('eps', 1e-5)) == 1e-5 and value.get('requires_grad', True) is True


def _same_length(key: str) -> Callable[[Any, Mapping[str, Any]], bool]:
    return lambda value, resolved: isinstance(value, int) and value == len(resolved['arch'].get(key, ()))


PRETRAINED = ToolboxArg('pretrained', 'init_cfg', _pretrained)
GELU = ToolboxArg('act_cfg', accepts=_is_gelu, accepted="dict(type='GELU')",
                  why='the MLPs use GELU (exact erf form)')
CONVERT_WEIGHTS = ToolboxArg('convert_weights', accepts=_is_bool, accepted='True or False',
                             why='official, timm and toolbox checkpoint keys are detected and converted on load')

# ---------------------------------------------------------------------------------------------- ViTPE
MMSEG_VIT_SIZES = dict(embed_dims=768, num_layers=12, num_heads=12, mlp_ratio=4)

VIT_ARGS = ToolboxArgs(
    replaces='mmseg VisionTransformer',
    args=(
        ToolboxArg('embed_dims', 'arch.embed_dims'),
        ToolboxArg('num_layers', 'arch.num_layers'),
        ToolboxArg('num_heads', 'arch.num_heads'),
        ToolboxArg('mlp_ratio', 'arch.mlp_ratio'),
        PRETRAINED,
        GELU,
        ToolboxArg('patch_pad', accepts=_equals('corner'), accepted="'corner'",
                   why='the image is zero-padded at the bottom/right to a multiple of the patch size'),
        ToolboxArg('patch_norm', accepts=_equals(False), accepted='False',
                   why='no norm after the patch embedding'),
        ToolboxArg('pre_norm', accepts=_equals(False), accepted='False',
                   why='no norm before the first block (CLIP-style pre_ln)'),
        ToolboxArg('num_fcs', accepts=_equals(2), accepted='2', why='the MLPs have two linear layers'),
        ToolboxArg('frozen_exclude', accepts=_equals(['all']), accepted="['all'] (nothing frozen)",
                   why='parameter names differ from mmseg\'s; freeze with frozen_stages=k'),
    ),
    arch_keys=('embed_dims', 'num_layers', 'num_heads', 'mlp_ratio'),
    arch_presets={},  # filled by models/vit.py with ViTPE.arch_zoo
    defaults=dict(arch=MMSEG_VIT_SIZES, final_norm=False, patch_bias=False, antialias=False,
                  norm_cfg=dict(type='LN')),
)

# ---------------------------------------------------------------------------------------------- SwinRPB
def _swin_strides(value: Any, resolved: Mapping[str, Any]) -> bool:
    depths = resolved['arch'].get('depths', ())
    patch = resolved.get('patch_size')
    first = patch if isinstance(patch, int) else (tuple(patch)[0] if patch else None)
    expected = [first] + [2] * (len(depths) - 1)
    return isinstance(value, (list, tuple)) and list(value) == expected


SWIN_ARGS = ToolboxArgs(
    replaces='mmdet / mmseg SwinTransformer',
    args=(
        ToolboxArg('embed_dims', 'arch.embed_dims'),
        ToolboxArg('depths', 'arch.depths'),
        ToolboxArg('num_heads', 'arch.num_heads'),
        ToolboxArg('strides', accepts=_swin_strides, accepted='(patch_size, 2, 2, ...), one per stage',
                   why='a patch embedding of stride patch_size, then 2x2 patch merging'),
        ToolboxArg('use_abs_pos_embed', accepts=_equals(False),
                   accepted="False; for the toolboxes' absolute table on top of the relative bias set "
                            "pe_type=['rel_bias', 'abs'] (resampled to every grid)",
                   why='the encodings are chosen with pe_type, and the toolboxes\' table (added unresampled, so only '
                       'at pretrain_img_size) has no checkpoint key map here'),
        GELU,
        ToolboxArg('norm_cfg', accepts=_is_plain_ln, accepted="dict(type='LN') (eps 1e-5)",
                   why="every norm is PyTorch's LayerNorm"),
        CONVERT_WEIGHTS,
        PRETRAINED,
    ),
    arch_keys=('embed_dims', 'depths', 'num_heads'),
    arch_presets={},  # filled by models/swin.py with ARCH_SETTINGS
    defaults=dict(arch=dict(embed_dims=96, depths=(2, 2, 6, 2), num_heads=(3, 6, 12, 24)), clamp_window=False),
)

# ---------------------------------------------------------------------------------------------- CPVTv2
MMSEG_PCPVT_SIZES = dict(embed_dims=(64, 128, 256, 512), num_heads=(1, 2, 4, 8), mlp_ratios=(4, 4, 4, 4),
                         sr_ratios=(8, 4, 2, 1), patch_sizes=(4, 2, 2, 2), depths=(3, 4, 6, 3))


def _pvt_embed_dims(value: Any, passed: Mapping[str, Any]) -> Any:
    """mmseg PCPVT: one width per stage; mmdet PVT(v2): an int, stage i having embed_dims * num_heads[i]."""
    if isinstance(value, int) and not isinstance(value, bool):
        heads = passed.get('num_heads', (1, 2, 5, 8))
        if not isinstance(heads, (list, tuple)):
            raise ValueError('an int embed_dims (mmdet PVT) needs num_heads as a list, one per stage')
        return tuple(value * h for h in heads)
    return value


def _pcpvt_style(resolved: Mapping[str, Any]) -> Optional[str]:
    norm_cfg = resolved.get('norm_cfg')
    if norm_cfg is not None and not _is_plain_ln(norm_cfg, resolved):
        return (f'norm_cfg={norm_cfg!r} with toolbox sizes: mmseg PCPVT applies norm_cfg to the patch embeddings and '
                'stage norms and keeps eps 1e-5 in the blocks, CPVTv2 applies it to the blocks and stage norms; '
                "only dict(type='LN') (eps 1e-5) means the same in both (with arch=... norm_cfg is CPVTv2's)")
    return None


CPVT_ARGS = ToolboxArgs(
    replaces='mmseg PCPVT (and mmdet PyramidVisionTransformerV2 names)',
    args=(
        ToolboxArg('embed_dims', 'arch.embed_dims', _pvt_embed_dims),
        ToolboxArg('num_heads', 'arch.num_heads'),
        ToolboxArg('mlp_ratios', 'arch.mlp_ratios'),
        ToolboxArg('sr_ratios', 'arch.sr_ratios'),
        ToolboxArg('patch_sizes', 'arch.patch_sizes'),
        ToolboxArg('depths', 'arch.depths'),
        ToolboxArg('num_layers', 'arch.depths'),  # mmdet PVT
        ToolboxArg('strides', accepts=lambda v, r: _norm(v) == _norm(r['arch'].get('patch_sizes')),
                   accepted='the patch sizes (non-overlapping patch embeddings)',
                   why='each patch embedding has stride = kernel'),
        ToolboxArg('num_stages', accepts=_same_length('depths'), accepted='the number of stages (len(depths))'),
        ToolboxArg('paddings', accepts=lambda v, r: isinstance(v, (list, tuple)) and not any(v),
                   accepted='zeros (non-overlapping patch embeddings)'),
        ToolboxArg('use_abs_pos_embed', accepts=_equals(False), accepted="False; for an absolute PE set pe_type='abs'",
                   why='the positional encoding is chosen with pe_type'),
        ToolboxArg('use_conv_ffn', accepts=_equals(False), accepted='False', why='the MLPs have no depthwise conv'),
        ToolboxArg('pretrain_img_size', 'img_size'),
        GELU,
        CONVERT_WEIGHTS,
        PRETRAINED,
    ),
    arch_keys=('embed_dims', 'num_heads', 'mlp_ratios', 'sr_ratios', 'patch_sizes', 'depths'),
    arch_presets={},  # filled by models/cpvt.py with ARCH_SETTINGS
    arch_base='small',
    defaults=dict(arch=MMSEG_PCPVT_SIZES, qkv_bias=False, norm_cfg=dict(type='LN'), norm_after_stage=False),
    style_check=_pcpvt_style,
)


def with_presets(table: ToolboxArgs, presets: Mapping[str, Mapping[str, Any]]) -> ToolboxArgs:
    """`table` knowing the backbone's arch presets (they live with the backbone)."""
    return replace(table, arch_presets=dict(presets))
