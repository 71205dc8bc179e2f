"""vitpe_mm/engine/safe_save.py and its hooks (vitpe_mm/engine/hooks.py): atomic checkpoint files, a CheckpointHook
that keeps the previous checkpoint until the new one is on disk, and a LoggerHook whose test metrics file only the
main process writes."""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from mmengine.config import Config
from mmengine.fileio import get_file_backend
from mmengine.hooks import CheckpointHook, LoggerHook
from mmengine.logging import MessageHub, MMLogger
from mmengine.registry import HOOKS
from mmengine.runner.checkpoint import save_checkpoint

from vitpe_mm.engine import hooks as engine_hooks
from vitpe_mm.engine.hooks import SafeCheckpointHook, SafeLoggerHook, use_safe_checkpoint_hook, use_safe_logger_hook
from vitpe_mm.engine.safe_save import ATOMIC_BACKEND, AtomicLocalBackend, atomic_write, remove_stale_tmp_files

ROOT = Path(__file__).resolve().parents[2]


def test_atomic_write_replaces_the_file_and_leaves_no_temporary(tmp_path):
    target = tmp_path / 'sub' / 'iter_2.pth'
    atomic_write(b'old', target)
    atomic_write('new text', target)
    assert target.read_bytes() == b'new text'
    assert sorted(p.name for p in target.parent.iterdir()) == ['iter_2.pth']
    plain = tmp_path / 'plain'
    plain.write_bytes(b'x')
    assert target.stat().st_mode == plain.stat().st_mode  # the umask's permissions, as open() would give


def test_atomic_write_that_fails_keeps_the_old_file(tmp_path, monkeypatch):
    target = tmp_path / 'last_checkpoint'
    atomic_write('iter_2.pth', target)

    def replace_fails(src, dst):
        raise OSError('disk full')

    monkeypatch.setattr(os, 'replace', replace_fails)
    with pytest.raises(OSError, match='disk full'):
        atomic_write('iter_4.pth', target)
    assert target.read_text() == 'iter_2.pth' and os.listdir(tmp_path) == ['last_checkpoint']


WRITER = '''
import sys
from vitpe_mm.engine.safe_save import atomic_write
target, size = sys.argv[1], int(sys.argv[2])
for i in range(10 ** 6):
    atomic_write(bytes([ord('a') + i % 2]) * size, target)
    if i == 0:
        print('ready', flush=True)
'''


def test_writer_killed_midway_leaves_a_complete_file(tmp_path):
    """SIGKILL while a process rewrites a 16 MB file in a loop: the file holds one complete version, and the partial
    temporary file it may leave is cleaned up by the next run."""
    target, size = tmp_path / 'iter_2.pth', 16 * 2 ** 20
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    proc = subprocess.Popen([sys.executable, '-c', WRITER, str(target), str(size)], stdout=subprocess.PIPE, env=env,
                            text=True)
    try:
        assert proc.stdout.readline().strip() == 'ready'
        time.sleep(0.5)  # a few rewrites
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=60)
    data = target.read_bytes()
    assert len(data) == size and data in (b'a' * size, b'b' * size)
    remove_stale_tmp_files(str(tmp_path))
    assert os.listdir(tmp_path) == ['iter_2.pth']


def test_atomic_backend_is_registered():
    backend = get_file_backend('/some/dir', backend_args=dict(backend=ATOMIC_BACKEND))
    assert isinstance(backend, AtomicLocalBackend)


def make_runner(tmp_path: Path, name: str, fail_at: int = -1):
    """The few runner attributes CheckpointHook uses; `save_checkpoint` writes through mmengine's save_checkpoint
    (so through the hook's file backend), and dies before writing at step `fail_at` as a killed process would."""
    def save(out_dir, filename, file_client_args=None, backend_args=None, meta=None, **kwargs):
        if meta['iter'] == fail_at:
            raise KeyboardInterrupt('killed while saving')
        save_checkpoint(dict(meta=meta, state_dict={'w': torch.ones(2)}), os.path.join(out_dir, filename),
                        backend_args=backend_args)

    return SimpleNamespace(work_dir=str(tmp_path), logger=MMLogger.get_instance(name),
                           message_hub=MessageHub.get_instance(name), save_checkpoint=save)


