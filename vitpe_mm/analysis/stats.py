"""Uncertainty for multi-seed studies: Student-t intervals of per-cell means and of paired differences between arms.

A *cell* is one (arm, test scale) of a study; it holds one value per training seed. Its mean comes with a
two-sided t-interval, mean +- t_{(1+level)/2, n-1} * s / sqrt(n) (s: sample standard deviation). Two arms trained
with the same seed share the seed's data order, augmentation draws and (as far as the architectures agree) the
initialisation, so their difference is taken seed by seed (a paired comparison) and the interval is that of the
mean difference. The t-interval rather than a bootstrap: with the handful of seeds a study can afford (3-10), a
percentile bootstrap can never be wider than the sample range and covers far less than its nominal level.

Pure Python (no numpy / scipy): the t quantile comes from the regularised incomplete beta function.
"""
import math
from dataclasses import dataclass
from typing import Any, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple

__all__ = ['Interval', 't_quantile', 'mean_interval', 'cell_intervals', 'paired_differences', 'change_from_reference',
           'blind_pair_miou_bound']


@dataclass(frozen=True)
class Interval:
    """The mean of `n` values with its two-sided `level` t-interval (`low`, `high` None when n < 2).

    Attributes:
        mean: the sample mean.
        low, high: the interval's ends.
        half_width: (high - low) / 2.
        sd: the sample standard deviation (n - 1 in the denominator; None when n < 2).
        n: the number of values.
        level: the coverage asked for, e.g. 0.95.
    """
    mean: float
    low: Optional[float]
    high: Optional[float]
    half_width: Optional[float]
    sd: Optional[float]
    n: int
    level: float

    @property
    def excludes_zero(self) -> bool:
        """True when the whole interval lies on one side of 0 (for a difference: it is resolved)."""
        return self.low is not None and (self.low > 0 or self.high < 0)

    def as_dict(self, prefix: str = '', digits: int = 4) -> Dict[str, Any]:
        """{prefix + 'mean', 'ci_low', 'ci_high', 'ci_half', 'sd', 'n'}, rounded to `digits`."""
        def r(v):
            return None if v is None else round(v, digits)
        return {f'{prefix}mean': r(self.mean), f'{prefix}ci_low': r(self.low), f'{prefix}ci_high': r(self.high),
                f'{prefix}ci_half': r(self.half_width), f'{prefix}sd': r(self.sd), f'{prefix}n': self.n}


def _betacf(a: float, b: float, x: float) -> float:
    """Continued fraction of the incomplete beta function (modified Lentz)."""
    tiny, qab, qap, qam = 1e-300, a + b, a + 1.0, a - 1.0
    c, d = 1.0, 1.0 - qab * x / qap
    d = 1.0 / (d if abs(d) > tiny else tiny)
    h = d
    for m in range(1, 300):
        m2 = 2 * m
        for aa in (m * (b - m) * x / ((qam + m2) * (a + m2)), -(a + m) * (qab + m) * x / ((a + m2) * (qap + m2))):
            d = 1.0 + aa * d
            d = 1.0 / (d if abs(d) > tiny else tiny)
            c = 1.0 + aa / c
            c = c if abs(c) > tiny else tiny
            h *= d * c
            last = d * c
        if abs(last - 1.0) < 1e-15:
            break
    return h


def _betainc(a: float, b: float, x: float) -> float:
    """The regularised incomplete beta function I_x(a, b)."""
    if x <= 0.0:
        return 0.0
    if x >= 1.0:
        return 1.0
    front = math.exp(math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x))
    if x < (a + 1.0) / (a + b + 2.0):
        return front * _betacf(a, b, x) / a
    return 1.0 - front * _betacf(b, a, 1.0 - x) / b


def _t_cdf(t: float, df: float) -> float:
    tail = 0.5 * _betainc(0.5 * df, 0.5, df / (df + t * t))
    return 1.0 - tail if t >= 0 else tail


def t_quantile(p: float, df: float) -> float:
    """The p-quantile of Student's t distribution with `df` degrees of freedom (e.g. t_quantile(0.975, 4) = 2.776)."""
    if not 0.0 < p < 1.0:
        raise ValueError(f'p must be in (0, 1), got {p!r}')
    if not df > 0:
        raise ValueError(f'df must be positive, got {df!r}')
    if p < 0.5:
        return -t_quantile(1.0 - p, df)
    lo, hi = 0.0, 1.0
    while _t_cdf(hi, df) < p:
        hi *= 2.0
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        if _t_cdf(mid, df) < p:
            lo = mid
        else:
            hi = mid
        if hi - lo < 1e-12 * max(1.0, hi):
            break
    return 0.5 * (lo + hi)


def mean_interval(values: Iterable[float], level: float = 0.95) -> Interval:
    """The mean of `values` and its two-sided t-interval at `level` (no interval for a single value)."""
    values = [float(v) for v in values]
    if not values:
        raise ValueError('mean_interval needs at least one value')
    if not 0.0 < level < 1.0:
        raise ValueError(f'level must be in (0, 1), e.g. 0.95, got {level!r}')
    if not all(math.isfinite(v) for v in values):
        raise ValueError(f'values must be finite, got {values}')
    n = len(values)
    mean = sum(values) / n
    if n < 2:
        return Interval(mean, None, None, None, None, n, level)
    sd = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1))
    half = t_quantile(0.5 + level / 2.0, n - 1) * sd / math.sqrt(n)
    return Interval(mean, mean - half, mean + half, half, sd, n, level)


