"""A cache for tensors that depend on sizes alone (index maps, masks, positions), bounded in bytes.

Nothing derived from a learnable parameter goes in here: those tensors are recomputed every forward (the
parameters can change without a trace: mmengine's EMA hooks write through `p.data`, which changes neither
the version counter nor the storage). Entries are never inference tensors: a value built under
`torch.inference_mode()` is built with inference mode switched off, so a later training step at the same
size can save it for backward.
"""
import os
from collections import OrderedDict
from typing import Any, Callable, Hashable

import torch

from ._compat import is_compiling


def tensor_bytes(value: Any) -> int:
    """Bytes held by the tensors in `value` (a tensor, or a tuple / NamedTuple / list / dict of them)."""
    if isinstance(value, torch.Tensor):
        return value.numel() * value.element_size()
    if isinstance(value, (tuple, list)):
        return sum(tensor_bytes(v) for v in value)
    if isinstance(value, dict):
        return sum(tensor_bytes(v) for v in value.values())
    return 0


class SizeCache:
    """Least-recently-used cache of size-only tensors holding at most `max_bytes` bytes of tensor data.

    `get(key, fn)` returns the cached value for `key` or stores `fn()`; the key must name everything the value
    depends on (sizes, device, dtype). A value larger than the whole bound is returned without being stored.
    Under torch.compile nothing is cached (`fn()` is traced into the graph).
    """

    def __init__(self, max_bytes: int) -> None:
        if max_bytes < 0:
            raise ValueError(f'max_bytes must be >= 0, got {max_bytes}')
        self.max_bytes = int(max_bytes)
        self._entries: 'OrderedDict[Hashable, Any]' = OrderedDict()
        self._sizes: dict = {}
        self.nbytes = 0

    def get(self, key: Hashable, fn: Callable[[], Any]) -> Any:
        if is_compiling():
            return fn()
        value = self._entries.get(key)
        if value is not None:
            self._entries.move_to_end(key)
            return value
        with torch.inference_mode(False):  # a normal tensor, usable by a later training step
            value = fn()
        size = tensor_bytes(value)
        if size <= self.max_bytes:
            self._entries[key] = value
            self._sizes[key] = size
            self.nbytes += size
            while self.nbytes > self.max_bytes:
                old, _ = self._entries.popitem(last=False)
                self.nbytes -= self._sizes.pop(old)
        return value

    def clear(self) -> None:
        self._entries.clear()
        self._sizes.clear()
        self.nbytes = 0

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, key: Hashable) -> bool:
        return key in self._entries


# One cache for the whole process (window index maps, shift masks, relative-position indices, positions), so
# that the bound holds across modules and model instances. VITPE_SIZE_CACHE_MB changes the bound.
SIZE_CACHE = SizeCache(int(float(os.environ.get('VITPE_SIZE_CACHE_MB', '256')) * 2 ** 20))

