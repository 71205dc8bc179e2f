"""Shims for the oldest supported stack (torch 2.1): the torch.compiler helpers that appeared later.

torch.compiler.is_compiling arrived in torch 2.3 (2.1 has torch._dynamo.is_compiling); torch.compiler.disable and
torch._dynamo.assume_constant_result exist in 2.1 but are looked up defensively so that an import never fails.
"""
import importlib
from typing import Callable, TypeVar

import torch

F = TypeVar('F', bound=Callable)

# (major, minor) of the running torch, for the few paths that differ on old releases.
TORCH_VERSION = tuple(int(x) for x in torch.__version__.split('+')[0].split('.')[:2])


def _find_is_compiling() -> Callable[[], bool]:
    fn = getattr(getattr(torch, 'compiler', None), 'is_compiling', None)
    if fn is None:
        dynamo = importlib.import_module('torch._dynamo')  # torch 2.1: torch._dynamo.is_compiling
        fn = getattr(dynamo, 'is_compiling', None)
    return fn if fn is not None else (lambda: False)


# Looked up once at import: dynamo traces the call itself, not a getattr on a module (torch 2.1 cannot).
_is_compiling = _find_is_compiling()


def is_compiling() -> bool:
    """True while dynamo traces the caller (torch.compile), on every supported torch."""
    return _is_compiling()


def compiler_disable(fn: F) -> F:
    """`torch.compiler.disable` (run outside compiled graphs), falling back to torch._dynamo.disable."""
    disable = getattr(getattr(torch, 'compiler', None), 'disable', None)
    if disable is None:
        disable = getattr(getattr(torch, '_dynamo', None), 'disable', None)
    return disable(fn) if disable is not None else fn


def assume_constant_result(fn: F) -> F:
    """`torch._dynamo.assume_constant_result` where it exists; the plain function otherwise."""
    decorator = getattr(getattr(torch, '_dynamo', None), 'assume_constant_result', None)
    return decorator(fn) if decorator is not None else fn
