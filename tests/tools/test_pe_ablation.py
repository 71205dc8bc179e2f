"""tools/pe_ablation.py, the PE resolution study, end to end on a minimal budget (--smoke): two seeds per arm, an arm
the backbone does not take reported as skipped, the canvas sweep's intervals and paired differences in the
tables, CSV, JSON and plot; the zoom sweep reuses the canvas sweep's checkpoints and agrees with it at 1x (the
same images); detection runs box-only. The config changes of a run are checked on the real demo configs."""
import csv
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from vitpe_mm.analysis.ablation import ABLATION_BACKBONES
from vitpe_mm.analysis.study import (
    arm_pe_type,
    arm_support,
    canvas_config_hook,
    study_classes,
    study_data_kind,
    study_overrides,
)
from vitpe_mm.engine import load_config

from conftest import load_tool

ROOT = Path(__file__).resolve().parents[2]


def _table_line(report: str, first: str) -> list:
    line = next(ln for ln in report.splitlines() if ln.startswith(f'| {first} '))
    return [c.strip() for c in line.split('|')[1:-1]]


@pytest.mark.slow
def test_smoke_canvas_then_zoom(tmp_path, one_thread, capsys):
    tool = load_tool('pe_ablation')
    out, work = tmp_path / 'canvas', tmp_path / 'runs'
    rows = tool.main(['--smoke', '--sweep', 'canvas', '--arms', 'none', 'abs', 'abs_nointerp', 'no_such_pe',
                      '--scales', '1x', '2x', '--out-dir', str(out), '--work-dir', str(work)])
    assert [(r['arm'], r['seed'], r['scale'], r['status']) for r in rows] == [
        (arm, seed, scale, 'n/a' if (arm, scale) == ('abs_nointerp', '128x128') else 'ok')
        for arm in ('none', 'abs', 'abs_nointerp') for seed in (0, 1) for scale in ('64x64', '128x128')]
    for row in rows:
        assert row['status'] != 'ok' or 0.0 <= row['mIoU'] <= 100.0
    nointerp = [r for r in rows if r['arm'] == 'abs_nointerp' and r['status'] != 'ok']
    assert all('larger than the absolute PE grid' in r['note'] for r in nointerp)
    # abs_nointerp trains exactly as abs: abs's weights are evaluated, and agree on the training grid
    assert not list((work / 'abs_nointerp').rglob('*.pth')) and (work / 'abs' / 'seed1' / 'iter_2.pth').is_file()
    by = {(r['arm'], r['seed'], r['scale']): r for r in rows}
    for seed in (0, 1):
        assert by[('abs_nointerp', seed, '64x64')]['mIoU'] == by[('abs', seed, '64x64')]['mIoU']

    payload = json.loads((out / 'results.json').read_text())
    meta = payload['meta']
    assert meta['sweep'] == 'canvas' and meta['seeds'] == [0, 1] and meta['metric'] == 'mIoU'
    assert 'no_such_pe' in meta['skipped'] and 'no_such_pe' in meta['skipped']['no_such_pe']
    assert Path(meta['data_root']).name == 'study_ade_64'
    cells = {(c['arm'], c['scale']): c for c in payload['cells']}
    none_1x = [by[('none', s, '64x64')]['mIoU'] for s in (0, 1)]
    assert cells[('none', '64x64')]['mean'] == pytest.approx(sum(none_1x) / 2, abs=1e-4)
    # two seeds: the 95% half-width is t(0.975, 1) = 12.706 times half their distance
    assert cells[('none', '64x64')]['ci_half'] == pytest.approx(12.7062 * abs(none_1x[0] - none_1x[1]) / 2, abs=1e-3)
    diff = [by[('abs', s, '128x128')]['mIoU'] - by[('none', s, '128x128')]['mIoU'] for s in (0, 1)]
    assert cells[('abs', '128x128')]['diff_mean'] == pytest.approx(sum(diff) / 2, abs=1e-4)
    assert cells[('abs', '128x128')]['resolved'] == (cells[('abs', '128x128')]['diff_ci_low'] > 0 or
                                                     cells[('abs', '128x128')]['diff_ci_high'] < 0)
    assert cells[('abs_nointerp', '128x128')]['status'] == 'n/a'
    with (out / 'results.csv').open() as f:
        header = next(csv.reader(f))
    assert {'mean', 'ci_low', 'ci_high', 'n', 'diff_mean', 'diff_ci_low', 'diff_ci_high', 'resolved'} <= set(header)
    with (out / 'results_per_seed.csv').open() as f:
        assert len(list(csv.DictReader(f))) == len(rows)
    # the change from 1x, and abs's change minus none's, seed by seed
    with (out / 'results_change.csv').open() as f:
        change = {(r['arm'], r['scale']): r for r in csv.DictReader(f)}
    abs_change = [by[('abs', s, '128x128')]['mIoU'] - by[('abs', s, '64x64')]['mIoU'] for s in (0, 1)]
    none_change = [by[('none', s, '128x128')]['mIoU'] - by[('none', s, '64x64')]['mIoU'] for s in (0, 1)]
    assert float(change[('abs', '128x128')]['mean']) == pytest.approx(sum(abs_change) / 2, abs=1e-3)
    assert float(change[('abs', '128x128')]['diff_mean']) == pytest.approx(
        (abs_change[0] - none_change[0] + abs_change[1] - none_change[1]) / 2, abs=1e-3)
    assert ('none', '64x64') not in change and change[('abs_nointerp', '128x128')]['status'] == 'n/a'
    report = (out / 'results.md').read_text()
    assert _table_line(report, 'no_such_pe')[1:] == ['skipped', 'skipped']
    assert _table_line(report, 'abs_nointerp')[2] == 'n/a'
    assert '±' in _table_line(report, 'none')[1] and '--smoke' in report and 'What this can and cannot' in report
    image = np.asarray(Image.open(out / 'plot.png').convert('L'), dtype=np.float32)
    assert image.std() > 10
    assert '| abs_nointerp' in capsys.readouterr().out  # the final table

    (out / 'results.md').unlink()
    tool.main(['--report-only', '--out-dir', str(out)])
    assert (out / 'results.md').read_text() == report

    # the zoom sweep trains on the same tree: it reuses the checkpoints, and at 1x tests the same images; here in two
    # worker processes (--jobs 2), abs_nointerp waiting for abs
    checkpoints = {p: p.stat().st_mtime_ns for p in work.rglob('*.pth')}
    zoom = tool.main(['--smoke', '--sweep', 'zoom', '--arms', 'none', 'abs', 'abs_nointerp', '--scales', '1x', '2x',
                      '--out-dir', str(tmp_path / 'zoom'), '--work-dir', str(work), '--jobs', '2'])
    assert {p: p.stat().st_mtime_ns for p in work.rglob('*.pth')} == checkpoints  # nothing trained again
    assert [(r['arm'], r['seed']) for r in zoom] == [(r['arm'], r['seed']) for r in rows]  # in arm, seed order
    zoom_by = {(r['arm'], r['seed'], r['scale']): r for r in zoom}
    for arm in ('none', 'abs', 'abs_nointerp'):
        for seed in (0, 1):
            assert zoom_by[(arm, seed, '64x64')]['mIoU'] == by[(arm, seed, '64x64')]['mIoU']
            assert zoom_by[(arm, seed, '128x128')]['width'] == 128  # the 1x canvases resized
    assert json.loads((tmp_path / 'zoom' / 'results.json').read_text())['meta']['threads'] == 1


