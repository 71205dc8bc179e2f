"""Resuming mmengine checkpoints under torch's weights-only loading (vitpe_mm/engine/safe_load.py, runner.py, hooks.py).

A tiny mmengine model (no mmdet/mmseg) writes real runner checkpoints; the detector / segmentor runs through
tools/train.py are in tests/tools/test_train_test.py.
"""
import pickle

import numpy as np
import pytest
import torch
import torch.nn as nn
from mmengine.hooks import Hook
from mmengine.logging import HistoryBuffer
from mmengine.model import BaseModel
from mmengine.runner import Runner
from torch.utils.data import Dataset

from vitpe_mm.engine import (
    HISTORY_BUFFER_STATISTICS,
    IterationSeedHook,
    SafeLoadRunner,
    iteration_seed,
    mmengine_checkpoint_globals,
    mmengine_checkpoint_safe_globals,
)


class NoisyRegressor(BaseModel):
    """y = w.x with dropout, so the loss depends on the torch generator as a detector's samplers do."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(4, 1)
        self.drop = nn.Dropout(0.5)

    def forward(self, x, y=None, mode='loss'):
        pred = self.fc(self.drop(x)).squeeze(-1)  # x: B, 4 (default_collate)
        if mode == 'loss':
            return dict(loss=((pred - y) ** 2).mean())
        return pred


class LineDataset(Dataset):
    metainfo = dict(classes=('a', 'b'), palette=[(1, 2, 3)])

    def __len__(self) -> int:
        return 16

    def __getitem__(self, i):
        x = torch.linspace(-1, 1, 4) * (i + 1) / 16
        return dict(x=x, y=x.sum() * 0.5)


class LossRecorder(Hook):
    """Collects the loss of every training iteration."""

    def __init__(self) -> None:
        self.losses = {}

    def after_train_iter(self, runner, batch_idx, data_batch=None, outputs=None):
        self.losses[runner.iter] = float(outputs['loss'])  # runner.iter: 0-based index of this iteration


def make_runner(work_dir, max_iters=6, runner_cls=Runner, resume=None, hooks=True, recorder=None):
    custom_hooks = [IterationSeedHook()] if hooks else []
    if recorder is not None:
        custom_hooks.append(recorder)
    return runner_cls(
        model=NoisyRegressor(), work_dir=str(work_dir), experiment_name='toy',
        train_dataloader=dict(dataset=LineDataset(), sampler=dict(type='DefaultSampler', shuffle=True),
                              batch_size=4, num_workers=0, collate_fn=dict(type='default_collate')),
        optim_wrapper=dict(optimizer=dict(type='AdamW', lr=0.05, weight_decay=0.01)),
        train_cfg=dict(by_epoch=False, max_iters=max_iters),
        param_scheduler=[dict(type='LinearLR', start_factor=0.1, by_epoch=False, begin=0, end=3),
                         dict(type='MultiStepLR', by_epoch=False, milestones=[4], gamma=0.5)],
        default_hooks=dict(checkpoint=dict(type='CheckpointHook', interval=3, by_epoch=False),
                           logger=dict(type='LoggerHook', interval=1)),
        custom_hooks=custom_hooks, randomness=dict(seed=0), log_level='WARNING',
        load_from=resume, resume=resume is not None)


@pytest.fixture(scope='module')
def toy_run(tmp_path_factory):
    """An uninterrupted 6-iteration run with checkpoints at iterations 3 and 6, and its losses."""
    work_dir = tmp_path_factory.mktemp('toy_run')
    recorder = LossRecorder()
    runner = make_runner(work_dir, runner_cls=SafeLoadRunner, recorder=recorder)
    runner.train()
    return work_dir, recorder.losses


OLD_DEFAULT = pytest.mark.skipif(torch.__version__ < '2.6',
                                 reason='torch < 2.6 loads with weights_only=False by default')


@OLD_DEFAULT
def test_default_torch_load_refuses_mmengine_checkpoint(toy_run):
    """The bug: torch >= 2.6 loads with weights_only=True and an mmengine checkpoint holds more than tensors."""
    work_dir, _ = toy_run
    with pytest.raises(pickle.UnpicklingError, match='Weights only load failed'):
        torch.load(work_dir / 'iter_3.pth', map_location='cpu')


@OLD_DEFAULT
def test_unpatched_runner_resume_fails(toy_run, tmp_path):
    work_dir, _ = toy_run
    runner = make_runner(tmp_path, resume=str(work_dir / 'iter_3.pth'))
    with pytest.raises(pickle.UnpicklingError):
        runner.train()


@pytest.mark.skipif(not hasattr(torch.serialization, 'get_unsafe_globals_in_checkpoint'),
                    reason='torch.serialization.get_unsafe_globals_in_checkpoint appeared in torch 2.5')
def test_checkpoint_holds_only_the_allowed_globals(toy_run):
    """Every global the checkpoint names beyond torch's defaults is in the allowlist."""
    work_dir, _ = toy_run
    unsafe = set(torch.serialization.get_unsafe_globals_in_checkpoint(work_dir / 'iter_3.pth'))
    allowed = set()
    for entry in mmengine_checkpoint_safe_globals():
        if isinstance(entry, tuple):
            allowed.add(entry[1])
        else:
            allowed.add(f'{entry.__module__}.{entry.__qualname__}')
    assert unsafe, 'expected numpy / HistoryBuffer globals in an mmengine checkpoint'
    assert unsafe <= allowed, f'not allowed: {sorted(unsafe - allowed)}'


