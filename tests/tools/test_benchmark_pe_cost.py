"""tools/benchmark.py --cost-curve --curve-pe: one block of each attention kind with each positional encoding
(its per-forward work included), rows named '<kind>+<pe_type>' (no timing assertions)."""
import pytest
import torch

from vitpe_mm.bench.cost_curve import attention_blocks

from conftest import load_tool


def test_cost_curve_rows_per_encoding(tmp_path):
    out = tmp_path / 'curve.json'
    data = load_tool('benchmark').main(['--cost-curve', '--quick', '--threads', '1', '--no-memory', '--curve-sizes',
                                        '64', '--curve-pe', 'none,rel_bias,rope_mixed', '--out', str(out)])
    kinds = {r['kind'] for r in data['results']}
    assert kinds == {f'{k}+{p}' for k in ('vit_global', 'pcpvt_sra', 'swin_window')
                     for p in ('none', 'rel_bias', 'rope_mixed')}
    assert all(r['median_s'] > 0 for r in data['results'])
    assert (tmp_path / 'curve.csv').read_text().count('+rope_mixed') == 6  # 3 kinds x 2 modes


def test_blocks_carry_and_use_their_encoding():
    blocks = attention_blocks(torch.device('cpu'), True, ('none', 'rope_mixed'))
    module, stride, channels, run = blocks['swin_window+rope_mixed']
    assert any(k.startswith('rope.freqs.') for k, _ in module.named_parameters())
    plain = blocks['swin_window+none']
    plain[0].load_state_dict({k: v for k, v in module.state_dict().items() if not k.startswith('rope.')})
    x = torch.randn(1, 9 * 11, channels)
    with torch.no_grad():
        assert not torch.allclose(run(module, x, (9, 11)), plain[3](plain[0], x, (9, 11)))
    assert tuple(attention_blocks(torch.device('cpu'), True)) == ('vit_global', 'pcpvt_sra', 'swin_window')


def test_unknown_encoding_is_refused():
    with pytest.raises(ValueError, match="pe_type='bogus' is not supported; accepted: "):
        attention_blocks(torch.device('cpu'), True, ('bogus',))
