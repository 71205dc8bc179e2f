"""Checkpoints a killed job never leaves half-written: atomic file writes, and a CheckpointHook that deletes old
checkpoints only once the new one is on disk.

mmengine 0.10.7 writes a checkpoint with `open(path, 'wb').write(data)` (`LocalBackend.put`): a process killed while
writing (SIGKILL, the SIGTERM torchrun / srun send to the other ranks when one dies, a node going down) leaves a
truncated `iter_N.pth`. Its `CheckpointHook` also deletes the oldest checkpoint beyond `max_keep_ckpts` *before*
writing the new one and rewrites `last_checkpoint` in place, so a kill at that moment leaves no loadable checkpoint
at all, or a `last_checkpoint` naming a deleted file, and `--resume` fails.

Here every write goes to a temporary file in the target's folder, is flushed to disk and renamed over the target
(`os.replace`, atomic on POSIX file systems): the target is the old file or the new one, never a part.
`SafeCheckpointHook` is mmengine's `CheckpointHook` that saves through `AtomicLocalBackend` (file backend
'atomic_local') and, per save: writes the checkpoint, then `last_checkpoint`, then deletes the checkpoints beyond
`max_keep_ckpts`. `use_safe_checkpoint_hook(cfg)` puts it in place of the config's `CheckpointHook`.

The test metrics file has the same kind of problem in distributed runs: mmengine's `LoggerHook.after_test_epoch`
dumps `<timestamp>.json` from *every* rank into the one run folder the ranks share, each with its own `time`
figures, so two ranks writing at once leave a file that is not JSON (seen with two gloo ranks: a shorter line
written over a longer one); its `after_run` copies the logs to `out_dir` from every rank too (and with
`keep_local=False` every rank deletes them). `SafeLoggerHook` does both from the main process only;
`use_safe_logger_hook(cfg)` puts it in place of the config's `LoggerHook`. `vitpe_mm.engine.build_runner` applies
both, so every tool (train, test, demo, scale sweep, PE ablation) runs with them.
"""
import glob
import os
import os.path as osp
from typing import Union

from mmengine.config import Config
from mmengine.dist import is_main_process
from mmengine.fileio import LocalBackend, dump, register_backend
from mmengine.hooks import CheckpointHook, LoggerHook
from mmengine.registry import HOOKS

__all__ = ['ATOMIC_BACKEND', 'AtomicLocalBackend', 'SafeCheckpointHook', 'SafeLoggerHook', 'atomic_write',
           'remove_stale_tmp_files', 'use_safe_checkpoint_hook', 'use_safe_logger_hook']

ATOMIC_BACKEND = 'atomic_local'
_TMP_SUFFIX = '.tmp'


def _tmp_path(path: str) -> str:
    """A hidden sibling of `path`, unique per process: `.NAME.PID.tmp`."""
    folder, name = osp.split(path)
    return osp.join(folder, f'.{name}.{os.getpid()}{_TMP_SUFFIX}')


def atomic_write(data: Union[bytes, str], path: Union[str, os.PathLike], encoding: str = 'utf-8') -> None:
    """Writes `data` to `path` so that `path` holds either its old content or all of `data`, even if the process
    is killed midway: temporary file in the same folder, fsync, `os.replace`, fsync of the folder."""
    path = osp.abspath(os.fspath(path))
    folder = osp.dirname(path)
    os.makedirs(folder, exist_ok=True)
    if isinstance(data, str):
        data = data.encode(encoding)
    tmp = _tmp_path(path)
    try:
        with open(tmp, 'wb') as f:  # created with the umask's permissions, as a plain open() of the target
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if osp.exists(tmp):
            os.remove(tmp)
        raise
    dir_fd = os.open(folder, os.O_RDONLY)
    try:  # the rename itself survives a power loss only once the folder entry is on disk
        os.fsync(dir_fd)
    except OSError:  # some file systems refuse fsync on a folder
        pass
    finally:
        os.close(dir_fd)


def remove_stale_tmp_files(folder: str) -> int:
    """Deletes the temporary files `atomic_write` left in `folder` when its process was killed. Returns how many."""
    count = 0
    for tmp in glob.glob(osp.join(glob.escape(folder), f'.*{_TMP_SUFFIX}')):
        pid = osp.basename(tmp)[:-len(_TMP_SUFFIX)].rsplit('.', 1)[-1]
        if pid.isdigit() and int(pid) != os.getpid():
            os.remove(tmp)
            count += 1
    return count


class AtomicLocalBackend(LocalBackend):
    """mmengine's local file backend whose writes (`put`, `put_text`) are atomic (see `atomic_write`)."""

    def put(self, obj: bytes, filepath: Union[str, os.PathLike]) -> None:
        atomic_write(obj, filepath)

    def put_text(self, obj: str, filepath: Union[str, os.PathLike], encoding: str = 'utf-8') -> None:
        atomic_write(obj, filepath, encoding=encoding)


register_backend(ATOMIC_BACKEND, AtomicLocalBackend, force=True)


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
