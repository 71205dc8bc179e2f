"""tools/benchmark.py in --quick mode: the JSON carries every field and the output check (no timing assertions)."""
import importlib.util
import json
import os

import pytest

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), '..', '..'))


def _tool():
    spec = importlib.util.spec_from_file_location('vitpe_benchmark', os.path.join(ROOT, 'tools', 'benchmark.py'))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _pairs():
    pytest.importorskip('timm')
    pairs = ['vit-timm', 'cpvt-timm', 'swin-timm']
    try:
        import mmcv.ops  # noqa: F401  (mmdet / mmseg references need mmcv with its ops)
        pairs += ['swin-mmdet', 'cpvt-mmseg']
    except Exception:
        pass
    return pairs


def test_quick_run_writes_results_with_equal_outputs(tmp_path):
    tool = _tool()
    pairs = _pairs()
    out = tmp_path / 'bench.json'
    # 64x64: every tiny backbone accepts it; timm's Swin clamps its windows there (a documented convention
    # difference, reported in the row's note), the others must agree to 1e-5.
    data = tool.main(['--quick', '--models', ','.join(pairs), '--sizes', '64', '--threads', '1', '--out', str(out)])
    assert json.loads(out.read_text()) == json.loads(json.dumps(data))
    meta = data['meta']
    for key in ('torch', 'torch_threads', 'cpu_count', 'repeats', 'warmup', 'method', 'date', 'argv'):
        assert key in meta
    assert meta['torch_threads'] == 1 and meta['repeats'] == 1
    assert not data['errors'], data['errors']
    rows = data['results']
    assert {(r['pair'], r['mode']) for r in rows} == {(p, m) for p in pairs for m in ('fwd', 'fwdbwd')}
    for row in rows:
        assert row['size'] == [64, 64] and row['batch'] == 1 and row['dtype'] == 'fp32' and row['device'] == 'cpu'
        for side in ('ours', 'ref'):
            entry = row[side]
            assert entry['name'] and len(entry['times_s']) == 1 and entry['median_s'] > 0
            assert entry['img_per_s'] == pytest.approx(1 / entry['median_s'])
            assert entry['peak_mem_bytes'] is None or entry['peak_mem_bytes'] > 0
            assert entry['flops'] is None or entry['flops'] > 0
        assert row['speedup'] == pytest.approx(row['ref']['median_s'] / row['ours']['median_s'])
        assert row['tolerance'] == 1e-5 and isinstance(row['max_abs_diff'], float)
        if row['note']:
            assert row['pair'] == 'swin-timm'  # the window clamping convention at 64x64
        else:
            assert row['equal'] is True and row['max_abs_diff'] <= 1e-5, row
    # the CPU memory measurement and the FLOP counter work on every pair here
    assert all(r['ours']['peak_mem_bytes'] and r['ours']['flops'] for r in rows)


def test_compiled_run_compiles_both_sides_and_keeps_outputs_equal(tmp_path):
    """--compile: every row says so, the outputs of the compiled models still match to 1e-5, dynamo compiled
    graphs for them (the timings are of compiled code), FLOPs are not counted, at least 2 warm-up runs."""
    pytest.importorskip('timm')
    import torch._dynamo
    tool = _tool()
    torch._dynamo.reset()
    torch._dynamo.utils.counters.clear()
    data = tool.main(['--quick', '--compile', '--models', 'vit-timm,cpvt-timm', '--sizes', '64', '--threads', '1',
                      '--no-memory'])
    assert not data['errors'], data['errors']
    assert data['meta']['compile'] is True and data['meta']['warmup'] == 2
    rows = data['results']
    pairs = ('vit-timm', 'cpvt-timm')
    assert {(r['pair'], r['mode']) for r in rows} == {(p, m) for p in pairs for m in ('fwd', 'fwdbwd')}
    for row in rows:
        assert row['compiled'] is True and row['equal'] is True, row
        assert 'flops' not in row['ours'] and 'flops' not in row['ref']
    # a graph at least per side and mode (the eval forward, the training loss): 2 pairs x 2 sides x 2 modes
    assert torch._dynamo.utils.counters['stats']['unique_graphs'] >= 8
    assert not torch._dynamo.utils.counters['graph_break']
    torch._dynamo.reset()


def test_cost_curve_quick_writes_csv_json_png(tmp_path):
    tool = _tool()
    out = tmp_path / 'curve.json'
    data = tool.main(['--cost-curve', '--quick', '--threads', '1', '--out', str(out)])
    kinds = {r['kind'] for r in data['results']}
    assert kinds == {'vit_global', 'pcpvt_sra', 'swin_window'}
    for r in data['results']:
        assert r['tokens'] == r['grid'][0] * r['grid'][1] and r['median_s'] > 0
    assert (tmp_path / 'curve.csv').read_text().splitlines()[0].startswith('kind,image_h,image_w,tokens')
    pytest.importorskip('matplotlib')
    assert (tmp_path / 'curve.png').stat().st_size > 1000


def test_bad_options_are_rejected():
    tool = _tool()
    with pytest.raises(SystemExit):
        tool.main(['--models', 'resnet'])
    with pytest.raises(SystemExit):
        tool.main(['--dtype', 'fp8'])
    with pytest.raises(SystemExit, match='cost-curve'):
        tool.main(['--cost-curve', '--compile'])


def test_bf16_rows_report_each_sides_error_against_fp32(tmp_path):
    tool = _tool()
    data = tool.main(['--quick', '--models', 'cpvt-timm,vit-timm', '--sizes', '96', '--dtype', 'bf16', '--modes', 'fwd',
                      '--threads', '1', '--no-memory', '--no-flops', '--out', str(tmp_path / 'bf16.json')])
    assert not data['errors'], data['errors']
    for row in data['results']:
        assert row['dtype'] == 'bf16' and row['tolerance'] is None and row['equal'] is None
        err = row['low_precision_mean_abs_error']
        # both sides carry bf16 rounding (> 0), and ours is not less accurate than the reference
        assert 0 < err['ours'] <= 1.2 * err['ref'], err
