"""Evaluates detector (mmdet) or segmentor (mmseg) checkpoints at several test scales: how well does each hold up
away from the resolution it was trained at?

    python tools/eval_resolutions.py CONFIG CKPT [CKPT ...] --scales 0.5x 0.75x 1x 1.5x 2x
    python tools/eval_resolutions.py configs/cpvt_maskrcnn.py work_dirs/a/epoch_12.pth --scales 800x480 1333x800
    python tools/eval_resolutions.py SEG_CONFIG A.pth B.pth --labels a b --mode slide --scales 1x 1.5x
    python tools/eval_resolutions.py PEG_CONFIG peg.pth --also ABS_CONFIG abs.pth --labels peg abs --scales 1x 2x
    bash tools/dist_test.sh ... # or: torchrun --nproc_per_node 8 tools/eval_resolutions.py ... --launcher pytorch

Scales: WxH (the test Resize scale, w first as in the configs), N (NxN), or a factor of the config's own test scale
(0.5, 1.5x). Detection resizes with keep_ratio (the image fitted inside the scale); --no-keep-ratio resizes to it
exactly. Segmentation: --mode whole (the backbone sees the whole resized image) or slide (training-size windows,
--crop-size / --stride; default: the config's test_cfg).

Every checkpoint must hold the weights of its config's model (a checkpoint trained with another pe_type needs
its own config: --also CONFIG CHECKPOINT). For every checkpoint and scale it prints progress, then a table
(bbox AP, AP_S/M/L, mask AP | mIoU, aAcc, mAcc) and writes resolutions.{csv,json,md,png} to --out-dir. A scale
a model cannot run (e.g. pe_type='abs_nointerp' with a grid larger than its table) is recorded as n/a. The test
configs are set up by tools/test.py's own code (same checks, same machine fitting, same launchers).
"""
import argparse
import os
import sys
import time
from pathlib import Path
from typing import Dict, List, Optional

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from mmengine.config import DictAction  # noqa: E402

DEFAULT_PLOT_METRICS = {'mmdet': ('bbox_AP', 'AP_S', 'AP_L', 'mask_AP'), 'mmseg': ('mIoU', 'aAcc')}


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('config', help='test config (mmdet or mmseg)')
    parser.add_argument('checkpoints', nargs='+', help='checkpoint file(s) to evaluate with the config')
    parser.add_argument('--scales', nargs='+', required=True,
                        help='test scales: WxH, N, or factors of the config\'s test scale (0.5x 1x 1.5x)')
    parser.add_argument('--also', nargs=2, action='append', default=[], metavar=('CONFIG', 'CHECKPOINT'),
                        help='another checkpoint with its own config (e.g. another pe_type); repeatable')
    parser.add_argument('--labels', nargs='+', help='names of the checkpoints (positional ones, then --also ones) '
                        'in the table and plot (default: their file names)')
    parser.add_argument('--out-dir', help='where resolutions.{csv,json,md,png} and the runs\' logs go '
                        '(default: work_dirs/eval_resolutions/<config name>)')
    parser.add_argument('--mode', choices=('whole', 'slide'),
                        help="segmentation inference: 'whole' image or 'slide' windows (default: the config's)")
    parser.add_argument('--crop-size', type=int, nargs=2, metavar=('H', 'W'),
                        help='slide window (default: the training crop, model.data_preprocessor.size)')
    parser.add_argument('--stride', type=int, nargs=2, metavar=('H', 'W'),
                        help='slide step (default: 2/3 of the window)')
    parser.add_argument('--keep-ratio', action=argparse.BooleanOptionalAction, default=True,
                        help='fit the image inside the scale keeping its aspect ratio (default), or resize to it')
    parser.add_argument('--plot-metrics', nargs='+', help='metric columns to plot (default: bbox_AP AP_S AP_L '
                        'mask_AP for detection, mIoU aAcc for segmentation)')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction,
                        help='override settings of the config, key=value pairs')
    parser.add_argument('--launcher', choices=['none', 'pytorch', 'slurm', 'mpi'], default='none',
                        help='job launcher (as tools/test.py)')
    parser.add_argument('--verbose', action='store_true', help="keep mmengine's full logging for every run")
    parser.add_argument('--local_rank', '--local-rank', type=int, default=0)
    args = parser.parse_args(argv)
    args.runs = [(args.config, c) for c in args.checkpoints] + [tuple(pair) for pair in args.also]
    if args.labels is not None and len(args.labels) != len(args.runs):
        parser.error(f'--labels names {len(args.labels)} checkpoint(s), {len(args.runs)} given')
    if args.labels is not None and len(set(args.labels)) != len(args.labels):
        parser.error('--labels must be distinct')
    if (args.crop_size or args.stride) and args.mode != 'slide':
        parser.error('--crop-size / --stride go with --mode slide')
    if 'LOCAL_RANK' not in os.environ:
        os.environ['LOCAL_RANK'] = str(args.local_rank)
    return args


