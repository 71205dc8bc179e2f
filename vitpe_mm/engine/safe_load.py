"""Reading mmengine's own training checkpoints with torch's weights-only unpickler.

torch >= 2.6 loads with `weights_only=True` by default, and a checkpoint written by mmengine's `CheckpointHook`
holds more than tensors: the message hub's `HistoryBuffer` objects (numpy arrays of logged values, and the
statistics methods `HistoryBuffer.min/max/current/mean`, pickled as `getattr(HistoryBuffer, 'min')`) and numpy
scalars in `runtime_info`. mmengine 0.10.7 then fails in `Runner.resume` / `Runner.load_checkpoint` with an
`UnpicklingError`. Instead of falling back to `weights_only=False` (arbitrary code on load), the context manager
here allows exactly those types, and only while mmengine reads a checkpoint for the runner; pretrained and foreign
weights keep going through `vitpe_mm.checkpoint.read_checkpoint` (plain `weights_only=True`).

What an mmengine checkpoint holds beyond torch's default allowlist (found by listing the GLOBAL opcodes of
checkpoints written by mmdet Mask R-CNN and mmseg UperNet runs; see tests/engine/test_resume.py):

* numpy arrays, dtypes and scalars: `numpy.core.multiarray._reconstruct`, `numpy.ndarray`, `numpy.dtype` and the
  dtype classes of bool/integer/float/complex dtypes (`numpy.dtypes.Float64DType`, ...; no object dtype),
  `numpy.core.multiarray.scalar` (numpy 2 writes `numpy._core...`; both spellings map to the same functions).
* `mmengine.logging.history_buffer.HistoryBuffer`.
* `builtins.getattr`, but only as a stand-in that resolves `HistoryBuffer.min/max/current/mean` and refuses every
  other (object, name) pair — a general `getattr` would hand out any attribute of any allowed object.

`collections.OrderedDict`/`Counter`, `_codecs.encode` and the torch types are allowed by torch >= 2.4 already (and
added for older torch, see `_allowlist_unpickler`).
"""
import _compat_pickle
import codecs
import collections
import contextlib
import functools
import importlib
import pickle
from typing import Any, Callable, Dict, Iterator, List, Tuple, Union

import numpy as np
import torch
from mmengine.logging import HistoryBuffer

__all__ = ['HISTORY_BUFFER_STATISTICS', 'mmengine_checkpoint_globals', 'mmengine_checkpoint_safe_globals']

# The statistics methods HistoryBuffer registers for itself (HistoryBuffer._set_default_statistics).
HISTORY_BUFFER_STATISTICS = ('min', 'max', 'current', 'mean')

# bool, integer and floating/complex dtypes (no object or structured dtypes).
NUMPY_DTYPE_CODES = '?' + np.typecodes['AllInteger'] + np.typecodes['AllFloat']

SafeGlobal = Union[Callable, Tuple[Callable, str]]


def _history_buffer_statistic(owner: Any, name: str) -> Callable:
    """`getattr` as the unpickler sees it: only `getattr(HistoryBuffer, <statistics method>)` is answered."""
    if owner is HistoryBuffer and name in HISTORY_BUFFER_STATISTICS:
        return getattr(HistoryBuffer, name)
    raise pickle.UnpicklingError(
        f'refusing getattr({owner!r}, {name!r}) while loading an mmengine checkpoint: only '
        f'HistoryBuffer.{{{",".join(HISTORY_BUFFER_STATISTICS)}}} may be looked up')


def _numpy_core_function(name: str) -> Callable:
    # numpy 2 renamed numpy.core -> numpy._core (numpy 1.26 ships a partial numpy._core shim)
    module = 'numpy._core.multiarray' if int(np.__version__.split('.')[0]) >= 2 else 'numpy.core.multiarray'
    return getattr(importlib.import_module(module), name)


def mmengine_checkpoint_safe_globals() -> List[SafeGlobal]:
    """The types an mmengine runner checkpoint holds beyond torch's defaults, as `torch.serialization.safe_globals`
    entries (`(object, 'module.name')` pairs name them as they are written in the pickle)."""
    entries: List[SafeGlobal] = [np.ndarray, np.dtype, HistoryBuffer,
                                 (_history_buffer_statistic, 'builtins.getattr')]
    # a dtype is rebuilt as np.dtype(code) and then BUILD on its class (numpy.dtypes.Float64DType, ...)
    entries += sorted({type(np.dtype(code)) for code in NUMPY_DTYPE_CODES}, key=lambda t: t.__name__)
    for name in ('_reconstruct', 'scalar'):
        fn = _numpy_core_function(name)
        entries += [(fn, f'numpy.core.multiarray.{name}'), (fn, f'numpy._core.multiarray.{name}')]
    return entries


