"""Distributed training and testing run for real: 2 CPU processes talking over gloo, started by tools/dist_train.sh /
tools/dist_test.sh (torchrun) and tools/slurm_test.sh (under a stand-in `srun`), on the mini COCO / ADE20K.

The models are the shipped configs shrunk with a few overrides (tiny backbones, ~100 px images, 4 iterations, 3
validation images: an odd split, so the distributed sampler pads rank 1 and the gathered results must drop the
duplicate). Every launched process imports `dist_probe` (this folder, on PYTHONPATH), whose hook writes each rank's
losses and final weights, and kills one rank for the fault test. Each launch costs ~10-15 s of mmdet/mmseg imports
per process; the whole file runs in a few minutes on 2 cores.
"""
import json
import os
import pickle
import signal
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Dict, List, Tuple

import numpy as np
import pytest
import torch
from PIL import Image

from vitpe_mm.datasets import ensure_mini_datasets
from vitpe_mm.engine import mmengine_checkpoint_globals

from conftest import load_tool

pytestmark = [pytest.mark.distributed, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]
PROBE_DIR = Path(__file__).resolve().parent
ITERS, CKPT_INTERVAL, NUM_VAL = 4, 2, 3
LAUNCH_TIMEOUT = 480  # seconds for one launch, imports included, on a busy 2-core machine
PYCACHE: Dict[str, str] = {}  # PYTHONPYCACHEPREFIX for the launched processes (see the `pycache` fixture)

# ------------------------------------------------------------------------------------------------------------------
# Configs: the shipped ones shrunk; {placeholders} filled by write_config.
# ------------------------------------------------------------------------------------------------------------------
COMMON = '''
custom_imports = dict(imports=['vitpe_mm', 'dist_probe'], allow_failed_imports=False)
train_cfg = dict(max_iters={iters}, val_interval={iters})
param_scheduler = []
default_hooks = dict(logger=dict(interval=1),
                     checkpoint=dict(by_epoch=False, interval={ckpt_interval}, max_keep_ckpts=1))
log_processor = dict(by_epoch=False, window_size=1)
env_cfg = dict(dist_cfg=dict(backend='nccl', timeout=120))  # gloo on CPU (tools); no collective waits > 2 min
randomness = dict(seed=0)
custom_hooks = [dict(type='DistProbeHook', out_dir='{probe}', kill_rank={kill_rank}, kill_before_iter={kill_iter})]
'''

# configs/demo/cpvt_maskrcnn_demo.py (Mask R-CNN + FPN + CPVT-v2) at a few channels and 128x96 images
MASK_RCNN = '''
_base_ = ['{root}/configs/demo/cpvt_maskrcnn_demo.py']
data_root = '{data}/mini_coco/'
C = 32
model = dict(
    backbone=dict(arch=dict(embed_dims=(16, 32, 48, 64), num_heads=(1, 1, 2, 2), mlp_ratios=(2, 2, 2, 2),
                            depths=(1, 1, 1, 1))),
    neck=dict(in_channels=[16, 32, 48, 64], out_channels=C),
    rpn_head=dict(in_channels=C, feat_channels=C),
    roi_head=dict(bbox_roi_extractor=dict(out_channels=C), bbox_head=dict(in_channels=C, fc_out_channels=64),
                  mask_roi_extractor=dict(out_channels=C), mask_head=dict(in_channels=C, conv_out_channels=C)),
    test_cfg=dict(rcnn=dict(score_thr=0.0)))  # an untrained head scores ~1/81: keep its boxes to compare them
img_scale = (128, 96)
train_pipeline = [dict(type='LoadImageFromFile'), dict(type='LoadAnnotations', with_bbox=True, with_mask=True),
                  dict(type='Resize', scale=img_scale, keep_ratio=True), dict(type='PackDetInputs')]
test_pipeline = [dict(type='LoadImageFromFile'), dict(type='Resize', scale=img_scale, keep_ratio=True),
                 dict(type='LoadAnnotations', with_bbox=True, with_mask=True),
                 dict(type='PackDetInputs', meta_keys=('img_id', 'img_path', 'ori_shape', 'img_shape',
                                                       'scale_factor'))]
train_dataloader = dict(batch_size={batch}, dataset=dict(data_root=data_root, pipeline=train_pipeline))
val_dataloader = dict(dataset=dict(data_root=data_root, pipeline=test_pipeline))
test_dataloader = val_dataloader
val_evaluator = dict(ann_file=data_root + 'annotations/instances_val2017.json')
test_evaluator = val_evaluator
'''

