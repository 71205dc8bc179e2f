"""Mini COCO 2017 and ADE20K trees of procedurally drawn scenes, for demos and tests on machines without data.

Both trees use the real on-disk formats, so the toolboxes' own loaders read them unchanged:

* mini COCO (``CocoDataset``): ``annotations/instances_{train,val}2017.json`` + ``{train,val}2017/*.jpg``. The
  ``categories`` list holds all 80 COCO categories with their real ids, names and supercategories (so 80-class
  configs work as they are); objects of a few of them are drawn as filled polygons whose class is given by shape and
  colour (person: tall red ellipse, car: wide blue rectangle, dog: green triangle, sports ball: yellow circle,
  kite: magenta star, stop sign: orange octagon), in COCO small / medium / large area ranges, on textured
  backgrounds (gradients, stripes, smooth noise, checkers). Annotations are polygon ``segmentation`` lists, xywh
  ``bbox``, polygon ``area``, ``iscrowd`` 0.
* mini ADE20K (``ADE20KDataset``, ADEChallengeData2016 layout): ``images/{training,validation}/ADE_*.jpg`` and
  single-channel uint8 ``annotations/{training,validation}/ADE_*.png`` where 0 is "other" (ignored with
  ``reduce_zero_label=True``) and 1..150 are the ADE20K classes; outdoor scenes (sky, mountain, building, tree,
  grass, road, car, person) and indoor ones (ceiling, wall, floor, door, painting, bed, table), each class with its
  own texture, plus unlabeled clutter (value 0).

* study trees (`ensure_study_tree`, for tools/pe_ablation.py): square canvases of one training size and
  validation canvases at other sizes drawn at the same pixel scale (objects, textures), in either layout, and the
  position probe (`draw_probe_image`: the same pixels are one class in the top half and another in the bottom).

Everything is drawn with numpy + Pillow from a seed; image ``i`` of a split depends only on (seed, split, i), so the
same seed gives the same bytes and a larger tree starts with the images of a smaller one. No torch, no mm* imports.
"""
import functools
import json
import math
import os
import shutil
import tempfile
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np
from PIL import Image, ImageDraw

GENERATOR_VERSION = 1
MARKER_NAME = 'mini_dataset.json'
JPEG_QUALITY = 92

# (id, name, supercategory) of the 80 COCO 2017 categories.
COCO_CATEGORIES: Tuple[Tuple[int, str, str], ...] = (
    (1, 'person', 'person'), (2, 'bicycle', 'vehicle'), (3, 'car', 'vehicle'), (4, 'motorcycle', 'vehicle'),
    (5, 'airplane', 'vehicle'), (6, 'bus', 'vehicle'), (7, 'train', 'vehicle'), (8, 'truck', 'vehicle'),
    (9, 'boat', 'vehicle'), (10, 'traffic light', 'outdoor'), (11, 'fire hydrant', 'outdoor'),
    (13, 'stop sign', 'outdoor'), (14, 'parking meter', 'outdoor'), (15, 'bench', 'outdoor'),
    (16, 'bird', 'animal'), (17, 'cat', 'animal'), (18, 'dog', 'animal'), (19, 'horse', 'animal'),
    (20, 'sheep', 'animal'), (21, 'cow', 'animal'), (22, 'elephant', 'animal'), (23, 'bear', 'animal'),
    (24, 'zebra', 'animal'), (25, 'giraffe', 'animal'), (27, 'backpack', 'accessory'),
    (28, 'umbrella', 'accessory'), (31, 'handbag', 'accessory'), (32, 'tie', 'accessory'),
    (33, 'suitcase', 'accessory'), (34, 'frisbee', 'sports'), (35, 'skis', 'sports'), (36, 'snowboard', 'sports'),
    (37, 'sports ball', 'sports'), (38, 'kite', 'sports'), (39, 'baseball bat', 'sports'),
    (40, 'baseball glove', 'sports'), (41, 'skateboard', 'sports'), (42, 'surfboard', 'sports'),
    (43, 'tennis racket', 'sports'), (44, 'bottle', 'kitchen'), (46, 'wine glass', 'kitchen'),
    (47, 'cup', 'kitchen'), (48, 'fork', 'kitchen'), (49, 'knife', 'kitchen'), (50, 'spoon', 'kitchen'),
    (51, 'bowl', 'kitchen'), (52, 'banana', 'food'), (53, 'apple', 'food'), (54, 'sandwich', 'food'),
    (55, 'orange', 'food'), (56, 'broccoli', 'food'), (57, 'carrot', 'food'), (58, 'hot dog', 'food'),
    (59, 'pizza', 'food'), (60, 'donut', 'food'), (61, 'cake', 'food'), (62, 'chair', 'furniture'),
    (63, 'couch', 'furniture'), (64, 'potted plant', 'furniture'), (65, 'bed', 'furniture'),
    (67, 'dining table', 'furniture'), (70, 'toilet', 'furniture'), (72, 'tv', 'electronic'),
    (73, 'laptop', 'electronic'), (74, 'mouse', 'electronic'), (75, 'remote', 'electronic'),
    (76, 'keyboard', 'electronic'), (77, 'cell phone', 'electronic'), (78, 'microwave', 'appliance'),
    (79, 'oven', 'appliance'), (80, 'toaster', 'appliance'), (81, 'sink', 'appliance'),
    (82, 'refrigerator', 'appliance'), (84, 'book', 'indoor'), (85, 'clock', 'indoor'), (86, 'vase', 'indoor'),
    (87, 'scissors', 'indoor'), (88, 'teddy bear', 'indoor'), (89, 'hair drier', 'indoor'),
    (90, 'toothbrush', 'indoor'))

# The drawn COCO classes: category id -> (shape, aspect w/h, RGB colour).
COCO_DRAWN: Dict[int, Tuple[str, float, Tuple[int, int, int]]] = {
    1: ('ellipse', 0.45, (205, 35, 35)),      # person
    3: ('rectangle', 2.0, (35, 70, 210)),     # car
    18: ('triangle', 1.2, (40, 175, 60)),     # dog
    37: ('circle', 1.0, (235, 205, 25)),      # sports ball
    38: ('star', 1.0, (200, 45, 200)),        # kite
    13: ('octagon', 1.0, (245, 120, 20)),     # stop sign
}

# COCO area ranges (segmentation area in pixels): small < 32^2 <= medium < 96^2 <= large.
COCO_AREA_RANGES = {'small': (10 ** 2, 28 ** 2), 'medium': (36 ** 2, 88 ** 2), 'large': (104 ** 2, 240 ** 2)}
COCO_SIZE_PROBS = (('small', 0.25), ('medium', 0.45), ('large', 0.30))

# ADE20K label values (1-based index into ADE20KDataset.METAINFO['classes']; 0 = other / ignored).
ADE_LABELS = {'wall': 1, 'building': 2, 'sky': 3, 'floor': 4, 'tree': 5, 'ceiling': 6, 'road': 7, 'bed': 8,
              'grass': 10, 'person': 13, 'door': 15, 'table': 16, 'mountain': 17, 'car': 21, 'painting': 23}

