"""A test-only mmengine hook for tests/distributed (imported by the launched processes through PYTHONPATH and the
configs' `custom_imports`): every rank writes what it saw under `out_dir` — rank, world size, backend and pid, its own
losses per iteration, its final weights — and one rank can SIGKILL itself before a given iteration."""
import json
import os
import signal
import time

import torch
import torch.distributed as dist
from mmengine.hooks import Hook
from mmengine.model import is_model_wrapper
from mmengine.registry import HOOKS


@HOOKS.register_module()
class DistProbeHook(Hook):
    """Writes `info_rank{r}.json`, `losses_rank{r}.jsonl` (one line per iteration: 1-based `iter` and this rank's
    loss terms) and `state_rank{r}.pt` (the model's state dict after training) under `out_dir`.

    Args:
        out_dir: folder for the files.
        kill_rank: the rank that SIGKILLs itself (-1: none), right before iteration `kill_before_iter` (1-based),
            after writing `killed_rank{r}.json` with the time.
    """

    priority = 'LOWEST'

    def __init__(self, out_dir: str, kill_rank: int = -1, kill_before_iter: int = -1) -> None:
        self.out_dir = out_dir
        self.kill_rank = kill_rank
        self.kill_before_iter = kill_before_iter

    def _path(self, runner, name: str) -> str:
        return os.path.join(self.out_dir, name.format(rank=runner.rank))

    def before_train(self, runner) -> None:
        os.makedirs(self.out_dir, exist_ok=True)
        info = dict(rank=runner.rank, world_size=runner.world_size, pid=os.getpid(), start_iter=runner.iter,
                    backend=dist.get_backend() if dist.is_initialized() else None)
        with open(self._path(runner, 'info_rank{rank}.json'), 'w') as f:
            json.dump(info, f)

    def before_train_iter(self, runner, batch_idx: int, data_batch=None) -> None:
        if runner.rank == self.kill_rank and runner.iter + 1 == self.kill_before_iter:
            with open(self._path(runner, 'killed_rank{rank}.json'), 'w') as f:
                json.dump(dict(time=time.time(), before_iter=self.kill_before_iter), f)
            os.kill(os.getpid(), signal.SIGKILL)

    def after_train_iter(self, runner, batch_idx: int, data_batch=None, outputs=None) -> None:
        record = dict(iter=runner.iter + 1, **{key: float(value) for key, value in (outputs or {}).items()})
        with open(self._path(runner, 'losses_rank{rank}.jsonl'), 'a') as f:
            f.write(json.dumps(record) + '\n')

    def after_train(self, runner) -> None:
        model = runner.model.module if is_model_wrapper(runner.model) else runner.model
        state = {key: value.detach().cpu().clone() for key, value in model.state_dict().items()}
        torch.save(state, self._path(runner, 'state_rank{rank}.pt'))
