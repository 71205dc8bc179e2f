"""The PNG writers draw something (not blank images) and refuse arrays of the wrong shape."""
import numpy as np
import pytest
from PIL import Image

from vitpe_mm.analysis import SEG_COLUMNS, TestScale, metric_row, plot_metric_vs_scale, save_head_maps, save_tiled_maps


def pixel_std(path) -> float:
    return float(np.asarray(Image.open(path).convert('L'), dtype=np.float32).std())


def test_metric_vs_scale_plot(tmp_path):
    scales = [TestScale(f'{s}x{s}', (s, s), s / 128) for s in (64, 128, 256)]
    rows = [metric_row('peg', s, SEG_COLUMNS, dict(mIoU=40 + i, aAcc=80 - i)) for i, s in enumerate(scales)]
    rows += [metric_row('abs_nointerp', s, SEG_COLUMNS, dict(mIoU=30 + i, aAcc=70)) for i, s in enumerate(scales[:2])]
    rows.append(metric_row('abs_nointerp', scales[2], SEG_COLUMNS, None, note='too big'))
    path = plot_metric_vs_scale(rows, SEG_COLUMNS[:2], tmp_path / 'sub' / 'plot.png', 'title')
    assert path.is_file()
    image = Image.open(path)
    assert image.size[0] > 1.5 * image.size[1]  # two panels side by side
    assert pixel_std(path) > 10


def test_maps(tmp_path):
    rng = np.random.default_rng(0)
    tiled = save_tiled_maps(rng.uniform(-1, 1, (3, 4, 5, 6)), tmp_path / 'tiled.png', 'sim')
    heads = save_head_maps(rng.normal(size=(5, 7, 7)), tmp_path / 'heads.png', 'bias')
    panels = save_head_maps(rng.normal(size=(2, 7, 7)), tmp_path / 'panels.png', shared_scale=False,
                            symmetric=False, titles=['a', 'b'])
    for path in (tiled, heads, panels):
        assert pixel_std(path) > 10, path
    with pytest.raises(ValueError, match='Qh, Qw, H, W'):
        save_tiled_maps(np.zeros((3, 4, 5)), tmp_path / 'x.png')
    with pytest.raises(ValueError, match='num_heads, H, W'):
        save_head_maps(np.zeros((3, 4)), tmp_path / 'x.png')
