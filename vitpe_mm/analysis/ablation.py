"""The positional-encoding ablation: one backbone, one training resolution, one budget and seed, PE types swapped.

The setting follows the question of "Conditional Positional Encodings for Vision Transformers" (CPVT,
arXiv:2102.10882, Table 2): train at one resolution, test at others without fine-tuning. Here it is a semantic FPN
on the procedurally drawn mini ADE20K (`vitpe_mm.datasets.mini`), small enough for a CPU: every image is resized
to a square `train_size` for training (no crop: the token grids are those of the training size), and resized to
`factor * train_size` squares for testing with whole-image inference, so the backbone meets grids `factor` times
the training grid. The decode head predicts the 15 ADE20K classes the generator draws (the dataset's `metainfo`
keeps those, the other 135 are never drawn), which keeps the 150-class cross-entropy from dominating CPU time.

`ablation_overrides` returns the config changes (dotted keys for `Config.merge_from_dict`, i.e. tools/train.py's
`--cfg-options`) that turn a demo config of the chosen backbone into one ablation arm.
"""
from dataclasses import dataclass
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

from .results import STATUS_NA, STATUS_OK, MetricColumn

__all__ = ['AblationBackbone', 'ABLATION_BACKBONES', 'ABLATION_PE_TYPES', 'DEFAULT_FACTORS', 'SEED_SEPARATOR',
           'mini_ade_classes', 'ablation_overrides', 'run_label', 'aggregate_seeds', 'summarize_ablation']


@dataclass(frozen=True)
class AblationBackbone:
    """A backbone for the ablation: the demo configs it starts from (semantic FPN for segmentation, Mask R-CNN,
    run box-only, for detection) and the name of its pre-training size argument (the grid its 'abs' /
    'abs_nointerp' / 'rel_bias' tables are made for)."""
    config: str
    size_key: str
    det_config: str = ''


ABLATION_BACKBONES: Dict[str, AblationBackbone] = {
    'cpvt': AblationBackbone('configs/demo/cpvt_fpn_demo.py', 'img_size', 'configs/demo/cpvt_maskrcnn_demo.py'),
    'swin': AblationBackbone('configs/demo/swin_fpn_demo.py', 'pretrain_img_size',
                             'configs/demo/swin_maskrcnn_demo.py'),
    'vit': AblationBackbone('configs/demo/vit_fpn_demo.py', 'img_size', 'configs/demo/vit_maskrcnn_demo.py'),
}
# The arms of the paper's comparison: no PE, learned absolute PE resampled to the test grid, the same table only
# cropped (cannot run on grids larger than the training one), PEG, learned relative bias. 'sincos' can be added.
ABLATION_PE_TYPES = ('none', 'abs', 'abs_nointerp', 'peg', 'rel_bias')
DEFAULT_FACTORS = (0.5, 0.75, 1.0, 1.25, 1.5, 2.0)
SEED_SEPARATOR = '@seed'


def mini_ade_classes() -> Tuple[str, ...]:
    """The ADE20K class names the mini ADE20K generator draws, as spelled in mmseg's ADE20KDataset."""
    from mmseg.datasets import ADE20KDataset

    from vitpe_mm.datasets.mini import ADE_LABELS

    names = ADE20KDataset.METAINFO['classes']
    return tuple(names[value - 1] for value in sorted(ADE_LABELS.values()))


