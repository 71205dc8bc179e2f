"""The mmengine hooks of vitpe_mm, registered in mmengine's root HOOKS registry (mmdet and mmseg configs find
them by name):

* `IterationSeedHook`: a resumed run continues exactly as an uninterrupted one (below).
* `SafeCheckpointHook`, `SafeLoggerHook`: checkpoints a killed job never leaves half-written, and results files
  written by the main process only (the file side, atomic writes, is vitpe_mm/engine/safe_save.py);
  `use_safe_checkpoint_hook(cfg)` / `use_safe_logger_hook(cfg)` put them in place of mmengine's in a config
  (`vitpe_mm.engine.build_runner` does both).
* `CheckpointMatchHook`: refuses a test checkpoint that does not hold exactly the model's weights.
* `ProgressHook`: one short progress line every few iterations (the analysis tools).

mmengine seeds the generators once, when the runner starts, and does not save their states in checkpoints: after
`--resume` the model draws other random numbers (RPN / RoI sampling, drop path, dropout) than the uninterrupted run
would have, so the losses differ from the first resumed iteration on. `IterationSeedHook` reseeds torch's
generators (CPU and CUDA) before every training iteration from (seed, iteration, rank), so the model's randomness at
iteration i is the same whether the run was interrupted or not. The data side needs nothing: mmengine replays the
skipped batches on resume (worker seeds depend on the seed and the epoch).
"""
import os.path as osp
import time
from typing import Any, Optional

import numpy as np
import torch
from mmengine.config import Config
from mmengine.dist import is_main_process
from mmengine.fileio import LocalBackend, dump
from mmengine.hooks import CheckpointHook, Hook, LoggerHook
from mmengine.registry import HOOKS

from .safe_save import ATOMIC_BACKEND, atomic_write, remove_stale_tmp_files

__all__ = ['CheckpointMatchHook', 'CheckpointMismatchError', 'IterationSeedHook', 'ProgressHook',
           'SafeCheckpointHook', 'SafeLoggerHook', 'iteration_seed', 'use_safe_checkpoint_hook',
           'use_safe_logger_hook']


# ----------------------------------------------------------------------------------------------------------------
# Exact resume
# ----------------------------------------------------------------------------------------------------------------
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


# ----------------------------------------------------------------------------------------------------------------
# Checkpoints and results files (vitpe_mm/engine/safe_save.py)
# ----------------------------------------------------------------------------------------------------------------
@HOOKS.register_module()
class SafeCheckpointHook(CheckpointHook):
    """mmengine's `CheckpointHook` (same arguments) whose checkpoints are written atomically, and which deletes the
    checkpoints beyond `max_keep_ckpts` only after the new checkpoint and `last_checkpoint` are on disk.

    A local `out_dir` (the default: the work dir) gets `backend_args=dict(backend='atomic_local')` unless
    `backend_args` / `file_client_args` are given; remote `out_dir`s (`s3://...`) keep mmengine's behaviour.
    """

    def __init__(self, *args, **kwargs) -> None:
        out_dir = kwargs.get('out_dir')
        local = out_dir is None or '://' not in str(out_dir)
        if local and kwargs.get('backend_args') is None and kwargs.get('file_client_args') is None:
            kwargs['backend_args'] = dict(backend=ATOMIC_BACKEND)
        super().__init__(*args, **kwargs)

    def before_train(self, runner) -> None:
        super().before_train(runner)
        if is_main_process() and isinstance(self.file_backend, LocalBackend) and osp.isdir(self.out_dir):
            removed = remove_stale_tmp_files(self.out_dir) + remove_stale_tmp_files(runner.work_dir)
            if removed:
                runner.logger.info(f'removed {removed} partial checkpoint file(s) left by a killed run')

    def _save_checkpoint_with_step(self, runner, step: int, meta: dict) -> None:
        # CheckpointHook._save_checkpoint_with_step (mmengine 0.10.7) with the deletion moved after the save
        stale = []
        if self.max_keep_ckpts > 0 and not (self.keep_ckpt_ids and self.keep_ckpt_ids[-1] == step):
            if len(self.keep_ckpt_ids) == self.max_keep_ckpts:
                stale.append(self.keep_ckpt_ids.popleft())
            self.keep_ckpt_ids.append(step)
            runner.message_hub.update_info('keep_ckpt_ids', list(self.keep_ckpt_ids))

        ckpt_filename = self.filename_tmpl.format(step)
        self.last_ckpt = self.file_backend.join_path(self.out_dir, ckpt_filename)
        runner.message_hub.update_info('last_ckpt', self.last_ckpt)
        runner.save_checkpoint(self.out_dir, ckpt_filename, self.file_client_args,
                               save_optimizer=self.save_optimizer, save_param_scheduler=self.save_param_scheduler,
                               meta=meta, by_epoch=self.by_epoch, backend_args=self.backend_args, **self.args)
        if not is_main_process():
            return
        atomic_write(self.last_ckpt, osp.join(runner.work_dir, 'last_checkpoint'))
        for old_step in stale:  # only now: until here a kill leaves the previous checkpoint to resume from
            path = self.file_backend.join_path(self.out_dir, self.filename_tmpl.format(old_step))
            if self.file_backend.isfile(path):
                self.file_backend.remove(path)
            elif self.file_backend.isdir(path):  # checkpoints saved by deepspeed are directories
                self.file_backend.rmtree(path)


