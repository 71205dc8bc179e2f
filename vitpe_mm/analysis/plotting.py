"""PNG figures for resolution sweeps (metric vs test scale) and positional-encoding maps, with matplotlib's Agg
backend (no display needed)."""
import math
from pathlib import Path
from typing import Any, Mapping, Optional, Sequence

import numpy as np

from .results import STATUS_OK, MetricColumn

__all__ = ['plot_metric_vs_scale', 'plot_study', 'save_tiled_maps', 'save_head_maps']


def _pyplot():
    import matplotlib
    matplotlib.use('Agg', force=True)
    import matplotlib.pyplot as plt
    return plt


def _finish(fig, path: str) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110, bbox_inches='tight')
    _pyplot().close(fig)
    return path


def plot_metric_vs_scale(rows: Sequence[Mapping[str, Any]], columns: Sequence[MetricColumn], path: str,
                         title: str = '', reference_factor: Optional[float] = 1.0,
                         xlabel: str = 'test scale (factor of the reference scale)') -> Path:
    """One panel per metric column, one line per checkpoint label, x = test scale factor (log axis).

    Scales a checkpoint could not run are gaps, listed in its legend entry ('n/a at 2x'); a checkpoint without any
    value in a panel (e.g. the baseline in a difference panel) is left out of it. The x ticks carry the scale
    (w x h) when every checkpoint was tested at the same sizes, else the factor; `reference_factor` draws a dotted
    line at the training / config scale; a panel whose values change sign gets a line at 0.
    """
    columns = [c for c in columns if any(r.get(c.name) is not None for r in rows)] or list(columns[:1])
    plt = _pyplot()
    fig, axes = plt.subplots(1, len(columns), figsize=(5.2 * len(columns), 4.0), squeeze=False)
    labels = list(dict.fromkeys(r['label'] for r in rows))
    factors = sorted({r['factor'] for r in rows})
    by_factor = {}
    for r in rows:
        by_factor.setdefault(r['factor'], set()).add(r['scale'])
    same_sizes = all(len(v) == 1 for v in by_factor.values())
    markers = 'osD^vP*Xh<>'
    for ax, column in zip(axes[0], columns):
        for i, label in enumerate(labels):
            mine = sorted((r for r in rows if r['label'] == label), key=lambda r: r['factor'])
            xs = [r['factor'] for r in mine]
            ys = [r.get(column.name) if r['status'] == STATUS_OK and r.get(column.name) is not None else np.nan
                  for r in mine]
            if all(np.isnan(ys)) and not any(r['status'] != STATUS_OK for r in mine):
                continue
            missing = [f'{r["factor"]:g}x' for r in mine if r['status'] != STATUS_OK]
            legend = label + (f' (n/a at {", ".join(missing)})' if missing else '')
            ax.plot(xs, ys, marker=markers[i % len(markers)], linewidth=1.6, markersize=5, label=legend,
                    color=f'C{i}')
        values = [r.get(column.name) for r in rows if r.get(column.name) is not None]
        if values and min(values) < 0 < max(values):
            ax.axhline(0.0, color='0.3', linewidth=0.8)
        if reference_factor is not None and factors and min(factors) <= reference_factor <= max(factors):
            ax.axvline(reference_factor, color='0.6', linestyle=':', linewidth=1)
        ax.set_xscale('log', base=2)
        ax.set_xticks(factors)
        ax.set_xticklabels([(f'{next(iter(by_factor[f]))}\n{f:g}x' if same_sizes else f'{f:g}x') for f in factors],
                           fontsize=8)
        ax.minorticks_off()
        ax.set_xlabel(xlabel)
        unit = ' (%)' if column.multiplier == 100.0 or column.name.split()[0] in ('mIoU', 'aAcc', 'mAcc') else ''
        ax.set_ylabel(column.name + unit)
        ax.set_title(column.name)
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=7)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return _finish(fig, path)


