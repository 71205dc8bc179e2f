"""Loading foreign checkpoints (official releases, timm, DeiT, mmseg, mmdet) into vitpe_mm backbones.

A checkpoint (a local file, an http(s) URL or a hub id: vitpe_mm.checkpoint.sources) is read with
`torch.load(weights_only=True)` (never pickled code; `.safetensors` with safetensors), unwrapped
(`state_dict` / `model` / `module` nesting, `module.` and `backbone.` prefixes, or a given prefix), its format detected
from the keys (or named), converted by an explicit key map registered per backbone family, and loaded;
tables made for another grid or window (`pos_embed`, relative-bias tables) are resampled by the
modules' own load hooks. Missing and unexpected keys are logged; an unrecognised format or shapes that
cannot be reconciled raise a `CheckpointError` naming the keys.
"""
import logging
import math
import pickle
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Mapping, Optional, Tuple, Union

import torch
import torch.nn as nn

from .sources import resolve_checkpoint

logger = logging.getLogger('vitpe_mm')
StateDict = Dict[str, torch.Tensor]
MapLocation = Union[str, torch.device, Dict[str, str], Callable[..., Any], None]


class CheckpointError(ValueError):
    """A checkpoint that cannot be loaded as asked: unknown format, unknown keys or shapes."""


@dataclass(frozen=True)
class CheckpointFormat:
    """A foreign key layout for one backbone family.

    detect: True when a (unwrapped) state dict is in this format.
    convert: maps it to the family's own keys; gets the target model for shape-dependent choices.
    """
    name: str
    detect: Callable[[Mapping[str, torch.Tensor]], bool]
    convert: Callable[[StateDict, nn.Module], StateDict]


_FORMATS: Dict[str, List[CheckpointFormat]] = {}
NATIVE_FORMAT = 'vitpe_mm'


def register_format(family: str, name: str, detect: Callable[[Mapping[str, torch.Tensor]], bool],
                    convert: Callable[[StateDict, nn.Module], StateDict]) -> None:
    """Registers a checkpoint format for a backbone family ('vit', 'cpvt', 'swin'); order = detection priority."""
    formats = _FORMATS.setdefault(family, [])
    if any(f.name == name for f in formats):
        raise ValueError(f'checkpoint format {name!r} is already registered for {family!r}')
    formats.append(CheckpointFormat(name, detect, convert))


def formats_for(family: str) -> Tuple[str, ...]:
    return tuple(f.name for f in _FORMATS.get(family, []))


def read_checkpoint(source: str, map_location: MapLocation = 'cpu') -> object:
    """Reads a checkpoint safely from a local path, an http(s) URL or a hub id (vitpe_mm.checkpoint.sources).

    `.safetensors` files are read with safetensors; everything else with `torch.load(weights_only=True)` (never
    pickled code). A file that plain weights-only loading refuses is tried once more with the few types an
    mmengine Runner checkpoint holds allowed (`vitpe_mm.engine.mmengine_checkpoint_globals`), so
    `work_dirs/.../iter_N.pth` can be a Pretrained checkpoint too.
    """
    path = resolve_checkpoint(source)
    if path.endswith('.safetensors'):
        return _read_safetensors(path, map_location)
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as err:
        first = err
    except Exception as err:  # noqa: BLE001 - re-raised with the path and what is accepted
        raise _unreadable(path, err) from err
    try:
        from ..engine.safe_load import mmengine_checkpoint_globals
    except ImportError:  # mmengine not installed: nothing more to allow
        raise _unreadable(path, first) from first
    try:
        with mmengine_checkpoint_globals():
            return torch.load(path, map_location=map_location, weights_only=True)
    except Exception as err:  # noqa: BLE001
        raise _unreadable(path, err) from err


def _unreadable(path: str, err: BaseException) -> CheckpointError:
    return CheckpointError(
        f'could not read {path} as a tensor-only checkpoint ({type(err).__name__}: {err}). Files holding '
        'pickled Python objects (beyond what an mmengine training checkpoint holds) are refused for safety; '
        're-save the state_dict with torch.save.')


