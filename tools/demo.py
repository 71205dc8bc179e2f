"""The README's main job (`bash run.sh demo`): train a CPVT-v2 Mask R-CNN on CPU for a few minutes, evaluate COCO AP.

    python tools/demo.py                                   # configs/demo/cpvt_maskrcnn_demo.py on data/mini_coco
    python tools/demo.py --max-iters 40 --work-dir work_dirs/demo/quick
    python tools/demo.py --config configs/demo/OTHER.py    # another demo config (mmdet or mmseg)

Needs no data and no download: the procedurally drawn mini COCO / ADE20K trees are written to data/ when missing
(vitpe_mm/datasets/mini.py). Training logs its progress (loss, lr, eta) as mmengine does; at the end the validation
metrics (COCO bbox / segm AP via mmdet's CocoMetric, or mIoU for a segmentation config) are printed in a short table
with the paths of the checkpoint and the log. The runner is the one tools/train.py builds (same checks, same
machine fitting: gloo / no AMP / BN on CPU).
"""
import argparse
import os
import sys
import time
from pathlib import Path
from typing import Dict, List, Optional

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

DEFAULT_CONFIG = 'configs/demo/cpvt_maskrcnn_demo.py'
MINI_TREES = {'mini_coco': 'coco', 'mini_ade': 'ade'}  # folder name -> ensure_mini_datasets(only=...)
COCO_COLUMNS = (('mAP', 'AP'), ('mAP_50', 'AP50'), ('mAP_75', 'AP75'), ('mAP_s', 'APs'), ('mAP_m', 'APm'),
                ('mAP_l', 'APl'))


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    from mmengine.config import DictAction

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--config', default=DEFAULT_CONFIG, help=f'demo config (default: {DEFAULT_CONFIG})')
    parser.add_argument('--work-dir', help='where checkpoints and logs go (default: work_dirs/demo/<config name>)')
    parser.add_argument('--max-iters', type=int, help="training iterations (default: the config's)")
    parser.add_argument('--cfg-options', nargs='+', action=DictAction,
                        help='override settings of the config, key=value pairs, as tools/train.py')
    args = parser.parse_args(argv)
    if args.max_iters is not None and args.max_iters < 1:
        parser.error(f'--max-iters must be a positive number, got {args.max_iters}')
    return args


def ensure_data(cfg) -> None:
    """Writes the mini trees (data/mini_coco, data/mini_ade) the config reads when they are missing (seconds).

    A dataset whose data_root is not a mini tree is left to the data checks (which say how to get it)."""
    from vitpe_mm.datasets import ensure_mini_datasets, required_paths

    trees = set()
    for path, _kind, key, _ in required_paths(cfg):
        if key.endswith('.data_root') and Path(path).name in MINI_TREES:
            trees.add((str(Path(path).parent), MINI_TREES[Path(path).name]))
    for root, tree in sorted(trees):
        ensure_mini_datasets(root, only=tree, progress=lambda line: print(f'[data] {line}', flush=True))


def set_max_iters(cfg, max_iters: int) -> None:
    """Trains `max_iters` iterations and validates once, at the end; schedulers are clipped to the new length."""
    train_cfg = cfg.train_cfg
    if train_cfg.get('by_epoch', False) or train_cfg.get('type') == 'EpochBasedTrainLoop':
        raise ValueError(f'--max-iters needs an iteration-based config (train_cfg type IterBasedTrainLoop); '
                         f'{cfg.filename} trains by epoch: set train_cfg.max_epochs with --cfg-options instead')
    train_cfg.max_iters = max_iters
    train_cfg.val_interval = max_iters
    schedulers = cfg.get('param_scheduler') or []
    for scheduler in (schedulers if isinstance(schedulers, list) else [schedulers]):
        if scheduler.get('by_epoch', True):
            continue
        if scheduler.get('end', 0) > max_iters:
            scheduler.end = max_iters
        if scheduler.get('begin', 0) >= max_iters:
            scheduler.begin = max_iters - 1
    checkpoint = (cfg.get('default_hooks') or {}).get('checkpoint')
    if checkpoint is not None and checkpoint.get('interval', 1) > max_iters:
        checkpoint.interval = max_iters


