"""Shims for the oldest supported stack (torch 2.1): the torch.compiler helpers that appeared later.

torch.compiler.is_compiling arrived in torch 2.3 (2.1 has torch._dynamo.is_compiling); torch.compiler.disable and
torch._dynamo.assume_constant_result exist in 2.1 but are looked up defensively so that an import never fails.
"""
from typing import Callable, TypeVar

import torch

F = TypeVar('F', bound=Callable)


def is_compiling() -> bool:
    """True while dynamo traces the caller (torch.compile), on every supported torch."""
    compiler = getattr(torch, 'compiler', None)
    fn = getattr(compiler, 'is_compiling', None)
    if fn is None:
        fn = getattr(getattr(torch, '_dynamo', None), 'is_compiling', None)
    return bool(fn()) if fn is not None else False


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