def _read_safetensors(path: str, map_location: MapLocation) -> StateDict:
    if map_location is None:
        map_location = 'cpu'
    if not isinstance(map_location, (str, torch.device)):
        raise CheckpointError(f'{path}: a .safetensors file is read to one device; map_location must be a device '
                              f'such as "cpu" or "cuda:0", got {map_location!r}')
    try:
        from safetensors.torch import load_file
    except ImportError as err:
        raise CheckpointError(f'{path}: reading .safetensors files needs the safetensors package '
                              '(pip install safetensors)') from err
    try:
        return load_file(path, device=str(map_location))
    except Exception as err:  # noqa: BLE001 - safetensors raises its own SafetensorError
        raise CheckpointError(f'could not read {path} as a safetensors file ({type(err).__name__}: {err})') from err


def unwrap_state_dict(obj: object, prefix: Optional[str] = None) -> StateDict:
    """Returns the flat tensor dict inside common wrappers, without `module.`/`backbone.` prefixes.

    Accepts a state dict or a dict with 'state_dict', 'model', 'model_state' or 'module' holding one.
    With `prefix` ('backbone.' or 'backbone'), only the keys under it are kept, without it, as mmengine's
    `PretrainedInit(prefix=...)` does; otherwise, when some keys start with `backbone.` (an mmdet/mmseg detector
    checkpoint), only those are kept.
    """
    seen = 0
    while isinstance(obj, Mapping) and seen < 4:
        inner = next((obj[k] for k in ('state_dict', 'model', 'model_state', 'module') if k in obj
                      and isinstance(obj[k], Mapping)), None)
        if inner is None:
            break
        obj, seen = inner, seen + 1
    if not isinstance(obj, Mapping):
        raise CheckpointError(f'checkpoint holds a {type(obj).__name__}, expected a dict of tensors')
    state = {k: v for k, v in obj.items() if isinstance(v, torch.Tensor)}
    if not state:
        raise CheckpointError(f'checkpoint holds no tensors (top-level keys: {sorted(obj)[:10]})')
    if all(k.startswith('module.') for k in state):
        state = {k[len('module.'):]: v for k, v in state.items()}
    if prefix:
        prefix = prefix if prefix.endswith('.') else prefix + '.'
        selected = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
        if not selected:
            raise CheckpointError(f'prefix {prefix!r} selects none of the checkpoint\'s {len(state)} keys '
                                  f'(first keys: {", ".join(sorted(state)[:6])})')
        return selected
    if any(k.startswith('backbone.') for k in state):
        state = {k[len('backbone.'):]: v for k, v in state.items() if k.startswith('backbone.')}
    return state


def detect_format(state: Mapping[str, torch.Tensor], family: str) -> str:
    formats = _FORMATS.get(family)
    if not formats:
        raise ValueError(f'no checkpoint formats are registered for backbone family {family!r}')
    for fmt in formats:
        if fmt.detect(state):
            return fmt.name
    sample = ', '.join(sorted(state)[:8])
    raise CheckpointError(
        f'cannot recognise the checkpoint format for a {family} backbone from its keys (first keys: {sample}). '
        f'Known formats: {", ".join(formats_for(family))}; pass the format explicitly if it is one of them.')


def convert_state_dict(state: StateDict, model: nn.Module, family: str, fmt: str = 'auto') -> Tuple[StateDict, str]:
    """Converts an unwrapped foreign state dict to `model`'s keys. Returns (state dict, format name).

    The format 'vitpe_mm' (our own keys, as written by tools/convert_checkpoint.py) is recognised when every
    key of the checkpoint is a key of the model; it loads without conversion.
    """
    own_keys = set(model.state_dict())
    if fmt == 'auto':
        fmt = NATIVE_FORMAT if set(state) <= own_keys else detect_format(state, family)
    if fmt == NATIVE_FORMAT:
        return dict(state), fmt
    by_name = {f.name: f for f in _FORMATS.get(family, [])}
    if fmt not in by_name:
        raise ValueError(f'checkpoint format {fmt!r} is not known for {family}; accepted: '
                         f'auto, {NATIVE_FORMAT}, {", ".join(by_name)}')
    return by_name[fmt].convert(dict(state), model), fmt


BIAS_TABLE = 'relative_position_bias_table'


