"""Results of resolution sweeps: which metrics to show per toolbox, rows, and the table / CSV / JSON writers.

A row is one (checkpoint, test scale) evaluation: `label`, `scale`, `width`, `height`, `factor`, `status`
('ok', or 'n/a' when the model cannot run at that scale, e.g. a non-interpolated absolute PE asked for a larger
grid), `note` (why n/a) and one value per metric column. Values are rounded to the precision shown, so the printed
table, the CSV and the JSON hold the same numbers. COCO AP is shown in percent (mmdet reports fractions).
"""
import csv
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

__all__ = ['MetricColumn', 'DET_COLUMNS', 'SEG_COLUMNS', 'ROW_FIELDS', 'STATUS_OK', 'STATUS_NA', 'columns_for',
           'metric_row', 'baseline_difference', 'format_table', 'format_pivot', 'write_csv', 'read_csv', 'write_json',
           'read_json']

STATUS_OK, STATUS_NA = 'ok', 'n/a'
ROW_FIELDS = ('label', 'scale', 'width', 'height', 'factor', 'status', 'note')


@dataclass(frozen=True)
class MetricColumn:
    """A metric as shown: `key` in the evaluator's dict, display `name`, `multiplier` and `digits`."""
    key: str
    name: str
    multiplier: float = 1.0
    digits: int = 2
    optional: bool = False  # dropped from the table when no row has it (e.g. mask AP of a box-only detector)

    def value(self, metrics: Mapping[str, Any]) -> Optional[float]:
        raw = metrics.get(self.key)
        if raw is None:
            return None
        raw = float(raw)
        if not math.isfinite(raw) or raw < 0:  # COCO writes -1 for an area range without objects
            return None
        return round(raw * self.multiplier, self.digits)


DET_COLUMNS = (
    MetricColumn('coco/bbox_mAP', 'bbox_AP', 100.0, 1),
    MetricColumn('coco/bbox_mAP_s', 'AP_S', 100.0, 1),
    MetricColumn('coco/bbox_mAP_m', 'AP_M', 100.0, 1),
    MetricColumn('coco/bbox_mAP_l', 'AP_L', 100.0, 1),
    MetricColumn('coco/segm_mAP', 'mask_AP', 100.0, 1, optional=True),
)
SEG_COLUMNS = (
    MetricColumn('mIoU', 'mIoU', 1.0, 2),
    MetricColumn('aAcc', 'aAcc', 1.0, 2),
    MetricColumn('mAcc', 'mAcc', 1.0, 2, optional=True),
)


def columns_for(toolbox: str) -> Tuple[MetricColumn, ...]:
    """The metric columns of 'mmdet' (COCO bbox AP, AP_S/M/L, mask AP) or 'mmseg' (mIoU, aAcc, mAcc)."""
    if toolbox == 'mmdet':
        return DET_COLUMNS
    if toolbox == 'mmseg':
        return SEG_COLUMNS
    raise ValueError(f"toolbox must be 'mmdet' or 'mmseg', got {toolbox!r}")


def metric_row(label: str, scale: Any, columns: Sequence[MetricColumn], metrics: Optional[Mapping[str, Any]] = None,
               note: str = '') -> Dict[str, Any]:
    """One row for checkpoint `label` at `scale` (a `TestScale`); `metrics` None makes an 'n/a' row."""
    row = dict(label=label, scale=scale.label, width=scale.size[0], height=scale.size[1],
               factor=round(float(scale.factor), 4), status=STATUS_OK if metrics is not None else STATUS_NA,
               note=note)
    for column in columns:
        row[column.name] = column.value(metrics) if metrics is not None else None
    return row


def _shown_columns(rows: Sequence[Mapping[str, Any]], columns: Sequence[MetricColumn]) -> List[MetricColumn]:
    return [c for c in columns if not c.optional or any(r.get(c.name) is not None for r in rows)]


def _cell(value: Any, digits: int) -> str:
    return '-' if value is None else f'{value:.{digits}f}'


def _markdown(header: Sequence[str], body: Sequence[Sequence[str]], align_right_from: int) -> str:
    widths = [max(len(h), *(len(r[i]) for r in body)) if body else len(h) for i, h in enumerate(header)]
    def line(cells):
        return '| ' + ' | '.join(c.rjust(w) if i >= align_right_from else c.ljust(w)
                                 for i, (c, w) in enumerate(zip(cells, widths))) + ' |'
    rule = '| ' + ' | '.join(('-' * (w - 1) + ':') if i >= align_right_from else '-' * w
                             for i, w in enumerate(widths)) + ' |'
    return '\n'.join([line(header), rule] + [line(r) for r in body])


def format_table(rows: Sequence[Mapping[str, Any]], columns: Sequence[MetricColumn]) -> str:
    """A Markdown table: checkpoint, scale, factor, then the metric columns ('n/a' rows say so)."""
    shown = _shown_columns(rows, columns)
    header = ['checkpoint', 'scale', 'factor'] + [c.name for c in shown]
    body = []
    for row in rows:
        if row['status'] == STATUS_OK:
            cells = [_cell(row.get(c.name), c.digits) for c in shown]
        else:
            cells = [STATUS_NA] * len(shown)
        body.append([str(row['label']), str(row['scale']), f'{row["factor"]:.2f}x'] + cells)
    return _markdown(header, body, 2)