# configs/mmseg/swinrpb-t_upernet_8xb2-160k_ade20k-512x512.py (UperNet + SwinRPB, SyncBN heads) at a few channels,
# 64x64 images resized without random crop / flip and no dropout: the data and the model's computation are the same
# whatever the number of processes.
UPERNET = '''
_base_ = ['{root}/configs/mmseg/swinrpb-t_upernet_8xb2-160k_ade20k-512x512.py']
data_root = '{data}/mini_ade'
crop_size = (64, 64)
model = dict(
    data_preprocessor=dict(size=crop_size),
    backbone=dict(arch=dict(_delete_=True, embed_dims=16, depths=(1, 1, 1, 1), num_heads=(1, 1, 2, 2)),
                  window_size=4, drop_path_rate=0.0, init_cfg=None),
    decode_head=dict(in_channels=[16, 32, 64, 128], channels=16, dropout_ratio=0.0),
    auxiliary_head=dict(in_channels=64, channels=16, dropout_ratio=0.0))
train_pipeline = [dict(type='LoadImageFromFile'), dict(type='LoadAnnotations', reduce_zero_label=True),
                  dict(type='Resize', scale=crop_size, keep_ratio=False), dict(type='PackSegInputs')]
test_pipeline = [dict(type='LoadImageFromFile'), dict(type='Resize', scale=(96, 64), keep_ratio=True),
                 dict(type='LoadAnnotations', reduce_zero_label=True), dict(type='PackSegInputs')]
train_dataloader = dict(batch_size={batch}, num_workers=0, persistent_workers=False,
                        dataset=dict(data_root=data_root, pipeline=train_pipeline))
val_dataloader = dict(num_workers=0, persistent_workers=False,
                      dataset=dict(data_root=data_root, pipeline=test_pipeline))
test_dataloader = val_dataloader
optim_wrapper = dict(optimizer=dict(lr=1e-3))
'''


def write_config(path: Path, body: str, data: Path, probe: Path, batch: int = 1, kill_rank: int = -1,
                 kill_iter: int = -1) -> Path:
    text = textwrap.dedent(body) + COMMON
    path.write_text(text.format(root=ROOT, data=data, probe=probe, batch=batch, iters=ITERS,
                                ckpt_interval=CKPT_INTERVAL, kill_rank=kill_rank, kill_iter=kill_iter))
    return path


# ------------------------------------------------------------------------------------------------------------------
# Launching
# ------------------------------------------------------------------------------------------------------------------
def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(('127.0.0.1', 0))
        return sock.getsockname()[1]


class Launch:
    """A finished command: return code, combined output, wall time."""

    def __init__(self, returncode: int, output: str, seconds: float) -> None:
        self.returncode, self.output, self.seconds = returncode, output, seconds

    def tail(self, chars: int = 4000) -> str:
        return self.output[-chars:]


def launch_many(commands: List[Tuple[List[str], Dict[str, str]]], cwd: Path,
                timeout: float = LAUNCH_TIMEOUT) -> Launch:
    """Runs (command, extra environment) pairs at the same time, each in its own session (a timeout kills torchrun
    and all its workers), one thread per process. The return code is the first non-zero one."""
    base_env = dict(os.environ, OMP_NUM_THREADS='1', MKL_NUM_THREADS='1', PYTHONUNBUFFERED='1',
                    PYTHONPATH=os.pathsep.join([str(PROBE_DIR), os.environ.get('PYTHONPATH', '')]).rstrip(os.pathsep),
                    PORT=str(free_port()), **PYCACHE)
    if PYCACHE:  # compiled once, by the first launch, rather than by every process
        base_env.pop('PYTHONDONTWRITEBYTECODE', None)
    start = time.time()
    procs = [subprocess.Popen(cmd, cwd=cwd, env=dict(base_env, **env), stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True, start_new_session=True) for cmd, env in commands]
    outputs = []
    for proc, (cmd, _) in zip(procs, commands):
        try:
            outputs.append(proc.communicate(timeout=max(1.0, start + timeout - time.time()))[0])
        except subprocess.TimeoutExpired:
            for other in procs:
                if other.poll() is None:
                    os.killpg(other.pid, signal.SIGKILL)
            pytest.fail(f'{" ".join(map(str, cmd))} did not finish within {timeout} s:\n'
                        f'{proc.communicate()[0][-4000:]}')
    returncode = next((p.returncode for p in procs if p.returncode), 0)
    return Launch(returncode, '\n'.join(outputs), time.time() - start)


