"""tools/eval_resolutions.py end to end on tiny initialised models and the mini datasets.

Segmentation: two CPVT-v2 semantic-FPN checkpoints (PEG, and a non-interpolated absolute PE that cannot run on a
larger grid) at two scales give one row per checkpoint and scale, with an n/a row instead of a crash; the printed
table, the CSV and the JSON hold the same numbers; the PNG is not blank. Detection: a Mask R-CNN gives bbox / mask
AP rows. The tool runs in this process (a subprocess costs ~10 s of imports), except the distributed test.
"""
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from vitpe_mm.analysis import read_csv
from vitpe_mm.datasets import ensure_mini_datasets
from vitpe_mm.engine import load_config

from conftest import load_tool

ROOT = Path(__file__).resolve().parents[2]

SEG = '''
_base_ = ['{root}/configs/demo/cpvt_fpn_demo.py']
model = dict(
    data_preprocessor=dict(size=(64, 64)),
    backbone=dict(arch=dict(_delete_=True, embed_dims=(16, 32, 48, 64), num_heads=(1, 1, 2, 2),
                            mlp_ratios=(2, 2, 2, 2), depths=(1, 1, 1, 1)), pe_type='{pe_type}', img_size=64),
    neck=dict(in_channels=[16, 32, 48, 64], out_channels=16),
    decode_head=dict(in_channels=[16, 16, 16, 16], channels=16))
test_pipeline = [dict(type='LoadImageFromFile'), dict(type='Resize', scale=(64, 64), keep_ratio=True),
                 dict(type='LoadAnnotations', reduce_zero_label=True), dict(type='PackSegInputs')]
test_dataloader = dict(dataset=dict(data_root='{data}/mini_ade', indices=2, pipeline=test_pipeline))
'''

DET = '''
_base_ = ['{root}/configs/demo/cpvt_maskrcnn_demo.py']
model = dict(
    backbone=dict(arch=dict(_delete_=True, embed_dims=(16, 32, 48, 64), num_heads=(1, 1, 2, 2),
                            mlp_ratios=(2, 2, 2, 2), depths=(1, 1, 1, 1))),
    neck=dict(in_channels=[16, 32, 48, 64]),
    test_cfg=dict(rcnn=dict(score_thr=0.0)))  # an untrained head scores ~1/81: keep its boxes to evaluate them
test_dataloader = dict(dataset=dict(data_root='{data}/mini_coco/', indices=2))
test_evaluator = dict(ann_file='{data}/mini_coco/annotations/instances_val2017.json')
'''


def write_model(tmp: Path, name: str, body: str, data: Path, **fmt) -> tuple:
    """The config file and a checkpoint of its model, initialised with seed 0."""
    from mmengine.registry import MODELS, init_default_scope

    config = tmp / f'{name}.py'
    config.write_text(textwrap.dedent(body.format(root=ROOT, data=data, **fmt)))
    cfg = load_config(str(config))
    init_default_scope(cfg.default_scope)
    torch.manual_seed(0)
    model = MODELS.build(cfg.model)
    model.init_weights()
    checkpoint = tmp / f'{name}.pth'
    torch.save({'state_dict': model.state_dict(), 'meta': {}}, checkpoint)
    return str(config), str(checkpoint)


@pytest.fixture(scope='module')
def models(tmp_path_factory):
    tmp = tmp_path_factory.mktemp('eval_resolutions')
    data = tmp / 'data'
    ensure_mini_datasets(str(data), coco_train=1, coco_val=2, ade_train=1, ade_val=2, progress=None)
    return dict(
        seg_peg=write_model(tmp, 'seg_peg', SEG, data, pe_type='peg'),
        seg_nointerp=write_model(tmp, 'seg_nointerp', SEG, data, pe_type='abs_nointerp'),
        det=write_model(tmp, 'det', DET, data))


def printed_table(out: str) -> dict:
    """{(checkpoint, scale): {column: cell}} from the Markdown table the tool prints."""
    lines = [line for line in out.splitlines() if line.startswith('|')]
    header = [c.strip() for c in lines[0].split('|')[1:-1]]
    table = {}
    for line in lines[2:]:
        cells = dict(zip(header, (c.strip() for c in line.split('|')[1:-1])))
        table[(cells['checkpoint'], cells['scale'])] = cells
    return table


def pixel_std(path) -> float:
    return float(np.asarray(Image.open(path).convert('L'), dtype=np.float32).std())


def test_segmentation_sweep(tmp_path, models, capsys, one_thread):
    config, peg = models['seg_peg']
    nointerp_config, nointerp = models['seg_nointerp']
    out = tmp_path / 'out'
    rows = load_tool('eval_resolutions').main([
        config, peg, '--also', nointerp_config, nointerp, '--labels', 'peg', 'nointerp', '--scales', '1x', '2x',
        '--no-keep-ratio', '--mode', 'whole', '--out-dir', str(out)])
    assert [(r['label'], r['scale'], r['status']) for r in rows] == [
        ('peg', '64x64', 'ok'), ('peg', '128x128', 'ok'), ('nointerp', '64x64', 'ok'), ('nointerp', '128x128', 'n/a')]
    for row in rows[:3]:
        for key in ('mIoU', 'aAcc', 'mAcc'):
            assert isinstance(row[key], float) and 0.0 <= row[key] <= 100.0, row
    assert rows[0]['aAcc'] > 0.0
    assert 'larger than the absolute PE grid' in rows[3]['note'] and rows[3]['mIoU'] is None

    printed = capsys.readouterr().out
    table = printed_table(printed)
    csv_rows = read_csv(out / 'resolutions.csv')
    payload = json.loads((out / 'resolutions.json').read_text())
    assert csv_rows == rows and payload['rows'] == rows
    assert payload['meta']['checkpoints'] == {'peg': peg, 'nointerp': nointerp}
    assert payload['meta']['configs'] == {'peg': config, 'nointerp': nointerp_config}
    assert payload['meta']['reference_scale'] == [64, 64] and payload['meta']['mode'] == 'whole'
    assert len(table) == len(rows)
    for row in rows:
        cells = table[(row['label'], row['scale'])]
        for key in ('mIoU', 'aAcc', 'mAcc'):
            assert cells[key] == ('n/a' if row['status'] == 'n/a' else f'{row[key]:.2f}')
    table = [line for line in printed.splitlines() if line.startswith('|')]
    assert (out / 'resolutions.md').read_text().splitlines() == table
    assert pixel_std(out / 'resolutions.png') > 10
    # the runs' logs are kept per checkpoint and scale
    assert (out / 'runs' / 'peg' / '128x128').is_dir()


