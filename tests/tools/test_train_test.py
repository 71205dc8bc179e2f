"""tools/train.py and tools/test.py end to end on the mini datasets, and the checks they run before building.

The slow tests train tiny Mask R-CNN + CPVTv2 and UperNet + SwinRPB models for a few CPU iterations as a user
would (`python tools/train.py CONFIG ...` in a subprocess), resume them the same way, and evaluate them with
tools/test.py's main() (in this process: a subprocess costs ~10 s of mmdet/mmseg imports).
"""
import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from vitpe_mm.datasets import ensure_mini_datasets
from vitpe_mm.engine import fit_to_machine, load_config, mmengine_checkpoint_globals, mmengine_checkpoint_safe_globals

from conftest import load_tool

ROOT = Path(__file__).resolve().parents[2]
TRAIN = ROOT / 'tools' / 'train.py'

ITERS, RESUME_AT = 6, 3

# ------------------------------------------------------------------------------------------------------------------
# Tiny configs: the real toolbox bases, our backbones at a few channels, ~100 px images, 2 images = 1 batch.
# ------------------------------------------------------------------------------------------------------------------
COMMON = '''
custom_imports = dict(imports=['vitpe_mm'], allow_failed_imports=False)
train_cfg = dict(type='IterBasedTrainLoop', max_iters={iters}, val_interval=1000)
val_dataloader = None
val_cfg = None
val_evaluator = None
test_cfg = dict(type='TestLoop')
optim_wrapper = dict(type='OptimWrapper',
                     optimizer=dict(type='AdamW', lr=1e-3, weight_decay=0.01))
param_scheduler = []
default_hooks = dict(checkpoint=dict(type='CheckpointHook', by_epoch=False, interval={resume_at}),
                     logger=dict(type='LoggerHook', interval=1))
log_processor = dict(by_epoch=False, window_size=1)
randomness = dict(seed=0)
'''

MASK_RCNN = '''
_base_ = ['mmdet::_base_/models/mask-rcnn_r50_fpn.py', 'mmdet::_base_/datasets/coco_instance.py',
          'mmdet::_base_/default_runtime.py']
C = 32
model = dict(
    backbone=dict(_delete_=True, type='CPVTv2', pe_type='peg', norm_after_stage=False, init_cfg=None,
                  arch=dict(embed_dims=(16, 32, 48, 64), num_heads=(1, 1, 2, 2), mlp_ratios=(2, 2, 2, 2),
                            depths=(1, 1, 1, 1))),
    neck=dict(in_channels=[16, 32, 48, 64], out_channels=C),
    rpn_head=dict(in_channels=C, feat_channels=C),
    roi_head=dict(bbox_roi_extractor=dict(out_channels=C), bbox_head=dict(in_channels=C, fc_out_channels=64),
                  mask_roi_extractor=dict(out_channels=C), mask_head=dict(in_channels=C, conv_out_channels=C)),
    test_cfg=dict(rcnn=dict(score_thr=0.0)))  # an untrained head scores ~1/81: keep its boxes to evaluate them
train_pipeline = [dict(type='LoadImageFromFile'), dict(type='LoadAnnotations', with_bbox=True, with_mask=True),
                  dict(type='Resize', scale=(128, 96), keep_ratio=True), dict(type='PackDetInputs')]
test_pipeline = [dict(type='LoadImageFromFile'), dict(type='Resize', scale=(128, 96), keep_ratio=True),
                 dict(type='LoadAnnotations', with_bbox=True, with_mask=True),
                 dict(type='PackDetInputs', meta_keys=('img_id', 'img_path', 'ori_shape', 'img_shape',
                                                       'scale_factor'))]
train_dataloader = dict(batch_size=2, num_workers=0, persistent_workers=False, batch_sampler=None,
                        sampler=dict(type='InfiniteSampler', shuffle=False),
                        dataset=dict(data_root='{train_root}', indices=2, pipeline=train_pipeline))
test_dataloader = dict(batch_size=1, num_workers=0, persistent_workers=False,
                       dataset=dict(data_root='{root}/mini_coco/', indices=2, pipeline=test_pipeline))
test_evaluator = dict(ann_file='{root}/mini_coco/annotations/instances_val2017.json')
'''

