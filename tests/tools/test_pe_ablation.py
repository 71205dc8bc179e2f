"""tools/pe_ablation.py end to end on a minimal budget (--smoke): the abs arm trained, both abs arms swept over two
scales, the non-interpolated absolute PE recorded as n/a on the larger grid; the report can be rewritten from its JSON.
The config changes of an arm are checked on the real demo config without training."""
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from vitpe_mm.analysis import read_csv
from vitpe_mm.analysis.ablation import ABLATION_BACKBONES, ablation_overrides, mini_ade_classes
from vitpe_mm.engine import load_config
from vitpe_mm.engine.tool_modules import load_tool

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_smoke_run(tmp_path, one_thread, capsys):
    tool = load_tool('pe_ablation')
    out = tmp_path / 'out'
    rows = tool.main(['--smoke', '--pe-types', 'abs', 'abs_nointerp', '--scales', '1x', '2x', '--out-dir', str(out)])
    assert [(r['label'], r['scale'], r['status']) for r in rows] == [
        ('abs', '64x64', 'ok'), ('abs', '128x128', 'ok'), ('abs_nointerp', '64x64', 'ok'),
        ('abs_nointerp', '128x128', 'n/a')]
    for row in rows[:3]:
        assert 0.0 <= row['mIoU'] <= 100.0 and 0.0 <= row['aAcc'] <= 100.0
    assert 'larger than the absolute PE grid' in rows[3]['note']
    # abs_nointerp trains exactly as abs: abs's weights are evaluated, and agree on the training grid
    assert (out / 'runs' / 'abs' / 'iter_2.pth').is_file()
    assert not (out / 'runs' / 'abs_nointerp' / 'iter_2.pth').exists()
    assert {k: rows[2][k] for k in ('mIoU', 'aAcc', 'mAcc')} == {k: rows[0][k] for k in ('mIoU', 'aAcc', 'mAcc')}
    assert read_csv(out / 'results.csv') == rows
    payload = json.loads((out / 'results.json').read_text())
    assert payload['rows'] == rows
    meta = payload['meta']
    assert meta['budget_iters'] == 2 and meta['train_size'] == 64 and meta['val_images'] == 2
    assert set(meta['timings']) == {'abs', 'abs_nointerp'}
    assert [s['label'] for s in meta['summary_mIoU']] == ['abs', 'abs_nointerp']
    report = (out / 'results.md').read_text()
    assert 'n/a' in report and '--smoke' in report and 'What this can and cannot show' in report
    image = np.asarray(Image.open(out / 'plot.png').convert('L'), dtype=np.float32)
    assert image.std() > 10
    assert '| abs_nointerp' in capsys.readouterr().out  # the final table

    (out / 'results.md').unlink()
    (out / 'plot.png').unlink()
    tool.main(['--report-only', '--out-dir', str(out)])
    assert (out / 'results.md').read_text() == report and (out / 'plot.png').is_file()


@pytest.mark.parametrize('backbone', sorted(ABLATION_BACKBONES))
def test_arm_config(backbone):
    classes = mini_ade_classes()
    assert len(classes) == 15 and 'sky' in classes and 'bed ' in classes  # mmseg's own spelling
    overrides = ablation_overrides(backbone, 'abs_nointerp', 96, 50, 4, 'data/x/mini_ade', classes, seed=3)
    cfg = load_config(str(ROOT / ABLATION_BACKBONES[backbone].config), overrides)
    size_key = ABLATION_BACKBONES[backbone].size_key
    assert cfg.model.backbone.pe_type == 'abs_nointerp' and cfg.model.backbone[size_key] == 96
    assert cfg.model.decode_head.num_classes == 15 and tuple(cfg.model.data_preprocessor.size) == (96, 96)
    assert cfg.val_dataloader is None and cfg.val_cfg is None
    assert cfg.train_cfg.max_iters == 50 and cfg.randomness.seed == 3 and cfg.train_dataloader.batch_size == 4
    resizes = [t for t in cfg.test_dataloader.dataset.pipeline if t.type == 'Resize']
    assert len(resizes) == 1 and tuple(resizes[0].scale) == (96, 96) and resizes[0].keep_ratio is False
    assert tuple(cfg.train_dataloader.dataset.metainfo.classes) == classes
    assert cfg.param_scheduler[0].end == 5 and cfg.param_scheduler[1].begin == 5


def test_arm_config_rejects_bad_values():
    with pytest.raises(ValueError, match='backbone'):
        ablation_overrides('resnet', 'abs', 64, 2, 2, 'd', ('sky',))
    with pytest.raises(ValueError, match='iters'):
        ablation_overrides('cpvt', 'abs', 64, 0, 2, 'd', ('sky',))


def test_report_only_needs_results(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        load_tool('pe_ablation').main(['--report-only', '--out-dir', str(tmp_path)])
    assert exit_info.value.code == 2 and 'results.json' in capsys.readouterr().err