def launch(cmd: List[str], cwd: Path, env: Dict[str, str] = None, timeout: float = LAUNCH_TIMEOUT) -> Launch:
    return launch_many([(cmd, env or {})], cwd, timeout)


def dist_train(config: Path, work_dir: Path, *args: str, nproc: int = 2, nnodes: int = 1) -> Launch:
    """`bash tools/dist_train.sh CONFIG NPROC ...`; with `nnodes` > 1, that many at once with NNODES / NODE_RANK /
    MASTER_ADDR / PORT set, as on several machines (here all on this one)."""
    cmd = ['bash', str(ROOT / 'tools' / 'dist_train.sh'), str(config), str(nproc), '--work-dir', str(work_dir), *args]
    if nnodes == 1:
        return launch(cmd, cwd=work_dir.parent)
    node_env = dict(NNODES=str(nnodes), MASTER_ADDR='127.0.0.1', PORT=str(free_port()))
    return launch_many([(cmd, dict(node_env, NODE_RANK=str(rank))) for rank in range(nnodes)], cwd=work_dir.parent)


def single_train(config: Path, work_dir: Path) -> Launch:
    return launch([sys.executable, str(ROOT / 'tools' / 'train.py'), str(config), '--work-dir', str(work_dir)],
                  cwd=work_dir.parent)


def single_test(config: Path, checkpoint: Path, work_dir: Path, out: Path) -> dict:
    """tools/test.py in this process (no process group): the reference for the distributed evaluations."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return load_tool('test').main([str(config), str(checkpoint), '--work-dir', str(work_dir), '--out', str(out)])
    finally:
        torch.set_num_threads(threads)


# ------------------------------------------------------------------------------------------------------------------
# Reading what the runs wrote
# ------------------------------------------------------------------------------------------------------------------
def read_checkpoint(path: Path) -> dict:
    with mmengine_checkpoint_globals():
        return torch.load(path, map_location='cpu', weights_only=True)


def probe_losses(probe: Path, rank: int) -> Dict[int, dict]:
    lines = (probe / f'losses_rank{rank}.jsonl').read_text().splitlines()
    return {record['iter']: record for record in map(json.loads, lines)}


def rank_states(probe: Path, world_size: int = 2) -> List[dict]:
    return [torch.load(probe / f'state_rank{r}.pt', weights_only=True) for r in range(world_size)]


def assert_same_state(ref: dict, other: dict, what: str, rtol: float = 0.0, atol: float = 0.0) -> None:
    assert ref.keys() == other.keys(), what
    for key, value in ref.items():
        torch.testing.assert_close(other[key], value, rtol=rtol, atol=atol,
                                   msg=lambda m, key=key: f'{what}: {key}: {m}')


def val_metrics(work_dir: Path) -> dict:
    """The validation metrics the (rank 0) logger wrote at the end of training."""
    (scalars,) = work_dir.glob('*/vis_data/scalars.json')
    records = [json.loads(line) for line in scalars.read_text().splitlines()]
    return {key: value for key, value in records[-1].items() if key not in ('data_time', 'time', 'step')}


def logged_test_metrics(work_dir: Path) -> dict:
    """The metrics tools/test.py logged (`<timestamp>/<timestamp>.json`)."""
    (log,) = [p for p in work_dir.glob('*/*.json')]
    return {key: value for key, value in json.loads(log.read_text().splitlines()[-1]).items()
            if key not in ('data_time', 'time')}


def check_rank0_wrote_alone(work_dir: Path, config: Path, checkpoints: List[str]) -> None:
    """One run folder (a timestamp both ranks share), one log, the checkpoints of rank 0: nothing per rank, no
    temporary files."""
    names = sorted(p.name for p in work_dir.iterdir())
    (run_dir,) = [p for p in work_dir.iterdir() if p.is_dir()]
    assert names == sorted(checkpoints + ['last_checkpoint', config.name, run_dir.name]), names
    assert sorted(p.name for p in run_dir.iterdir()) == sorted([f'{run_dir.name}.log', 'vis_data']), run_dir
    assert (work_dir / 'last_checkpoint').read_text().strip() == str(work_dir / checkpoints[-1])


def check_two_rank_training(run: dict, log_keys) -> None:
    """Both ranks ran in one gloo group to the end, with the same weights (and buffers) at the end."""
    assert run['launch'].returncode == 0, run['launch'].tail()
    probe = run['probe']
    infos = [json.loads((probe / f'info_rank{r}.json').read_text()) for r in range(2)]
    assert [(i['rank'], i['world_size'], i['backend']) for i in infos] == [(0, 2, 'gloo'), (1, 2, 'gloo')]
    assert infos[0]['pid'] != infos[1]['pid']
    for rank in range(2):
        losses = probe_losses(probe, rank)
        assert sorted(losses) == list(range(1, ITERS + 1))
        assert all(np.isfinite(losses[i][key]) for i in losses for key in log_keys)
    state0, state1 = rank_states(probe)
    assert_same_state(state0, state1, 'rank 1 vs rank 0 after training')  # bitwise: DDP keeps them in step
    ckpt = read_checkpoint(run['work_dir'] / f'iter_{ITERS}.pth')
    assert ckpt['meta']['iter'] == ITERS
    assert_same_state(state0, ckpt['state_dict'], 'checkpoint vs rank 0')
    check_rank0_wrote_alone(run['work_dir'], run['config'], [f'iter_{ITERS}.pth'])


# ------------------------------------------------------------------------------------------------------------------
# Runs shared by the tests
# ------------------------------------------------------------------------------------------------------------------
@pytest.fixture(scope='module', autouse=True)
def pycache(tmp_path_factory):
    """With PYTHONDONTWRITEBYTECODE set (as in some CI / sandbox set-ups) every launched process would compile
    mmdet / mmseg / torch's sources again, ~20 s of CPU each: then they share one bytecode cache instead."""
    if os.environ.get('PYTHONDONTWRITEBYTECODE'):
        PYCACHE['PYTHONPYCACHEPREFIX'] = str(tmp_path_factory.mktemp('pycache'))
    yield
    PYCACHE.clear()