UPERNET = '''
_base_ = ['mmseg::_base_/models/upernet_swin.py', 'mmseg::_base_/datasets/ade20k.py',
          'mmseg::_base_/default_runtime.py']
crop_size = (64, 64)
model = dict(  # decode heads keep the base's norm_cfg SyncBN: mmengine reverts it to BN in a 1-process CPU run
    data_preprocessor=dict(size=crop_size),
    backbone=dict(_delete_=True, type='SwinRPB', arch=dict(embed_dims=16, depths=(1, 1, 1, 1),
                  num_heads=(1, 1, 2, 2)), window_size=4, drop_path_rate=0.1, init_cfg=None),
    decode_head=dict(in_channels=[16, 32, 64, 128], channels=32, num_classes=150),
    auxiliary_head=dict(in_channels=64, channels=16, num_classes=150))
train_pipeline = [dict(type='LoadImageFromFile'), dict(type='LoadAnnotations', reduce_zero_label=True),
                  dict(type='Resize', scale=crop_size, keep_ratio=False), dict(type='PackSegInputs')]
test_pipeline = [dict(type='LoadImageFromFile'), dict(type='Resize', scale=(96, 64), keep_ratio=True),
                 dict(type='LoadAnnotations', reduce_zero_label=True), dict(type='PackSegInputs')]
train_dataloader = dict(batch_size=2, num_workers=0, persistent_workers=False,
                        sampler=dict(type='InfiniteSampler', shuffle=False),
                        dataset=dict(data_root='{root}/mini_ade', indices=2, pipeline=train_pipeline))
test_dataloader = dict(batch_size=1, num_workers=0, persistent_workers=False,
                       dataset=dict(data_root='{root}/mini_ade', indices=2, pipeline=test_pipeline))
'''


@pytest.fixture(scope='module')
def mini_root(tmp_path_factory):
    """Small mini COCO / ADE trees, plus a COCO copy whose first two train images are grayscale and RGBA."""
    root = tmp_path_factory.mktemp('data')
    ensure_mini_datasets(str(root), coco_train=4, coco_val=2, ade_train=4, ade_val=2, progress=None)
    mixed = root / 'mini_coco_mixed'
    shutil.copytree(root / 'mini_coco', mixed)
    ann_file = mixed / 'annotations' / 'instances_train2017.json'
    ann = json.loads(ann_file.read_text())
    first, second = sorted(ann['images'], key=lambda im: im['id'])[:2]
    gray = mixed / 'train2017' / first['file_name']
    Image.open(gray).convert('L').save(gray, format='JPEG')
    rgba_src = mixed / 'train2017' / second['file_name']
    rgba = rgba_src.with_suffix('.png')
    Image.open(rgba_src).convert('RGBA').save(rgba)
    rgba_src.unlink()
    second['file_name'] = rgba.name
    ann_file.write_text(json.dumps(ann))
    return root


def write_config(path: Path, body: str, root: Path, train_root: str = '') -> Path:
    text = textwrap.dedent(body) + COMMON
    path.write_text(text.format(root=root, train_root=train_root, iters=ITERS, resume_at=RESUME_AT))
    return path


def run_tool(script: Path, *args: str, timeout: int = 600) -> subprocess.CompletedProcess:
    # one thread: these tiny models are all per-op overhead, and spinning OpenMP threads slow down by 10-40x
    # when other processes share the cores
    env = dict(os.environ, PYTHONUNBUFFERED='1', OMP_NUM_THREADS='1')
    return subprocess.run([sys.executable, str(script), *map(str, args)], cwd=ROOT, env=env, text=True,
                          capture_output=True, timeout=timeout)


def logged_losses(work_dir: Path) -> dict:
    """{iteration (1-based): loss} from the scalars.json files of all runs in `work_dir`."""
    losses = {}
    for scalars in sorted(work_dir.glob('*/vis_data/scalars.json')):
        for line in scalars.read_text().splitlines():
            record = json.loads(line)
            if 'loss' in record:
                losses[record['step']] = record['loss']
    return losses


def read_checkpoint(path: Path) -> dict:
    with mmengine_checkpoint_globals():
        return torch.load(path, map_location='cpu', weights_only=True)