def checkpoint_labels(paths: List[str]) -> List[str]:
    """File names without extension; parent/name where those repeat; an index where even that repeats."""
    stems = [Path(p).stem for p in paths]
    labels = [s if stems.count(s) == 1 else f'{Path(p).parent.name}/{s}' for p, s in zip(paths, stems)]
    return [lab if labels.count(lab) == 1 else f'{lab}#{i}' for i, lab in enumerate(labels)]


def main(argv: Optional[List[str]] = None) -> List[Dict]:
    """Runs the sweep; returns its rows. Configuration errors exit with status 2 and one message."""
    args = parse_args(argv)
    from mmengine.dist import is_main_process

    from vitpe_mm.analysis import (
        columns_for,
        format_table,
        parse_scales,
        plot_metric_vs_scale,
        reference_scale,
        write_csv,
        write_json,
    )
    from vitpe_mm.analysis.sweep import evaluate_at_scales, scales_for
    from vitpe_mm.engine import init_distributed
    from vitpe_mm.engine.cli import parse_test_args, setup_test_cfg

    out_dir = Path(args.out_dir or Path('work_dirs') / 'eval_resolutions' / Path(args.config).stem)
    labels = args.labels or checkpoint_labels([checkpoint for _, checkpoint in args.runs])
    cfgs = {}
    try:
        specs = parse_scales(args.scales)
        for label, (config, checkpoint) in zip(labels, args.runs):
            test_args = parse_test_args([config, checkpoint, '--launcher', args.launcher,
                                         '--work-dir', str(out_dir / 'runs')])
            test_args.cfg_options = args.cfg_options
            cfgs[label] = setup_test_cfg(test_args)
        first = next(iter(cfgs.values()))
        toolbox = first.default_scope
        if any(cfg.default_scope != toolbox for cfg in cfgs.values()):
            raise ValueError('--also configs must be of the same toolbox as CONFIG (all mmdet or all mmseg)')
        for cfg in cfgs.values():  # a pipeline without one Resize or a factor without a scale fails here
            scales_for(cfg, specs)
        if args.mode is not None and toolbox != 'mmseg':
            raise ValueError(f'--mode is for segmentation (mmseg) configs; {args.config} is an {toolbox} config')
        columns = columns_for(toolbox)
        plot_names = args.plot_metrics or DEFAULT_PLOT_METRICS[toolbox]
        unknown = sorted(set(plot_names) - {c.name for c in columns})
        if unknown:
            raise ValueError(f'--plot-metrics {unknown} unknown; accepted: {", ".join(c.name for c in columns)}')
    except (FileNotFoundError, ValueError) as err:
        print(f'eval_resolutions.py: error: {err}', file=sys.stderr)
        sys.exit(2)

    init_distributed(first, args.launcher)  # now, so that only the main process prints (build_runner would later)
    start = time.time()
    try:
        rows = evaluate_at_scales(cfgs, specs, keep_ratio=args.keep_ratio, mode=args.mode, crop_size=args.crop_size,
                                  stride=args.stride, verbose=args.verbose)
    except ValueError as err:  # a checkpoint of another model than its config's
        print(f'eval_resolutions.py: error: {err}', file=sys.stderr)
        sys.exit(2)
    if not is_main_process():
        return rows

    title = f'{Path(args.config).stem}: keep_ratio={args.keep_ratio}'
    if toolbox == 'mmseg':
        title += f', {args.mode or first.model.get("test_cfg", {}).get("mode", "whole")} inference'
    table = format_table(rows, columns)
    print('\n' + table + '\n')
    meta = dict(config=args.config, toolbox=toolbox, checkpoints={lab: c for lab, (_, c) in zip(labels, args.runs)},
                configs={lab: cfg for lab, (cfg, _) in zip(labels, args.runs)},
                scales=[s.text for s in specs], reference_scale=reference_scale(first),
                keep_ratio=args.keep_ratio, mode=args.mode, crop_size=args.crop_size, stride=args.stride,
                seconds=round(time.time() - start, 1))
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / 'resolutions.md').write_text(table + '\n')
    written = [write_csv(out_dir / 'resolutions.csv', rows, columns),
               write_json(out_dir / 'resolutions.json', rows, columns, meta),
               out_dir / 'resolutions.md',
               plot_metric_vs_scale(rows, [c for c in columns if c.name in plot_names], out_dir / 'resolutions.png',
                                    title)]
    print('written: ' + ', '.join(str(p) for p in written))
    if all(r['status'] != 'ok' for r in rows):
        print('eval_resolutions.py: error: no checkpoint could be evaluated at any scale (see the notes above)',
              file=sys.stderr)
        sys.exit(1)
    return rows


if __name__ == '__main__':
    main()
