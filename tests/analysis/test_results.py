"""Sweep rows, the Markdown tables, CSV / JSON writers, and the ablation summary."""
import pytest

from vitpe_mm.analysis import (
    DET_COLUMNS,
    SEG_COLUMNS,
    TestScale,
    baseline_difference,
    columns_for,
    format_pivot,
    format_table,
    metric_row,
    read_csv,
    read_json,
    write_csv,
    write_json,
)

S_HALF, S_ONE, S_TWO = TestScale('64x64', (64, 64), 0.5), TestScale('128x128', (128, 128), 1.0), \
    TestScale('256x256', (256, 256), 2.0)


def seg_rows():
    return [
        metric_row('peg', S_HALF, SEG_COLUMNS, dict(mIoU=40.123, aAcc=80.0, mAcc=50.0)),
        metric_row('peg', S_ONE, SEG_COLUMNS, dict(mIoU=45.5, aAcc=82.25, mAcc=55.0)),
        metric_row('peg', S_TWO, SEG_COLUMNS, dict(mIoU=44.0, aAcc=81.0, mAcc=54.0)),
        metric_row('abs_nointerp', S_HALF, SEG_COLUMNS, dict(mIoU=30.0, aAcc=70.0, mAcc=40.0)),
        metric_row('abs_nointerp', S_ONE, SEG_COLUMNS, dict(mIoU=42.0, aAcc=80.0, mAcc=50.0)),
        metric_row('abs_nointerp', S_TWO, SEG_COLUMNS, None, note='ValueError: grid too large'),
    ]


def test_metric_rows_detection_in_percent_and_missing_area_ranges():
    metrics = {'coco/bbox_mAP': 0.4123, 'coco/bbox_mAP_s': -1.0, 'coco/bbox_mAP_m': 0.3, 'coco/bbox_mAP_l': 0.5}
    row = metric_row('ckpt', S_ONE, DET_COLUMNS, metrics)
    assert row['bbox_AP'] == 41.2 and row['AP_M'] == 30.0 and row['AP_L'] == 50.0
    assert row['AP_S'] is None  # COCO's -1: no small objects
    assert row['mask_AP'] is None and row['status'] == 'ok'
    assert (row['width'], row['height'], row['factor']) == (128, 128, 1.0)
    na = metric_row('ckpt', S_TWO, DET_COLUMNS, None, note='too big')
    assert na['status'] == 'n/a' and na['note'] == 'too big' and na['bbox_AP'] is None
    with pytest.raises(ValueError, match='toolbox'):
        columns_for('mmpose')


def test_table_shows_values_and_n_a():
    rows = seg_rows()
    table = format_table(rows, SEG_COLUMNS)
    lines = table.splitlines()
    assert lines[0].split('|')[1:-1] == [' checkpoint   ', ' scale   ', ' factor ', '  mIoU ', '  aAcc ', '  mAcc ']
    assert len(lines) == 2 + len(rows)
    assert '40.12' in lines[2] and '0.50x' in lines[2]
    assert lines[-1].count('n/a') == 3
    # mask AP is dropped when no row has one
    det = [metric_row('a', S_ONE, DET_COLUMNS, {'coco/bbox_mAP': 0.5})]
    assert 'mask_AP' not in format_table(det, DET_COLUMNS)
    det.append(metric_row('b', S_ONE, DET_COLUMNS, {'coco/bbox_mAP': 0.5, 'coco/segm_mAP': 0.25}))
    assert 'mask_AP' in format_table(det, DET_COLUMNS)


def test_pivot_deltas_from_the_reference_scale():
    pivot = format_pivot(seg_rows(), SEG_COLUMNS[0])
    lines = pivot.splitlines()
    assert '64x64 (0.5x)' in lines[0] and '256x256 (2x)' in lines[0]
    peg = [c.strip() for c in lines[2].split('|')[1:-1]]
    assert peg == ['peg', '40.12 (-5.38)', '45.50', '44.00 (-1.50)']
    nointerp = [c.strip() for c in lines[3].split('|')[1:-1]]
    assert nointerp == ['abs_nointerp', '30.00 (-12.00)', '42.00', 'n/a']


def test_pivot_against_a_baseline():
    pivot = format_pivot(seg_rows(), SEG_COLUMNS[0], baseline='peg')
    lines = pivot.splitlines()
    assert lines[0].split('|')[1].strip() == 'mIoU - peg' and len(lines) == 3  # the baseline's line is left out
    assert [c.strip() for c in lines[2].split('|')[1:-1]] == ['abs_nointerp', '-10.12', '-3.50', 'n/a']
    with pytest.raises(ValueError, match='baseline'):
        format_pivot(seg_rows(), SEG_COLUMNS[0], baseline='sincos')
    rows, column = baseline_difference(seg_rows(), SEG_COLUMNS[0], 'peg')
    assert column.name == 'mIoU - peg' and [r['label'] for r in rows] == ['abs_nointerp'] * 3
    assert [r[column.name] for r in rows] == [-10.12, -3.5, None]
    assert rows[0]['mIoU'] == 30.0  # the metric itself is kept


def test_csv_and_json_round_trip(tmp_path):
    rows = seg_rows()
    write_csv(tmp_path / 'r.csv', rows, SEG_COLUMNS)
    assert read_csv(tmp_path / 'r.csv') == rows
    write_json(tmp_path / 'r.json', rows, SEG_COLUMNS, dict(config='x.py'))
    payload = read_json(tmp_path / 'r.json')
    assert payload['rows'] == rows and payload['meta'] == dict(config='x.py')
    assert [c['name'] for c in payload['columns']] == ['mIoU', 'aAcc', 'mAcc']