def _by_cell(rows: Sequence[Mapping[str, Any]], metric: str) -> Dict[Tuple[str, str], Dict[int, Optional[float]]]:
    """{(arm, scale): {seed: value, or None when the run could not be evaluated}} in the rows' order."""
    cells: Dict[Tuple[str, str], Dict[int, Optional[float]]] = {}
    for row in rows:
        value = row.get(metric) if row.get('status') == 'ok' else None
        cell = cells.setdefault((str(row['arm']), str(row['scale'])), {})
        if row['seed'] in cell:
            raise ValueError(f'two rows for arm {row["arm"]!r}, scale {row["scale"]!r}, seed {row["seed"]}')
        cell[row['seed']] = None if value is None else float(value)
    return cells


def cell_intervals(rows: Sequence[Mapping[str, Any]], metric: str, level: float = 0.95) -> List[Dict[str, Any]]:
    """Per (arm, scale) cell of per-seed rows: the metric's mean and t-interval over the seeds.

    Args:
        rows: one row per (arm, seed, scale) with keys 'arm', 'seed', 'scale', 'factor', 'status' ('ok' or not)
            and `metric`.
        metric: the metric key, e.g. 'mIoU'.
        level: the interval's coverage.

    Returns:
        Dicts with 'arm', 'scale', 'factor', 'status' ('ok', or the first other status of a seed: a cell is
        reported only when every seed ran), 'values' ({seed: value}) and 'interval' (an `Interval` or None).
    """
    factors = {(str(r['arm']), str(r['scale'])): r.get('factor') for r in rows}
    statuses: Dict[Tuple[str, str], str] = {}
    for r in rows:
        key = (str(r['arm']), str(r['scale']))
        if r.get('status') != 'ok' and key not in statuses:
            statuses[key] = str(r.get('status'))
    out = []
    for key, values in _by_cell(rows, metric).items():
        status = statuses.get(key, 'ok')
        known = [v for v in values.values() if v is not None]
        ok = status == 'ok' and len(known) == len(values)
        out.append(dict(arm=key[0], scale=key[1], factor=factors[key], status=status if not ok else 'ok',
                        values=values, interval=mean_interval(known, level) if ok else None))
    return out


def paired_differences(rows: Sequence[Mapping[str, Any]], metric: str, baseline: str,
                       level: float = 0.95) -> List[Dict[str, Any]]:
    """Per (arm, scale): `metric` minus the `baseline` arm's at the same scale, seed by seed, and its t-interval.

    Only seeds evaluated in both arms enter (a seed missing in one arm is dropped from that pair, and listed).

    Returns:
        Dicts with 'arm', 'scale', 'factor', 'baseline', 'differences' ({seed: difference}), 'dropped_seeds',
        'interval' (an `Interval`, None when no seed pairs up) and 'resolved' (the interval excludes 0).
    """
    cells = _by_cell(rows, metric)
    arms = list(dict.fromkeys(arm for arm, _ in cells))
    if baseline not in arms:
        raise ValueError(f'baseline arm {baseline!r} has no rows; arms: {", ".join(arms)}')
    factors = {(str(r['arm']), str(r['scale'])): r.get('factor') for r in rows}
    out = []
    for (arm, scale), values in cells.items():
        if arm == baseline:
            continue
        base = cells.get((baseline, scale), {})
        diffs = {s: v - base[s] for s, v in values.items() if v is not None and base.get(s) is not None}
        dropped = sorted(s for s in set(values) | set(base) if s not in diffs)
        interval = mean_interval(diffs.values(), level) if diffs else None
        out.append(dict(arm=arm, scale=scale, factor=factors[(arm, scale)], baseline=baseline, differences=diffs,
                        dropped_seeds=dropped, interval=interval,
                        resolved=bool(interval is not None and interval.excludes_zero)))
    return out


def change_from_reference(rows: Sequence[Mapping[str, Any]], metric: str,
                          reference_factor: float = 1.0) -> List[Dict[str, Any]]:
    """Rows whose `metric` is its change from the same arm and seed at the reference scale (the training size).

    What a change of test resolution costs an arm, apart from how good the arm is at the training size: fed to
    `cell_intervals` it gives each arm's change with its interval, fed to `paired_differences` an arm's change
    minus the baseline's (a difference of differences, paired by seed). Rows at the reference scale are left out
    (their change is 0 by definition); a row, or its reference, that was not evaluated gives a row with status
    'n/a' (and the reason in 'note').

    Raises:
        ValueError: when an (arm, seed) has no row at `reference_factor`.
    """
    def at_reference(row):
        return row.get('factor') is not None and abs(float(row['factor']) - reference_factor) < 1e-9

    reference = {}
    for row in rows:
        if at_reference(row):
            reference[(str(row['arm']), row['seed'])] = row
    out = []
    for row in rows:
        if at_reference(row):
            continue
        key = (str(row['arm']), row['seed'])
        if key not in reference:
            raise ValueError(f'arm {key[0]!r}, seed {key[1]} has no row at the reference scale {reference_factor:g}x '
                             '(the change from it needs one)')
        base = reference[key]
        changed = dict(row)
        if row.get('status') == 'ok' and base.get('status') == 'ok' and row.get(metric) is not None \
                and base.get(metric) is not None:
            changed[metric] = float(row[metric]) - float(base[metric])
        else:
            changed.update({metric: None, 'status': 'n/a',
                            'note': row.get('note') or base.get('note') or 'not evaluated'})
        out.append(changed)
    return out


def blind_pair_miou_bound() -> float:
    """The best mean IoU (in %) over a probe's two classes that share every pixel pattern (one texture, top and
    bottom copy) for a model that cannot tell the copies apart: it gives the same answer on both copies.

    With a fraction p of the pixel pairs called 'top': IoU_top = p / (1 + p) and IoU_bottom = (1 - p) / (2 - p);
    their mean is largest at p = 1/2, where both are 1/3.
    """
    p = 0.5
    return 100.0 * 0.5 * (p / (1 + p) + (1 - p) / (2 - p))