def check_training_and_resume(tmp_path: Path, config: Path, log_keys) -> Path:
    """Trains ITERS iterations, resumes a second run from iteration RESUME_AT; returns the first work dir."""
    full, resumed = tmp_path / 'full', tmp_path / 'resumed'
    proc = run_tool(TRAIN, config, '--work-dir', full)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    losses = logged_losses(full)
    assert sorted(losses) == list(range(1, ITERS + 1))
    values = np.array([losses[i] for i in range(1, ITERS + 1)])
    assert np.isfinite(values).all(), values
    assert values[-2:].mean() < values[:2].mean(), f'loss did not decrease: {values}'
    scalars = json.loads(next(full.glob('*/vis_data/scalars.json')).read_text().splitlines()[0])
    for key in log_keys:
        assert np.isfinite(scalars[key]), (key, scalars)

    # every global the runner's checkpoint names beyond torch's defaults is in the allowlist
    names = {e[1] if isinstance(e, tuple) else f'{e.__module__}.{e.__qualname__}'
             for e in mmengine_checkpoint_safe_globals()}
    unsafe = set(torch.serialization.get_unsafe_globals_in_checkpoint(full / f'iter_{RESUME_AT}.pth'))
    assert unsafe <= names, sorted(unsafe - names)

    proc = run_tool(TRAIN, config, '--work-dir', resumed, '--resume', full / f'iter_{RESUME_AT}.pth')
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert f'resumed epoch: 0, iter: {RESUME_AT}' in proc.stdout + proc.stderr
    resumed_losses = logged_losses(resumed)
    assert sorted(resumed_losses) == list(range(RESUME_AT + 1, ITERS + 1))
    for step in resumed_losses:  # the next loss, and the ones after it, as in the uninterrupted run
        assert resumed_losses[step] == pytest.approx(losses[step], rel=1e-4, abs=1e-6), step
    ref, new = read_checkpoint(full / f'iter_{ITERS}.pth'), read_checkpoint(resumed / f'iter_{ITERS}.pth')
    assert new['meta']['iter'] == ref['meta']['iter'] == ITERS
    assert ref['optimizer']['state'].keys() == new['optimizer']['state'].keys()
    for idx, state in ref['optimizer']['state'].items():
        for key, value in state.items():
            torch.testing.assert_close(new['optimizer']['state'][idx][key], value, rtol=1e-4, atol=1e-6)
    for key, value in ref['state_dict'].items():
        torch.testing.assert_close(new['state_dict'][key], value, rtol=1e-4, atol=1e-6)
    return full


@pytest.mark.slow
def test_mask_rcnn_cpvt_train_test_resume(tmp_path, mini_root, one_thread):
    """Mask R-CNN + CPVTv2 on a batch of a grayscale JPEG and an RGBA PNG (converted to 3 channels by
    LoadImageFromFile's color_type='color'): loss decreases, COCO bbox/segm AP come out, resume is exact."""
    config = write_config(tmp_path / 'mask_rcnn_cpvt.py', MASK_RCNN, mini_root,
                          train_root=f'{mini_root}/mini_coco_mixed/')
    full = check_training_and_resume(tmp_path, config, ('loss_rpn_cls', 'loss_cls', 'loss_bbox', 'loss_mask'))
    out = tmp_path / 'preds.pkl'
    metrics = load_tool('test').main([str(config), str(full / f'iter_{ITERS}.pth'), '--work-dir',
                                      str(tmp_path / 'test'), '--out', str(out)])
    for kind in ('bbox', 'segm'):
        for key in ('mAP', 'mAP_50', 'mAP_75'):
            value = metrics[f'coco/{kind}_{key}']
            assert 0.0 <= value <= 1.0, (kind, key, value)
    assert out.is_file()


@pytest.mark.slow
def test_upernet_swin_train_test_resume(tmp_path, mini_root, one_thread):
    """UperNet + SwinRPB (SyncBN heads on CPU): loss decreases, mIoU comes out in [0, 100], resume is exact."""
    config = write_config(tmp_path / 'upernet_swin.py', UPERNET, mini_root)
    full = check_training_and_resume(tmp_path, config, ('decode.loss_ce', 'aux.loss_ce'))
    metrics = load_tool('test').main([str(config), str(full / f'iter_{ITERS}.pth'), '--work-dir',
                                      str(tmp_path / 'test')])
    for key in ('mIoU', 'mAcc', 'aAcc'):
        assert 0.0 <= metrics[key] <= 100.0, (key, metrics[key])


