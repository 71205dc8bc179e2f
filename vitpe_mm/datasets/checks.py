"""Checks, before any model is built, that the data a config points at is on disk in the layout its dataset reads.

`check_data_layout(cfg)` raises a FileNotFoundError naming the missing path, the config key it came from, the
expected layout for the dataset type, and how to get data (real download or the mini trees). No mm* imports: it reads
a plain dict or an mmengine Config.
"""
import os.path as osp
from typing import Any, Iterator, List, Mapping, Tuple

EXPECTED_LAYOUTS = {
    'CocoDataset': ('data/coco/\n'
                    '  annotations/instances_train2017.json\n'
                    '  annotations/instances_val2017.json\n'
                    '  train2017/*.jpg\n'
                    '  val2017/*.jpg\n'
                    'Get it from https://cocodataset.org/#download (2017 Train/Val images + annotations), or make '
                    'the procedurally drawn mini tree with `python tools/make_mini_datasets.py --out data` '
                    '(data/mini_coco, used by configs/demo/).'),
    'ADE20KDataset': ('data/ade/ADEChallengeData2016/\n'
                      '  images/training/*.jpg      annotations/training/*.png\n'
                      '  images/validation/*.jpg    annotations/validation/*.png\n'
                      'Get it from http://sceneparsing.csail.mit.edu/ (ADEChallengeData2016.zip), or make the '
                      'procedurally drawn mini tree with `python tools/make_mini_datasets.py --out data` '
                      '(data/mini_ade, used by configs/demo/).'),
}

_LOADERS = ('train_dataloader', 'val_dataloader', 'test_dataloader')
_EVALUATORS = {'val_dataloader': 'val_evaluator', 'test_dataloader': 'test_evaluator'}
_METRIC_DATASET = {'CocoMetric': 'CocoDataset'}


def _get(obj: Any, key: str, default: Any = None) -> Any:
    try:
        return obj.get(key, default)
    except AttributeError:
        return default


def _datasets(cfg: Any, key: str) -> Iterator[Tuple[str, Mapping]]:
    """(config key, dataset cfg) for a dataloader's dataset, looking through wrappers (Repeat/Concat/ClassBalanced)."""
    stack = [(f'{key}.dataset', _get(_get(cfg, key), 'dataset'))]
    while stack:
        name, ds = stack.pop()
        if ds is None:
            continue
        if _get(ds, 'dataset') is not None:
            stack.append((f'{name}.dataset', ds['dataset']))
        elif _get(ds, 'datasets') is not None:
            stack.extend((f'{name}.datasets[{i}]', d) for i, d in enumerate(ds['datasets']))
        else:
            yield name, ds


def _join(root: str, path: str) -> str:
    if not root or osp.isabs(path) or '://' in path:
        return path
    return osp.join(root, path)


def required_paths(cfg: Any, splits: Tuple[str, ...] = _LOADERS) -> List[Tuple[str, str, str, str]]:
    """(path, 'file'|'dir', config key, dataset type) for every path the datasets and evaluators of `cfg` read."""
    found = []
    for loader in splits:
        for key, ds in _datasets(cfg, loader):
            ds_type = str(_get(ds, 'type', ''))
            root = _get(ds, 'data_root') or ''
            if root:
                found.append((root, 'dir', f'{key}.data_root', ds_type))
            ann = _get(ds, 'ann_file') or ''
            if ann:
                found.append((_join(root, ann), 'file', f'{key}.ann_file', ds_type))
            prefix = _get(ds, 'data_prefix') or {}
            for name, sub in (prefix.items() if hasattr(prefix, 'items') else []):
                if sub:
                    found.append((_join(root, sub), 'dir', f'{key}.data_prefix.{name}', ds_type))
    for loader, evaluator in _EVALUATORS.items():
        evaluators = _get(cfg, evaluator)
        if loader not in splits or evaluators is None:
            continue
        many = isinstance(evaluators, (list, tuple))
        for i, ev in enumerate(evaluators if many else [evaluators]):
            ann = _get(ev, 'ann_file')
            if ann and not _get(ev, 'format_only', False):
                ev_type = str(_get(ev, 'type', ''))
                found.append((ann, 'file', f'{evaluator}[{i}].ann_file' if many else f'{evaluator}.ann_file',
                              _METRIC_DATASET.get(ev_type, ev_type)))
    return found


def check_data_layout(cfg: Any, splits: Tuple[str, ...] = _LOADERS) -> None:
    """Raises FileNotFoundError for the first path of `cfg`'s datasets (in `splits`) that is not on disk.

    The message names the path, the config key it comes from, and the layout the dataset type expects.

    Args:
        cfg: an mmengine Config or a dict with `train_dataloader` / `val_dataloader` / `test_dataloader` and
            optionally `val_evaluator` / `test_evaluator` (their `ann_file`, e.g. CocoMetric).
        splits: the dataloader keys to check; e.g. ('val_dataloader', 'test_dataloader') for tools/test.py.
    """
    for path, kind, key, ds_type in required_paths(cfg, splits):
        exists = osp.isfile(path) if kind == 'file' else osp.isdir(path)
        if exists:
            continue
        msg = f'{"File" if kind == "file" else "Directory"} not found: {path} (from {key} in the config).'
        if ds_type in EXPECTED_LAYOUTS:
            msg += f'\nExpected layout for {ds_type}:\n{EXPECTED_LAYOUTS[ds_type]}'
        override = key if key.endswith('.ann_file') and 'evaluator' in key else \
            key.split('.data_prefix')[0].rsplit('.', 1)[0] + '.data_root'
        msg += ('\nPoint the config at your copy: edit its data_root (the dataloaders and evaluator take it), or '
                f'override each path with --cfg-options, e.g. {override}=PATH.')
        raise FileNotFoundError(msg)
