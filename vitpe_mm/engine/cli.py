"""The command lines of tools/train.py and tools/test.py: their arguments and the config set-up they run before
building a runner, shared with the tools that train or evaluate the same way (tools/pe_ablation.py,
tools/eval_resolutions.py).

`setup_train_cfg(parse_train_args(argv))` / `setup_test_cfg(parse_test_args(argv))` give the checked config,
fitted to the machine, exactly as the tools build their runner from (`vitpe_mm.engine.build_runner`). The options
are mmdet's and mmseg's own tools/train.py and tools/test.py options.
"""
import argparse
import logging
import os
import warnings
from copy import deepcopy
from typing import List, Optional

from mmengine.config import Config, ConfigDict, DictAction
from mmengine.logging import print_log

from .cpu_sync_bn import use_cpu_sync_bn
from .runner import LAUNCHERS, add_iteration_seed_hook, check_inputs, fit_to_machine, load_config

__all__ = ['VISUALIZATION_HOOKS', 'parse_test_args', 'parse_train_args', 'setup_test_cfg', 'setup_train_cfg']


# ----------------------------------------------------------------------------------------------------------------
# tools/train.py
# ----------------------------------------------------------------------------------------------------------------
def parse_train_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
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
    parser.add_argument('--launcher', choices=LAUNCHERS, default='none',
                        help='job launcher')
    # torch.distributed.launch passes --local-rank (torch >= 2.0) or --local_rank
    parser.add_argument('--local_rank', '--local-rank', type=int, default=0)
    args = parser.parse_args(argv)
    if 'LOCAL_RANK' not in os.environ:
        os.environ['LOCAL_RANK'] = str(args.local_rank)
    return args


def setup_train_cfg(args: argparse.Namespace) -> Config:
    """The config as tools/train.py's `args` ask, checked and fitted to the machine (nothing built yet)."""
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


# ----------------------------------------------------------------------------------------------------------------
# tools/test.py
# ----------------------------------------------------------------------------------------------------------------
def parse_test_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description='Test (and evaluate) a detector (mmdet) or a segmentor (mmseg)')
    parser.add_argument('config', help='test config file path')
    parser.add_argument('checkpoint', help='checkpoint file')
    parser.add_argument('--work-dir', help='the directory to save the file containing evaluation metrics')
    parser.add_argument('--out', type=str,
                        help='mmdet: dump predictions to this .pkl file; mmseg: save predicted masks to this folder')
    parser.add_argument('--show', action='store_true', help='show prediction results')
    parser.add_argument('--show-dir', help='save drawn predictions of every image: mmdet under '
                        'WORK_DIR/TIMESTAMP/SHOW_DIR, mmseg under WORK_DIR/SHOW_DIR/vis_data/vis_image')
    parser.add_argument('--wait-time', type=float, default=2, help='the interval of show (s)')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction,
                        help='override settings of the config, key=value pairs')
    parser.add_argument('--launcher', choices=LAUNCHERS, default='none',
                        help='job launcher')
    parser.add_argument('--tta', action='store_true', help='test-time augmentation (flip; mmseg: tta_pipeline)')
    parser.add_argument('--allow-mismatch', action='store_true',
                        help="evaluate a checkpoint whose weights are not exactly the config's model (missing ones "
                        'keep their initialisation); without it such a checkpoint is an error')
    parser.add_argument('--local_rank', '--local-rank', type=int, default=0)
    args = parser.parse_args(argv)
    if 'LOCAL_RANK' not in os.environ:
        os.environ['LOCAL_RANK'] = str(args.local_rank)
    return args


VISUALIZATION_HOOKS = {'mmdet': 'DetVisualizationHook', 'mmseg': 'SegVisualizationHook'}


def _visualization(cfg, args, toolbox: str):
    hooks = cfg.setdefault('default_hooks', {})
    if 'visualization' not in hooks:  # the toolboxes' schedules add it; a config without one gets the default
        hooks.visualization = dict(type=VISUALIZATION_HOOKS[toolbox])
    hooks.visualization.draw = True
    if args.show:
        hooks.visualization.show = True
        hooks.visualization.wait_time = args.wait_time
    if args.show_dir:
        if toolbox == 'mmdet':  # saved under work_dir/TIMESTAMP/SHOW_DIR
            hooks.visualization.test_out_dir = args.show_dir
        else:  # saved under [work_dir/]SHOW_DIR/vis_data/vis_image, every image (mmseg's hook draws every 50th)
            hooks.visualization.interval = 1
            cfg.visualizer.save_dir = os.path.join(cfg.work_dir, args.show_dir)


def _tta(cfg, toolbox: str) -> None:
    if toolbox == 'mmseg':
        if 'tta_model' not in cfg or 'tta_pipeline' not in cfg:
            raise ValueError('--tta for an mmseg config needs tta_model and tta_pipeline in the config')
        cfg.test_dataloader.dataset.pipeline = cfg.tta_pipeline
        cfg.tta_model.module = cfg.model
        cfg.model = cfg.tta_model
        return
    # mmdet: flip test by default, as mmdet's tools/test.py
    if 'tta_model' not in cfg:
        warnings.warn('no tta_model in the config: using DetTTAModel with nms 0.5, 100 per image', stacklevel=2)
        cfg.tta_model = dict(type='DetTTAModel',
                             tta_cfg=dict(nms=dict(type='nms', iou_threshold=0.5), max_per_img=100))
    if 'tta_pipeline' not in cfg:
        warnings.warn('no tta_pipeline in the config: using the test pipeline with horizontal flip', stacklevel=2)
        test_data_cfg = cfg.test_dataloader.dataset
        while 'dataset' in test_data_cfg:
            test_data_cfg = test_data_cfg['dataset']
        cfg.tta_pipeline = deepcopy(test_data_cfg.pipeline)
        cfg.tta_pipeline[-1] = dict(
            type='TestTimeAug',
            transforms=[[dict(type='RandomFlip', prob=1.), dict(type='RandomFlip', prob=0.)],
                        [dict(type='PackDetInputs',
                              meta_keys=('img_id', 'img_path', 'ori_shape', 'img_shape', 'scale_factor', 'flip',
                                         'flip_direction'))]])
    cfg.model = ConfigDict(**cfg.tta_model, module=cfg.model)
    cfg.test_dataloader.dataset.pipeline = cfg.tta_pipeline


def setup_test_cfg(args: argparse.Namespace) -> Config:
    """The config as tools/test.py's `args` ask, checked and fitted to the machine (nothing built yet)."""
    cfg = load_config(args.config, args.cfg_options, args.work_dir, args.launcher)
    toolbox = cfg.default_scope
    cfg.load_from = args.checkpoint
    if args.show or args.show_dir:
        _visualization(cfg, args, toolbox)
    if args.tta:
        _tta(cfg, toolbox)
    if args.out is not None and toolbox == 'mmseg':
        cfg.test_evaluator['output_dir'] = args.out
        cfg.test_evaluator['keep_results'] = True
    elif args.out is not None and not args.out.endswith(('.pkl', '.pickle')):
        raise ValueError(f'--out must name a .pkl file for an mmdet config, got {args.out}')
    check_inputs(cfg, 'test', checkpoint=args.checkpoint)
    fit_to_machine(cfg, args.launcher)
    return cfg