def test_allowlist_loads_real_checkpoint_weights_only(toy_run):
    work_dir, _ = toy_run
    with mmengine_checkpoint_globals():
        ckpt = torch.load(work_dir / 'iter_3.pth', map_location='cpu', weights_only=True)
    assert ckpt['meta']['iter'] == 3
    buffer = ckpt['message_hub']['log_scalars']['train/loss']
    assert isinstance(buffer, HistoryBuffer)
    history, counts = buffer.data
    assert history.dtype == np.float64 and len(history) == 3 and np.isfinite(history).all()
    assert buffer.mean() == pytest.approx(history.mean())
    assert set(ckpt['optimizer']['state']) == {0, 1}
    # the allowlist is gone after the block
    with pytest.raises(pickle.UnpicklingError):
        torch.load(work_dir / 'iter_3.pth', map_location='cpu', weights_only=True)


class Arbitrary:
    """A class no checkpoint should be allowed to instantiate."""

    def __init__(self) -> None:
        self.value = 1


class SneakyGetattr:
    """Pickles as getattr(owner, name): what HistoryBuffer's statistics methods look like in a checkpoint."""

    def __init__(self, owner, name) -> None:
        self.owner, self.name = owner, name

    def __reduce__(self):
        return getattr, (self.owner, self.name)


@pytest.mark.parametrize('payload', [
    Arbitrary(),
    np.array([Arbitrary()], dtype=object),  # object arrays stay refused
    SneakyGetattr(HistoryBuffer, 'update'),  # getattr beyond the statistics methods
    SneakyGetattr(np.ndarray, 'tofile'),
    SneakyGetattr(HistoryBuffer, '__init__'),
], ids=['class', 'object-array', 'getattr-update', 'getattr-ndarray', 'getattr-init'])
def test_allowlist_still_refuses_other_objects(tmp_path, payload):
    path = tmp_path / 'evil.pth'
    torch.save(dict(state_dict=dict(w=torch.zeros(2)), meta=dict(x=payload)), path)
    with mmengine_checkpoint_globals(), pytest.raises(pickle.UnpicklingError):
        torch.load(path, map_location='cpu', weights_only=True)


def test_allowlist_accepts_statistics_methods(tmp_path):
    path = tmp_path / 'stats.pth'
    torch.save({name: SneakyGetattr(HistoryBuffer, name) for name in HISTORY_BUFFER_STATISTICS}, path)
    with mmengine_checkpoint_globals():
        loaded = torch.load(path, map_location='cpu', weights_only=True)
    assert loaded == {name: getattr(HistoryBuffer, name) for name in HISTORY_BUFFER_STATISTICS}


def test_safe_load_runner_refuses_foreign_pickle_with_message(tmp_path, toy_run):
    path = tmp_path / 'evil.pth'
    torch.save(dict(state_dict=NoisyRegressor().state_dict(), meta=dict(x=Arbitrary())), path)
    runner = make_runner(tmp_path / 'run', runner_cls=SafeLoadRunner)
    with pytest.raises(pickle.UnpicklingError, match='outside what an mmengine training checkpoint holds'):
        runner.load_checkpoint(str(path))


def test_resume_continues_exactly(toy_run, tmp_path):
    """Resuming at iteration 3 gives the optimizer state, lr and losses of the uninterrupted run."""
    work_dir, losses = toy_run
    recorder = LossRecorder()
    runner = make_runner(tmp_path, runner_cls=SafeLoadRunner, resume=str(work_dir / 'iter_3.pth'),
                         recorder=recorder)
    runner.train()
    assert sorted(recorder.losses) == [3, 4, 5]  # 0-based: the 4th to 6th iterations
    for i in (3, 4, 5):
        assert recorder.losses[i] == pytest.approx(losses[i], rel=1e-6, abs=1e-7), i
    with mmengine_checkpoint_globals():
        ref = torch.load(work_dir / 'iter_6.pth', map_location='cpu')
        new = torch.load(tmp_path / 'iter_6.pth', map_location='cpu')
    for key, value in ref['state_dict'].items():
        torch.testing.assert_close(new['state_dict'][key], value)
    for idx, state in ref['optimizer']['state'].items():
        for key, value in state.items():
            torch.testing.assert_close(new['optimizer']['state'][idx][key], value)
    assert new['optimizer']['param_groups'][0]['lr'] == pytest.approx(ref['optimizer']['param_groups'][0]['lr'])


def test_resume_without_seed_hook_diverges(toy_run, tmp_path):
    """Why IterationSeedHook exists: without it the resumed model draws other dropout masks."""
    work_dir, losses = toy_run
    recorder = LossRecorder()
    runner = make_runner(tmp_path, runner_cls=SafeLoadRunner, resume=str(work_dir / 'iter_3.pth'),
                         hooks=False, recorder=recorder)
    runner.train()
    assert any(abs(recorder.losses[i] - losses[i]) > 1e-6 for i in (3, 4, 5))


def test_iteration_seed_depends_on_each_part():
    seeds = {iteration_seed(s, i, r) for s in (0, 1) for i in (0, 1, 2) for r in (0, 1)}
    assert len(seeds) == 12
    assert iteration_seed(0, 5, 0) == iteration_seed(0, 5, 0)
    assert all(0 <= s < 2 ** 63 for s in seeds)