@HOOKS.register_module()
class SafeLoggerHook(LoggerHook):
    """mmengine's `LoggerHook` (same arguments) whose test metrics file (`<log_dir>/<timestamp>.json`) is written by
    the main process alone, atomically; every rank still logs the metrics line. With `out_dir`, the logs of the
    shared log folder are copied there (and with `keep_local=False` deleted) by the main process alone: mmengine
    does it from every rank, so one rank deletes the files another is reading."""

    def after_test_epoch(self, runner, metrics=None) -> None:
        # LoggerHook.after_test_epoch (mmengine 0.10.7) with the dump on the main process, through atomic_write
        tag, log_str = runner.log_processor.get_log_after_epoch(
            runner, len(runner.test_dataloader), 'test', with_non_scalar=True)
        runner.logger.info(log_str)
        if is_main_process():
            atomic_write(dump(self._process_tags(tag), file_format='json'),
                         osp.join(runner.log_dir, self.json_log_path))

    def after_run(self, runner) -> None:
        if is_main_process():
            super().after_run(runner)
        else:
            runner.visualizer.close()


def _replace_default_hook(cfg: Config, key: str, hook_class: type, new_type: str) -> bool:
    """Sets `default_hooks[key].type` to `new_type` when it is `hook_class` (in place, its arguments kept)."""
    hook = (cfg.get('default_hooks') or {}).get(key)
    hook_type = None if hook is None else hook.get('type')
    # the class itself (lazy-import configs), the name, or a scoped name ('mmengine.CheckpointHook')
    if hook_type is not hook_class and str(hook_type).split('.')[-1] != hook_class.__name__:
        return False
    hook['type'] = new_type
    return True


def use_safe_checkpoint_hook(cfg: Config) -> bool:
    """Makes `default_hooks.checkpoint` a `SafeCheckpointHook` when it is mmengine's `CheckpointHook` (in place,
    its arguments kept). Returns whether it did."""
    return _replace_default_hook(cfg, 'checkpoint', CheckpointHook, 'SafeCheckpointHook')


def use_safe_logger_hook(cfg: Config) -> bool:
    """Makes `default_hooks.logger` a `SafeLoggerHook` when it is mmengine's `LoggerHook` (in place, its arguments
    kept). Returns whether it did."""
    return _replace_default_hook(cfg, 'logger', LoggerHook, 'SafeLoggerHook')


# ----------------------------------------------------------------------------------------------------------------
# Test checkpoints that match the model
# ----------------------------------------------------------------------------------------------------------------
class CheckpointMismatchError(ValueError):
    """A checkpoint whose weights are not exactly those of the model it is loaded into."""


@HOOKS.register_module()
class CheckpointMatchHook(Hook):
    """Refuses (`CheckpointMismatchError`) a checkpoint that does not hold exactly the model's weights.

    mmengine loads test checkpoints non-strictly (missing weights keep their initialisation, with a warning only),
    so a checkpoint of another model, e.g. one trained with another `pe_type`, would be evaluated half random.
    The check runs on the checkpoint mmengine has just read (`after_load_checkpoint`, before the weights are
    copied into the model): no second read of the file.
    """

    priority = 'VERY_HIGH'

    def after_load_checkpoint(self, runner, checkpoint: dict) -> None:
        model = getattr(runner.model, 'module', runner.model)  # DDP / MMDistributedDataParallel
        state = checkpoint.get('state_dict', checkpoint)
        saved = {k[len('module.'):] if k.startswith('module.') else k for k in state}
        own = set(model.state_dict())
        missing, unexpected = sorted(own - saved), sorted(saved - own)
        if missing or unexpected:
            raise CheckpointMismatchError(
                f'{runner.cfg.get("load_from")} does not hold the weights of the config\'s model: {len(missing)} '
                f'missing ({", ".join(missing[:4])}{" ..." if len(missing) > 4 else ""}), {len(unexpected)} '
                f'unexpected ({", ".join(unexpected[:4])}{" ..." if len(unexpected) > 4 else ""}). Evaluate it '
                'with the config it was trained with (e.g. another pe_type: the config saved in its work_dir).')


# ----------------------------------------------------------------------------------------------------------------
# Progress lines
# ----------------------------------------------------------------------------------------------------------------
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