@pytest.fixture(scope='module')
def data_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp('data')
    ensure_mini_datasets(str(root), coco_train=4, coco_val=NUM_VAL, ade_train=4, ade_val=NUM_VAL, progress=None)
    return root


def two_rank_run(tmp: Path, body: str, data: Path, *args: str, nproc: int = 2, nnodes: int = 1) -> dict:
    probe, work_dir = tmp / 'probe', tmp / 'work'
    config = write_config(tmp / 'model.py', body, data, probe)
    return dict(config=config, data=data, probe=probe, work_dir=work_dir,
                launch=dist_train(config, work_dir, *args, nproc=nproc, nnodes=nnodes))


@pytest.fixture(scope='module')
def mask_rcnn_run(tmp_path_factory, data_root) -> dict:
    """Mask R-CNN + CPVT-v2 on 2 'nodes' x 1 process x 1 image (NNODES=2, NODE_RANK=0/1), learning rate scaled
    (--auto-scale-lr), 4 iterations, validation at the end."""
    return two_rank_run(tmp_path_factory.mktemp('mask_rcnn'), MASK_RCNN, data_root, '--auto-scale-lr', nproc=1,
                        nnodes=2)


@pytest.fixture(scope='module')
def upernet_run(tmp_path_factory, data_root) -> dict:
    """UperNet + SwinRPB (SyncBN heads), 2 ranks x 1 image, 4 iterations, validation at the end."""
    return two_rank_run(tmp_path_factory.mktemp('upernet'), UPERNET, data_root)


