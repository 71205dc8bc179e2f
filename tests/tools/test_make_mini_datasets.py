"""The mini COCO / ADE20K generators: determinism, the real formats, and what the toolboxes' loaders read from them."""
import hashlib
import importlib.util
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from vitpe_mm.datasets import COCO_CATEGORIES, ensure_mini_datasets, validate_mini_ade, validate_mini_coco
from vitpe_mm.datasets.mini import ADE_LABELS, COCO_AREA_RANGES, COCO_DRAWN, MARKER_NAME

ROOT = Path(__file__).resolve().parents[2]
SMALL = dict(coco_train=6, coco_val=3, ade_train=4, ade_val=2, progress=None)


def _digest(tree: Path) -> dict:
    return {str(p.relative_to(tree)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(tree.rglob('*')) if p.is_file()}


@pytest.fixture(scope='module')
def trees(tmp_path_factory):
    return ensure_mini_datasets(tmp_path_factory.mktemp('data'), seed=0, **SMALL)


def _coco(trees, split='train'):
    with open(trees['coco'] / 'annotations' / f'instances_{split}2017.json') as f:
        return json.load(f)


# ------------------------------------------------------------------------------------------------------ determinism
def test_same_seed_same_bytes(trees, tmp_path):
    again = ensure_mini_datasets(tmp_path, seed=0, **SMALL)
    for name in ('coco', 'ade'):
        first, second = _digest(trees[name]), _digest(again[name])
        assert first == second, f'{name}: files differ between two runs with the same seed'
        assert len(first) > 10


def test_other_seed_other_data(trees, tmp_path):
    other = ensure_mini_datasets(tmp_path, seed=1, **SMALL)
    assert _digest(trees['coco'])['train2017/000000000001.jpg'] != _digest(other['coco'])['train2017/000000000001.jpg']
    assert _coco(trees)['annotations'] != _coco(other)['annotations']
    assert _digest(trees['ade']) != _digest(other['ade'])


def test_image_depends_on_index_not_on_count(trees, tmp_path):
    smaller = ensure_mini_datasets(tmp_path, seed=0, coco_train=2, coco_val=1, ade_train=2, ade_val=1,
                                   progress=None)
    big, small = _digest(trees['coco']), _digest(smaller['coco'])
    assert small['train2017/000000000002.jpg'] == big['train2017/000000000002.jpg']
    assert _digest(smaller['ade'])['annotations/training/ADE_train_00000002.png'] == \
        _digest(trees['ade'])['annotations/training/ADE_train_00000002.png']


# ----------------------------------------------------------------------------------------------------- COCO format
def test_coco_json_is_real_coco(trees):
    doc = _coco(trees)
    assert set(doc) >= {'info', 'licenses', 'images', 'annotations', 'categories'}
    cats = {c['id']: c['name'] for c in doc['categories']}
    assert len(cats) == 80 and cats[1] == 'person' and cats[3] == 'car' and cats[90] == 'toothbrush'
    assert len(doc['images']) == SMALL['coco_train'] and len(_coco(trees, 'val')['images']) == SMALL['coco_val']
    train_ids = {im['id'] for im in doc['images']}
    assert train_ids.isdisjoint(im['id'] for im in _coco(trees, 'val')['images'])
    assert len({a['id'] for a in doc['annotations']}) == len(doc['annotations'])
    for ann in doc['annotations']:
        assert ann['iscrowd'] == 0 and ann['category_id'] in COCO_DRAWN and ann['image_id'] in train_ids
        assert isinstance(ann['segmentation'], list) and len(ann['segmentation'][0]) >= 6
        assert len(ann['segmentation'][0]) % 2 == 0


def test_coco_polygons_inside_images_and_boxes_tight(trees):
    doc = _coco(trees)
    sizes = {im['id']: (im['width'], im['height']) for im in doc['images']}
    for im in doc['images']:
        with Image.open(trees['coco'] / 'train2017' / im['file_name']) as pil:
            assert pil.size == (im['width'], im['height']) and pil.mode == 'RGB' and pil.format == 'JPEG'
            assert 320 <= min(pil.size) and max(pil.size) <= 640
    for ann in doc['annotations']:
        w, h = sizes[ann['image_id']]
        xy = np.asarray(ann['segmentation'][0]).reshape(-1, 2)
        assert xy.min() >= 0 and xy[:, 0].max() <= w and xy[:, 1].max() <= h
        x, y, bw, bh = ann['bbox']
        np.testing.assert_allclose([x, y, x + bw, y + bh], [*xy.min(0), *xy.max(0)], atol=0.02)


def test_coco_loads_with_pycocotools_and_masks_match_area(trees):
    from pycocotools.coco import COCO
    coco = COCO(str(trees['coco'] / 'annotations' / 'instances_train2017.json'))
    assert sorted(coco.getCatIds()) == sorted(c[0] for c in COCO_CATEGORIES)
    assert coco.loadCats(coco.getCatIds(catNms=['person']))[0]['id'] == 1
    for ann in coco.loadAnns(coco.getAnnIds()):
        mask = coco.annToMask(ann)
        assert abs(int(mask.sum()) - ann['area']) <= 0.15 * ann['area'] + 40


def test_coco_covers_the_three_area_ranges(tmp_path):
    trees = ensure_mini_datasets(tmp_path, only='coco', coco_train=24, coco_val=1, progress=None)
    areas = np.array([a['area'] for a in _coco(trees)['annotations']])
    assert (areas < 32 ** 2).any() and ((areas >= 32 ** 2) & (areas < 96 ** 2)).any() and (areas >= 96 ** 2).any()
    assert set(a['category_id'] for a in _coco(trees)['annotations']) == set(COCO_DRAWN)
    assert min(lo for lo, _ in COCO_AREA_RANGES.values()) >= 100  # every object is at least ~10x10 pixels


def test_coco_builds_with_mmdet_and_runs_its_pipeline(trees):
    from mmdet.datasets import CocoDataset
    from mmdet.utils import register_all_modules
    register_all_modules()
    ds = CocoDataset(
        data_root=str(trees['coco']) + '/', ann_file='annotations/instances_train2017.json',
        data_prefix=dict(img='train2017/'), filter_cfg=dict(filter_empty_gt=True, min_size=32),
        pipeline=[dict(type='LoadImageFromFile'), dict(type='LoadAnnotations', with_bbox=True, with_mask=True),
                  dict(type='Resize', scale=(512, 320), keep_ratio=True), dict(type='PackDetInputs')])
    assert len(ds) == SMALL['coco_train']
    assert ds.metainfo['classes'] == tuple(c[1] for c in COCO_CATEGORIES)
    sample = ds[0]
    inst = sample['data_samples'].gt_instances
    assert sample['inputs'].shape[0] == 3 and max(sample['inputs'].shape[1:]) <= 512
    assert len(inst) > 0 and inst.masks.masks.shape[0] == len(inst)
    assert inst.masks.masks.any(axis=(1, 2)).all()
    names = [ds.metainfo['classes'][int(i)] for i in inst.labels]
    assert set(names) <= {c[1] for c in COCO_CATEGORIES if c[0] in COCO_DRAWN}


# ------------------------------------------------------------------------------------------------------ ADE format
def test_ade_layout_and_label_maps(trees):
    root = trees['ade']
    assert sorted(p.name for p in (root / 'images' / 'training').iterdir()) == \
        [f'ADE_train_{i:08d}.jpg' for i in range(1, SMALL['ade_train'] + 1)]
    assert sorted(p.name for p in (root / 'annotations' / 'validation').iterdir()) == \
        [f'ADE_val_{i:08d}.png' for i in range(1, SMALL['ade_val'] + 1)]
    seen = set()
    for img_path in sorted((root / 'images' / 'training').iterdir()):
        with Image.open(img_path) as img, Image.open(root / 'annotations' / 'training' / f'{img_path.stem}.png') as seg:
            assert seg.mode == 'L' and seg.size == img.size and img.mode == 'RGB'
            values = set(np.unique(np.asarray(seg)).tolist())
        assert values <= {0} | set(ADE_LABELS.values()) and max(values) <= 150
        assert len(values - {0}) >= 3
        seen |= values
    assert 0 in seen, 'some pixels should be "other" (0, ignored with reduce_zero_label)'


def test_ade_label_values_are_ade20k_classes():
    from mmseg.datasets import ADE20KDataset
    classes = ADE20KDataset.METAINFO['classes']
    for name, value in ADE_LABELS.items():
        assert classes[value - 1].strip() == name  # 1-based: value k is class k-1 after reduce_zero_label


def test_ade_builds_with_mmseg_and_reduces_zero_label(trees):
    from mmseg.datasets import ADE20KDataset
    from mmseg.utils import register_all_modules
    register_all_modules()
    ds = ADE20KDataset(
        data_root=str(trees['ade']), data_prefix=dict(img_path='images/training',
                                                      seg_map_path='annotations/training'),
        pipeline=[dict(type='LoadImageFromFile'), dict(type='LoadAnnotations', reduce_zero_label=True),
                  dict(type='PackSegInputs')])
    assert len(ds) == SMALL['ade_train'] and ds.reduce_zero_label
    sample = ds[0]
    gt = sample['data_samples'].gt_sem_seg.data.numpy()[0]
    raw = np.asarray(Image.open(trees['ade'] / 'annotations' / 'training' / 'ADE_train_00000001.png'))
    assert gt.shape == raw.shape == tuple(sample['inputs'].shape[1:])
    np.testing.assert_array_equal(gt[raw == 0], 255)
    np.testing.assert_array_equal(gt[raw > 0], raw[raw > 0].astype(np.int64) - 1)


# ---------------------------------------------------------------------------------------- idempotence, CLI, errors
def test_second_call_skips_a_complete_tree(trees):
    before = {p: p.stat().st_mtime_ns for p in trees['coco'].rglob('*') if p.is_file()}
    lines = []
    ensure_mini_datasets(trees['coco'].parent, seed=0, **dict(SMALL, progress=lines.append))
    assert before == {p: p.stat().st_mtime_ns for p in trees['coco'].rglob('*') if p.is_file()}
    assert any('skipped' in line for line in lines)


def test_force_and_changed_settings_regenerate(tmp_path):
    ensure_mini_datasets(tmp_path, only='ade', ade_train=2, ade_val=1, progress=None)
    marker = tmp_path / 'mini_ade' / MARKER_NAME
    first = marker.stat().st_mtime_ns
    ensure_mini_datasets(tmp_path, only='ade', ade_train=2, ade_val=1, force=True, progress=None)
    assert marker.stat().st_mtime_ns != first
    ensure_mini_datasets(tmp_path, only='ade', ade_train=3, ade_val=1, progress=None)
    assert validate_mini_ade(tmp_path / 'mini_ade')['training_images'] == 3
    assert not (tmp_path / 'mini_coco').exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith('.')], 'temporary folders left behind'


