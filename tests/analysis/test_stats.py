"""Intervals of the PE study on numbers whose intervals are worked out by hand: t quantiles, means over seeds,
paired differences, the probe's position-blind bound, and the study tables that show them."""
import math

import pytest

from vitpe_mm.analysis.stats import (
    Interval,
    blind_pair_miou_bound,
    cell_intervals,
    change_from_reference,
    mean_interval,
    paired_differences,
    t_quantile,
)
from vitpe_mm.analysis.study import cell_records, difference_table, format_difference, format_interval, interval_table

# Student t, two-sided 95% (0.975 quantile), from the printed tables
T975 = {1: 12.7062, 2: 4.3027, 4: 2.7764, 9: 2.2622, 30: 2.0423}


@pytest.mark.parametrize('df', sorted(T975))
def test_t_quantile_matches_the_printed_table(df):
    assert t_quantile(0.975, df) == pytest.approx(T975[df], abs=1e-4)
    assert t_quantile(0.025, df) == pytest.approx(-T975[df], abs=1e-4)
    assert t_quantile(0.5, df) == pytest.approx(0.0, abs=1e-9)


def test_t_quantile_equals_scipy():
    stats = pytest.importorskip('scipy.stats')
    for df in (1, 2, 3, 5, 7.5, 20, 200):
        for p in (0.6, 0.9, 0.95, 0.975, 0.995):
            assert t_quantile(p, df) == pytest.approx(float(stats.t.ppf(p, df)), rel=1e-8)


def test_t_quantile_rejects_bad_arguments():
    with pytest.raises(ValueError, match='p must be'):
        t_quantile(1.0, 3)
    with pytest.raises(ValueError, match='df must be'):
        t_quantile(0.9, 0)


def test_mean_interval_by_hand():
    # 1..5: mean 3, s = sqrt(2.5), half-width = t(0.975, 4) * s / sqrt(5) = 2.776445 * 0.707107 = 1.963243
    iv = mean_interval([1, 2, 3, 4, 5])
    assert iv.mean == 3.0 and iv.n == 5 and iv.sd == pytest.approx(math.sqrt(2.5))
    assert iv.half_width == pytest.approx(1.963243, abs=1e-6)
    assert (iv.low, iv.high) == (pytest.approx(3 - 1.963243, abs=1e-6), pytest.approx(3 + 1.963243, abs=1e-6))
    assert iv.excludes_zero
    # two values: s / sqrt(n) = |a - b| / 2, so the half-width is t(0.975, 1) = 12.7062 for 10 and 12
    two = mean_interval([10, 12])
    assert two.mean == 11 and two.half_width == pytest.approx(12.7062, abs=1e-4) and not two.excludes_zero
    # the 90% interval is narrower: t(0.95, 4) = 2.131847
    assert mean_interval([1, 2, 3, 4, 5], 0.9).half_width == pytest.approx(2.131847 * math.sqrt(0.5), abs=1e-6)
    one = mean_interval([7.0])
    assert one == Interval(7.0, None, None, None, None, 1, 0.95) and not one.excludes_zero
    with pytest.raises(ValueError, match='at least one'):
        mean_interval([])
    with pytest.raises(ValueError, match='finite'):
        mean_interval([1.0, float('nan')])
    with pytest.raises(ValueError, match='level'):
        mean_interval([1.0, 2.0], 95)


def _rows():
    """none / abs / peg at two scales, three seeds; abs cannot run seed 2 at 2x."""
    values = {'none': {'128x128': [70, 72, 74], '256x256': [60, 61, 65]},
              'abs': {'128x128': [71, 74, 75], '256x256': [58, 59, None]},
              'peg': {'128x128': [73, 76, 79], '256x256': [61, 63, 64]}}
    rows = []
    for arm, by_scale in values.items():
        for scale, factor in (('128x128', 1.0), ('256x256', 2.0)):
            for seed, v in enumerate(by_scale[scale]):
                rows.append(dict(arm=arm, seed=seed, label=f'{arm}@seed{seed}', scale=scale, factor=factor,
                                 status='ok' if v is not None else 'n/a', note='', mIoU=v))
    return rows