@pytest.mark.slow
def test_smoke_detection_box_only(tmp_path, one_thread):
    rows = load_tool('pe_ablation').main(['--smoke', '--task', 'det', '--arms', 'none', '--seeds', '0',
                                          '--scales', '1x', '2x', '--out-dir', str(tmp_path / 'det')])
    assert [(r['scale'], r['status']) for r in rows] == [('64x64', 'ok'), ('128x128', 'ok')]
    assert all(0.0 <= r['bbox_AP'] <= 100.0 and r['mask_AP'] is None for r in rows)
    meta = json.loads((tmp_path / 'det' / 'results.json').read_text())['meta']
    assert meta['metric'] == 'bbox_AP' and Path(meta['data_root']).name == 'study_coco_64'


@pytest.mark.parametrize('backbone', sorted(ABLATION_BACKBONES))
def test_run_configs(backbone):
    size_key = ABLATION_BACKBONES[backbone].size_key
    seg = study_overrides(backbone, 'seg', 'abs+rope_mixed', 96, 50, 4, 'data/x/study_ade_96',
                          study_classes('ade'), seed=3)
    cfg = load_config(str(ROOT / ABLATION_BACKBONES[backbone].config), seg)
    assert list(cfg.model.backbone.pe_type) == ['abs', 'rope_mixed'] and cfg.model.backbone[size_key] == 96
    assert cfg.model.decode_head.num_classes == 15 and cfg.train_dataloader.dataset.img_suffix == '.png'
    assert cfg.train_cfg.max_iters == 50 and cfg.randomness.seed == 3 and cfg.val_dataloader is None
    resizes = [t for t in cfg.test_dataloader.dataset.pipeline if t.type == 'Resize']
    assert len(resizes) == 1 and tuple(resizes[0].scale) == (96, 96) and resizes[0].keep_ratio is False

    det = study_overrides(backbone, 'det', 'peg', 96, 50, 4, 'data/x/study_coco_96', study_classes('coco'), seed=1)
    cfg = load_config(str(ROOT / ABLATION_BACKBONES[backbone].det_config), det)
    assert cfg.default_scope == 'mmdet' and cfg.model.backbone.pe_type == 'peg' and cfg.model.backbone[size_key] == 96
    assert cfg.model.roi_head.mask_head is None and cfg.model.roi_head.bbox_head.num_classes == 6
    assert cfg.test_evaluator.metric == 'bbox' and cfg.test_evaluator.ann_file.startswith('data/x/study_coco_96/')
    assert all(not t.get('with_mask', False) for t in cfg.train_dataloader.dataset.pipeline)
    resizes = [t for t in cfg.train_dataloader.dataset.pipeline if t.type == 'Resize']
    assert tuple(resizes[0].scale) == (96, 96) and resizes[0].keep_ratio is False

    hook = canvas_config_hook('det')
    hook(cfg, type('Scale', (), {'factor': 2.0})())
    assert cfg.test_dataloader.dataset.ann_file == 'annotations/instances_val2017_canvas2x.json'
    assert cfg.test_dataloader.dataset.data_prefix == dict(img='val2017_canvas2x/')
    assert cfg.test_evaluator.ann_file == 'data/x/study_coco_96/annotations/instances_val2017_canvas2x.json'