# ------------------------------------------------------------------------------------------------------------------
# Tests
# ------------------------------------------------------------------------------------------------------------------
def test_mask_rcnn_two_nodes_train_and_test(mask_rcnn_run, data_root, tmp_path):
    """Two 'nodes' (NNODES=2) of one process: both ranks finish with identical weights; only rank 0 writes; the lr
    is scaled for the total batch; tools/dist_test.sh (2 processes) gathers the predictions of both ranks: one per
    validation image, each the same as a one-process evaluation's."""
    run = mask_rcnn_run
    check_two_rank_training(run, ('loss', 'loss_rpn_cls', 'loss_cls', 'loss_bbox', 'loss_mask'))
    assert "no CUDA device: env_cfg.dist_cfg.backend 'nccl' -> 'gloo'" in run['launch'].output
    # the config's lr 1e-3 is for auto_scale_lr.base_batch_size=16 images; 2 nodes x 1 process x 1 image = 2
    (scalars,) = run['work_dir'].glob('*/vis_data/scalars.json')
    lrs = {json.loads(line).get('lr') for line in scalars.read_text().splitlines()} - {None}
    assert lrs and all(lr == pytest.approx(1e-3 * 2 / 16) for lr in lrs), lrs
    checkpoint = run['work_dir'] / f'iter_{ITERS}.pth'

    dist_out, dist_dir = tmp_path / 'dist.pkl', tmp_path / 'dist_test'
    proc = launch(['bash', str(ROOT / 'tools' / 'dist_test.sh'), str(run['config']), str(checkpoint), '2',
                   '--work-dir', str(dist_dir), '--out', str(dist_out)], cwd=tmp_path)
    assert proc.returncode == 0, proc.tail()
    single_out = tmp_path / 'single.pkl'
    metrics = single_test(run['config'], checkpoint, tmp_path / 'single_test', single_out)

    ann = json.loads((data_root / 'mini_coco' / 'annotations' / 'instances_val2017.json').read_text())
    val_ids = sorted(image['id'] for image in ann['images'])
    assert len(val_ids) == NUM_VAL
    preds = {}
    for name, path in (('dist', dist_out), ('single', single_out)):
        with open(path, 'rb') as f:
            results = pickle.load(f)
        ids = [r['img_id'] for r in results]
        assert sorted(ids) == val_ids, (name, ids)  # the whole split, each image once (rank 1's padding dropped)
        preds[name] = {r['img_id']: r['pred_instances'] for r in results}
    for img_id in val_ids:
        dist_pred, single_pred = preds['dist'][img_id], preds['single'][img_id]
        assert len(dist_pred['scores']) > 0
        for key in ('bboxes', 'scores', 'labels'):
            torch.testing.assert_close(torch.as_tensor(dist_pred[key]), torch.as_tensor(single_pred[key]),
                                       rtol=1e-5, atol=1e-4,
                                       msg=lambda m, img_id=img_id, key=key: f'image {img_id} {key}: {m}')
    coco_keys = [k for k in metrics if k.startswith('coco/')]
    assert coco_keys and logged_test_metrics(dist_dir).keys() >= set(coco_keys)
    for key in coco_keys:  # tools/dist_test.sh, and the validation at the end of the 2-rank training
        assert logged_test_metrics(dist_dir)[key] == pytest.approx(metrics[key], abs=1e-4), key
        assert val_metrics(run['work_dir'])[key] == pytest.approx(metrics[key], abs=1e-4), key


FAKE_SRUN = '''#!{python}
"""Stand-in for Slurm's srun on one machine: starts --ntasks copies of the command with SLURM_PROCID / LOCALID /
NTASKS / NODELIST set, kills the others when one fails (--kill-on-bad-exit), exits with the first failure."""
import os, subprocess, sys, time
args, opts = sys.argv[1:], {{}}
while args and args[0].startswith('-'):
    opt = args.pop(0)
    if '=' in opt:
        key, value = opt.split('=', 1)
    else:
        key, value = opt, args.pop(0)
    opts[key] = value
with open(os.path.join(os.path.dirname(__file__), 'srun_options.json'), 'w') as f:
    import json; json.dump(opts, f)
ntasks = int(opts['--ntasks'])
procs = [subprocess.Popen(args, env=dict(os.environ, SLURM_PROCID=str(i), SLURM_LOCALID=str(i),
                                         SLURM_NTASKS=str(ntasks), SLURM_NODELIST='fake-node[1]'))
         for i in range(ntasks)]
while True:
    codes = [p.poll() for p in procs]
    failed = [c for c in codes if c not in (None, 0)]
    if failed and opts.get('--kill-on-bad-exit') == '1':
        for p in procs:
            if p.poll() is None:
                p.kill()
        sys.exit(failed[0])
    if all(c is not None for c in codes):
        sys.exit(next((c for c in codes if c), 0))
    time.sleep(0.1)
'''
FAKE_SCONTROL = '''#!/usr/bin/env bash
# stand-in for `scontrol show hostname NODELIST`: the one node is this machine
echo 127.0.0.1
'''