@pytest.mark.parametrize('hook_type', [SafeCheckpointHook, CheckpointHook])
def test_a_save_that_dies_leaves_the_previous_checkpoint(tmp_path, hook_type):
    """max_keep_ckpts=1: SafeCheckpointHook deletes iter_2 only after iter_4 is written; mmengine's hook deletes it
    first, so a kill while writing iter_4 leaves nothing to resume from (the failure this module fixes)."""
    hook = hook_type(interval=2, by_epoch=False, max_keep_ckpts=1)
    runner = make_runner(tmp_path, f'safe_save_{hook_type.__name__}', fail_at=4)
    hook.before_train(runner)
    hook._save_checkpoint_with_step(runner, 2, meta=dict(iter=2))
    assert (tmp_path / 'iter_2.pth').is_file()
    assert (tmp_path / 'last_checkpoint').read_text() == str(tmp_path / 'iter_2.pth')
    with pytest.raises(KeyboardInterrupt):
        hook._save_checkpoint_with_step(runner, 4, meta=dict(iter=4))
    if hook_type is CheckpointHook:
        assert not (tmp_path / 'iter_2.pth').exists()
        return
    assert (tmp_path / 'iter_2.pth').is_file() and not (tmp_path / 'iter_4.pth').exists()
    assert (tmp_path / 'last_checkpoint').read_text() == str(tmp_path / 'iter_2.pth')


def test_safe_hook_keeps_max_keep_ckpts(tmp_path):
    hook = SafeCheckpointHook(interval=2, by_epoch=False, max_keep_ckpts=2)
    runner = make_runner(tmp_path, 'safe_save_keep')
    hook.before_train(runner)
    assert isinstance(hook.file_backend, AtomicLocalBackend)
    for step in (2, 4, 6):
        hook._save_checkpoint_with_step(runner, step, meta=dict(iter=step))
    assert sorted(p.name for p in tmp_path.iterdir()) == ['iter_4.pth', 'iter_6.pth', 'last_checkpoint']
    assert (tmp_path / 'last_checkpoint').read_text() == str(tmp_path / 'iter_6.pth')
    assert runner.message_hub.get_info('keep_ckpt_ids') == [4, 6]


def test_use_safe_checkpoint_hook():
    cfg = Config(dict(default_hooks=dict(checkpoint=dict(type='CheckpointHook', interval=2, max_keep_ckpts=3))))
    assert use_safe_checkpoint_hook(cfg)
    assert cfg.default_hooks.checkpoint == dict(type='SafeCheckpointHook', interval=2, max_keep_ckpts=3)
    hook = HOOKS.build(cfg.default_hooks.checkpoint)
    assert isinstance(hook, SafeCheckpointHook) and hook.backend_args == dict(backend=ATOMIC_BACKEND)

    remote = SafeCheckpointHook(interval=1, out_dir='s3://bucket/ckpts')
    assert remote.backend_args is None  # mmengine's backend for that URL
    custom = Config(dict(default_hooks=dict(checkpoint=dict(type='MyCheckpointHook'))))
    assert not use_safe_checkpoint_hook(custom) and custom.default_hooks.checkpoint.type == 'MyCheckpointHook'
    assert not use_safe_checkpoint_hook(Config(dict(default_hooks=dict(checkpoint=None))))


class RecordingLogger:
    def __init__(self):
        self.lines = []

    def info(self, msg):
        self.lines.append(msg)


def fake_test_runner(tmp_path: Path, rank: int):
    """The runner attributes LoggerHook.after_test_epoch uses; the metrics differ per rank as the `time` figures
    of two real ranks do."""
    tag = {'mIoU': 3.93, 'time': 0.25 + rank / 7}
    processor = SimpleNamespace(get_log_after_epoch=lambda runner, n, mode, with_non_scalar: (tag, f'rank {rank}'))
    return SimpleNamespace(log_processor=processor, test_dataloader=[0] * 4, logger=RecordingLogger(),
                           log_dir=str(tmp_path)), tag