def test_cell_intervals_per_arm_and_scale():
    cells = {(c['arm'], c['scale']): c for c in cell_intervals(_rows(), 'mIoU')}
    none = cells[('none', '128x128')]['interval']
    # 70, 72, 74: mean 72, s = 2, half-width = 4.302653 * 2 / sqrt(3) = 4.968275
    assert none.mean == 72 and none.sd == pytest.approx(2.0) and none.half_width == pytest.approx(4.968275, abs=1e-6)
    peg = cells[('peg', '128x128')]['interval']
    assert peg.mean == 76 and peg.half_width == pytest.approx(4.302653 * 3 / math.sqrt(3), abs=1e-5)
    abs_2x = cells[('abs', '256x256')]
    assert abs_2x['status'] == 'n/a' and abs_2x['interval'] is None  # a cell needs every seed
    assert cells[('abs', '128x128')]['values'] == {0: 71.0, 1: 74.0, 2: 75.0}
    with pytest.raises(ValueError, match='two rows'):
        cell_intervals(_rows() + _rows()[:1], 'mIoU')


def test_paired_differences_by_hand():
    diffs = {(d['arm'], d['scale']): d for d in paired_differences(_rows(), 'mIoU', 'none')}
    assert set(diffs) == {('abs', '128x128'), ('abs', '256x256'), ('peg', '128x128'), ('peg', '256x256')}
    # peg - none = 3, 4, 5: mean 4, s = 1, half-width 4.302653 / sqrt(3) = 2.484138: resolved, although the two
    # arms' own intervals (72 +- 4.97, 76 +- 7.45) overlap: the seed is shared, pairing removes its part
    peg = diffs[('peg', '128x128')]
    assert peg['differences'] == {0: 3.0, 1: 4.0, 2: 5.0} and peg['resolved']
    assert peg['interval'].mean == pytest.approx(4.0)
    assert peg['interval'].half_width == pytest.approx(2.484138, abs=1e-6)
    # abs - none = 1, 2, 1: mean 4/3, s = sqrt(1/3), half-width 4.302653 / 3 = 1.434218: contains 0
    abs_1x = diffs[('abs', '128x128')]
    assert abs_1x['interval'].mean == pytest.approx(4 / 3)
    assert abs_1x['interval'].half_width == pytest.approx(1.434218, abs=1e-6)
    assert abs_1x['interval'].low < 0 < abs_1x['interval'].high and not abs_1x['resolved']
    # seed 2 of abs is n/a at 2x: the pair is made of seeds 0 and 1 (-2, -2: s = 0, an interval of width 0)
    abs_2x = diffs[('abs', '256x256')]
    assert abs_2x['differences'] == {0: -2.0, 1: -2.0} and abs_2x['dropped_seeds'] == [2]
    assert abs_2x['interval'].half_width == 0.0 and abs_2x['resolved']
    with pytest.raises(ValueError, match='baseline'):
        paired_differences(_rows(), 'mIoU', 'sincos')