def format_metrics(metrics: Dict[str, float]) -> str:
    """A short table: COCO AP rows (bbox, segm) with AP / AP50 / AP75 / APs / APm / APl (pycocotools' -1, no
    objects of that size, shows as -), then any other scalar metrics (e.g. mIoU), one per line."""
    lines = []
    coco_rows = [kind for kind in ('bbox', 'segm') if f'coco/{kind}_mAP' in metrics]
    if coco_rows:
        lines.append(f'{"":6}' + ''.join(f'{title:>8}' for _, title in COCO_COLUMNS))
        for kind in coco_rows:
            cells = [metrics.get(f'coco/{kind}_{key}') for key, _ in COCO_COLUMNS]
            lines.append(f'{kind:6}' + ''.join(f'{v:8.3f}' if isinstance(v, (int, float)) and v >= 0
                                               else f'{"-":>8}' for v in cells))
        lines.append('(COCO AP in [0, 1]: IoU 0.50:0.95, at 0.50, at 0.75, and for small / medium / large objects;'
                     ' - : no such objects)')
    other = {k: v for k, v in metrics.items()
             if isinstance(v, (int, float)) and not any(k == f'coco/{kind}_{key}' for kind in coco_rows
                                                       for key, _ in COCO_COLUMNS)}
    if other:
        width = max(len(k) for k in other)
        lines += [f'{k:{width}}  {v:.3f}' for k, v in other.items()]
    if not lines:  # mmdet's CocoMetric returns nothing when no prediction passed the score threshold
        return ('(no metrics: the model predicted nothing above the score threshold; train longer, '
                'e.g. without --max-iters)')
    return '\n'.join(lines)


def _last_checkpoint(work_dir: Path) -> Optional[str]:
    marker = work_dir / 'last_checkpoint'
    return marker.read_text().strip() if marker.is_file() else None


def setup(args: argparse.Namespace):
    """The runner for the demo: mini data made when missing, config checked and fitted to the machine."""
    from vitpe_mm.engine import add_iteration_seed_hook, build_runner, check_inputs, fit_to_machine, load_config

    config = Path(args.config)
    if not config.is_file():
        raise FileNotFoundError(f'demo config not found: {config} (pass --config configs/demo/<name>.py)')
    cfg = load_config(str(config), args.cfg_options, args.work_dir, 'none')
    ensure_data(cfg)
    if args.max_iters is not None:
        set_max_iters(cfg, args.max_iters)
    if cfg.get('val_cfg') is None:
        raise ValueError(f'{config} has no val_cfg / val_dataloader / val_evaluator: the demo evaluates on them')
    add_iteration_seed_hook(cfg)
    check_inputs(cfg, 'train')
    fit_to_machine(cfg, 'none')
    return build_runner(cfg)


def report(runner, config: str, seconds: float, metrics: Dict[str, float]) -> None:
    work_dir = Path(runner.work_dir)
    checkpoint = _last_checkpoint(work_dir)
    device = 'GPU' if runner.cfg.env_cfg.dist_cfg.backend == 'nccl' else 'CPU'
    print('\n' + '=' * 78)
    print(f'vitpe_mm demo: {config}: {runner.iter} iterations in {int(seconds) // 60}m{int(seconds) % 60:02d}s '
          f'on {device}')
    print('-' * 78)
    print(format_metrics(metrics))
    print('-' * 78)
    print(f'work dir:    {work_dir}')
    print(f'checkpoint:  {checkpoint or "(none saved)"}')
    print(f'log:         {Path(runner.log_dir, runner.timestamp + ".log")}')
    print(f'evaluate:    python tools/test.py {config} {checkpoint or "CHECKPOINT"}')
    print('=' * 78, flush=True)


def main(argv: Optional[List[str]] = None) -> Dict[str, float]:
    """Runs the demo and returns the validation metrics; a setup error (missing config, bad option) exits with
    status 2 and one message."""
    args = parse_args(argv)
    # paths given on the command line are taken from the current folder; the config's own (data/, work_dirs/)
    # from the repository root, so `python /path/to/tools/demo.py` works from anywhere
    if not Path(args.config).is_file() and (ROOT / args.config).is_file():
        args.config = str(ROOT / args.config)
    args.config = str(Path(args.config).resolve())
    args.work_dir = str(Path(args.work_dir).resolve()) if args.work_dir else \
        str(ROOT / 'work_dirs' / 'demo' / Path(args.config).stem)
    os.chdir(ROOT)
    config = os.path.relpath(args.config, ROOT) if args.config.startswith(str(ROOT)) else args.config
    try:
        runner = setup(args)
    except (FileNotFoundError, ValueError) as err:  # what the user has to fix: one message, no traceback
        print(f'demo.py: error: {err}', file=sys.stderr)
        sys.exit(2)

    from mmengine.hooks import Hook

    class KeepMetrics(Hook):
        """Keeps the metrics of the last validation."""

        def __init__(self) -> None:
            self.metrics: Dict[str, float] = {}

        def after_val_epoch(self, runner, metrics=None) -> None:
            self.metrics = dict(metrics or {})

    keep = KeepMetrics()
    runner.register_hook(keep, priority='LOWEST')
    start = time.time()
    runner.train()
    report(runner, config, time.time() - start, keep.metrics)
    return keep.metrics


if __name__ == '__main__':
    main()
