"""The resolution study of positional encodings: sweeps, arms, the config changes of one run, and the tables.

The question is that of "Conditional Positional Encodings for Vision Transformers" (CPVT, arXiv:2102.10882,
Table 2): train at one resolution, test at others without fine-tuning. Three sweeps separate what a change of
test resolution changes (see docs/ablation/STUDY.md):

* ``zoom``: the validation canvases of the training size, resized to factor x the training size. The token grid,
  the objects' size in pixels and the output resolution change together.
* ``canvas``: validation canvases drawn at factor x the training size with objects and textures at the training
  pixel scale (`vitpe_mm.datasets.mini.ensure_study_tree`), tested as they are: only the token grid changes.
* ``probe``: the canvas sweep on the position probe (`draw_probe_image`), whose classes are defined by absolute
  position; an encoding without usable absolute position cannot exceed `blind_pair_miou_bound()` (33.3 mIoU).

An *arm* is a positional encoding by name as the backbones take it (`pe_type`); 'a+b' composes encodings
(`pe_type=['a', 'b']`). An arm the installed backbone does not accept is reported as skipped with the backbone's
own error (`arm_support`), so names that appear later (RoPE variants) are studied as soon as the backbone has them.
"""
import math
import os.path as osp
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple, Union

from .ablation import ABLATION_BACKBONES, _schedule, ablation_overrides, check_budget, mini_ade_classes
from .results import DET_COLUMNS, SEG_COLUMNS, MetricColumn, _markdown
from .stats import Interval

__all__ = ['Sweep', 'SWEEPS', 'TASKS', 'STUDY_ARMS', 'DEFAULT_SEEDS', 'ARM_JOIN', 'arm_pe_type', 'arm_support',
           'study_data_kind', 'study_classes', 'study_metric', 'study_overrides', 'canvas_config_hook',
           'format_interval', 'format_difference', 'interval_table', 'difference_table', 'cell_records']


@dataclass(frozen=True)
class Sweep:
    """A sweep: its `name`, whether the test images are resized (`zoom`) or drawn at each canvas size, whether it
    runs on the position probe, and one line on what it changes."""
    name: str
    resized: bool
    probe: bool
    changes: str


SWEEPS: Dict[str, Sweep] = {
    'zoom': Sweep('zoom', True, False, 'the 1x validation canvases resized to factor x the training size: token '
                  'grid, object size in pixels and output resolution change together'),
    'canvas': Sweep('canvas', False, False, 'validation canvases drawn at factor x the training size, objects and '
                    'textures at the training pixel scale: only the token grid changes'),
    'probe': Sweep('probe', False, True, 'position probe (each texture is one class in the top half and another '
                   'in the bottom half, the halves pixel-identical) on canvases of factor x the training size'),
}
TASKS = ('seg', 'det')
# The arms of issue 13 on CPVT-v2; names the installed backbone does not take are reported as skipped.
STUDY_ARMS = ('none', 'abs', 'abs_nointerp', 'sincos', 'peg', 'rel_bias', 'rope_axial', 'rope_mixed',
              'abs+rope_mixed')
# Five seeds: the 95% t-interval of a mean is t(0.975, n-1) / sqrt(n) = 1.24 standard deviations wide on each
# side with 5, against 2.48 with 3 (twice as wide for 3/5 of the cost) and 0.84 with 8.
DEFAULT_SEEDS = (0, 1, 2, 3, 4)
ARM_JOIN = '+'
DET_CLASSES = ('person', 'car', 'dog', 'sports ball', 'kite', 'stop sign')  # the mini COCO's drawn categories


def arm_pe_type(arm: str) -> Union[str, List[str]]:
    """The backbone's `pe_type` for an arm name: 'abs' -> 'abs', 'abs+rope_mixed' -> ['abs', 'rope_mixed']."""
    if not isinstance(arm, str) or not arm.strip():
        raise ValueError(f'an arm is a PE name such as abs or abs+rope_mixed, got {arm!r}')
    parts = [p.strip() for p in arm.split(ARM_JOIN)]
    if any(not p for p in parts):
        raise ValueError(f'arm {arm!r} has an empty part; compose PE names as abs+rope_mixed')
    return parts[0] if len(parts) == 1 else parts


