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

`collections.OrderedDict`/`Counter`, `_codecs.encode` and the torch types are allowed by torch already.
"""
import contextlib
import importlib
import pickle
from typing import Any, Callable, Iterator, List, Tuple, Union

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


@contextlib.contextmanager
def mmengine_checkpoint_globals() -> Iterator[None]:
    """Allows the types of an mmengine runner checkpoint in `torch.load(weights_only=True)` inside the block.

    Use it around a runner's own checkpoint reads only (resume, `load_from`). A checkpoint holding anything else
    (pickled classes, functions, other getattr look-ups) is still refused with torch's `UnpicklingError`.
    """
    with torch.serialization.safe_globals(mmengine_checkpoint_safe_globals()):
        yield