@pytest.mark.parametrize('hook_type', [SafeLoggerHook, LoggerHook])
def test_test_metrics_file_is_written_by_the_main_process_only(tmp_path, monkeypatch, hook_type):
    """Two ranks at the end of a distributed test: every rank logs the metrics line; with SafeLoggerHook only rank 0
    writes `<timestamp>.json`, whole (mmengine's LoggerHook writes it from every rank: two ranks writing at once left
    `{..., "time": 0.26}6}` in a CI run)."""
    hooks = {}
    for rank in (1, 0):
        monkeypatch.setattr(engine_hooks, 'is_main_process', lambda rank=rank: rank == 0)
        runner, tag = fake_test_runner(tmp_path, rank)
        hook = hooks[rank] = hook_type()
        hook.json_log_path = '20261121_204206.json'  # set in before_run from the runner's (shared) timestamp
        hook.after_test_epoch(runner)
        assert runner.logger.lines == [f'rank {rank}']
        written = tmp_path / hook.json_log_path
        if rank == 1:
            assert written.exists() == (hook_type is LoggerHook)
        else:
            assert json.loads(written.read_text()) == tag
    assert [p.name for p in tmp_path.iterdir()] == ['20261121_204206.json']  # no temporary file left


@pytest.mark.parametrize('hook_type', [SafeLoggerHook, LoggerHook])
def test_logs_are_copied_to_out_dir_by_the_main_process_only(tmp_path, monkeypatch, hook_type):
    """out_dir with keep_local=False, two ranks at the end of a run: SafeLoggerHook copies the shared log folder
    once, from rank 0, then deletes it; mmengine's hook does it from rank 1 as well (run at the same time, one rank
    deletes what the other is reading)."""
    log_dir = tmp_path / 'work' / '20261121_204206'
    log_dir.mkdir(parents=True)
    (log_dir / '20261121_204206.log').write_text('rank 0 log\n')
    copied = tmp_path / 'out' / '20261121_204206.log'
    hook = hook_type(out_dir=str(tmp_path / 'out'), keep_local=False)
    closed = []
    for rank in (1, 0):
        monkeypatch.setattr(engine_hooks, 'is_main_process', lambda rank=rank: rank == 0)
        runner = SimpleNamespace(_log_dir=str(log_dir), logger=SimpleNamespace(info=lambda msg: None, handlers=[]),
                                 visualizer=SimpleNamespace(close=lambda rank=rank: closed.append(rank)))
        hook.after_run(runner)
        if rank == 1:  # what rank 1 did on its own
            assert copied.exists() == (hook_type is LoggerHook)
            assert (log_dir / '20261121_204206.log').exists() == (hook_type is SafeLoggerHook)
    assert closed == [1, 0]  # every rank closes its visualizer
    assert copied.read_text() == 'rank 0 log\n' and not (log_dir / '20261121_204206.log').exists()


def test_use_safe_logger_hook():
    cfg = Config(dict(default_hooks=dict(logger=dict(type='LoggerHook', interval=50))))
    assert use_safe_logger_hook(cfg)
    assert cfg.default_hooks.logger == dict(type='SafeLoggerHook', interval=50)
    assert isinstance(HOOKS.build(cfg.default_hooks.logger), SafeLoggerHook)
    for hook_type in ('mmengine.LoggerHook', LoggerHook):
        scoped = Config(dict(default_hooks=dict(logger=dict(type=hook_type))))
        assert use_safe_logger_hook(scoped) and scoped.default_hooks.logger.type == 'SafeLoggerHook'
    custom = Config(dict(default_hooks=dict(logger=dict(type='MyLoggerHook'))))
    assert not use_safe_logger_hook(custom) and custom.default_hooks.logger.type == 'MyLoggerHook'
    assert not use_safe_logger_hook(Config(dict()))