def arm_support(backbone_cfg: Mapping[str, Any], arm: str, build: Optional[Callable] = None) -> Optional[str]:
    """None when the backbone config builds with the arm's `pe_type`, else the reason (the backbone's error).

    Args:
        backbone_cfg: the config's `model.backbone` (with its pre-training size already set).
        arm: the arm name (`arm_pe_type`).
        build: builds a module from a config dict (default: mmengine's root MODELS registry).
    """
    if build is None:
        from mmengine.registry import MODELS

        import vitpe_mm  # noqa: F401  (registers the backbones)
        build = MODELS.build
    cfg = dict(backbone_cfg)
    cfg['pe_type'] = arm_pe_type(arm)
    cfg['init_cfg'] = None
    try:
        build(cfg)
    except (ValueError, TypeError, KeyError, NotImplementedError, AssertionError) as err:
        text = str(err).strip().splitlines()[0] if str(err).strip() else ''
        return f'{type(err).__name__}: {text}'
    return None


def study_data_kind(sweep: str, task: str) -> str:
    """The study tree a sweep trains and tests on: 'probe', 'ade' (segmentation) or 'coco' (detection)."""
    if sweep not in SWEEPS:
        raise ValueError(f'sweep {sweep!r} is not supported; accepted: {", ".join(SWEEPS)}')
    if task not in TASKS:
        raise ValueError(f'task {task!r} is not supported; accepted: {", ".join(TASKS)}')
    if SWEEPS[sweep].probe:
        if task != 'seg':
            raise ValueError('the position probe is a segmentation task (labels per pixel); use --task seg')
        return 'probe'
    return 'ade' if task == 'seg' else 'coco'


def study_classes(kind: str) -> Tuple[str, ...]:
    """Class names kept in the dataset's metainfo: the 15 drawn ADE20K classes, the 8 probe classes (stand-in
    ADE20K names of label values 1..8: texture k top = 2k + 1, bottom = 2k + 2) or the 6 drawn COCO ones."""
    if kind == 'coco':
        return DET_CLASSES
    if kind != 'probe':
        return mini_ade_classes()
    from mmseg.datasets import ADE20KDataset

    from vitpe_mm.datasets.mini import PROBE_TEXTURES

    return tuple(ADE20KDataset.METAINFO['classes'][:2 * len(PROBE_TEXTURES)])


def study_metric(task: str) -> MetricColumn:
    """The metric a study ranks arms by: mIoU (segmentation, probe) or COCO bbox AP (detection)."""
    return SEG_COLUMNS[0] if task == 'seg' else DET_COLUMNS[0]