def baseline_difference(rows: Sequence[Mapping[str, Any]], column: MetricColumn,
                        baseline: str) -> Tuple[List[Dict[str, Any]], MetricColumn]:
    """Rows of the other checkpoints with a column holding their `column` value minus the `baseline` checkpoint's
    at the same scale (e.g. 'mIoU - none': what a PE adds at each resolution), and that column."""
    base = {(r['factor'], r['scale']): r.get(column.name) for r in rows
            if r['label'] == baseline and r['status'] == STATUS_OK}
    if not base:
        raise ValueError(f'baseline {baseline!r} has no evaluated row')
    diff = MetricColumn(f'{column.key} - {baseline}', f'{column.name} - {baseline}', 1.0, column.digits)
    out = []
    for row in rows:
        if row['label'] == baseline:
            continue
        value, other = row.get(column.name), base.get((row['factor'], row['scale']))
        ok = row['status'] == STATUS_OK and value is not None and other is not None
        out.append(dict(row, **{diff.name: round(value - other, column.digits) if ok else None}))
    return out, diff


def format_pivot(rows: Sequence[Mapping[str, Any]], column: MetricColumn, reference_factor: float = 1.0,
                 with_delta: bool = True, baseline: Optional[str] = None) -> str:
    """A Markdown table with one line per checkpoint and one column per test scale for one metric.

    With `with_delta`, each value is followed by its change from the value at `reference_factor` (the training
    / config scale), e.g. `41.2 (-3.1)`. With `baseline` (a label), each cell is instead the difference from that
    checkpoint at the same scale (`baseline_difference`), and the baseline's own line is left out. Scales a model
    cannot run show 'n/a'.
    """
    title = f'{column.name} \\ scale'
    if baseline is not None:
        rows, column = baseline_difference(rows, column, baseline)
        title, with_delta = column.name, False
    labels = list(dict.fromkeys(r['label'] for r in rows))
    scales = sorted({(r['factor'], r['scale']) for r in rows})
    header = [title] + [f'{s} ({f:g}x)' for f, s in scales]
    body = []
    for label in labels:
        mine = {(r['factor'], r['scale']): r for r in rows if r['label'] == label}
        ref = next((r for (f, _), r in mine.items() if math.isclose(f, reference_factor) and r['status'] == STATUS_OK),
                   None)
        ref_value = ref.get(column.name) if ref is not None else None
        cells = [str(label)]
        for key in scales:
            row = mine.get(key)
            if row is None:
                cells.append('')
            elif row['status'] != STATUS_OK or row.get(column.name) is None:
                cells.append(STATUS_NA if row['status'] != STATUS_OK else '-')
            else:
                value = row[column.name]
                text = f'{value:+.{column.digits}f}' if baseline is not None else _cell(value, column.digits)
                if with_delta and ref_value is not None and row is not ref:
                    text += f' ({value - ref_value:+.{column.digits}f})'
                cells.append(text)
        body.append(cells)
    return _markdown(header, body, 1)


def _fieldnames(rows: Sequence[Mapping[str, Any]], columns: Sequence[MetricColumn]) -> List[str]:
    return list(ROW_FIELDS) + [c.name for c in _shown_columns(rows, columns)]


def write_csv(path: str, rows: Sequence[Mapping[str, Any]], columns: Sequence[MetricColumn]) -> Path:
    """Writes the rows (one per checkpoint and scale) as CSV; missing values are empty cells."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fields = _fieldnames(rows, columns)
    with path.open('w', newline='') as f:
        writer = csv.DictWriter(f, fieldnames=fields, extrasaction='ignore')
        writer.writeheader()
        for row in rows:
            writer.writerow({k: ('' if row.get(k) is None else row.get(k)) for k in fields})
    return path


def read_csv(path: str) -> List[Dict[str, Any]]:
    """Rows written by `write_csv`: numbers as floats / ints, empty metric cells as None."""
    out = []
    with Path(path).open(newline='') as f:
        for raw in csv.DictReader(f):
            row = {}
            for key, value in raw.items():
                if key in ('label', 'scale', 'status', 'note'):
                    row[key] = value
                elif value == '':
                    row[key] = None
                elif key in ('width', 'height'):
                    row[key] = int(value)
                else:
                    row[key] = float(value)
            out.append(row)
    return out


def write_json(path: str, rows: Sequence[Mapping[str, Any]], columns: Sequence[MetricColumn],
               meta: Optional[Mapping[str, Any]] = None) -> Path:
    """Writes {'meta': ..., 'columns': [{key, name, multiplier}], 'rows': [...]} as JSON."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = dict(meta=dict(meta or {}),
                   columns=[dict(key=c.key, name=c.name, multiplier=c.multiplier)
                            for c in _shown_columns(rows, columns)],
                   rows=[dict(r) for r in rows])
    path.write_text(json.dumps(payload, indent=1, default=str) + '\n')
    return path


def read_json(path: str) -> Dict[str, Any]:
    return json.loads(Path(path).read_text())
