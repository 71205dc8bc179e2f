"""Test scales for resolution sweeps: parsing `--scales`, and rewriting a config's test resize / inference mode.

Why a sweep: a transformer pre-trained at one resolution meets others in detection and segmentation; how its
positional encoding copes decides what is left of the pre-training ("Conditional Positional Encodings for Vision
Transformers", CPVT, arXiv:2102.10882, Table 2: DeiT with interpolated absolute PE tested at 384 without
fine-tuning loses about a point, the PEG model does not).

A scale is written as
    * `WxH` or `W,H`: the test `Resize` scale (mmcv order: width, height; with keep_ratio the image is fitted
      inside it, as mmdet's (1333, 800) and mmseg's (2048, 512));
    * `N`: the square scale (N, N);
    * `F` with a decimal point or a trailing `x` (`0.5`, `1.5x`, `2x`): F times the config's own test scale.
No mm* imports: configs are handled as (nested) dicts, which mmengine's Config/ConfigDict are.
"""
import math
import re
from dataclasses import dataclass
from typing import Any, Iterable, List, MutableMapping, Optional, Sequence, Tuple

__all__ = ['INFERENCE_MODES', 'ScaleSpec', 'TestScale', 'parse_scale', 'parse_scales', 'find_test_resize',
           'reference_scale', 'resolve_scales', 'apply_test_scale', 'set_inference_mode', 'default_crop_size']

INFERENCE_MODES = ('whole', 'slide')
MAX_FACTOR = 16.0  # '512x' is a size with a typo, not a factor
_ABSOLUTE = re.compile(r'^\s*(\d+)\s*[x,]\s*(\d+)\s*$')
_SQUARE = re.compile(r'^\s*(\d+)\s*$')
_FACTOR = re.compile(r'^\s*(\d*\.\d+|\d+\.\d*|\d+)\s*x\s*$|^\s*(\d*\.\d+|\d+\.)\s*$')


@dataclass(frozen=True)
class ScaleSpec:
    """A parsed `--scales` entry: an absolute (w, h) scale or a factor of the config's test scale."""
    text: str
    size: Optional[Tuple[int, int]] = None
    factor: Optional[float] = None


@dataclass(frozen=True)
class TestScale:
    """A scale resolved against a reference: the (w, h) written into the test `Resize`, and its factor.

    Attributes:
        label: how the scale is shown ('512x256').
        size: (w, h) for `Resize(scale=...)`.
        factor: size relative to the reference scale (the geometric mean of the width and height ratios; the
            factor asked for when the scale was given as one).
    """
    label: str
    size: Tuple[int, int]
    factor: float


def parse_scale(text: str) -> ScaleSpec:
    """One scale: 'WxH' / 'W,H', 'N' (square) or a factor ('0.5', '1.5x', '2x'); ValueError otherwise."""
    if not isinstance(text, str):
        raise ValueError(f'a scale must be a string such as 512x512, 640 or 1.5x, got {text!r}')
    match = _ABSOLUTE.match(text)
    if match:
        size = (int(match.group(1)), int(match.group(2)))
    elif _SQUARE.match(text):
        size = (int(text), int(text))
    else:
        match = _FACTOR.match(text)
        if not match:
            raise ValueError(f'cannot read the scale {text!r}; accepted: WxH or W,H (e.g. 1333x800), N for NxN, or a '
                             'factor of the config\'s test scale with a decimal point or a trailing x (0.5, 1.5x)')
        factor = float(match.group(1) or match.group(2))
        if not 0 < factor <= MAX_FACTOR:
            raise ValueError(f'a scale factor must be in (0, {MAX_FACTOR:g}], got {text!r} (a size is written WxH)')
        return ScaleSpec(text.strip(), factor=factor)
    if min(size) <= 0:
        raise ValueError(f'a scale must be positive, got {text!r}')
    return ScaleSpec(text.strip(), size=size)


def parse_scales(texts: Iterable[str]) -> List[ScaleSpec]:
    """Parses each entry (entries may also hold several scales separated by spaces); at least one, no repeats."""
    specs = [parse_scale(part) for text in texts for part in str(text).split()]
    if not specs:
        raise ValueError('no test scale given; e.g. --scales 0.5x 1x 1.5x or --scales 512x512 768x768')
    seen = set()
    for spec in specs:
        key = spec.size or spec.factor
        if key in seen:
            raise ValueError(f'the scale {spec.text!r} is given twice')
        seen.add(key)
    return specs


# ----------------------------------------------------------------------------------------------------------------
# The config's test pipeline
# ----------------------------------------------------------------------------------------------------------------
def _type_name(transform: Any) -> str:
    kind = transform.get('type') if isinstance(transform, MutableMapping) else None
    if isinstance(kind, type):  # new-style configs hold the class
        return kind.__name__
    return str(kind).split('.')[-1] if kind is not None else ''


def _test_pipeline(cfg: MutableMapping) -> list:
    loader = cfg.get('test_dataloader')
    if not isinstance(loader, MutableMapping) or not isinstance(loader.get('dataset'), MutableMapping):
        raise ValueError('the config has no test_dataloader.dataset: a resolution sweep evaluates the test split')
    dataset = loader['dataset']
    while 'pipeline' not in dataset and isinstance(dataset.get('dataset'), MutableMapping):  # wrappers
        dataset = dataset['dataset']
    pipeline = dataset.get('pipeline')
    if not isinstance(pipeline, list):
        raise ValueError('the config\'s test dataset has no pipeline list')
    return pipeline