def study_overrides(backbone: str, task: str, arm: str, train_size: int, iters: int, batch_size: int,
                    data_root: str, classes: Sequence[str], seed: int = 0, lr: float = 2e-3) -> Dict[str, Any]:
    """Config changes (dotted keys, tools/train.py's `--cfg-options`) that make one run of the study: `arm` on
    `backbone` for `task`, trained on the study tree `data_root` (training canvases of `train_size` pixels) and
    tested on its 1x validation canvases (`canvas_config_hook` points the test at other canvases).

    Segmentation starts from the backbone's semantic-FPN demo (`ablation_overrides`); detection from its Mask
    R-CNN demo without the mask branch (a Faster R-CNN), boxes of the 6 drawn classes, COCO bbox AP.
    """
    if task not in TASKS:
        raise ValueError(f'task {task!r} is not supported; accepted: {", ".join(TASKS)}')
    pe_type = arm_pe_type(arm)
    if task == 'seg':
        out = ablation_overrides(backbone, 'none', train_size, iters, batch_size, data_root, classes, seed=seed, lr=lr)
        out['model.backbone.pe_type'] = pe_type
        for loader in ('train_dataloader', 'test_dataloader'):
            out[f'{loader}.dataset.img_suffix'] = '.png'
        return out
    check_budget(backbone, train_size, iters, batch_size)
    size = (train_size, train_size)
    schedulers, log_interval = _schedule(iters)
    train_pipeline = [
        dict(type='LoadImageFromFile'),
        dict(type='LoadAnnotations', with_bbox=True),
        dict(type='Resize', scale=size, keep_ratio=False),
        dict(type='RandomFlip', prob=0.5),
        dict(type='PackDetInputs'),
    ]
    test_pipeline = [
        dict(type='LoadImageFromFile'),
        dict(type='Resize', scale=size, keep_ratio=False),
        dict(type='LoadAnnotations', with_bbox=True),
        dict(type='PackDetInputs', meta_keys=('img_id', 'img_path', 'ori_shape', 'img_shape', 'scale_factor')),
    ]
    metainfo = dict(classes=tuple(classes))
    root = data_root.rstrip('/') + '/'
    return {
        'model.backbone.pe_type': pe_type,
        f'model.backbone.{ABLATION_BACKBONES[backbone].size_key}': train_size,
        'model.roi_head.bbox_head.num_classes': len(classes),
        'model.roi_head.mask_head': None,
        'model.roi_head.mask_roi_extractor': None,
        'train_dataloader.batch_size': batch_size,
        'train_dataloader.dataset.data_root': root,
        'train_dataloader.dataset.ann_file': 'annotations/instances_train2017.json',
        'train_dataloader.dataset.data_prefix': dict(img='train2017/'),
        'train_dataloader.dataset.pipeline': train_pipeline,
        'train_dataloader.dataset.metainfo': metainfo,
        'test_dataloader.dataset.data_root': root,
        'test_dataloader.dataset.ann_file': 'annotations/instances_val2017.json',
        'test_dataloader.dataset.data_prefix': dict(img='val2017/'),
        'test_dataloader.dataset.pipeline': test_pipeline,
        'test_dataloader.dataset.metainfo': metainfo,
        'test_evaluator': dict(type='CocoMetric', ann_file=root + 'annotations/instances_val2017.json',
                               metric='bbox', format_only=False),
        'val_dataloader': None,
        'val_cfg': None,
        'val_evaluator': None,
        'train_cfg': dict(type='IterBasedTrainLoop', max_iters=iters, val_interval=iters),
        'param_scheduler': schedulers,
        'optim_wrapper.optimizer.lr': lr,
        'default_hooks.logger.interval': log_interval,
        'default_hooks.checkpoint': dict(type='CheckpointHook', by_epoch=False, interval=iters, max_keep_ckpts=1),
        'randomness': dict(seed=seed),
    }


def canvas_config_hook(task: str) -> Callable[[Any, Any], None]:
    """A `per_scale` hook for `evaluate_at_scales`: points a study test config at the validation canvases of the
    scale's factor (`canvas_suffix`), whose images are already that size (the test Resize is then the identity)."""
    from vitpe_mm.datasets.mini import canvas_suffix

    def hook(cfg: Any, scale: Any) -> None:
        suffix = canvas_suffix(scale.factor)
        dataset = cfg['test_dataloader']['dataset']
        if task == 'det':
            dataset['ann_file'] = f'annotations/instances_val2017{suffix}.json'
            dataset['data_prefix'] = dict(img=f'val2017{suffix}/')
            cfg['test_evaluator']['ann_file'] = osp.join(dataset['data_root'], dataset['ann_file'])
        else:
            dataset['data_prefix'] = dict(img_path=f'images/validation{suffix}',
                                          seg_map_path=f'annotations/validation{suffix}')
    return hook


# ----------------------------------------------------------------------------------------------------------------
# Tables: means with intervals, paired differences (unresolved ones in parentheses)
# ----------------------------------------------------------------------------------------------------------------
def format_interval(interval: Optional[Interval], digits: int = 1) -> str:
    """'75.0 ± 1.2' (mean ± half-width of the interval), '75.0' for one seed, '-' for none."""
    if interval is None:
        return '-'
    if interval.half_width is None:
        return f'{interval.mean:.{digits}f}'
    return f'{interval.mean:.{digits}f} ± {interval.half_width:.{digits}f}'