def test_upernet_two_ranks_train_and_slurm_test(upernet_run, tmp_path):
    """SyncBN heads train as CPUSyncBN over gloo (one image per rank), both ranks end with identical weights and
    BN statistics; the validation at the end and tools/slurm_test.sh (2 tasks, stand-in srun) score the whole split,
    with the masks and mIoU of a one-process evaluation."""
    run = upernet_run
    check_two_rank_training(run, ('loss', 'decode.loss_ce', 'aux.loss_ce'))
    assert 'SyncBN norm_cfg(s) -> CPUSyncBN' in run['launch'].output
    state0, _ = rank_states(run['probe'])
    assert any(key.endswith('running_var') for key in state0)  # the BN statistics were compared too
    checkpoint = run['work_dir'] / f'iter_{ITERS}.pth'

    bin_dir = tmp_path / 'bin'
    bin_dir.mkdir()
    for name, text in (('srun', FAKE_SRUN.format(python=sys.executable)), ('scontrol', FAKE_SCONTROL)):
        (bin_dir / name).write_text(text)
        (bin_dir / name).chmod(0o755)
    slurm_out, slurm_dir = tmp_path / 'slurm_masks', tmp_path / 'slurm_test'
    proc = launch(['bash', str(ROOT / 'tools' / 'slurm_test.sh'), 'cpu', 'vitpe-test', str(run['config']),
                   str(checkpoint), '--work-dir', str(slurm_dir), '--out', str(slurm_out)], cwd=tmp_path,
                  env=dict(PATH=f'{bin_dir}{os.pathsep}{os.environ["PATH"]}', GPUS='2', GPUS_PER_NODE='2',
                           MASTER_PORT=str(free_port())))
    assert proc.returncode == 0, proc.tail()
    assert 'rank 1 of 2' in proc.output and 'backend gloo' in proc.output
    srun_opts = json.loads((bin_dir / 'srun_options.json').read_text())
    assert srun_opts['--ntasks'] == srun_opts['--ntasks-per-node'] == '2' and srun_opts['--gres'] == 'gpu:2'
    assert srun_opts['--kill-on-bad-exit'] == '1'  # one task dying ends the job

    single_out = tmp_path / 'single_masks'
    metrics = single_test(run['config'], checkpoint, tmp_path / 'single_test', single_out)
    masks = {}
    for name, folder in (('slurm', slurm_out), ('single', single_out)):
        files = sorted(folder.glob('*.png'))
        assert len(files) == NUM_VAL, (name, files)
        masks[name] = {f.name: np.asarray(Image.open(f)) for f in files}
    assert masks['slurm'].keys() == masks['single'].keys()
    for name, mask in masks['single'].items():
        np.testing.assert_array_equal(masks['slurm'][name], mask, err_msg=name)
    assert metrics['mIoU'] > 0
    for key in ('aAcc', 'mIoU', 'mAcc'):
        assert logged_test_metrics(slurm_dir)[key] == pytest.approx(metrics[key], abs=1e-6), key
        assert val_metrics(run['work_dir'])[key] == pytest.approx(metrics[key], abs=1e-6), key


