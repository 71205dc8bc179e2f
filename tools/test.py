"""Evaluates a trained detector (mmdet) or segmentor (mmseg) checkpoint; the toolbox is read from the config.

    python tools/test.py configs/cpvt_maskrcnn.py work_dirs/cpvt_maskrcnn/epoch_12.pth
    python tools/test.py CONFIG CKPT --out results.pkl       # mmdet: dump predictions; mmseg: a folder of masks
    python tools/test.py CONFIG CKPT --show-dir vis           # save drawn predictions
    bash tools/dist_test.sh CONFIG CKPT 8

The same options as mmdet's and mmseg's tools/test.py. The checkpoint is read with torch's weights-only unpickler
plus the few types an mmengine checkpoint holds (vitpe_mm/engine/safe_load.py).
"""
import argparse
import os
import sys
import warnings
from copy import deepcopy
from pathlib import Path
from typing import List, Optional

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mmengine.config import ConfigDict, DictAction  # noqa: E402


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
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
    parser.add_argument('--launcher', choices=['none', 'pytorch', 'slurm', 'mpi'], default='none',
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
        warnings.warn('no tta_model in the config: using DetTTAModel with nms 0.5, 100 per image')
        cfg.tta_model = dict(type='DetTTAModel',
                             tta_cfg=dict(nms=dict(type='nms', iou_threshold=0.5), max_per_img=100))
    if 'tta_pipeline' not in cfg:
        warnings.warn('no tta_pipeline in the config: using the test pipeline with horizontal flip')
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


def setup_test_cfg(args: argparse.Namespace):
    """The config as `args` ask, checked and fitted to the machine (nothing built yet)."""
    from vitpe_mm.engine import check_inputs, fit_to_machine, load_config

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


def main(argv: Optional[List[str]] = None) -> dict:
    """Runs the test loop and returns its metrics; a configuration error (missing data / checkpoint, bad option)
    exits with status 2 and one message."""
    args = parse_args(argv)
    from vitpe_mm.engine import build_runner
    from vitpe_mm.engine.distributed import destroy_process_group

    try:
        cfg = setup_test_cfg(args)
    except (FileNotFoundError, ValueError) as err:  # what the user has to fix: one message, no traceback
        print(f'test.py: error: {err}', file=sys.stderr)
        sys.exit(2)
    runner = build_runner(cfg)  # starts the process group for a distributed run
    from vitpe_mm.analysis.sweep import CheckpointMatchHook, CheckpointMismatchError
    if not args.allow_mismatch:
        # mmengine loads test checkpoints non-strictly: another model's checkpoint would be evaluated half random
        runner.register_hook(CheckpointMatchHook())
    if args.out is not None and cfg.default_scope == 'mmdet':
        from mmdet.evaluation import DumpDetResults
        runner.test_evaluator.metrics.append(DumpDetResults(out_file_path=args.out))
    try:
        metrics = runner.test()
    except CheckpointMismatchError as err:
        destroy_process_group()
        print(f'test.py: error: {err} (--allow-mismatch evaluates it anyway)', file=sys.stderr)
        sys.exit(2)
    destroy_process_group()  # a gloo group left to the interpreter's exit can abort the process
    return metrics


if __name__ == '__main__':
    main()
