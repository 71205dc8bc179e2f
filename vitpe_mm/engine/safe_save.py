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
both, so every tool (train, test, demo, scale sweep, PE ablation) runs with them. The hooks live with the
others in vitpe_mm/engine/hooks.py; this module holds the file side.
"""
import glob
import os
import os.path as osp
from typing import Union

from mmengine.fileio import LocalBackend, register_backend

__all__ = ['ATOMIC_BACKEND', 'AtomicLocalBackend', 'atomic_write', 'remove_stale_tmp_files']

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
