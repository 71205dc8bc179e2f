"""Trains a detector (mmdet) or a segmentor (mmseg) from a config; the toolbox is read from the config.

    python tools/train.py configs/cpvt_maskrcnn.py
    python tools/train.py CONFIG --work-dir work_dirs/x --resume            # resume from the latest checkpoint
    python tools/train.py CONFIG --resume work_dirs/x/iter_500.pth           # resume from a given checkpoint
    python tools/train.py CONFIG --cfg-options model.backbone.init_cfg=None  # train from scratch
    bash tools/dist_train.sh CONFIG 8                                         # 8 processes (GPUs, or CPU with gloo)

The same options as mmdet's and mmseg's tools/train.py. Before anything is built it checks that the data and the
pretrained checkpoint the config names are on disk, and fits the config to the machine (gloo without GPUs).
Resuming reads mmengine's checkpoint with torch's weights-only unpickler plus the few types it holds
(vitpe_mm/engine/safe_load.py), and continues exactly as the uninterrupted run (IterationSeedHook reseeds the model's
random draws per iteration, vitpe_mm/engine/hooks.py).
"""
import argparse
import logging
import os
import sys
from pathlib import Path
from typing import List, Optional

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mmengine.config import DictAction  # noqa: E402
from mmengine.logging import print_log  # noqa: E402


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description='Train a detector (mmdet) or a segmentor (mmseg)')
    parser.add_argument('config', help='train config file path')
    parser.add_argument('--work-dir', help='the dir to save logs and models')
    parser.add_argument('--amp', action='store_true', default=False,
                        help='enable automatic-mixed-precision training (CUDA only)')
    parser.add_argument('--auto-scale-lr', action='store_true',
                        help='scale the learning rate by (total batch size / auto_scale_lr.base_batch_size)')
    parser.add_argument('--resume', nargs='?', type=str, const='auto',
                        help='resume from the given checkpoint, or without a path from the latest checkpoint in '
                        'the work dir')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction,
                        help='override settings of the config, key=value pairs, e.g. '
                        'train_cfg.max_iters=100 model.backbone.init_cfg=None "key=[a,b]"')
    parser.add_argument('--launcher', choices=['none', 'pytorch', 'slurm', 'mpi'], default='none',
                        help='job launcher')
    # torch.distributed.launch passes --local-rank (torch >= 2.0) or --local_rank
    parser.add_argument('--local_rank', '--local-rank', type=int, default=0)
    args = parser.parse_args(argv)
    if 'LOCAL_RANK' not in os.environ:
        os.environ['LOCAL_RANK'] = str(args.local_rank)
    return args


def setup_train_cfg(args: argparse.Namespace):
    """The config as `args` ask, checked and fitted to the machine (nothing built yet)."""
    from vitpe_mm.engine import add_iteration_seed_hook, check_inputs, fit_to_machine, load_config
    from vitpe_mm.engine.cpu_sync_bn import use_cpu_sync_bn

    cfg = load_config(args.config, args.cfg_options, args.work_dir, args.launcher)
    if args.amp:
        optim_type = cfg.optim_wrapper.get('type', 'OptimWrapper')
        if optim_type == 'AmpOptimWrapper':
            print_log('AMP training is already enabled in the config.', logger='current', level=logging.WARNING)
        elif optim_type != 'OptimWrapper':
            raise ValueError(f'--amp works with optim_wrapper.type OptimWrapper, the config has {optim_type}')
        else:
            cfg.optim_wrapper.type = 'AmpOptimWrapper'
            cfg.optim_wrapper.loss_scale = 'dynamic'
    if args.auto_scale_lr:
        if 'base_batch_size' not in cfg.get('auto_scale_lr', {}):
            raise ValueError('--auto-scale-lr needs auto_scale_lr = dict(base_batch_size=N) in the config')
        cfg.auto_scale_lr.enable = True
    if args.resume == 'auto':
        cfg.resume = True
        cfg.load_from = None
    elif args.resume is not None:
        if not os.path.isfile(args.resume) and '://' not in args.resume:
            raise FileNotFoundError(f'checkpoint to resume from not found: {args.resume}')
        cfg.resume = True
        cfg.load_from = args.resume
    add_iteration_seed_hook(cfg)  # a resumed run draws the same random numbers as an uninterrupted one
    check_inputs(cfg, 'train')
    use_cpu_sync_bn(cfg, args.launcher)  # multi-process CPU runs: SyncBN over gloo (else fit_to_machine makes it BN)
    fit_to_machine(cfg, args.launcher)
    return cfg


def main(argv: Optional[List[str]] = None) -> None:
    """Trains; a configuration error (missing data / checkpoint, bad option) exits with status 2 and one message."""
    args = parse_args(argv)
    from vitpe_mm.engine import build_runner
    from vitpe_mm.engine.distributed import destroy_process_group

    try:
        cfg = setup_train_cfg(args)
    except (FileNotFoundError, ValueError) as err:  # what the user has to fix: one message, no traceback
        print(f'train.py: error: {err}', file=sys.stderr)
        sys.exit(2)
    runner = build_runner(cfg)  # starts the process group for a distributed run
    runner.train()
    destroy_process_group()  # a gloo group left to the interpreter's exit can abort the process


if __name__ == '__main__':
    main()
