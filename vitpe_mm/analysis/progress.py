"""A quiet progress hook for the analysis tools: one line every few iterations instead of mmengine's full logging.

Registered in mmengine's root HOOKS registry (so mmdet and mmseg configs find it by name).
"""
import time
from typing import Any

from mmengine.dist import is_main_process
from mmengine.hooks import Hook
from mmengine.registry import HOOKS

__all__ = ['ProgressHook']


@HOOKS.register_module()
class ProgressHook(Hook):
    """Prints '`prefix`: train i/N, loss x (t s)' or '`prefix`: i/N batches (t s)' on the main process.

    Args:
        prefix: what the run is, e.g. '[2/10] peg @ 256x256'.
        interval: iterations between lines (the last one is always printed).
    """

    priority = 'VERY_LOW'

    def __init__(self, prefix: str = '', interval: int = 10) -> None:
        self.prefix = prefix
        self.interval = max(1, int(interval))
        self._start = time.time()

    def _due(self, done: int, total: int) -> bool:
        return is_main_process() and (done % self.interval == 0 or done == total)

    def before_train(self, runner) -> None:
        self._start = time.time()

    def after_train_iter(self, runner, batch_idx: int, data_batch: Any = None, outputs: Any = None) -> None:
        done, total = runner.iter + 1, runner.max_iters
        if self._due(done, total):
            loss = outputs.get('loss') if isinstance(outputs, dict) else None
            if hasattr(loss, 'item'):
                loss = loss.item()
            loss_text = f', loss {float(loss):.4f}' if loss is not None else ''
            print(f'{self.prefix}: train {done}/{total}{loss_text} ({time.time() - self._start:.1f}s)', flush=True)

    def before_test_epoch(self, runner) -> None:
        self._start = time.time()

    def after_test_iter(self, runner, batch_idx: int, data_batch: Any = None, outputs: Any = None) -> None:
        done, total = batch_idx + 1, len(runner.test_dataloader)
        if self._due(done, total):
            print(f'{self.prefix}: {done}/{total} batches ({time.time() - self._start:.1f}s)', flush=True)