def find_test_resize(cfg: MutableMapping) -> MutableMapping:
    """The single `Resize` transform of the test pipeline (a ValueError when there is none, several, or TTA)."""
    pipeline = _test_pipeline(cfg)
    names = [_type_name(t) for t in pipeline]
    if 'TestTimeAug' in names:
        raise ValueError('the test pipeline uses TestTimeAug: sweep the plain test pipeline (no --tta); the sweep '
                         'replaces the scale of its one Resize')
    resizes = [t for t, name in zip(pipeline, names) if name == 'Resize']
    if len(resizes) != 1:
        raise ValueError(f'the test pipeline must have exactly one Resize transform to set the test scale, found '
                         f'{len(resizes)} in {names}')
    return resizes[0]


def reference_scale(cfg: MutableMapping) -> Optional[Tuple[int, int]]:
    """(w, h) of the config's test `Resize` (an int scale is (N, N)); None when it resizes by scale_factor."""
    scale = find_test_resize(cfg).get('scale')
    if scale is None:
        return None
    if isinstance(scale, (int, float)):
        return (int(scale), int(scale))
    if isinstance(scale, Sequence) and len(scale) == 2:
        return (int(scale[0]), int(scale[1]))
    raise ValueError(f'cannot read the test Resize scale {scale!r}; expected (w, h) or an int')


def _label(size: Tuple[int, int]) -> str:
    return f'{size[0]}x{size[1]}'


def resolve_scales(specs: Sequence[ScaleSpec], reference: Optional[Tuple[int, int]]) -> List[TestScale]:
    """Turns parsed scales into (w, h) sizes; factors multiply `reference` (rounded to whole pixels)."""
    out = []
    for spec in specs:
        if spec.factor is not None:
            if reference is None:
                raise ValueError(f'the scale {spec.text!r} is a factor, but the config\'s test Resize has no `scale` '
                                 'to multiply; give absolute scales (WxH)')
            size = (max(1, round(reference[0] * spec.factor)), max(1, round(reference[1] * spec.factor)))
            factor = spec.factor
        else:
            size = spec.size
            factor = (math.sqrt(size[0] * size[1] / (reference[0] * reference[1])) if reference is not None
                      else float('nan'))
        out.append(TestScale(_label(size), size, factor))
    return out


def apply_test_scale(cfg: MutableMapping, scale: TestScale, keep_ratio: Optional[bool] = True) -> None:
    """Writes `scale` into the test `Resize` of `cfg` (in place); `keep_ratio` None keeps the config's setting."""
    resize = find_test_resize(cfg)
    resize.pop('scale_factor', None)
    resize['scale'] = tuple(scale.size)
    if keep_ratio is not None:
        resize['keep_ratio'] = bool(keep_ratio)


def default_crop_size(cfg: MutableMapping) -> Optional[Tuple[int, int]]:
    """(h, w) training crop of an mmseg config: `model.data_preprocessor.size`, else the top-level `crop_size`."""
    model = cfg.get('model') or {}
    size = (model.get('data_preprocessor') or {}).get('size') or cfg.get('crop_size')
    if size is None:
        return None
    if isinstance(size, int):
        return (size, size)
    return (int(size[0]), int(size[1]))


def set_inference_mode(cfg: MutableMapping, mode: str, crop_size: Optional[Sequence[int]] = None,
                       stride: Optional[Sequence[int]] = None) -> dict:
    """Sets an mmseg model's `test_cfg` to whole-image or sliding-window inference (in place); returns it.

    Args:
        cfg: an mmseg config.
        mode: 'whole' (the image at once: the backbone sees the test resolution) or 'slide' (windows of
            `crop_size`: the backbone sees training-size windows whatever the test scale).
        crop_size: (h, w) of the windows; defaults to the training crop (`default_crop_size`).
        stride: (h, w) step between windows; defaults to 2/3 of the crop (mmseg's ADE20K 512 / 341).
    """
    if mode not in INFERENCE_MODES:
        raise ValueError(f'mode must be one of {INFERENCE_MODES}, got {mode!r}')
    model = cfg.get('model')
    if not isinstance(model, MutableMapping):
        raise ValueError('the config has no model to set the inference mode of')
    if mode == 'whole':
        test_cfg = dict(mode='whole')
    else:
        crop = tuple(crop_size) if crop_size is not None else default_crop_size(cfg)
        if crop is None or len(crop) != 2 or min(crop) <= 0:
            raise ValueError('slide inference needs a crop size: the config has no model.data_preprocessor.size or '
                             f'crop_size; pass --crop-size H W (got {crop_size!r})')
        step = tuple(stride) if stride is not None else tuple(max(1, c * 2 // 3) for c in crop)
        if len(step) != 2 or min(step) <= 0:
            raise ValueError(f'stride must be two positive ints (h, w), got {stride!r}')
        test_cfg = dict(mode='slide', crop_size=tuple(int(c) for c in crop), stride=tuple(int(s) for s in step))
    model['test_cfg'] = test_cfg
    return test_cfg