# ------------------------------------------------------------------------------------------------------------------
# Fast: what train.py / test.py check and change before building anything.
# ------------------------------------------------------------------------------------------------------------------
def test_gray_and_rgba_images_load_as_three_channels(tmp_path, mini_root):
    from mmdet.registry import DATASETS
    from mmengine.registry import init_default_scope

    config = write_config(tmp_path / 'mask_rcnn_cpvt.py', MASK_RCNN, mini_root,
                          train_root=f'{mini_root}/mini_coco_mixed/')
    cfg = load_config(str(config))
    init_default_scope('mmdet')
    dataset = DATASETS.build(cfg.train_dataloader.dataset)
    modes = {Image.open(dataset.get_data_info(i)['img_path']).mode for i in range(2)}
    assert modes == {'L', 'RGBA'}
    for i in range(2):
        inputs = dataset[i]['inputs']
        assert inputs.shape[0] == 3 and inputs.dtype == torch.uint8, inputs.shape


def test_missing_data_is_named(tmp_path, mini_root, capsys):
    train = load_tool('train')

    config = write_config(tmp_path / 'cfg.py', MASK_RCNN, tmp_path / 'nowhere',
                          train_root=f'{tmp_path}/nowhere/mini_coco/')
    with pytest.raises(SystemExit) as exit_info:
        train.main([str(config), '--work-dir', str(tmp_path / 'wd')])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert f'{tmp_path}/nowhere/mini_coco' in err and 'annotations/instances_train2017.json' in err


def test_missing_pretrained_checkpoint_says_how_to_get_it(tmp_path, mini_root, capsys):
    train = load_tool('train')

    missing = tmp_path / 'checkpoints' / 'cpvtv2_s.pth'
    body = MASK_RCNN.replace('init_cfg=None', f"init_cfg=dict(type='Pretrained', checkpoint='{missing}')")
    config = write_config(tmp_path / 'cfg.py', body, mini_root, train_root=f'{mini_root}/mini_coco/')
    with pytest.raises(SystemExit):
        train.main([str(config), '--work-dir', str(tmp_path / 'wd')])
    err = capsys.readouterr().err
    assert str(missing) in err
    assert 'tools/convert_checkpoint.py' in err and '--cfg-options model.backbone.init_cfg=None' in err


def test_missing_test_checkpoint(tmp_path, mini_root, capsys):
    test_tool = load_tool('test')

    config = write_config(tmp_path / 'cfg.py', UPERNET, mini_root)
    with pytest.raises(SystemExit):
        test_tool.main([str(config), str(tmp_path / 'iter_9.pth')])
    assert str(tmp_path / 'iter_9.pth') in capsys.readouterr().err


def test_checkpoint_of_another_model_is_refused(tmp_path, mini_root, capsys):
    """mmengine would load it non-strictly and evaluate random weights in place of the missing ones."""
    from mmengine.registry import init_default_scope
    from mmseg.registry import MODELS as SEG_MODELS
    test_tool = load_tool('test')
    config = write_config(tmp_path / 'cfg.py', UPERNET, mini_root)
    cfg = load_config(str(config))
    init_default_scope('mmseg')
    state = SEG_MODELS.build(cfg.model).state_dict()
    table = next(k for k in state if 'relative_position_bias_table' in k)
    state.pop(table)  # e.g. a model trained with another pe_type
    state['backbone.pos_block.0.proj.0.weight'] = torch.zeros(1)
    ckpt = tmp_path / 'other.pth'
    torch.save({'state_dict': state, 'meta': {}}, ckpt)
    with pytest.raises(SystemExit) as exit_info:
        test_tool.main([str(config), str(ckpt), '--work-dir', str(tmp_path / 'wd')])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert '1 missing' in err and table in err and 'backbone.pos_block.0.proj.0.weight' in err
    assert '--allow-mismatch' in err


@pytest.mark.parametrize('body,toolbox', [(MASK_RCNN, 'mmdet'), (UPERNET, 'mmseg')], ids=['mmdet', 'mmseg'])
def test_toolbox_from_config(tmp_path, mini_root, body, toolbox):
    from vitpe_mm.engine import detect_toolbox

    cfg = load_config(str(write_config(tmp_path / 'cfg.py', body, mini_root, f'{mini_root}/mini_coco/')))
    assert cfg.default_scope == toolbox
    cfg.default_scope = None  # then the model type decides
    assert detect_toolbox(cfg) == toolbox
    cfg.model.type = 'NoSuchDetector'
    with pytest.raises(ValueError, match='default_scope'):
        detect_toolbox(cfg)