def test_refuses_to_overwrite_a_foreign_folder(tmp_path):
    (tmp_path / 'mini_coco').mkdir()
    (tmp_path / 'mini_coco' / 'mine.txt').write_text('real data')
    with pytest.raises(FileExistsError, match='mini_coco'):
        ensure_mini_datasets(tmp_path, only='coco', coco_train=1, coco_val=1, progress=None)
    assert (tmp_path / 'mini_coco' / 'mine.txt').read_text() == 'real data'


def test_bad_arguments():
    with pytest.raises(ValueError, match="only='voc'.*'coco', 'ade'"):
        ensure_mini_datasets('unused', only='voc', progress=None)
    with pytest.raises(ValueError, match='coco_train must be a positive int'):
        ensure_mini_datasets('unused', coco_train=0, progress=None)


def test_validation_names_the_broken_file(tmp_path):
    trees = ensure_mini_datasets(tmp_path, coco_train=2, coco_val=1, ade_train=2, ade_val=1, progress=None)
    (trees['coco'] / 'train2017' / '000000000002.jpg').unlink()
    with pytest.raises(FileNotFoundError, match='000000000002.jpg'):
        validate_mini_coco(trees['coco'])
    Image.new('RGB', (8, 8)).save(trees['ade'] / 'annotations' / 'training' / 'ADE_train_00000001.png')
    with pytest.raises(ValueError, match='ADE_train_00000001.png'):
        validate_mini_ade(trees['ade'])
    # a damaged tree is not complete: the next call makes it again
    lines = []
    ensure_mini_datasets(tmp_path, coco_train=2, coco_val=1, ade_train=2, ade_val=1, progress=lines.append)
    assert sum('regenerating' in line for line in lines) == 2
    assert validate_mini_coco(trees['coco'], 2, 1)['train_images'] == 2
    assert validate_mini_ade(trees['ade'], 2, 1)['training_images'] == 2