def test_change_from_the_training_scale_by_hand():
    changes = change_from_reference(_rows(), 'mIoU')
    assert {r['scale'] for r in changes} == {'256x256'}  # the reference scale itself is left out
    by = {(r['arm'], r['seed']): r for r in changes}
    assert [by[('none', s)]['mIoU'] for s in range(3)] == [-10.0, -11.0, -9.0]  # 60-70, 61-72, 65-74
    assert by[('abs', 2)]['status'] == 'n/a' and by[('abs', 2)]['mIoU'] is None
    cells = {c['arm']: c for c in cell_intervals(changes, 'mIoU')}
    assert cells['none']['interval'].mean == pytest.approx(-10.0) and cells['none']['interval'].sd == pytest.approx(1.0)
    # peg's change -12, -13, -15 minus none's -10, -11, -9: -2, -2, -6; mean -10/3, s = sqrt(16/3),
    # half-width 4.302653 * sqrt(16/3) / sqrt(3) = 5.737: contains 0, although peg is 4 points up at 1x (resolved)
    diffs = {d['arm']: d for d in paired_differences(changes, 'mIoU', 'none')}
    assert diffs['peg']['differences'] == {0: -2.0, 1: -2.0, 2: -6.0}
    assert diffs['peg']['interval'].half_width == pytest.approx(4.302653 * math.sqrt(16 / 3) / math.sqrt(3), abs=1e-5)
    assert not diffs['peg']['resolved']
    assert diffs['abs']['differences'] == {0: -3.0, 1: -4.0} and diffs['abs']['dropped_seeds'] == [2]
    with pytest.raises(ValueError, match="arm 'none', seed 0 has no row at the reference scale 1x"):
        change_from_reference([r for r in _rows() if not (r['arm'] == 'none' and r['seed'] == 0 and
                                                          r['factor'] == 1.0)], 'mIoU')


def test_blind_bound_is_a_third():
    assert blind_pair_miou_bound() == pytest.approx(100 / 3)
    # no split of the pixel pairs does better than half and half
    for p in (0.0, 0.1, 0.3, 0.7, 1.0):
        assert 100 * 0.5 * (p / (1 + p) + (1 - p) / (2 - p)) <= blind_pair_miou_bound() + 1e-12


def test_interval_and_difference_texts():
    assert format_interval(mean_interval([1, 2, 3, 4, 5])) == '3.0 ± 2.0'
    assert format_interval(mean_interval([7.0]), 2) == '7.00' and format_interval(None) == '-'
    assert format_difference(mean_interval([3, 4, 5])) == '+4.0 [+1.5, +6.5]'
    assert format_difference(mean_interval([1, 2, 1])) == '(+1.3 [-0.1, +2.8])'  # contains 0: in parentheses
    assert format_difference(mean_interval([-2.0])) == '-2.0'


def test_study_tables_and_records():
    rows = _rows()
    cells = cell_intervals(rows, 'mIoU')
    diffs = paired_differences(rows, 'mIoU', 'none')
    table = interval_table(cells, 'mIoU', skipped={'rope_mixed': 'ValueError: pe_type'}).splitlines()
    assert '128x128 (1x, train)' in table[0] and '256x256 (2x)' in table[0]
    assert [c.strip() for c in table[2].split('|')[1:-1]] == ['none', '72.0 ± 5.0', '62.0 ± 6.6']
    assert [c.strip() for c in table[3].split('|')[1:-1]] == ['abs', '73.3 ± 5.2', 'n/a']
    assert [c.strip() for c in table[5].split('|')[1:-1]] == ['rope_mixed', 'skipped', 'skipped']
    diff_lines = difference_table(diffs, 'mIoU').splitlines()
    assert diff_lines[0].startswith('| mIoU - none')
    assert [c.strip() for c in diff_lines[2].split('|')[1:-1]] == ['abs', '(+1.3 [-0.1, +2.8])', '-2.0 [-2.0, -2.0]']
    assert [c.strip() for c in diff_lines[3].split('|')[1:-1]] == ['peg', '+4.0 [+1.5, +6.5]', '(+0.7 [-3.1, +4.5])']
    records = {(r['arm'], r['scale']): r for r in cell_records(cells, diffs)}
    peg = records[('peg', '128x128')]
    assert peg['mean'] == 76.0 and peg['n'] == 3 and peg['ci_low'] == pytest.approx(76 - 7.4524, abs=1e-4)
    assert peg['diff_mean'] == 4.0 and peg['resolved'] is True and peg['baseline'] == 'none'
    assert peg['values'] == '0:73.0000 1:76.0000 2:79.0000'
    assert records[('none', '128x128')]['diff_mean'] is None and records[('none', '128x128')]['resolved'] is None
    assert records[('abs', '256x256')]['mean'] is None and records[('abs', '256x256')]['status'] == 'n/a'
