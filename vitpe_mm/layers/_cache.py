"""A per-key cache of tensors derived from parameters, never stale after the parameters change."""
from collections import OrderedDict
from typing import Callable, Hashable, Sequence, Tuple

import torch
from ._compat import is_compiling


class DerivedTensorCache:
    """Caches `fn()` per key, valid while the source tensors keep their version, storage and dtype.

    In-place updates (optimizer steps, `load_state_dict`'s copy_) bump a tensor's version counter;
    `.to()` makes new storage. Either invalidates the entry. Nothing is cached while autograd
    records the source tensors (training), since a cached graph cannot be back-propagated twice.
    At most `max_entries` keys are kept (least recently used dropped first): detection feeds many image
    sizes, and an unbounded cache would grow with every new one.
    """

    def __init__(self, max_entries: int = 32) -> None:
        if max_entries <= 0:
            raise ValueError(f'max_entries must be positive, got {max_entries}')
        self.max_entries = max_entries
        self._entries: "OrderedDict[Hashable, Tuple[Tuple, torch.Tensor]]" = OrderedDict()

    @staticmethod
    def _signature(sources: Sequence[torch.Tensor]) -> Tuple:
        return tuple((t._version, t.data_ptr(), t.device, t.dtype, tuple(t.shape)) for t in sources)

    def get(self, key: Hashable, sources: Sequence[torch.Tensor], fn: Callable[[], torch.Tensor]) -> torch.Tensor:
        if torch.is_grad_enabled() and any(t.requires_grad for t in sources):
            return fn()
        if is_compiling():
            return fn()
        signature = self._signature(sources)
        entry = self._entries.get(key)
        if entry is None or entry[0] != signature:
            entry = (signature, fn().detach())
            self._entries[key] = entry
            if len(self._entries) > self.max_entries:
                self._entries.popitem(last=False)
        self._entries.move_to_end(key)
        return entry[1]

    def clear(self) -> None:
        self._entries.clear()

    def __len__(self) -> int:
        return len(self._entries)