def _qualified_name(entry: SafeGlobal) -> str:
    return entry[1] if isinstance(entry, tuple) else f'{entry.__module__}.{entry.__qualname__}'


# What torch >= 2.4 allows by default beyond torch 2.1's list (torch/_weights_only_unpickler.py): protocol-2
# pickles write bytes (a numpy array's data) as _codecs.encode(str, 'latin1').
_NEWER_TORCH_DEFAULTS = {'_codecs.encode': codecs.encode, 'collections.Counter': collections.Counter,
                         'torch.device': torch.device, 'builtins.set': set, 'builtins.bytearray': bytearray,
                         'builtins.complex': complex}


class _AllowlistUnpickler(pickle.Unpickler):
    """The restricted unpickler of Python's pickle documentation ("Restricting Globals"): every global the file
    names is looked up in `allowed` (torch's own weights-only list plus the mmengine types) and nothing else, so
    REDUCE / NEWOBJ / BUILD can only act on those objects."""

    allowed: Dict[str, Any] = {}

    def find_class(self, module: str, name: str) -> Any:
        # protocol-2 pickles name Python 2 modules (__builtin__.getattr); map them as pickle and torch do
        if (module, name) in _compat_pickle.NAME_MAPPING:
            module, name = _compat_pickle.NAME_MAPPING[(module, name)]
        elif module in _compat_pickle.IMPORT_MAPPING:
            module = _compat_pickle.IMPORT_MAPPING[module]
        full_name = f'{module}.{name}'
        if full_name in self.allowed:
            return self.allowed[full_name]
        raise pickle.UnpicklingError(
            f'Unsupported global: GLOBAL {full_name} is not an allowed global (torch weights-only types and '
            'the types of an mmengine checkpoint)')


@contextlib.contextmanager
def _allowlist_unpickler(entries: List[SafeGlobal]) -> Iterator[None]:
    """torch < 2.5 (no `torch.serialization.safe_globals`): torch 2.1-2.3 have no allowlist API at all, and their
    weights-only unpickler builds (NEWOBJ / BUILD) only tensors, parameters and OrderedDicts, so a HistoryBuffer or
    a numpy array cannot be allowed there by adding globals. While the block runs, the unpickler that
    `torch.load(weights_only=True)` takes from `torch._weights_only_unpickler` is a find_class-restricted one over
    torch's list plus `entries`; torch.load's own code (storages, map_location) is unchanged."""
    module = torch._weights_only_unpickler
    allowed = dict(module._get_allowed_globals())
    for name, obj in _NEWER_TORCH_DEFAULTS.items():
        allowed.setdefault(name, obj)
    allowed.update({_qualified_name(entry): entry[0] if isinstance(entry, tuple) else entry for entry in entries})
    unpickler = type('AllowlistUnpickler', (_AllowlistUnpickler,), {'allowed': allowed})
    previous = module.Unpickler
    module.Unpickler = unpickler
    try:
        yield
    finally:
        module.Unpickler = previous


# torch >= 2.6 reads with weights_only=True unless told otherwise; older torch unpickles everything by default.
LOADS_WEIGHTS_ONLY_BY_DEFAULT = torch.__version__ >= '2.6'


@contextlib.contextmanager
def _weights_only_by_default() -> Iterator[None]:
    """torch < 2.6: `torch.load` calls without a `weights_only` argument (mmengine's `load_from_local`, in resume
    and `load_from`) read with weights_only=True while the block runs, as torch >= 2.6 does."""
    load = torch.load

    @functools.wraps(load)
    def weights_only_load(*args, **kwargs):
        kwargs.setdefault('weights_only', True)
        return load(*args, **kwargs)

    torch.load = weights_only_load
    try:
        yield
    finally:
        torch.load = load


@contextlib.contextmanager
def mmengine_checkpoint_globals() -> Iterator[None]:
    """Allows the types of an mmengine runner checkpoint in `torch.load(weights_only=True)` inside the block.

    Use it around a runner's own checkpoint reads (resume, `load_from`) and mmengine checkpoints used as
    pretrained weights. A checkpoint holding anything else (pickled classes, functions, other getattr look-ups) is
    still refused with an `UnpicklingError`. torch >= 2.5: `torch.serialization.safe_globals`; older torch (2.1
    included): a restricted unpickler in place of torch's for the duration of the block. On torch < 2.6, whose
    `torch.load` defaults to weights_only=False, calls that do not pass `weights_only` get True inside the block.
    """
    entries = mmengine_checkpoint_safe_globals()
    with contextlib.ExitStack() as stack:
        if hasattr(torch.serialization, 'safe_globals'):
            stack.enter_context(torch.serialization.safe_globals(entries))
        else:
            stack.enter_context(_allowlist_unpickler(entries))
        if not LOADS_WEIGHTS_ONLY_BY_DEFAULT:
            stack.enter_context(_weights_only_by_default())
        yield