def _load_tool():
    spec = importlib.util.spec_from_file_location('make_mini_datasets', ROOT / 'tools' / 'make_mini_datasets.py')
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_cli(tmp_path, capsys):
    args = ['--out', str(tmp_path), '--coco-train', '2', '--coco-val', '1', '--seed', '3', '--only', 'coco']
    out = subprocess.run([sys.executable, str(ROOT / 'tools' / 'make_mini_datasets.py'), *args], capture_output=True,
                         text=True, env=dict(os.environ, PYTHONPATH=str(ROOT)), cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert 'mini COCO train2017: 2/2 images' in out.stdout and 'done in' in out.stdout
    assert not (tmp_path / 'mini_ade').exists()
    counts = validate_mini_coco(tmp_path / 'mini_coco', 2, 1)
    assert counts['train_images'] == 2 and counts['val_images'] == 1
    assert json.loads((tmp_path / 'mini_coco' / MARKER_NAME).read_text())['seed'] == 3

    tool = _load_tool()
    assert tool.main(args) == 0
    assert 'skipped' in capsys.readouterr().out
    assert tool.main(['--out', str(tmp_path), '--ade-val', '0']) == 2
    assert 'ade_val must be a positive int' in capsys.readouterr().err
    with pytest.raises(SystemExit):
        tool.main(['--only', 'voc'])


def test_cli_study_trees(tmp_path, capsys):
    tool = _load_tool()
    args = ['--out', str(tmp_path), '--study', 'probe', 'coco', '--study-size', '32', '--canvases', '1', '2',
            '--study-train', '2', '--study-val', '1']
    assert tool.main(args) == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ['study_coco_32', 'study_probe_32']
    with Image.open(next((tmp_path / 'study_probe_32' / 'images' / 'validation_canvas2x').glob('*.png'))) as im:
        assert im.size == (64, 64)
    assert tool.main(['--out', str(tmp_path), '--study', 'ade', '--study-size', '32', '--canvases', '0.3']) == 2
    assert 'even numbers of pixels' in capsys.readouterr().err


# ------------------------------------------------------------------------------------------- study trees (PE study)
STUDY_FACTORS = (0.5, 1.0, 2.0)


@pytest.fixture(scope='module')
def study(tmp_path_factory):
    from vitpe_mm.datasets import ensure_study_tree

    root = tmp_path_factory.mktemp('study')
    return {kind: ensure_study_tree(str(root), kind, 64, STUDY_FACTORS, 3, 4, progress=None)
            for kind in ('ade', 'coco', 'probe')}


def test_probe_classes_are_pixel_identical_apart_from_position(study):
    """By construction a position-blind model cannot separate a probe texture's two classes: the bottom half of
    every probe image is the top half again, pixel for pixel, and every top label k has bottom label k + 1."""
    from vitpe_mm.datasets import PROBE_TEXTURES, probe_label

    top_labels = {probe_label(k, False) for k in range(len(PROBE_TEXTURES))}
    seen = set()
    for factor in STUDY_FACTORS:
        from vitpe_mm.datasets import canvas_suffix
        folder = 'validation' + canvas_suffix(factor)
        for path in sorted((study['probe'] / 'images' / folder).glob('*.png')):
            img = np.asarray(Image.open(path).convert('RGB'))
            label = np.asarray(Image.open(study['probe'] / 'annotations' / folder / path.name))
            side = int(64 * factor)
            assert img.shape == (side, side, 3) and label.shape == (side, side)
            half = side // 2
            np.testing.assert_array_equal(img[:half], img[half:])  # the same pixels
            top, bottom = label[:half], label[half:]
            assert set(np.unique(top)) <= top_labels  # every pixel labelled, by texture and half
            np.testing.assert_array_equal(bottom, top + 1)  # ... and another class below
            seen |= set(np.unique(top).tolist())
    assert len(seen) >= 3  # the textures do occur


def test_canvases_keep_the_training_pixel_scale(study):
    from vitpe_mm.datasets.mini import _texture_px

    # a texture drawn on a larger canvas is the smaller one's pixels continued (lengths in pixels, not relative)
    for kind in ('flat', 'gradient', 'stripes', 'checker'):
        small = _texture_px(np.random.default_rng(5), 32, 48, (100, 120, 140), kind, 40.0, 64.0)
        large = _texture_px(np.random.default_rng(5), 128, 96, (100, 120, 140), kind, 40.0, 64.0)
        np.testing.assert_allclose(large[:32, :48], small, rtol=0, atol=1e-3, err_msg=kind)
    # COCO objects: the same range of box sides on every canvas; more objects on larger ones
    sides, counts = {}, {}
    for factor in STUDY_FACTORS:
        from vitpe_mm.datasets import canvas_suffix
        with open(study['coco'] / 'annotations' / f'instances_val2017{canvas_suffix(factor)}.json') as f:
            doc = json.load(f)
        assert {(im['width'], im['height']) for im in doc['images']} == {(int(64 * factor),) * 2}
        sides[factor] = [math.sqrt(a['bbox'][2] * a['bbox'][3]) for a in doc['annotations']]
        counts[factor] = len(doc['annotations']) / len(doc['images'])
    for factor, values in sides.items():
        assert values and 0.04 * 64 <= min(values) and max(values) <= 0.7 * 64, (factor, min(values), max(values))
    assert counts[2.0] > 2 * counts[1.0]


def test_study_tree_layout_and_reuse(study, tmp_path):
    from vitpe_mm.datasets import ensure_study_tree, validate_study_tree

    ade = study['ade']
    assert ade.name == 'study_ade_64'
    assert sorted(p.name for p in (ade / 'images').iterdir()) == [
        'training', 'validation', 'validation_canvas0.5x', 'validation_canvas2x']  # 1x is the zoom sweep's base
    with Image.open(next((ade / 'images' / 'training').glob('*.png'))) as im:
        assert im.size == (64, 64)
    assert validate_study_tree(study['coco'], 'coco', 3, 4, 64, STUDY_FACTORS)['val2017_canvas2x'] == 4
    before = _digest(ade)
    again = ensure_study_tree(str(ade.parent), 'ade', 64, STUDY_FACTORS, 3, 4, progress=None)  # complete: kept
    assert again == ade and _digest(ade) == before
    with pytest.raises(ValueError, match='even numbers of pixels'):
        ensure_study_tree(str(tmp_path), 'ade', 64, [0.3], 3, 4, progress=None)
    with pytest.raises(ValueError, match='kind'):
        ensure_study_tree(str(tmp_path), 'voc', 64, [1.0], 3, 4, progress=None)
    (ade / 'images' / 'validation_canvas2x' / 'study_val_000001.png').unlink()
    with pytest.raises(ValueError, match='expected 4'):
        validate_study_tree(ade, 'ade', 3, 4, 64, STUDY_FACTORS)
