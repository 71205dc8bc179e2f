"""Training hooks that make a resumed run continue exactly as an uninterrupted one.

mmengine seeds the generators once, when the runner starts, and does not save their states in checkpoints: after
`--resume` the model draws other random numbers (RPN / RoI sampling, drop path, dropout) than the uninterrupted run
would have, so the losses differ from the first resumed iteration on. `IterationSeedHook` reseeds torch's
generators (CPU and CUDA) before every training iteration from (seed, iteration, rank), so the model's randomness at
iteration i is the same whether the run was interrupted or not. The data side needs nothing: mmengine replays the
skipped batches on resume (worker seeds depend on the seed and the epoch).
"""
from typing import Optional

import numpy as np
import torch
from mmengine.hooks import Hook
from mmengine.registry import HOOKS

__all__ = ['IterationSeedHook', 'iteration_seed']


def iteration_seed(seed: int, iteration: int, rank: int = 0) -> int:
    """A 63-bit seed for (seed, iteration, rank), independent across the three (numpy's SeedSequence hashing)."""
    state = np.random.SeedSequence([int(seed) % 2 ** 63, int(iteration), int(rank)]).generate_state(2, np.uint32)
    return (int(state[0]) << 31) ^ int(state[1])


@HOOKS.register_module()
class IterationSeedHook(Hook):
    """Reseeds torch (CPU and all CUDA devices) before each training iteration from (seed, iteration, rank).

    Args:
        seed: the base seed; None takes the runner's seed (`randomness.seed`, or the one mmengine drew and saved in
            the checkpoint's meta, which `resume` restores).
    """

    priority = 'VERY_HIGH'

    def __init__(self, seed: Optional[int] = None) -> None:
        self.seed = seed

    def before_train_iter(self, runner, batch_idx: int, data_batch=None) -> None:
        seed = self.seed if self.seed is not None else runner.seed
        torch.manual_seed(iteration_seed(seed, runner.iter, runner.rank))