def format_difference(interval: Optional[Interval], digits: int = 1) -> str:
    """'+2.1 [+0.4, +3.8]' for a difference whose interval excludes 0; '(+0.5 [-1.2, +2.2])' in parentheses when
    it contains 0 (not resolved); '+0.5' for one seed (no interval); '-' for none."""
    if interval is None:
        return '-'
    if interval.low is None:
        return f'{interval.mean:+.{digits}f}'
    text = f'{interval.mean:+.{digits}f} [{interval.low:+.{digits}f}, {interval.high:+.{digits}f}]'
    return text if interval.excludes_zero else f'({text})'


def _scale_order(records: Sequence[Mapping[str, Any]]) -> List[Tuple[str, float]]:
    seen = {}
    for r in records:
        seen.setdefault(r['scale'], r['factor'])
    return sorted(seen.items(), key=lambda kv: (kv[1] if kv[1] is not None and not math.isnan(kv[1]) else 0.0))


def _header(scales: Sequence[Tuple[str, float]], first: str, reference: float = 1.0) -> List[str]:
    return [first] + [f'{s} ({f:g}x{", train" if abs(f - reference) < 1e-9 else ""})' for s, f in scales]


def interval_table(cells: Sequence[Mapping[str, Any]], metric: str, digits: int = 1,
                   skipped: Optional[Mapping[str, str]] = None) -> str:
    """Markdown: one line per arm, one column per scale, 'mean ± half-width' (`cell_intervals` output); scales an
    arm cannot run are 'n/a'; `skipped` arms ({arm: reason}) get one line saying so."""
    scales = _scale_order(cells)
    by_key = {(c['arm'], c['scale']): c for c in cells}
    body = []
    for arm in dict.fromkeys(c['arm'] for c in cells):
        row = [arm]
        for scale, _ in scales:
            cell = by_key.get((arm, scale))
            row.append('' if cell is None else 'n/a' if cell['status'] != 'ok' else
                       format_interval(cell['interval'], digits))
        body.append(row)
    for arm in skipped or {}:
        body.append([arm] + ['skipped'] * len(scales))
    return _markdown(_header(scales, f'{metric} \\ scale'), body, 1)


def difference_table(diffs: Sequence[Mapping[str, Any]], metric: str, digits: int = 1) -> str:
    """Markdown: per arm and scale the paired difference from the baseline, 'mean [low, high]', in parentheses
    when the interval contains 0 (`paired_differences` output)."""
    if not diffs:
        return ''
    scales = _scale_order(diffs)
    by_key = {(d['arm'], d['scale']): d for d in diffs}
    body = []
    for arm in dict.fromkeys(d['arm'] for d in diffs):
        row = [arm]
        for scale, _ in scales:
            d = by_key.get((arm, scale))
            row.append('' if d is None else 'n/a' if d['interval'] is None else
                       format_difference(d['interval'], digits))
        body.append(row)
    return _markdown(_header(scales, f'{metric} - {diffs[0]["baseline"]}'), body, 1)


def cell_records(cells: Sequence[Mapping[str, Any]], diffs: Sequence[Mapping[str, Any]],
                 digits: int = 4) -> List[Dict[str, Any]]:
    """Flat records for CSV / JSON, one per (arm, scale): n, mean, ci_low, ci_high, ci_half, sd over the seeds,
    the per-seed values, and the paired difference from the baseline (diff_*, resolved)."""
    by_key = {(d['arm'], d['scale']): d for d in diffs}
    out = []
    for cell in cells:
        interval = cell['interval']
        record = dict(arm=cell['arm'], scale=cell['scale'], factor=cell['factor'], status=cell['status'])
        record.update(interval.as_dict(digits=digits) if interval is not None else
                      dict(mean=None, ci_low=None, ci_high=None, ci_half=None, sd=None, n=0))
        record['values'] = ' '.join(f'{s}:{v:.{digits}f}' for s, v in cell['values'].items() if v is not None)
        diff = by_key.get((cell['arm'], cell['scale']))
        if diff is not None and diff['interval'] is not None:
            record.update(diff['interval'].as_dict('diff_', digits))
            record['baseline'], record['resolved'] = diff['baseline'], diff['resolved']
        else:
            record.update(dict(diff_mean=None, diff_ci_low=None, diff_ci_high=None, diff_ci_half=None, diff_sd=None,
                               diff_n=0, baseline=diff['baseline'] if diff else None, resolved=None))
        out.append(record)
    return out