def test_fit_to_machine_without_cuda(tmp_path, mini_root):
    config = write_config(tmp_path / 'cfg.py', UPERNET, mini_root)
    cfg = load_config(str(config))
    assert cfg.env_cfg.dist_cfg.backend == 'nccl'
    notes = fit_to_machine(cfg, 'none', cuda=False)
    assert cfg.env_cfg.dist_cfg.backend == 'gloo' and any('gloo' in n for n in notes)
    assert cfg.model.decode_head.norm_cfg.type == 'SyncBN'  # mmengine reverts it when it wraps the model

    cfg = load_config(str(config))
    fit_to_machine(cfg, 'pytorch', cuda=False)
    assert cfg.model.decode_head.norm_cfg.type == 'BN' and cfg.model.auxiliary_head.norm_cfg.type == 'BN'
    assert cfg.model_wrapper_cfg.device_ids is None

    cfg = load_config(str(config))
    fit_to_machine(cfg, 'pytorch', cuda=True)
    assert cfg.env_cfg.dist_cfg.backend == 'nccl' and cfg.model.decode_head.norm_cfg.type == 'SyncBN'

    cfg = load_config(str(config))
    cfg.optim_wrapper.type = 'AmpOptimWrapper'
    with pytest.raises(ValueError, match='CUDA'):
        fit_to_machine(cfg, 'none', cuda=False)


# ------------------------------------------------------------------------------------------------------------------
# tools/demo.py
# ------------------------------------------------------------------------------------------------------------------
@pytest.mark.slow
def test_demo_runs_and_reports(tmp_path):
    """`bash run.sh demo` in short: 2 iterations, validation on 2 images (every box kept: the untrained heads score
    below the 0.05 threshold); the table and the paths are printed."""
    proc = run_tool(ROOT / 'tools' / 'demo.py', '--max-iters', '2', '--work-dir', tmp_path / 'demo',
                    '--cfg-options', 'val_dataloader.dataset.indices=2', 'model.test_cfg.rcnn.score_thr=0.0')
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    report = proc.stdout[proc.stdout.rindex('vitpe_mm demo:'):]
    assert '2 iterations' in report
    for row in ('bbox', 'segm'):
        line = next(line for line in report.splitlines() if line.startswith(row))
        cells = line.split()[1:]
        assert len(cells) == 6 and all(c == '-' or 0.0 <= float(c) <= 1.0 for c in cells), line
    checkpoint = next(line for line in report.splitlines() if line.startswith('checkpoint:')).split()[1]
    assert Path(checkpoint) == tmp_path / 'demo' / 'iter_2.pth' and Path(checkpoint).is_file()
    log = next(line for line in report.splitlines() if line.startswith('log:')).split()[1]
    assert 'Saving checkpoint at 2 iterations' in Path(log).read_text()


def test_demo_max_iters_clips_the_schedule():
    from mmengine.config import Config

    demo = load_tool('demo')
    cfg = Config(dict(
        train_cfg=dict(type='IterBasedTrainLoop', max_iters=300, val_interval=300),
        param_scheduler=[dict(type='LinearLR', by_epoch=False, begin=0, end=50),
                         dict(type='MultiStepLR', by_epoch=False, begin=0, end=300, milestones=[255])],
        default_hooks=dict(checkpoint=dict(type='CheckpointHook', by_epoch=False, interval=300))))
    demo.set_max_iters(cfg, 20)
    assert cfg.train_cfg.max_iters == 20 and cfg.train_cfg.val_interval == 20
    assert [s.end for s in cfg.param_scheduler] == [20, 20]
    assert cfg.default_hooks.checkpoint.interval == 20
    cfg.train_cfg = dict(type='EpochBasedTrainLoop', max_epochs=12)
    with pytest.raises(ValueError, match='iteration-based'):
        demo.set_max_iters(cfg, 20)


def test_demo_metrics_table():
    demo = load_tool('demo')
    metrics = {f'coco/{kind}_{key}': 0.5 for kind in ('bbox', 'segm') for key, _ in demo.COCO_COLUMNS}
    metrics['coco/segm_mAP_s'] = -1.0  # pycocotools: no object of that size
    table = demo.format_metrics(metrics).splitlines()
    assert table[0].split() == ['AP', 'AP50', 'AP75', 'APs', 'APm', 'APl']
    assert table[1].split() == ['bbox'] + ['0.500'] * 6
    assert table[2].split() == ['segm', '0.500', '0.500', '0.500', '-', '0.500', '0.500']
    assert demo.format_metrics({'mIoU': 41.2, 'aAcc': 80.0}).splitlines() == ['mIoU  41.200', 'aAcc  80.000']
    assert 'predicted nothing' in demo.format_metrics({})