def test_two_ranks_match_one_process_with_the_total_batch(upernet_run, tmp_path):
    """2 processes x 1 image give the losses of 1 process x 2 images, iteration after iteration.

    At iteration 1 the weights are the same and so is the arithmetic: each rank's loss is a mean over its image's
    pixels (equal counts), so the mean over ranks is the 2-image batch mean; SyncBN (CPUSyncBN over gloo) normalises
    with the 2-image statistics as BN does in one process; DDP averages the gradients over ranks, the gradient of
    that batch mean. Data order is the same (rank r takes every 2nd index of the same seeded permutation) and the
    model draws no random numbers (no dropout / drop path). What differs is the order of floating-point sums
    (per-rank partial sums, gloo's all-reduce): ~1e-7 relative in the losses (measured over the 4 iterations). Hence
    rel 1e-5 at iteration 1, and 1e-4 afterwards, where the weights differ a little: AdamW's first steps are ~lr *
    sign(gradient), so a weight whose gradient is ~0 may step differently by up to lr (1e-3); measured up to 6e-5 for
    a few LayerNorm biases and 1e-4 for BN running variances, hence atol 2.5e-4 (lr / 4) on the weights.
    """
    run = upernet_run
    assert run['launch'].returncode == 0, run['launch'].tail()
    probe, work_dir = tmp_path / 'probe', tmp_path / 'work'
    config = write_config(tmp_path / 'model.py', UPERNET, run['data'], probe, batch=2)
    proc = single_train(config, work_dir)
    assert proc.returncode == 0, proc.tail()
    single = probe_losses(probe, 0)
    ranks = [probe_losses(run['probe'], r) for r in range(2)]
    for it in range(1, ITERS + 1):
        for key in ('decode.loss_ce', 'aux.loss_ce', 'loss'):
            mean_over_ranks = (ranks[0][it][key] + ranks[1][it][key]) / 2
            rel = 1e-5 if it == 1 else 1e-4
            assert mean_over_ranks == pytest.approx(single[it][key], rel=rel), (it, key)
    (state,) = rank_states(probe, world_size=1)
    assert_same_state(state, rank_states(run['probe'])[0], '2 ranks x 1 vs 1 x 2 images', rtol=1e-3, atol=2.5e-4)


def test_killed_rank_stops_the_job_and_resume_continues(upernet_run, tmp_path):
    """SIGKILL of rank 1 before iteration 4: the job exits non-zero within seconds, iter_2.pth (saved atomically,
    rank 0) loads, and `--resume` with 2 processes finishes the run exactly as the uninterrupted one."""
    probe, work_dir = tmp_path / 'probe', tmp_path / 'work'
    data = upernet_run['data']
    config = write_config(tmp_path / 'model.py', UPERNET, data, probe, kill_rank=1, kill_iter=ITERS)
    proc = dist_train(config, work_dir)
    end = time.time()
    assert proc.returncode != 0, proc.tail()
    killed = json.loads((probe / 'killed_rank1.json').read_text())
    print(f'the job stopped {end - killed["time"]:.1f} s after rank 1 was killed')
    assert end - killed['time'] < 60, f'the job took {end - killed["time"]:.0f} s to stop after the kill'
    assert sorted(probe_losses(probe, 0)) == list(range(1, ITERS))  # rank 0 got no further than iteration 3
    ckpt_path = work_dir / f'iter_{CKPT_INTERVAL}.pth'
    assert (work_dir / 'last_checkpoint').read_text().strip() == str(ckpt_path)
    assert not list(work_dir.glob('.*.tmp')) and not (work_dir / f'iter_{ITERS}.pth').exists()
    assert read_checkpoint(ckpt_path)['meta']['iter'] == CKPT_INTERVAL

    resume_probe = tmp_path / 'probe_resume'
    config = write_config(tmp_path / 'model.py', UPERNET, data, resume_probe)
    proc = dist_train(config, work_dir, '--resume')
    assert proc.returncode == 0, proc.tail()
    assert f'resumed epoch: 0, iter: {CKPT_INTERVAL}' in proc.output
    for rank in range(2):
        assert sorted(probe_losses(resume_probe, rank)) == list(range(CKPT_INTERVAL + 1, ITERS + 1))
        reference = probe_losses(upernet_run['probe'], rank)
        for it, record in probe_losses(resume_probe, rank).items():
            assert record['loss'] == pytest.approx(reference[it]['loss'], rel=1e-5), (rank, it)
    state0, state1 = rank_states(resume_probe)
    assert_same_state(state0, state1, 'rank 1 vs rank 0 after resuming')
    final = read_checkpoint(work_dir / f'iter_{ITERS}.pth')
    reference = read_checkpoint(upernet_run['work_dir'] / f'iter_{ITERS}.pth')
    assert_same_state(reference['state_dict'], final['state_dict'], 'resumed vs uninterrupted', rtol=1e-5,
                      atol=1e-6)
    assert not (work_dir / f'iter_{CKPT_INTERVAL}.pth').exists()  # max_keep_ckpts=1, deleted after the new save
