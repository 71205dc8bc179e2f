"""Configs of the positional-encoding study's runs: one backbone, one training resolution, one budget and seed,
PE types swapped (the study itself: `vitpe_mm.analysis.study`, tools/pe_ablation.py).

The setting follows the question of "Conditional Positional Encodings for Vision Transformers" (CPVT,
arXiv:2102.10882, Table 2): train at one resolution, test at others without fine-tuning. For segmentation it is a
semantic FPN, small enough for a CPU: every image is resized to a square `train_size` for training (no crop: the
token grids are those of the training size), and tested on `factor * train_size` squares with whole-image
inference, so the backbone meets grids `factor` times the training grid. The decode head predicts the 15 ADE20K
classes the generator draws (the dataset's `metainfo` keeps those, the other 135 are never drawn), which keeps the
150-class cross-entropy from dominating CPU time.

`ablation_overrides` returns the config changes (dotted keys for `Config.merge_from_dict`, i.e. tools/train.py's
`--cfg-options`) that turn the segmentation demo config of the chosen backbone into one run.
"""
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Sequence, Tuple

__all__ = ['AblationBackbone', 'ABLATION_BACKBONES', 'DEFAULT_FACTORS', 'mini_ade_classes', 'ablation_overrides']


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
DEFAULT_FACTORS = (0.5, 0.75, 1.0, 1.25, 1.5, 2.0)


def mini_ade_classes() -> Tuple[str, ...]:
    """The ADE20K class names the mini ADE20K generator draws, as spelled in mmseg's ADE20KDataset."""
    from mmseg.datasets import ADE20KDataset

    from vitpe_mm.datasets.mini import ADE_LABELS

    names = ADE20KDataset.METAINFO['classes']
    return tuple(names[value - 1] for value in sorted(ADE_LABELS.values()))


def check_budget(backbone: str, train_size: int, iters: int, batch_size: int) -> None:
    """The backbone and the training budget of an ablation / study run, checked with what is accepted."""
    if backbone not in ABLATION_BACKBONES:
        raise ValueError(f'backbone {backbone!r} is not supported; accepted: {", ".join(ABLATION_BACKBONES)}')
    for name, value in (('train_size', train_size), ('iters', iters), ('batch_size', batch_size)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f'{name} must be a positive int, got {value!r}')


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
    check_budget(backbone, train_size, iters, batch_size)
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