def _schedule(iters: int) -> Tuple[List[dict], int]:
    """Linear warm-up over the first tenth (at most 20 iterations), then poly decay; the logging interval."""
    warmup = max(1, min(20, iters // 10))
    schedulers = [dict(type='LinearLR', start_factor=0.01, by_epoch=False, begin=0, end=warmup)]
    if iters > warmup:
        schedulers.append(dict(type='PolyLR', eta_min=0.0, power=1.0, begin=warmup, end=iters, by_epoch=False))
    return schedulers, max(1, min(20, iters // 10))


def ablation_overrides(backbone: str, pe_type: str, train_size: int, iters: int, batch_size: int, data_root: str,
                       classes: Sequence[str], seed: int = 0, lr: float = 2e-3,
                       val_indices: Optional[int] = None) -> Dict[str, Any]:
    """Config changes (dotted keys) that make `ABLATION_BACKBONES[backbone].config` one arm of the ablation.

    Args:
        backbone: a key of ABLATION_BACKBONES.
        pe_type: the backbone's `pe_type`.
        train_size: training images are resized to train_size x train_size (aspect ratio not kept); the PE
            tables are made for this size; the test Resize scale is the same square (scale factor 1).
        iters, batch_size, lr, seed: the training budget, the same for every arm.
        data_root: a mini ADE20K tree (ADEChallengeData2016 layout).
        classes: class names kept in the dataset's metainfo (`mini_ade_classes()`); the head predicts these.
        val_indices: evaluate on the first N validation images only (None: all).
    """
    if backbone not in ABLATION_BACKBONES:
        raise ValueError(f'backbone {backbone!r} is not supported; accepted: {", ".join(ABLATION_BACKBONES)}')
    for name, value in (('train_size', train_size), ('iters', iters), ('batch_size', batch_size)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f'{name} must be a positive int, got {value!r}')
    size = (train_size, train_size)
    schedulers, log_interval = _schedule(iters)
    train_pipeline = [
        dict(type='LoadImageFromFile'),
        dict(type='LoadAnnotations', reduce_zero_label=True),
        dict(type='Resize', scale=size, keep_ratio=False),
        dict(type='RandomFlip', prob=0.5),
        dict(type='PackSegInputs'),
    ]
    test_pipeline = [
        dict(type='LoadImageFromFile'),
        dict(type='Resize', scale=size, keep_ratio=False),
        dict(type='LoadAnnotations', reduce_zero_label=True),
        dict(type='PackSegInputs'),
    ]
    metainfo = dict(classes=tuple(classes))
    return {
        'model.backbone.pe_type': pe_type,
        f'model.backbone.{ABLATION_BACKBONES[backbone].size_key}': train_size,
        'model.data_preprocessor.size': size,
        'model.decode_head.num_classes': len(classes),
        'train_dataloader.batch_size': batch_size,
        'train_dataloader.dataset.data_root': data_root,
        'train_dataloader.dataset.pipeline': train_pipeline,
        'train_dataloader.dataset.metainfo': metainfo,
        'test_dataloader.dataset.data_root': data_root,
        'test_dataloader.dataset.pipeline': test_pipeline,
        'test_dataloader.dataset.metainfo': metainfo,
        'test_dataloader.dataset.indices': None if val_indices is None else int(val_indices),
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


def run_label(pe_type: str, seed: int, seeds: Sequence[int]) -> str:
    """The label of one training run: the PE type, with '@seed<N>' when the ablation has several seeds."""
    return pe_type if len(seeds) == 1 else f'{pe_type}{SEED_SEPARATOR}{seed}'


def aggregate_seeds(rows: Sequence[Mapping[str, Any]],
                    columns: Sequence[MetricColumn]) -> Tuple[List[Dict[str, Any]], List[MetricColumn]]:
    """Rows of runs labelled 'pe@seedN' merged per (PE type, scale): each metric's mean over the seeds, and a
    '<metric> spread' column (max - min over the seeds: how far one cell moves with the seed).

    A scale is n/a when any seed could not run it. Returns (rows, the spread columns).
    """
    spreads = [MetricColumn(f'{c.key} spread', f'{c.name} spread', 1.0, c.digits, c.optional) for c in columns]
    groups: Dict[Tuple[str, float, str], List[Mapping[str, Any]]] = {}
    for row in rows:
        arm = str(row['label']).split(SEED_SEPARATOR)[0]
        groups.setdefault((arm, row['factor'], row['scale']), []).append(row)
    out = []
    for (arm, _, _), group in groups.items():
        ok = all(r['status'] == STATUS_OK for r in group)
        merged = dict(group[0], label=arm, status=STATUS_OK if ok else STATUS_NA,
                      note='' if ok else next(r['note'] for r in group if r['status'] != STATUS_OK))
        for column, spread in zip(columns, spreads):
            values = [r[column.name] for r in group if r.get(column.name) is not None]
            merged[column.name] = round(sum(values) / len(values), column.digits) if ok and values else None
            merged[spread.name] = round(max(values) - min(values), column.digits) if ok and values else None
        out.append(merged)
    return out, spreads


def summarize_ablation(rows: Sequence[Mapping[str, Any]], metric: str,
                       reference_factor: float = 1.0) -> List[Dict[str, Any]]:
    """Per PE type (row label): the metric at the training scale and its change at every other scale.

    Returns dicts with `label`, `at_reference`, `deltas` ({factor: change or None for n/a}), `worst` and `best`
    (the most negative / positive change and its factor), `na` (factors the model could not run).
    """
    out = []
    for label in dict.fromkeys(r['label'] for r in rows):
        mine = sorted((r for r in rows if r['label'] == label), key=lambda r: r['factor'])
        ref = next((r for r in mine if abs(r['factor'] - reference_factor) < 1e-6 and r['status'] == STATUS_OK), None)
        ref_value = ref.get(metric) if ref is not None else None
        deltas, na = {}, []
        for r in mine:
            if r is ref:
                continue
            if r['status'] != STATUS_OK or r.get(metric) is None or ref_value is None:
                deltas[r['factor']] = None
                if r['status'] != STATUS_OK:
                    na.append(r['factor'])
            else:
                deltas[r['factor']] = round(r[metric] - ref_value, 4)
        known = [(d, f) for f, d in deltas.items() if d is not None]
        out.append(dict(label=label, at_reference=ref_value, deltas=deltas, na=na,
                        worst=min(known) if known else None, best=max(known) if known else None))
    return out