def plot_study(cells: Sequence[Mapping[str, Any]], diffs: Sequence[Mapping[str, Any]], path: str, metric: str,
               title: str = '', chance: Optional[float] = None, reference_factor: float = 1.0,
               xlabel: str = 'test scale (factor of the training size)',
               change_diffs: Optional[Sequence[Mapping[str, Any]]] = None) -> Path:
    """The study's figure: left, each arm's mean over the seeds vs test scale with its interval as error bars;
    next (with `diffs`), the paired difference from the baseline arm with its interval: a filled marker when the
    interval excludes 0 (resolved), a hollow one when it contains 0; last (with `change_diffs`), the same for the
    change from the training scale minus the baseline's change (`change_from_reference`). Arms are dodged
    sideways a little so that bars do not hide each other. `chance` draws a dashed line (e.g. the probe's
    position-blind bound).

    Args:
        cells: `vitpe_mm.analysis.stats.cell_intervals` output.
        diffs: `paired_differences` output (may be empty).
        change_diffs: `paired_differences` of `change_from_reference` rows (may be empty or None).
    """
    plt = _pyplot()
    panels = 1 + bool(diffs) + bool(change_diffs)
    fig, axes = plt.subplots(1, panels, figsize=(6.0 * panels, 4.4), squeeze=False)
    markers = 'osD^vP*Xh<>'
    arms = list(dict.fromkeys(c['arm'] for c in cells))
    colour = {arm: f'C{i % 10}' for i, arm in enumerate(arms)}
    factors = sorted({c['factor'] for c in cells})
    dodge = {arm: 2 ** ((i - (len(arms) - 1) / 2) * 0.025) for i, arm in enumerate(arms)}

    def draw(ax, records, resolved_fill):
        for arm in dict.fromkeys(r['arm'] for r in records):
            mine = sorted((r for r in records if r['arm'] == arm and r['interval'] is not None),
                          key=lambda r: r['factor'])
            if not mine:
                continue
            i = arms.index(arm)
            xs = [r['factor'] * dodge[arm] for r in mine]
            ys = [r['interval'].mean for r in mine]
            err = [r['interval'].half_width or 0.0 for r in mine]
            ax.errorbar(xs, ys, yerr=err, color=colour[arm], linewidth=1.3, capsize=3, marker=None, label=arm)
            for x, y, r in zip(xs, ys, mine):
                filled = r.get('resolved', True) if resolved_fill else True
                ax.plot([x], [y], marker=markers[i % len(markers)], markersize=6, color=colour[arm],
                        markerfacecolor=colour[arm] if filled else 'white', linestyle='none')

    draw(axes[0][0], cells, False)
    axes[0][0].set_ylabel(metric)
    axes[0][0].set_title(f'{metric}: mean and 95% interval over seeds')
    if chance is not None:
        axes[0][0].axhline(chance, color='0.3', linestyle='--', linewidth=0.9,
                           label=f'position-blind bound ({chance:.1f})')
    if diffs:
        draw(axes[0][1], diffs, True)
        axes[0][1].axhline(0.0, color='0.3', linewidth=0.8)
        axes[0][1].set_ylabel(f'{metric} - {diffs[0]["baseline"]}')
        axes[0][1].set_title(f'paired difference from {diffs[0]["baseline"]} (hollow: interval contains 0)',
                             fontsize=9)
    if change_diffs:
        ax = axes[0][panels - 1]
        draw(ax, change_diffs, True)
        ax.axhline(0.0, color='0.3', linewidth=0.8)
        base = change_diffs[0]['baseline']
        ax.set_ylabel(f'change from {reference_factor:g}x minus {base}\'s')
        ax.set_title(f'change from {reference_factor:g}x, minus {base}\'s change (paired; hollow: contains 0)',
                     fontsize=9)
    for ax in axes[0]:
        if factors and min(factors) <= reference_factor <= max(factors):
            ax.axvline(reference_factor, color='0.6', linestyle=':', linewidth=1)
        ax.set_xscale('log', base=2)
        ax.set_xticks(factors)
        ax.set_xticklabels([f'{f:g}x' for f in factors], fontsize=8)
        ax.minorticks_off()
        ax.set_xlabel(xlabel)
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=7)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return _finish(fig, path)