def test_canvas_hook_segmentation():
    cfg = dict(test_dataloader=dict(dataset=dict(data_root='d', data_prefix=dict(img_path='images/validation'))))
    hook = canvas_config_hook('seg')
    hook(cfg, type('Scale', (), {'factor': 0.5})())
    assert cfg['test_dataloader']['dataset']['data_prefix'] == dict(img_path='images/validation_canvas0.5x',
                                                                    seg_map_path='annotations/validation_canvas0.5x')
    hook(cfg, type('Scale', (), {'factor': 1.0})())
    assert cfg['test_dataloader']['dataset']['data_prefix']['img_path'] == 'images/validation'


def test_arms_by_name():
    assert arm_pe_type('abs') == 'abs' and arm_pe_type('abs+rope_mixed') == ['abs', 'rope_mixed']
    for bad in ('', 'abs+', 3):
        with pytest.raises(ValueError, match='arm'):
            arm_pe_type(bad)
    backbone = load_config(str(ROOT / 'configs/demo/cpvt_fpn_demo.py')).model.backbone.to_dict()
    assert arm_support(backbone, 'none') is None
    reason = arm_support(backbone, 'no_such_pe')
    assert reason.startswith('ValueError') and 'no_such_pe' in reason

    def refuse(cfg):
        raise ValueError(f'{cfg["pe_type"]} is not built yet\nsecond line')
    assert arm_support(backbone, 'rope_axial', build=refuse) == 'ValueError: rope_axial is not built yet'
    assert study_data_kind('probe', 'seg') == 'probe' and study_data_kind('zoom', 'det') == 'coco'
    with pytest.raises(ValueError, match='segmentation'):
        study_data_kind('probe', 'det')
    with pytest.raises(ValueError, match='sweep'):
        study_data_kind('crop', 'seg')
    assert len(study_classes('probe')) == 8 and study_classes('coco')[0] == 'person'


def test_bad_command_lines(tmp_path, capsys):
    tool = load_tool('pe_ablation')
    with pytest.raises(SystemExit) as exit_info:
        tool.main(['--sweep', 'probe', '--task', 'det', '--out-dir', str(tmp_path)])
    assert exit_info.value.code == 2 and 'segmentation task' in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_info:
        tool.main(['--smoke', '--scales', '64x64', '--out-dir', str(tmp_path)])
    assert exit_info.value.code == 2 and 'factors of the training size' in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_info:
        tool.main(['--report-only', '--out-dir', str(tmp_path / 'nothing')])
    assert exit_info.value.code == 2 and 'results.json' in capsys.readouterr().err


@pytest.mark.slow
def test_smoke_probe(tmp_path, one_thread):
    out = tmp_path / 'probe'
    rows = load_tool('pe_ablation').main(['--smoke', '--sweep', 'probe', '--arms', 'none', '--seeds', '0',
                                          '--scales', '1x', '2x', '--out-dir', str(out)])
    assert [(r['arm'], r['scale'], r['status']) for r in rows] == [('none', '64x64', 'ok'), ('none', '128x128', 'ok')]
    meta = json.loads((out / 'results.json').read_text())['meta']
    assert Path(meta['data_root']).name == 'study_probe_64' and len(meta['classes']) == 8
    assert 'at most 33.3 mIoU' in (out / 'results.md').read_text()


def test_an_arm_that_cannot_train_is_reported(tmp_path, monkeypatch, one_thread):
    tool = load_tool('pe_ablation')

    def fail(train_tool, config, work_dir, overrides, label, verbose):
        raise RuntimeError(f'{overrides["model.backbone.pe_type"]} has no backward\nmore')
    monkeypatch.setattr(tool, 'train_run', fail)
    out = tmp_path / 'out'
    rows = tool.main(['--smoke', '--arms', 'none', 'peg', '--scales', '1x', '--out-dir', str(out)])
    assert rows == []
    skipped = json.loads((out / 'results.json').read_text())['meta']['skipped']
    assert skipped == {'none': 'training failed with seed 0: RuntimeError: none has no backward',
                       'peg': 'training failed with seed 0: RuntimeError: peg has no backward'}
    report = (out / 'results.md').read_text()
    assert '| peg | training failed with seed 0: RuntimeError: peg has no backward |' in report  # 'Skipped arms'