_SPLITS = {'coco': {'train': 1, 'val': 2}, 'ade': {'train': 3, 'val': 4}}
Progress = Optional[Callable[[str], None]]


# ----------------------------------------------------------------------------------------------------------------
# Drawing helpers (pure numpy / PIL)
# ----------------------------------------------------------------------------------------------------------------
def _rng(seed: int, dataset: str, split: str, index: int) -> np.random.Generator:
    return np.random.default_rng([seed, _SPLITS[dataset][split], index])


def _desaturate(rgb: np.ndarray, amount: float) -> np.ndarray:
    gray = rgb.mean(axis=-1, keepdims=True)
    return gray + (rgb - gray) * (1.0 - amount)


def _smooth_noise(rng: np.random.Generator, h: int, w: int, cells: int) -> np.ndarray:
    """H, W noise in [0, 1] made by bilinear upsampling of a coarse random grid."""
    coarse = rng.random((cells + 1, cells + 1)).astype(np.float32)
    img = Image.fromarray((coarse * 255).astype(np.uint8)).resize((w, h), Image.BILINEAR)
    return np.asarray(img, dtype=np.float32) / 255.0


def _texture(rng: np.random.Generator, h: int, w: int, base: Sequence[float], kind: str,
             strength: float = 40.0) -> np.ndarray:
    """H, W, 3 float texture around RGB `base`: 'flat', 'gradient', 'stripes', 'noise' or 'checker'."""
    base = np.asarray(base, dtype=np.float32)
    yy, xx = np.arange(h, dtype=np.float32)[:, None], np.arange(w, dtype=np.float32)[None, :]
    if kind == 'flat':
        mod = np.zeros((h, w), np.float32)
    elif kind == 'gradient':
        angle = rng.uniform(0, 2 * math.pi)
        proj = xx * math.cos(angle) + yy * math.sin(angle)
        mod = (proj - proj.min()) / max(float(proj.max() - proj.min()), 1.0) - 0.5
    elif kind == 'stripes':
        angle = rng.uniform(0, math.pi)
        period = rng.uniform(8, 40)
        mod = 0.5 * np.sin(2 * math.pi * (xx * math.cos(angle) + yy * math.sin(angle)) / period)
    elif kind == 'noise':
        mod = _smooth_noise(rng, h, w, int(rng.integers(3, 12))) - 0.5
    elif kind == 'checker':
        cell = int(rng.integers(10, 48))
        mod = (((xx // cell) + (yy // cell)) % 2) - 0.5
    else:
        raise ValueError(f'unknown texture {kind!r}')
    gain = (strength * rng.uniform(0.6, 1.4, size=3)).astype(np.float32)
    return base + np.broadcast_to(mod, (h, w))[..., None] * gain  # H, W, 3


def _pixel_noise(rng: np.random.Generator, h: int, w: int, cell: float) -> np.ndarray:
    """H, W noise in [0, 1]: a random grid with one node every `cell` pixels, upsampled bilinearly."""
    gh, gw = int(math.ceil(h / cell)) + 1, int(math.ceil(w / cell)) + 1
    coarse = rng.random((gh, gw)).astype(np.float32)
    big = Image.fromarray((coarse * 255).astype(np.uint8)).resize((max(w, round(gw * cell)), max(h, round(gh * cell))),
                                                                   Image.BILINEAR)
    return np.asarray(big, dtype=np.float32)[:h, :w] / 255.0


def _texture_px(rng: np.random.Generator, h: int, w: int, base: Sequence[float], kind: str, strength: float,
                unit: float) -> np.ndarray:
    """As `_texture`, with every length in pixels of a `unit`-pixel reference image (stripe period, checker cell,
    noise grain, gradient period): the same texture looks the same on a canvas of any size."""
    base = np.asarray(base, dtype=np.float32)
    yy, xx = np.arange(h, dtype=np.float32)[:, None], np.arange(w, dtype=np.float32)[None, :]
    if kind == 'flat':
        mod = np.zeros((h, w), np.float32)
    elif kind in ('gradient', 'stripes'):
        angle = rng.uniform(0, 2 * math.pi if kind == 'gradient' else math.pi)
        period = unit * (rng.uniform(1.5, 3.0) if kind == 'gradient' else rng.uniform(0.06, 0.3))
        phase = rng.uniform(0, 2 * math.pi)
        mod = 0.5 * np.sin(2 * math.pi * (xx * math.cos(angle) + yy * math.sin(angle)) / period + phase)
    elif kind == 'noise':
        mod = _pixel_noise(rng, h, w, max(2.0, unit * rng.uniform(0.08, 0.3))) - 0.5
    elif kind == 'checker':
        cell = max(2, int(round(unit * rng.uniform(0.08, 0.35))))
        mod = (((xx // cell) + (yy // cell)) % 2) - 0.5
    else:
        raise ValueError(f'unknown texture {kind!r}')
    gain = (strength * rng.uniform(0.6, 1.4, size=3)).astype(np.float32)
    return base + np.broadcast_to(mod, (h, w))[..., None] * gain  # H, W, 3


def _paint(img: np.ndarray, mask: np.ndarray, rng: np.random.Generator, base: Sequence[float], kind: str,
           strength: float, unit: Optional[float] = None) -> None:
    """Fills `img` (H, W, 3) under `mask` with a texture drawn only over the mask's bounding box (lengths in
    pixels of a `unit`-pixel image with `unit`, see `_texture_px`; relative to the box without)."""
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    if rows.size == 0:
        return
    y0, y1, x0, x1 = rows[0], rows[-1] + 1, cols[0], cols[-1] + 1
    texture = (_texture(rng, y1 - y0, x1 - x0, base, kind, strength) if unit is None else
               _texture_px(rng, y1 - y0, x1 - x0, base, kind, strength, unit))
    np.copyto(img[y0:y1, x0:x1], texture, where=mask[y0:y1, x0:x1, None])


def _polygon_mask(h: int, w: int, polygon: np.ndarray) -> np.ndarray:
    img = Image.new('L', (w, h), 0)
    ImageDraw.Draw(img).polygon([tuple(p) for p in polygon.tolist()], fill=1)
    return np.asarray(img, dtype=bool)


def _shape_polygon(shape: str, w: float, h: float, angle: float) -> np.ndarray:
    """K, 2 polygon (x, y) of `shape` fitted to a w x h box centred on the origin, rotated by `angle`."""
    if shape in ('ellipse', 'circle'):
        t = np.linspace(0, 2 * math.pi, 32, endpoint=False)
        pts = np.stack([0.5 * w * np.cos(t), 0.5 * h * np.sin(t)], axis=1)
    elif shape == 'rectangle':
        pts = np.array([[-w / 2, -h / 2], [w / 2, -h / 2], [w / 2, h / 2], [-w / 2, h / 2]])
    elif shape == 'triangle':
        pts = np.array([[0.0, -h / 2], [w / 2, h / 2], [-w / 2, h / 2]])
    elif shape == 'octagon':
        t = np.linspace(0, 2 * math.pi, 8, endpoint=False) + math.pi / 8
        pts = np.stack([0.5 * w * np.cos(t), 0.5 * h * np.sin(t)], axis=1)
    elif shape == 'star':
        t = np.linspace(0, 2 * math.pi, 10, endpoint=False) - math.pi / 2
        r = np.where(np.arange(10) % 2 == 0, 1.0, 0.45)
        pts = np.stack([0.5 * w * r * np.cos(t), 0.5 * h * r * np.sin(t)], axis=1)
    else:
        raise ValueError(f'unknown shape {shape!r}')
    c, s = math.cos(angle), math.sin(angle)
    return pts @ np.array([[c, s], [-s, c]])


def polygon_area(polygon: Sequence[float]) -> float:
    """Shoelace area of a flat [x0, y0, x1, y1, ...] polygon."""
    xy = np.asarray(polygon, dtype=np.float64).reshape(-1, 2)
    x, y = xy[:, 0], xy[:, 1]
    return float(0.5 * abs(np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1))))


def _image_size(rng: np.random.Generator) -> Tuple[int, int]:
    """(H, W) between 320 and 640, landscape more often than portrait, as in COCO."""
    long_side = int(rng.integers(40, 81)) * 8
    short_side = int(rng.integers(40, long_side // 8 + 1)) * 8
    return (short_side, long_side) if rng.random() < 0.7 else (long_side, short_side)


def _save_jpeg(rgb: np.ndarray, path: Path) -> None:
    Image.fromarray(np.clip(rgb, 0, 255).astype(np.uint8), 'RGB').save(path, format='JPEG', quality=JPEG_QUALITY)


# ----------------------------------------------------------------------------------------------------------------
# Mini COCO
# ----------------------------------------------------------------------------------------------------------------
def _coco_background(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    base = _desaturate(rng.uniform(60, 200, size=3), 0.75)
    kind = str(rng.choice(['gradient', 'stripes', 'noise', 'checker']))
    tex = _texture(rng, h, w, base, kind, strength=float(rng.uniform(30, 70)))
    return tex + _texture(rng, h, w, (0, 0, 0), 'noise', strength=25.0)


def draw_coco_image(rng: np.random.Generator, max_objects: int = 6) -> Tuple[np.ndarray, List[dict]]:
    """Draws one scene: (H, W, 3 float RGB image, [dict(category_id, polygon flat list)]) with disjoint objects."""
    h, w = _image_size(rng)
    img = _coco_background(rng, h, w)
    cat_ids = sorted(COCO_DRAWN)
    objects, boxes = [], []
    for _ in range(int(rng.integers(2, max_objects + 1))):
        cat_id = int(rng.choice(cat_ids))
        size_name = str(rng.choice([s for s, _ in COCO_SIZE_PROBS], p=[p for _, p in COCO_SIZE_PROBS]))
        lo, hi = COCO_AREA_RANGES[size_name]
        hi = min(hi, 0.35 * h * w)
        if hi <= lo:
            continue
        area = math.exp(rng.uniform(math.log(lo), math.log(hi)))  # box area
        obj = _draw_object(rng, img, boxes, cat_id, area)
        if obj is not None:
            objects.append(obj)
    img += 4.0 * rng.standard_normal(img.shape, dtype=np.float32)
    return img, objects


def _draw_object(rng: np.random.Generator, img: np.ndarray, boxes: List[tuple], cat_id: int, area: float,
                 unit: Optional[float] = None) -> Optional[dict]:
    """Draws one object of `cat_id` with box area `area` where it overlaps none of `boxes` (appended to), or
    nothing (None) when it does not fit; returns dict(category_id, polygon flat list)."""
    h, w = img.shape[:2]
    shape, aspect, colour = COCO_DRAWN[cat_id]
    aspect = aspect * rng.uniform(0.85, 1.15)
    bw, bh = math.sqrt(area * aspect), math.sqrt(area / aspect)
    angle = rng.uniform(-0.25, 0.25) if shape in ('rectangle', 'triangle', 'star') else 0.0
    local = _shape_polygon(shape, bw, bh, angle)
    x0, y0 = local.min(axis=0)
    x1, y1 = local.max(axis=0)
    if x1 - x0 > w - 4 or y1 - y0 > h - 4:
        return None
    for _try in range(30):
        cx = rng.uniform(2 - x0, w - 2 - x1)
        cy = rng.uniform(2 - y0, h - 2 - y1)
        box = (cx + x0 - 3, cy + y0 - 3, cx + x1 + 3, cy + y1 + 3)
        if all(box[2] <= b[0] or b[2] <= box[0] or box[3] <= b[1] or b[3] <= box[1] for b in boxes):
            break
    else:
        return None
    boxes.append(box)
    polygon = np.round(local + np.array([cx, cy]), 2)
    mask = _polygon_mask(h, w, polygon)
    if mask.sum() < 16:
        boxes.pop()
        return None
    fill = np.asarray(colour, np.float32) + rng.uniform(-18, 18, size=3)
    kind = str(rng.choice(['flat', 'gradient', 'noise']))
    _paint(img, mask, rng, fill, kind, 25.0, unit)
    return dict(category_id=cat_id, polygon=[float(v) for v in polygon.reshape(-1)])


def _coco_annotation(ann_id: int, image_id: int, obj: dict, h: int, w: int) -> dict:
    poly = obj['polygon']
    xy = np.asarray(poly).reshape(-1, 2)
    x0, y0 = float(np.clip(xy[:, 0].min(), 0, w)), float(np.clip(xy[:, 1].min(), 0, h))
    x1, y1 = float(np.clip(xy[:, 0].max(), 0, w)), float(np.clip(xy[:, 1].max(), 0, h))
    return dict(id=ann_id, image_id=image_id, category_id=obj['category_id'], segmentation=[poly],
                area=round(polygon_area(poly), 2), bbox=[round(x0, 2), round(y0, 2), round(x1 - x0, 2),
                                                         round(y1 - y0, 2)], iscrowd=0)


def write_mini_coco(out_dir: Path, num_train: int, num_val: int, seed: int, progress: Progress = None) -> None:
    """Writes a mini COCO 2017 tree (images + instances json) into `out_dir`, which must exist."""
    out_dir = Path(out_dir)
    (out_dir / 'annotations').mkdir(parents=True, exist_ok=True)
    ann_id = 1
    for split, num, id_offset in (('train', num_train, 0), ('val', num_val, 1_000_000)):
        img_dir = out_dir / f'{split}2017'
        img_dir.mkdir(exist_ok=True)
        images, annotations = [], []
        for i in range(num):
            rng = _rng(seed, 'coco', split, i)
            img, objects = draw_coco_image(rng)
            h, w = img.shape[:2]
            image_id = id_offset + i + 1
            file_name = f'{image_id:012d}.jpg'
            _save_jpeg(img, img_dir / file_name)
            images.append(dict(id=image_id, file_name=file_name, height=h, width=w, license=1))
            for obj in objects:
                annotations.append(_coco_annotation(ann_id, image_id, obj, h, w))
                ann_id += 1
            if progress and ((i + 1) % 16 == 0 or i + 1 == num):
                progress(f'mini COCO {split}2017: {i + 1}/{num} images')
        with open(out_dir / 'annotations' / f'instances_{split}2017.json', 'w') as f:
            json.dump(_coco_doc(split, images, annotations), f)


def _coco_doc(split: str, images: List[dict], annotations: List[dict]) -> dict:
    """A COCO instances file: info, licenses, the images and annotations, the 80 categories."""
    return dict(
        info=dict(description=f'vitpe_mm mini COCO 2017 ({split}), procedurally drawn', version='1.0',
                  year=2017, contributor='vitpe_mm tools/make_mini_datasets.py', date_created='2017/09/01'),
        licenses=[dict(id=1, name='CC BY 4.0', url='https://creativecommons.org/licenses/by/4.0/')],
        images=images, annotations=annotations,
        categories=[dict(id=i, name=n, supercategory=s) for i, n, s in COCO_CATEGORIES])


def validate_mini_coco(root: Path, num_train: Optional[int] = None, num_val: Optional[int] = None) -> Dict[str, int]:
    """Checks a COCO tree: files exist with the stated sizes, polygons/bboxes inside images, known categories.

    Returns the number of images and annotations per split; raises ValueError / FileNotFoundError naming the
    first problem.
    """
    counts = {}
    for split, expected in (('train', num_train), ('val', num_val)):
        images, annotations = _validate_coco_split(Path(root), f'instances_{split}2017.json', f'{split}2017', expected)
        counts[f'{split}_images'] = images
        counts[f'{split}_annotations'] = annotations
    return counts


def _validate_coco_split(root: Path, ann_name: str, img_folder: str, expected: Optional[int],
                         size: Optional[int] = None) -> Tuple[int, int]:
    """Checks annotations/`ann_name` against the images in `img_folder` (all `size` squares when given);
    returns (images, annotations)."""
    ann_file = root / 'annotations' / ann_name
    if not ann_file.is_file():
        raise FileNotFoundError(f'missing annotation file {ann_file}')
    with open(ann_file) as f:
        doc = json.load(f)
    cat_ids = {c['id'] for c in doc['categories']}
    if cat_ids != {c[0] for c in COCO_CATEGORIES}:
        raise ValueError(f'{ann_file}: categories are not the 80 COCO categories')
    sizes = {}
    for im in doc['images']:
        path = root / img_folder / im['file_name']
        if not path.is_file():
            raise FileNotFoundError(f'{ann_file} lists {im["file_name"]} but {path} does not exist')
        with Image.open(path) as pil:
            if pil.size != (im['width'], im['height']) or pil.mode != 'RGB':
                raise ValueError(f'{path}: {pil.mode} {pil.size}, json says RGB {(im["width"], im["height"])}')
            if size is not None and pil.size != (size, size):
                raise ValueError(f'{path}: {pil.size}, expected a {size}x{size} canvas')
        sizes[im['id']] = (im['width'], im['height'])
    if expected is not None and len(sizes) != expected:
        raise ValueError(f'{ann_file}: {len(sizes)} images, expected {expected}')
    for ann in doc['annotations']:
        w, h = sizes[ann['image_id']]
        xy = np.asarray(ann['segmentation'][0]).reshape(-1, 2)
        x, y, bw, bh = ann['bbox']
        if ann['category_id'] not in cat_ids or ann['iscrowd'] != 0:
            raise ValueError(f'{ann_file}: annotation {ann["id"]} has a bad category or iscrowd')
        if xy.min() < 0 or (xy[:, 0] > w).any() or (xy[:, 1] > h).any():
            raise ValueError(f'{ann_file}: annotation {ann["id"]} polygon leaves its {w}x{h} image')
        if bw <= 0 or bh <= 0 or x + bw > w + 1e-3 or y + bh > h + 1e-3 or ann['area'] <= 0:
            raise ValueError(f'{ann_file}: annotation {ann["id"]} has a bad bbox/area')
    return len(sizes), len(doc['annotations'])


# ----------------------------------------------------------------------------------------------------------------
# Mini ADE20K
# ----------------------------------------------------------------------------------------------------------------
# label -> (texture kind, RGB base, texture strength)
_ADE_STYLE = {
    'sky': ('gradient', (110, 165, 230), 60), 'mountain': ('noise', (105, 95, 120), 35),
    'building': ('checker', (150, 130, 115), 30), 'tree': ('noise', (40, 120, 40), 60),
    'grass': ('noise', (95, 170, 60), 45), 'road': ('stripes', (75, 75, 80), 15),
    'car': ('flat', (190, 30, 40), 20), 'person': ('flat', (230, 180, 140), 20),
    'ceiling': ('flat', (235, 235, 225), 10), 'wall': ('gradient', (200, 185, 150), 30),
    'floor': ('stripes', (140, 95, 55), 35), 'door': ('gradient', (110, 70, 35), 25),
    'painting': ('checker', (60, 90, 160), 70), 'bed': ('stripes', (225, 225, 245), 25),
    'table': ('noise', (165, 120, 70), 30),
}


class _Canvas:
    """An RGB image and its label map drawn together, region by region (later regions cover earlier ones)."""

    def __init__(self, rng: np.random.Generator, h: int, w: int, unit: Optional[float] = None) -> None:
        self.rng, self.h, self.w, self.unit = rng, h, w, unit  # unit: textures in pixels (see `_texture_px`)
        self.img = np.zeros((h, w, 3), np.float32)
        self.label = np.zeros((h, w), np.uint8)

    def fill(self, name: Optional[str], mask: np.ndarray) -> None:
        """Paints `mask` as class `name` (its own texture), or as unlabeled clutter (value 0) when None."""
        if name is None:
            base, kind, strength = self.rng.uniform(40, 220, size=3), 'noise', 80
        else:
            kind, base, strength = _ADE_STYLE[name]
            base = np.asarray(base, np.float32) + self.rng.uniform(-15, 15, size=3)
        _paint(self.img, mask, self.rng, base, kind, strength, self.unit)
        self.label[mask] = 0 if name is None else ADE_LABELS[name]

    def polygon(self, name: Optional[str], pts: np.ndarray) -> None:
        self.fill(name, _polygon_mask(self.h, self.w, np.asarray(pts, np.float64)))

    def rows_below(self, y: np.ndarray) -> np.ndarray:
        """Mask of pixels below the per-column boundary `y` (length W)."""
        return np.arange(self.h)[:, None] >= y[None, :]


def _outdoor_scene(c: _Canvas) -> None:
    rng, h, w = c.rng, c.h, c.w
    horizon = rng.uniform(0.35, 0.55) * h
    xs = np.arange(w, dtype=np.float32)
    c.fill('sky', np.ones((h, w), bool))
    if rng.random() < 0.6:  # mountain range behind everything
        peaks = horizon - rng.uniform(0.1, 0.25) * h * (0.6 + 0.4 * np.sin(xs / w * rng.uniform(4, 10)
                                                                           + rng.uniform(0, 6)))
        c.fill('mountain', c.rows_below(peaks) & (np.arange(h)[:, None] < horizon + 1))
    ground_y = horizon + 4 * np.sin(xs / w * rng.uniform(2, 6))
    road_y = horizon + rng.uniform(0.2, 0.45) * (h - horizon)
    c.fill('grass', c.rows_below(ground_y))
    c.fill('road', c.rows_below(np.full(w, road_y)))
    for _ in range(int(rng.integers(1, 4))):  # buildings standing on the horizon
        bw, bh = rng.uniform(0.1, 0.25) * w, rng.uniform(0.15, 0.35) * h
        x0 = rng.uniform(0, w - bw)
        c.polygon('building', [(x0, horizon - bh), (x0 + bw, horizon - bh), (x0 + bw, horizon + 2),
                               (x0, horizon + 2)])
    for _ in range(int(rng.integers(1, 4))):  # trees: crown ellipses
        r = rng.uniform(0.04, 0.1) * min(h, w)
        cx, cy = rng.uniform(r, w - r), horizon - rng.uniform(0.2, 1.0) * r
        c.polygon('tree', _shape_polygon('ellipse', 2 * r, 2.4 * r, 0.0) + (cx, cy))
    for _ in range(int(rng.integers(0, 3))):  # cars on the road
        cw = rng.uniform(0.1, 0.2) * w
        cx, cy = rng.uniform(cw, w - cw), rng.uniform(road_y + 0.3 * (h - road_y), h - 0.06 * h)
        c.polygon('car', _shape_polygon('rectangle', cw, 0.45 * cw, 0.0) + (cx, cy))
    for _ in range(int(rng.integers(0, 3))):  # people on the grass
        ph = rng.uniform(0.1, 0.22) * h
        cx, cy = rng.uniform(0.05 * w, 0.95 * w), rng.uniform(horizon + ph / 2, max(road_y, horizon + ph / 2 + 1))
        c.polygon('person', _shape_polygon('ellipse', 0.35 * ph, ph, 0.0) + (cx, cy))


def _indoor_scene(c: _Canvas) -> None:
    rng, h, w = c.rng, c.h, c.w
    ceiling_y, floor_y = rng.uniform(0.08, 0.18) * h, rng.uniform(0.55, 0.72) * h
    c.fill('wall', np.ones((h, w), bool))
    c.fill('ceiling', np.arange(h)[:, None].repeat(w, 1) < ceiling_y)
    c.polygon('floor', [(0, floor_y), (w, floor_y), (w, h), (0, h)])
    dw = rng.uniform(0.12, 0.2) * w
    dx = rng.uniform(0, w - dw)
    c.polygon('door', [(dx, ceiling_y + 0.1 * h), (dx + dw, ceiling_y + 0.1 * h), (dx + dw, floor_y), (dx, floor_y)])
    if rng.random() < 0.8:
        pw, ph = rng.uniform(0.1, 0.2) * w, rng.uniform(0.1, 0.18) * h
        px, py = rng.uniform(0, w - pw), rng.uniform(ceiling_y + 0.02 * h, floor_y - ph - 0.1 * h)
        c.polygon('painting', [(px, py), (px + pw, py), (px + pw, py + ph), (px, py + ph)])
    name = 'bed' if rng.random() < 0.5 else 'table'
    fw, fh = rng.uniform(0.3, 0.5) * w, rng.uniform(0.15, 0.25) * h
    fx, fy = rng.uniform(0, w - fw), floor_y + rng.uniform(-0.5, 0.5) * fh
    c.polygon(name, [(fx, fy), (fx + fw, fy), (fx + fw, fy + fh), (fx, fy + fh)])


def draw_ade_image(rng: np.random.Generator) -> Tuple[np.ndarray, np.ndarray]:
    """Draws one scene: (H, W, 3 float RGB image, H, W uint8 label map with 0 = other, 1..150 = ADE classes)."""
    h, w = _image_size(rng)
    c = _Canvas(rng, h, w)
    (_outdoor_scene if rng.random() < 0.65 else _indoor_scene)(c)
    for _ in range(int(rng.integers(0, 3))):  # unlabeled clutter: "other" (0), ignored in training
        r = rng.uniform(0.03, 0.08) * min(h, w)
        pts = _shape_polygon(str(rng.choice(['triangle', 'star', 'octagon'])), 2 * r, 2 * r, rng.uniform(0, 6))
        c.fill(None, _polygon_mask(h, w, pts + (rng.uniform(r, w - r), rng.uniform(r, h - r))))
    img = c.img + 4.0 * rng.standard_normal(c.img.shape, dtype=np.float32)
    return img, c.label


def write_mini_ade(out_dir: Path, num_train: int, num_val: int, seed: int, progress: Progress = None) -> None:
    """Writes a mini ADE20K (ADEChallengeData2016 layout) tree into `out_dir`."""
    out_dir = Path(out_dir)
    for split, folder, prefix, num in (('train', 'training', 'ADE_train', num_train),
                                       ('val', 'validation', 'ADE_val', num_val)):
        img_dir, ann_dir = out_dir / 'images' / folder, out_dir / 'annotations' / folder
        img_dir.mkdir(parents=True, exist_ok=True)
        ann_dir.mkdir(parents=True, exist_ok=True)
        for i in range(num):
            img, label = draw_ade_image(_rng(seed, 'ade', split, i))
            stem = f'{prefix}_{i + 1:08d}'
            _save_jpeg(img, img_dir / f'{stem}.jpg')
            Image.fromarray(label, 'L').save(ann_dir / f'{stem}.png')
            if progress and ((i + 1) % 16 == 0 or i + 1 == num):
                progress(f'mini ADE20K {folder}: {i + 1}/{num} images')


def validate_mini_ade(root: Path, num_train: Optional[int] = None, num_val: Optional[int] = None) -> Dict[str, int]:
    """Checks an ADEChallengeData2016 tree: every image has a same-size single-channel uint8 label map in 0..150."""
    return {f'{folder}_images': _validate_ade_folder(Path(root), folder, expected)
            for folder, expected in (('training', num_train), ('validation', num_val))}


def _validate_ade_folder(root: Path, folder: str, expected: Optional[int], size: Optional[int] = None,
                         suffix: str = '.jpg') -> int:
    """Checks images/`folder` (`suffix` files, `size` squares when given) against annotations/`folder`; returns
    the number of images."""
    img_dir, ann_dir = root / 'images' / folder, root / 'annotations' / folder
    for d in (img_dir, ann_dir):
        if not d.is_dir():
            raise FileNotFoundError(f'missing directory {d}')
    images = sorted(p for p in img_dir.iterdir() if p.suffix == suffix)
    if expected is not None and len(images) != expected:
        raise ValueError(f'{img_dir}: {len(images)} images, expected {expected}')
    for path in images:
        seg = ann_dir / f'{path.stem}.png'
        if not seg.is_file():
            raise FileNotFoundError(f'{path} has no label map {seg}')
        with Image.open(path) as pil_img, Image.open(seg) as pil_seg:
            if pil_seg.mode != 'L' or pil_seg.size != pil_img.size:
                raise ValueError(f'{seg}: mode {pil_seg.mode} size {pil_seg.size}; expected L {pil_img.size}')
            if size is not None and pil_img.size != (size, size):
                raise ValueError(f'{path}: {pil_img.size}, expected a {size}x{size} canvas')
            if np.asarray(pil_seg).max() > 150:
                raise ValueError(f'{seg}: label values above 150')
    return len(images)


# ----------------------------------------------------------------------------------------------------------------
# Trees on disk: idempotent, atomic
# ----------------------------------------------------------------------------------------------------------------
def _read_marker(tree: Path) -> Optional[dict]:
    try:
        with open(tree / MARKER_NAME) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def _build_tree(tree: Path, params: dict, writer: Callable, validator: Callable, force: bool,
                progress: Progress) -> Path:
    """Makes `tree` with `writer` unless a complete one with the same `params` is there already."""
    marker = _read_marker(tree)
    if marker == params and not force:
        try:
            validator(tree, params['num_train'], params['num_val'])
        except (OSError, ValueError) as err:
            if progress:
                progress(f'{tree}: damaged ({err}), regenerating')
        else:
            if progress:
                progress(f'{tree}: complete ({params["num_train"]} train / {params["num_val"]} val), skipped')
            return tree
    if tree.exists() and any(tree.iterdir()) and marker is None and not force:
        raise FileExistsError(f'{tree} exists and was not made by make_mini_datasets (no {MARKER_NAME}); '
                              f'refusing to overwrite it. Pick another --out or pass --force.')
    tree.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f'.{tree.name}.tmp-', dir=tree.parent))
    try:
        writer(tmp, params['num_train'], params['num_val'], params['seed'], progress)
        counts = validator(tmp, params['num_train'], params['num_val'])
        with open(tmp / MARKER_NAME, 'w') as f:
            json.dump(params, f, indent=1, sort_keys=True)
        if tree.exists():
            shutil.rmtree(tree)
        os.replace(tmp, tree)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if progress:
        progress(f'{tree}: written and validated {counts}')
    return tree


def ensure_mini_datasets(root: str = 'data', coco_train: int = 64, coco_val: int = 16, ade_train: int = 64,
                         ade_val: int = 16, seed: int = 0, only: Optional[str] = None, force: bool = False,
                         progress: Progress = print) -> Dict[str, Path]:
    """Makes `root`/mini_coco and `root`/mini_ade unless complete trees with the same settings exist.

    Args:
        root: folder that gets `mini_coco/` (COCO 2017 layout) and `mini_ade/` (ADEChallengeData2016 layout).
        coco_train, coco_val, ade_train, ade_val: number of images per split.
        seed: generation seed; the same seed writes the same bytes.
        only: 'coco' or 'ade' to make one tree; None makes both.
        force: regenerate even when a complete tree exists (and overwrite a folder not made here).
        progress: called with one line per step; None for silence.

    Returns:
        {'coco': path, 'ade': path} for the trees made or found.
    """
    if only not in (None, 'coco', 'ade'):
        raise ValueError(f"only={only!r} is not supported; accepted: None, 'coco', 'ade'")
    for name, value in (('coco_train', coco_train), ('coco_val', coco_val), ('ade_train', ade_train),
                        ('ade_val', ade_val)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f'{name} must be a positive int, got {value!r}')
    root = Path(root)
    made = {}
    if only in (None, 'coco'):
        params = dict(dataset='coco', version=GENERATOR_VERSION, seed=seed, num_train=coco_train, num_val=coco_val)
        made['coco'] = _build_tree(root / 'mini_coco', params, write_mini_coco, validate_mini_coco, force, progress)
    if only in (None, 'ade'):
        params = dict(dataset='ade', version=GENERATOR_VERSION, seed=seed, num_train=ade_train, num_val=ade_val)
        made['ade'] = _build_tree(root / 'mini_ade', params, write_mini_ade, validate_mini_ade, force, progress)
    return made


# ----------------------------------------------------------------------------------------------------------------
# Study trees: square canvases at one pixel scale (the PE resolution study, tools/pe_ablation.py)
# ----------------------------------------------------------------------------------------------------------------
# The resolution study trains on `size` x `size` images and tests on
#   * the 'zoom' sweep: the validation canvases of the training size, resized to factor x size (content, token grid
#     and object size in pixels change together);
#   * the 'canvas' sweep: validation canvases drawn at factor x size with objects and textures at the training
#     pixel scale (a wider view of the same kind of scene), tested as they are: only the token grid changes.
# Lengths are in units of `size` pixels (objects, texture periods, noise grain); the layout of "stuff" (horizon,
# floor line) is relative to the canvas, things along it come in numbers proportional to its width. Images are PNG
# (lossless: the probe's two halves stay pixel-identical).
STUDY_VERSION = 1
STUDY_KINDS = ('ade', 'coco', 'probe')
STUDY_IMAGE_SUFFIX = '.png'
# The position probe: four textures, each one class in the top half of an image and another in the bottom half.
PROBE_TEXTURES = ('sky', 'grass', 'building', 'road')
_STUDY_STREAMS = {'ade': 11, 'coco': 12, 'probe': 13}


def canvas_suffix(factor: float) -> str:
    """The folder suffix of the validation canvases at `factor` x the training size ('' at 1, '_canvas2x')."""
    return '' if abs(factor - 1.0) < 1e-9 else f'_canvas{factor:g}x'


def canvas_size(size: int, factor: float) -> int:
    """The side of a `factor` canvas; it must be a whole, even number of pixels (the probe halves it)."""
    side = size * factor
    if abs(side - round(side)) > 1e-6 or round(side) < 2 or round(side) % 2:
        raise ValueError(f'canvas factor {factor:g} of a {size}-pixel image gives {side:g} pixels; canvases must '
                         'be whole, even numbers of pixels (e.g. size 128 with 0.5x 0.75x 1x 1.25x 1.5x 2x)')
    return int(round(side))


def probe_label(texture_index: int, bottom: bool) -> int:
    """The label value (1-based, ADE20K-style; 0 is 'other') of probe texture k in the top / bottom half."""
    return 2 * texture_index + 1 + int(bottom)


def _study_rng(seed: int, kind: str, split: str, factor: float, index: int) -> np.random.Generator:
    return np.random.default_rng([seed, _STUDY_STREAMS[kind], 1 if split == 'train' else 2,
                                  int(round(factor * 1000)), index])


def _count(rng: np.random.Generator, rate: float) -> int:
    return int(rng.poisson(max(rate, 0.0)))


def _study_outdoor(c: _Canvas) -> None:
    rng, h, w, u = c.rng, c.h, c.w, c.unit
    horizon = rng.uniform(0.35, 0.55) * h
    xs = np.arange(w, dtype=np.float32)
    c.fill('sky', np.ones((h, w), bool))
    if rng.random() < 0.6:  # mountain range behind everything
        amp, period = rng.uniform(0.1, 0.25) * u, rng.uniform(0.6, 1.6) * u
        peaks = horizon - amp * (0.6 + 0.4 * np.sin(2 * math.pi * xs / period + rng.uniform(0, 6)))
        c.fill('mountain', c.rows_below(peaks) & (np.arange(h)[:, None] < horizon + 1))
    ground_y = horizon + 0.03 * u * np.sin(2 * math.pi * xs / (rng.uniform(0.5, 1.5) * u))
    road_y = horizon + rng.uniform(0.2, 0.45) * (h - horizon)
    c.fill('grass', c.rows_below(ground_y))
    c.fill('road', c.rows_below(np.full(w, road_y)))
    for _ in range(_count(rng, 2.0 * w / u)):  # buildings standing on the horizon
        bw, bh = rng.uniform(0.1, 0.25) * u, rng.uniform(0.15, 0.35) * u
        x0 = rng.uniform(-bw / 2, w - bw / 2)
        c.polygon('building', [(x0, horizon - bh), (x0 + bw, horizon - bh), (x0 + bw, horizon + 2),
                               (x0, horizon + 2)])
    for _ in range(_count(rng, 2.0 * w / u)):  # trees: crown ellipses
        r = rng.uniform(0.04, 0.1) * u
        cx, cy = rng.uniform(0, w), horizon - rng.uniform(0.2, 1.0) * r
        c.polygon('tree', _shape_polygon('ellipse', 2 * r, 2.4 * r, 0.0) + (cx, cy))
    for _ in range(_count(rng, 1.0 * w / u)):  # cars on the road
        cw = rng.uniform(0.1, 0.2) * u
        cx, cy = rng.uniform(0, w), rng.uniform(road_y + 0.3 * (h - road_y), max(h - 0.06 * u, road_y + 1))
        c.polygon('car', _shape_polygon('rectangle', cw, 0.45 * cw, 0.0) + (cx, cy))
    for _ in range(_count(rng, 1.0 * w / u)):  # people on the grass
        ph = rng.uniform(0.1, 0.22) * u
        cx, cy = rng.uniform(0, w), rng.uniform(horizon + ph / 2, max(road_y, horizon + ph / 2 + 1))
        c.polygon('person', _shape_polygon('ellipse', 0.35 * ph, ph, 0.0) + (cx, cy))


def _study_indoor(c: _Canvas) -> None:
    rng, h, w, u = c.rng, c.h, c.w, c.unit
    ceiling_y, floor_y = rng.uniform(0.08, 0.18) * h, rng.uniform(0.55, 0.72) * h
    c.fill('wall', np.ones((h, w), bool))
    c.fill('ceiling', np.arange(h)[:, None].repeat(w, 1) < ceiling_y)
    c.polygon('floor', [(0, floor_y), (w, floor_y), (w, h), (0, h)])
    for _ in range(_count(rng, 1.0 * w / u)):
        dw, dh = rng.uniform(0.12, 0.2) * u, min(rng.uniform(0.35, 0.5) * u, floor_y - ceiling_y)
        dx = rng.uniform(-dw / 2, w - dw / 2)
        c.polygon('door', [(dx, floor_y - dh), (dx + dw, floor_y - dh), (dx + dw, floor_y), (dx, floor_y)])
    for _ in range(_count(rng, 0.8 * w / u)):
        pw, ph = rng.uniform(0.1, 0.2) * u, rng.uniform(0.1, 0.18) * u
        px = rng.uniform(-pw / 2, w - pw / 2)
        py = rng.uniform(ceiling_y + 0.02 * u, max(floor_y - ph - 0.1 * u, ceiling_y + 0.02 * u + 1))
        c.polygon('painting', [(px, py), (px + pw, py), (px + pw, py + ph), (px, py + ph)])
    for _ in range(_count(rng, 1.0 * w / u)):
        name = 'bed' if rng.random() < 0.5 else 'table'
        fw, fh = rng.uniform(0.3, 0.5) * u, rng.uniform(0.15, 0.25) * u
        fx, fy = rng.uniform(-fw / 2, w - fw / 2), floor_y + rng.uniform(-0.5, 0.5) * fh
        c.polygon(name, [(fx, fy), (fx + fw, fy), (fx + fw, fy + fh), (fx, fy + fh)])


def draw_study_ade_image(rng: np.random.Generator, side: int, unit: float) -> Tuple[np.ndarray, np.ndarray]:
    """A `side` x `side` mini ADE20K scene with objects and textures at the scale of a `unit`-pixel image:
    (H, W, 3 float RGB, H, W uint8 labels, 0 = other)."""
    c = _Canvas(rng, side, side, unit)
    (_study_outdoor if rng.random() < 0.65 else _study_indoor)(c)
    for _ in range(_count(rng, 1.0 * side * side / unit ** 2)):  # unlabeled clutter (0)
        r = rng.uniform(0.03, 0.08) * unit
        pts = _shape_polygon(str(rng.choice(['triangle', 'star', 'octagon'])), 2 * r, 2 * r, rng.uniform(0, 6))
        c.fill(None, _polygon_mask(side, side, pts + (rng.uniform(0, side), rng.uniform(0, side))))
    return c.img + 4.0 * rng.standard_normal(c.img.shape, dtype=np.float32), c.label


def draw_study_coco_image(rng: np.random.Generator, side: int, unit: float) -> Tuple[np.ndarray, List[dict]]:
    """A `side` x `side` mini COCO scene: about 3 objects per `unit` x `unit` area, box sides 0.08-0.45 `unit`
    (log-uniform area), on a pixel-scale textured background: (H, W, 3 float RGB, [dict(category_id, polygon)])."""
    base = _desaturate(rng.uniform(60, 200, size=3), 0.75)
    kind = str(rng.choice(['gradient', 'stripes', 'noise', 'checker']))
    img = _texture_px(rng, side, side, base, kind, float(rng.uniform(30, 70)), unit)
    img = img + _texture_px(rng, side, side, (0, 0, 0), 'noise', 25.0, unit)
    cat_ids = sorted(COCO_DRAWN)
    objects, boxes = [], []
    lo, hi = math.log((0.08 * unit) ** 2), math.log((0.45 * unit) ** 2)
    for _ in range(max(1, _count(rng, 3.0 * side * side / unit ** 2))):
        cat_id = int(rng.choice(cat_ids))
        obj = _draw_object(rng, img, boxes, cat_id, math.exp(rng.uniform(lo, hi)), unit)
        if obj is not None:
            objects.append(obj)
    img += 4.0 * rng.standard_normal(img.shape, dtype=np.float32)
    return img, objects


def draw_probe_image(rng: np.random.Generator, side: int, unit: float) -> Tuple[np.ndarray, np.ndarray]:
    """A position-probe image: the top half is a mosaic of the PROBE_TEXTURES blobs (pixel scale of a `unit`-pixel
    image), the bottom half is the same pixels again; a pixel of texture k is class `probe_label(k, bottom)`.

    The two classes of a texture are pixel-identical apart from their position, so only a model that knows where
    in the image a pixel is (an absolute position code, or the image border through zero padding) can tell them
    apart; one that cannot gives both copies the same answer, at most 1/3 IoU each (`blind_pair_miou_bound`).
    """
    half = side // 2
    c = _Canvas(rng, half, side, unit)
    c.fill(str(rng.choice(PROBE_TEXTURES)), np.ones((half, side), bool))
    for _ in range(_count(rng, 4.0 * half * side / unit ** 2)):
        name = str(rng.choice(PROBE_TEXTURES))
        bw, bh = rng.uniform(0.1, 0.35) * unit, rng.uniform(0.1, 0.35) * unit
        shape = str(rng.choice(['ellipse', 'rectangle', 'octagon']))
        c.polygon(name, _shape_polygon(shape, bw, bh, rng.uniform(0, 3)) + (rng.uniform(0, side), rng.uniform(0, half)))
    tile = c.img + 4.0 * rng.standard_normal(c.img.shape, dtype=np.float32)
    index = np.zeros(256, np.int64)
    for k, name in enumerate(PROBE_TEXTURES):
        index[ADE_LABELS[name]] = k
    k_map = index[c.label]
    label = np.concatenate([probe_label(0, False) + 2 * k_map, probe_label(0, True) + 2 * k_map]).astype(np.uint8)
    return np.concatenate([tile, tile]), label


def _save_png(rgb: np.ndarray, path: Path) -> None:
    Image.fromarray(np.clip(rgb, 0, 255).astype(np.uint8), 'RGB').save(path, format='PNG')


def _study_splits(num_train: int, num_val: int, canvases: Sequence[float]) -> List[Tuple[str, float, int]]:
    """(split, canvas factor, number of images): the training canvases, then every validation canvas."""
    return [('train', 1.0, num_train)] + [('val', float(f), num_val) for f in canvases]


def write_study_tree(out_dir: Path, kind: str, num_train: int, num_val: int, seed: int, size: int,
                     canvases: Sequence[float], progress: Progress = None) -> None:
    """Writes a study tree of `kind` ('ade', 'probe': ADEChallengeData2016 layout; 'coco': COCO 2017 layout).

    Training images are `size` squares; validation images are drawn once per canvas factor (`size * factor`
    squares, objects and textures at the training pixel scale) into images/validation<suffix> (ADE) or
    val2017<suffix> + annotations/instances_val2017<suffix>.json (COCO), suffix `canvas_suffix(factor)`.
    """
    out_dir = Path(out_dir)
    draw = {'ade': draw_study_ade_image, 'probe': draw_probe_image, 'coco': draw_study_coco_image}[kind]
    ann_id = 1
    for split, factor, num in _study_splits(num_train, num_val, canvases):
        side = canvas_size(size, factor)
        folder = ('training' if split == 'train' else 'validation') + canvas_suffix(factor)
        if kind == 'coco':
            folder = f'{split}2017' + canvas_suffix(factor)
            (out_dir / folder).mkdir(parents=True, exist_ok=True)
            (out_dir / 'annotations').mkdir(exist_ok=True)
            images, annotations = [], []
        else:
            for sub in ('images', 'annotations'):
                (out_dir / sub / folder).mkdir(parents=True, exist_ok=True)
        for i in range(num):
            img, target = draw(_study_rng(seed, kind, split, factor, i), side, float(size))
            if kind == 'coco':
                image_id = (0 if split == 'train' else 1_000_000) + i + 1
                file_name = f'{image_id:012d}{STUDY_IMAGE_SUFFIX}'
                _save_png(img, out_dir / folder / file_name)
                images.append(dict(id=image_id, file_name=file_name, height=side, width=side, license=1))
                for obj in target:
                    annotations.append(_coco_annotation(ann_id, image_id, obj, side, side))
                    ann_id += 1
            else:
                stem = f'study_{split}_{i + 1:06d}'
                _save_png(img, out_dir / 'images' / folder / f'{stem}{STUDY_IMAGE_SUFFIX}')
                Image.fromarray(target, 'L').save(out_dir / 'annotations' / folder / f'{stem}.png')
            if progress and ((i + 1) % 32 == 0 or i + 1 == num):
                progress(f'study {kind} {folder} ({side}x{side}): {i + 1}/{num} images')
        if kind == 'coco':
            with open(out_dir / 'annotations' / f'instances_{folder}.json', 'w') as f:
                json.dump(_coco_doc(split, images, annotations), f)


def validate_study_tree(root: Path, kind: str, num_train: int, num_val: int, size: int,
                        canvases: Sequence[float]) -> Dict[str, int]:
    """Checks a study tree: every split and canvas folder has its images at its size, with valid targets."""
    root, counts = Path(root), {}
    for split, factor, num in _study_splits(num_train, num_val, canvases):
        side = canvas_size(size, factor)
        if kind == 'coco':
            folder = f'{split}2017' + canvas_suffix(factor)
            counts[folder] = _validate_coco_split(root, f'instances_{folder}.json', folder, num, side)[0]
        else:
            folder = ('training' if split == 'train' else 'validation') + canvas_suffix(factor)
            counts[folder] = _validate_ade_folder(root, folder, num, side, STUDY_IMAGE_SUFFIX)
    return counts


def ensure_study_tree(root: str, kind: str, size: int, canvases: Sequence[float], num_train: int, num_val: int,
                      seed: int = 0, force: bool = False, progress: Progress = print) -> Path:
    """Makes `root`/study_<kind>_<size> (see `write_study_tree`) unless a complete one with these settings exists.

    Args:
        root: the folder that gets the tree.
        kind: 'ade' (mini ADE20K scenes), 'coco' (mini COCO objects) or 'probe' (the position probe, ADE layout).
        size: the training image side in pixels (the pixel scale of every canvas).
        canvases: the validation canvas factors (1 is the zoom sweep's base).
        num_train, num_val: images of the training split and of every validation canvas.
        seed: generation seed (the same seed writes the same bytes).
        force: regenerate even when a complete tree exists.
        progress: called with one line per step; None for silence.
    """
    if kind not in STUDY_KINDS:
        raise ValueError(f'kind={kind!r} is not supported; accepted: {", ".join(STUDY_KINDS)}')
    for name, value in (('size', size), ('num_train', num_train), ('num_val', num_val)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f'{name} must be a positive int, got {value!r}')
    canvases = sorted({float(f) for f in canvases} | {1.0})
    for factor in canvases:
        canvas_size(size, factor)
    params = dict(dataset=f'study_{kind}', version=STUDY_VERSION, seed=seed, num_train=num_train, num_val=num_val,
                  size=size, canvases=canvases)
    writer = functools.partial(_study_writer, kind=kind, size=size, canvases=canvases)
    validator = functools.partial(_study_validator, kind=kind, size=size, canvases=canvases)
    return _build_tree(Path(root) / f'study_{kind}_{size}', params, writer, validator, force, progress)


def _study_writer(out_dir: Path, num_train: int, num_val: int, seed: int, progress: Progress, *, kind: str,
                  size: int, canvases: Sequence[float]) -> None:
    write_study_tree(out_dir, kind, num_train, num_val, seed, size, canvases, progress)


def _study_validator(root: Path, num_train: int, num_val: int, *, kind: str, size: int,
                     canvases: Sequence[float]) -> Dict[str, int]:
    return validate_study_tree(root, kind, num_train, num_val, size, canvases)
