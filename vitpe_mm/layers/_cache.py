"""A per-key cache of tensors derived from parameters, never stale after the parameters change."""
from typing import Callable, Dict, Hashable, Sequence, Tuple

import torch


class DerivedTensorCache:
    """Caches `fn()` per key, valid while the source tensors keep their version, storage and dtype.

    In-place updates (optimizer steps, `load_state_dict`'s copy_) bump a tensor's version counter;
    `.to()` makes new storage. Either invalidates the entry. Nothing is cached while autograd
    records the source tensors (training), since a cached graph cannot be back-propagated twice.
    """

    def __init__(self) -> None:
        self._entries: Dict[Hashable, Tuple[Tuple, torch.Tensor]] = {}

    @staticmethod
    def _signature(sources: Sequence[torch.Tensor]) -> Tuple:
        return tuple((t._version, t.data_ptr(), t.device, t.dtype, tuple(t.shape)) for t in sources)

    def get(self, key: Hashable, sources: Sequence[torch.Tensor], fn: Callable[[], torch.Tensor]) -> torch.Tensor:
        if torch.is_grad_enabled() and any(t.requires_grad for t in sources):
            return fn()
        if torch.compiler.is_compiling():
            return fn()
        signature = self._signature(sources)
        entry = self._entries.get(key)
        if entry is None or entry[0] != signature:
            entry = (signature, fn().detach())
            self._entries[key] = entry
        return entry[1]

    def clear(self) -> None:
        self._entries.clear()

    def __len__(self) -> int:
        return len(self._entries)
