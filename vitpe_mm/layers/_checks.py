"""Argument checks shared by the layers: each error names the argument and what is accepted."""
from typing import Sequence, Tuple, Union

import torch

Size2 = Union[int, Sequence[int]]


def to_2tuple(value: Size2, name: str) -> Tuple[int, int]:
    """Turns an int, a 1-tuple (square, as mmdet/mmseg accept) or a pair into a pair of positive ints, or raises
    a ValueError naming `name`."""
    if isinstance(value, torch.Size):
        value = tuple(value)
    accepted = 'a positive int, a 1-tuple (square) or a pair of positive ints'
    if isinstance(value, bool) or not isinstance(value, (int, tuple, list)):
        raise ValueError(f'{name} must be {accepted}, got {value!r}')
    pair = (value, value) if isinstance(value, int) else tuple(value)
    if len(pair) == 1:
        pair = pair * 2
    if len(pair) != 2 or not all(isinstance(v, int) and not isinstance(v, bool) for v in pair):
        raise ValueError(f'{name} must be {accepted}, got {value!r}')
    if pair[0] <= 0 or pair[1] <= 0:
        raise ValueError(f'{name} must be positive, got {value!r}')
    return int(pair[0]), int(pair[1])


def check_choice(value: str, name: str, accepted: Sequence[str]) -> str:
    if value not in accepted:
        raise ValueError(f'{name}={value!r} is not supported; accepted: {", ".join(map(repr, accepted))}')
    return value


def check_tokens(x: torch.Tensor, hw_shape: Sequence[int], name: str = 'x',
                 num_prefix_tokens: int = 0) -> Tuple[int, int]:
    """Checks that B, N, C tokens `x` hold `num_prefix_tokens` + H*W tokens for `hw_shape`."""
    hw = to_2tuple(tuple(hw_shape), 'hw_shape')
    if x.dim() != 3:
        raise ValueError(f'{name} must be a B, N, C token tensor, got shape {tuple(x.shape)}')
    expected = hw[0] * hw[1] + num_prefix_tokens
    if x.shape[1] != expected:
        raise ValueError(
            f'hw_shape={hw} does not match {name}: {x.shape[1]} tokens given, '
            f'H*W{" + prefix tokens" if num_prefix_tokens else ""} = {expected} expected')
    return hw