def _bias_table_problem(key: str, table: torch.Tensor, own: torch.Tensor) -> str:
    """Why a relative-bias table of another shape cannot be resampled on load ('' when it can).

    The load hook infers the checkpoint's window from the row count, which is possible for square windows only:
    (2M - 1)^2 rows for an M x M window, one column per head.
    """
    if table.dim() != 2 or table.shape[1] != own.shape[1]:
        return (f'{key}: checkpoint {tuple(table.shape)} vs model {tuple(own.shape)}: a bias table has one column '
                f'per head ({own.shape[1]} in the model)')
    side = math.isqrt(table.shape[0])
    if side * side != table.shape[0] or side % 2 == 0:
        return (f'{key}: checkpoint table of {table.shape[0]} rows vs model {tuple(own.shape)}: only a table for a '
                'square window (2M-1)^2 rows can be resampled to another window; build the model with the '
                'checkpoint\'s window size')
    return ''


def load_state_dict_checked(model: nn.Module, state: StateDict, source: str = 'checkpoint',
                            allow_unexpected: bool = False) -> Tuple[List[str], List[str]]:
    """Loads non-strictly and logs missing keys (they keep their initialisation, e.g. detection-only norms).

    Raises CheckpointError naming the keys when shapes cannot be reconciled (after the modules' hooks resample
    `pos_embed` / relative-bias tables), or when keys are left that the model does not have: converters drop the
    keys they know to be irrelevant (classification heads), so a leftover key means a wrong model or format.
    `allow_unexpected=True` logs those instead.
    """
    own = model.state_dict()
    if state and not set(state) & set(own):
        raise CheckpointError(
            f'{source}: none of its {len(state)} key(s) belongs to {type(model).__name__} (first keys: '
            f'{", ".join(sorted(state)[:6])}; the model has e.g. {", ".join(list(own)[:3])}). Check the model, '
            'the checkpoint format and the prefix.')
    # The modules' _load_from_state_dict hooks resample pos_embed / bias tables; everything else must match.
    resizable = ('pos_embed', BIAS_TABLE)
    bad = [f'{k}: checkpoint {tuple(v.shape)} vs model {tuple(own[k].shape)}' for k, v in state.items()
           if k in own and v.shape != own[k].shape and not k.endswith(resizable)]
    bad += [_bias_table_problem(k, v, own[k]) for k, v in state.items()
            if k.endswith(BIAS_TABLE) and k in own and v.shape != own[k].shape]
    bad = [b for b in bad if b]
    if bad:
        raise CheckpointError(f'{source}: shapes cannot be reconciled for {len(bad)} key(s): ' + '; '.join(bad[:10]))
    try:
        result = model.load_state_dict(state, strict=False)
    except (RuntimeError, ValueError) as err:
        raise CheckpointError(f'{source}: {err}') from err
    missing = [k for k in result.missing_keys]
    unexpected = [k for k in result.unexpected_keys]
    if missing:
        logger.warning('%s: %d missing key(s) keep their initialisation: %s', source, len(missing), ', '.join(missing))
    if unexpected and not allow_unexpected:
        raise CheckpointError(
            f'{source}: {len(unexpected)} key(s) do not belong to {type(model).__name__}: {", ".join(unexpected[:10])}'
            f'{" ..." if len(unexpected) > 10 else ""}. Check the model/arch and the checkpoint format, or pass '
            'allow_unexpected=True (init_cfg) to ignore them.')
    if unexpected:
        logger.warning('%s: %d unexpected key(s) ignored: %s', source, len(unexpected), ', '.join(unexpected))
    return missing, unexpected


def load_pretrained(model: nn.Module, checkpoint: str, family: str, fmt: str = 'auto',
                    allow_unexpected: bool = False, prefix: Optional[str] = None,
                    map_location: MapLocation = 'cpu') -> Dict[str, object]:
    """Reads (from a path, URL or hub id), unwraps, converts and loads `checkpoint` into `model`.

    Returns a small report: the format, the missing and the unexpected keys.
    """
    try:
        state = unwrap_state_dict(read_checkpoint(checkpoint, map_location), prefix)
        converted, fmt = convert_state_dict(state, model, family, fmt)
    except CheckpointError as err:  # named with the file it is about
        if str(checkpoint) in str(err):
            raise
        raise CheckpointError(f'{checkpoint}: {err}') from err
    missing, unexpected = load_state_dict_checked(model, converted, f'{checkpoint} ({fmt} format)', allow_unexpected)
    logger.info('loaded %s into %s as %s format (%d tensors)', checkpoint, type(model).__name__, fmt, len(converted))
    return {'format': fmt, 'missing_keys': missing, 'unexpected_keys': unexpected}