def test_slide_inference_and_keep_ratio(tmp_path, models, one_thread):
    config, peg = models['seg_peg']
    rows = load_tool('eval_resolutions').main([config, peg, '--scales', '96x64', '--mode', 'slide', '--crop-size',
                                               '64', '64', '--out-dir', str(tmp_path)])
    assert len(rows) == 1 and rows[0]['status'] == 'ok' and rows[0]['label'] == 'seg_peg'
    assert json.loads((tmp_path / 'resolutions.json').read_text())['meta']['crop_size'] == [64, 64]


def test_detection_sweep(tmp_path, models, capsys, one_thread):
    config, checkpoint = models['det']
    rows = load_tool('eval_resolutions').main([config, checkpoint, '--scales', '0.25x', '0.5x', '--out-dir',
                                               str(tmp_path)])
    assert [(r['scale'], r['status']) for r in rows] == [('128x80', 'ok'), ('256x160', 'ok')]
    for row in rows:
        assert 0.0 <= row['bbox_AP'] <= 100.0 and 0.0 <= row['mask_AP'] <= 100.0
    header = [line for line in capsys.readouterr().out.splitlines() if line.startswith('|')][0]
    assert [c.strip() for c in header.split('|')[1:-1]][3:] == ['bbox_AP', 'AP_S', 'AP_M', 'AP_L', 'mask_AP']
    assert read_csv(tmp_path / 'resolutions.csv') == rows
    assert pixel_std(tmp_path / 'resolutions.png') > 10


@pytest.mark.parametrize('extra,message', [
    (['--scales', '1x', 'huge'], 'cannot read the scale'),
    (['--scales', '1x', '--plot-metrics', 'PQ'], 'PQ'),
])
def test_bad_options_exit_with_a_message(models, capsys, extra, message):
    config, checkpoint = models['seg_peg']
    with pytest.raises(SystemExit) as exit_info:
        load_tool('eval_resolutions').main([config, checkpoint, *extra])
    assert exit_info.value.code == 2 and message in capsys.readouterr().err


def test_checkpoint_of_another_model_is_refused(models, capsys, one_thread):
    """mmengine would load it non-strictly (the PEG weights left random): the sweep stops with the keys instead."""
    config, _ = models['seg_peg']
    _, nointerp = models['seg_nointerp']
    with pytest.raises(SystemExit) as exit_info:
        load_tool('eval_resolutions').main([config, nointerp, '--scales', '1x'])
    err = capsys.readouterr().err
    assert exit_info.value.code == 2
    assert 'backbone.pos_block.0.proj.0.weight' in err and 'backbone.pos_embed.0.pos_embed' in err


def test_mode_is_for_segmentation(models, capsys):
    config, checkpoint = models['det']
    with pytest.raises(SystemExit):
        load_tool('eval_resolutions').main([config, checkpoint, '--scales', '1x', '--mode', 'slide'])
    assert '--mode is for segmentation' in capsys.readouterr().err


def test_checkpoint_labels():
    labels = load_tool('eval_resolutions').checkpoint_labels
    assert labels(['a/iter_1.pth', 'b/iter_2.pth']) == ['iter_1', 'iter_2']
    assert labels(['a/iter_1.pth', 'b/iter_1.pth']) == ['a/iter_1', 'b/iter_1']
    assert labels(['a/x.pth', 'a/x.pth']) == ['a/x#0', 'a/x#1']


@pytest.mark.slow
@pytest.mark.distributed
def test_distributed_sweep_matches_one_process(tmp_path, models, one_thread):
    """Two CPU processes (gloo) share the images; the gathered metrics are those of one process."""
    config, peg = models['seg_peg']
    single = load_tool('eval_resolutions').main([config, peg, '--scales', '1x', '--no-keep-ratio', '--out-dir',
                                                 str(tmp_path / 'single')])
    env = dict(os.environ, OMP_NUM_THREADS='1', PYTHONUNBUFFERED='1')
    proc = subprocess.run(
        [sys.executable, '-m', 'torch.distributed.run', '--nproc_per_node', '2', '--master_port', '29637',
         str(ROOT / 'tools' / 'eval_resolutions.py'), config, peg, '--scales', '1x', '--no-keep-ratio',
         '--launcher', 'pytorch', '--out-dir', str(tmp_path / 'dist')],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert proc.stdout.count('| seg_peg') == 1  # one table, from the main process
    rows = json.loads((tmp_path / 'dist' / 'resolutions.json').read_text())['rows']
    assert rows == single
