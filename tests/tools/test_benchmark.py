"""The benchmark: the reference pairs and their measurement (vitpe_mm/bench/), and tools/benchmark.py in --quick
mode: the JSON carries every field and the output check (no timing assertions)."""
import argparse
import json

import pytest
import torch

from vitpe_mm.bench import FAMILIES, PAIR_CLASSES, PAIRS, WholeModelPair, compare_outputs
from vitpe_mm.bench.measure import run_case
from vitpe_mm.bench.pairs import CPVTTimm

from conftest import load_tool, perturb


def _tool():
    return load_tool('benchmark')


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


def test_families_group_every_pair_once():
    """--models families: each pair in exactly one group, 'backbones' the pairs without a toolbox model."""
    assert FAMILIES['all'] == PAIRS == tuple(PAIR_CLASSES)
    groups = [name for name in FAMILIES if name not in ('all', 'backbones')]
    assert sorted(p for g in groups for p in FAMILIES[g]) == sorted(PAIRS)
    assert set(FAMILIES['backbones']) == {n for n, c in PAIR_CLASSES.items() if not issubclass(c, WholeModelPair)}
    assert {'maskrcnn-swin', 'upernet-cpvt'}.isdisjoint(FAMILIES['backbones'])
    for name, cls in PAIR_CLASSES.items():
        assert cls.name == name and cls.group in groups and cls.family in ('swin', 'cpvt', 'vit') and cls.description
    help_text = _tool().build_parser().format_help()
    assert all(name in help_text for name in PAIRS) and 'Method' in help_text


def test_compare_outputs_scales_large_maps_and_names_shape_mismatches():
    ref = [torch.zeros(2, 3), torch.full((4,), 100.0)]
    ours = [torch.full((2, 3), 1e-3), torch.full((4,), 100.5)]
    diff, diffs, scaled = compare_outputs(ours, ref)
    assert diffs == pytest.approx([1e-3, 0.5]) and diff == pytest.approx(0.5)
    assert scaled == pytest.approx(0.5 / 100)  # relative to the map's largest value above 1
    diff, diffs, scaled = compare_outputs([torch.zeros(2, 3)], [torch.zeros(3, 2)])
    assert diff is None and scaled is None and diffs == ['shape (2, 3) vs (3, 2)']
    assert compare_outputs([torch.zeros(1)], [])[1] == ['1 outputs vs 0']


def test_perturb_changes_every_parameter_reproducibly():
    def model():
        torch.manual_seed(0)
        return torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.LayerNorm(4))
    base = model().state_dict()
    a, b = perturb(model(), seed=3, std=0.1), perturb(model(), seed=3, std=0.1)
    c = perturb(model(), seed=4, std=0.1)
    for key, value in base.items():
        assert not torch.equal(a.state_dict()[key], value), key
        assert torch.equal(a.state_dict()[key], b.state_dict()[key]), key
        assert not torch.equal(a.state_dict()[key], c.state_dict()[key]), key


def test_run_case_on_a_pair_from_the_package():
    """The package API without the tool: a tiny pair, one fp32 forward row, equal outputs."""
    pytest.importorskip('timm')
    pair = CPVTTimm(tiny=True, device=torch.device('cpu'))
    options = argparse.Namespace(compile=False, warmup=0, repeats=1, no_memory=True, no_flops=True,
                                 peak_tflops=None)
    (row,) = run_case(pair, (64, 128), 1, 'fp32', ['fwd'], options)
    assert row['pair'] == 'cpvt-timm' and row['size'] == [64, 128] and row['equal'] is True
    assert row['max_abs_diff'] <= 1e-5 and row['checkpoint_format'] == pair.fmt
    assert 'peak_mem_bytes' not in row['ours'] and 'flops' not in row['ours']