def save_tiled_maps(maps: np.ndarray, path: str, title: str = '', vmin: Optional[float] = None,
                    vmax: Optional[float] = None, pad: int = 1, cmap: str = 'viridis',
                    cbar_label: str = 'cosine similarity') -> Path:
    """Saves a (Qh, Qw, H, W) stack of maps tiled as a Qh x Qw mosaic (the ViT paper's PE-similarity figure);
    the colour scale spans the data unless `vmin` / `vmax` are given."""
    maps = np.asarray(maps, dtype=np.float32)
    if maps.ndim != 4:
        raise ValueError(f'maps must have shape (Qh, Qw, H, W), got {maps.shape}')
    qh, qw, h, w = maps.shape
    mosaic = np.full((qh * (h + pad) - pad, qw * (w + pad) - pad), np.nan, dtype=np.float32)
    for i in range(qh):
        for j in range(qw):
            mosaic[i * (h + pad):i * (h + pad) + h, j * (w + pad):j * (w + pad) + w] = maps[i, j]
    plt = _pyplot()
    side = min(9.0, max(3.5, 0.35 * max(qh, qw) * max(1.0, min(h, w) / 6)))
    fig, ax = plt.subplots(figsize=(side * qw / max(qh, qw) + 1.2, side * qh / max(qh, qw)))
    cm = plt.get_cmap(cmap).with_extremes(bad='white')
    vmin = float(np.nanmin(maps)) if vmin is None else vmin
    vmax = float(np.nanmax(maps)) if vmax is None else vmax
    image = ax.imshow(np.ma.masked_invalid(mosaic), cmap=cm, vmin=vmin, vmax=vmax, interpolation='nearest')
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_xlabel('query column')
    ax.set_ylabel('query row')
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04, label=cbar_label)
    if title:
        ax.set_title(title, fontsize=9)
    return _finish(fig, path)


def save_head_maps(maps: np.ndarray, path: str, title: str = '', cbar_label: str = 'bias',
                   symmetric: bool = True, mark_centre: bool = True, titles: Optional[Sequence[str]] = None,
                   shared_scale: bool = True) -> Path:
    """Saves (num_heads, H, W) maps, one panel per head ('head k', or `titles`).

    `symmetric` centres a red-blue scale on 0; `shared_scale` puts all panels on one scale (else one colour bar
    per panel); `mark_centre` marks the cell (H // 2, W // 2) with '+': offset (0, 0) of a relative-bias table,
    the query of `centre_query_bias`.
    """
    maps = np.asarray(maps, dtype=np.float32)
    if maps.ndim != 3:
        raise ValueError(f'maps must have shape (num_heads, H, W), got {maps.shape}')
    heads = maps.shape[0]
    cols = min(heads, 4)
    rows = math.ceil(heads / cols)

    def limits(values):
        if symmetric:
            bound = float(np.nanmax(np.abs(values))) or 1.0
            return -bound, bound
        return float(np.nanmin(values)), float(np.nanmax(values))

    plt = _pyplot()
    fig, axes = plt.subplots(rows, cols, figsize=(3.0 * cols + 0.8 * (1 if shared_scale else cols), 3.0 * rows),
                             squeeze=False)
    image = None
    for k, ax in enumerate(axes.flat):
        ax.set_xticks([])
        ax.set_yticks([])
        if k >= heads:
            ax.axis('off')
            continue
        vmin, vmax = limits(maps if shared_scale else maps[k])
        image = ax.imshow(maps[k], cmap='RdBu_r' if symmetric else 'viridis', vmin=vmin, vmax=vmax,
                          interpolation='nearest')
        if mark_centre:
            ax.plot([maps.shape[2] // 2], [maps.shape[1] // 2], 'k+', markersize=8)  # as `centre_query_bias`
        ax.set_title(titles[k] if titles is not None else f'head {k}', fontsize=9)
        if not shared_scale:
            fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04, label=cbar_label)
    if shared_scale:
        fig.colorbar(image, ax=axes.ravel().tolist(), fraction=0.046, pad=0.04, label=cbar_label)
    if title:
        fig.suptitle(title, fontsize=10, y=1.0 + 0.06 / rows)
    return _finish(fig, path)
