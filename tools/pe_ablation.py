"""One-command positional-encoding ablation on the mini ADE20K: the same backbone with PE = none / abs / abs_nointerp
/ peg / rel_bias, trained at one resolution with the same budget and seed, tested from 0.5x to 2x that resolution.

    python tools/pe_ablation.py                                   # CPVT-v2 (tiny) + semantic FPN, ~15-25 min on 2 cores
    python tools/pe_ablation.py --out-dir docs/ablation --budget-iters 300
    python tools/pe_ablation.py --backbone swin --pe-types none abs peg rel_bias sincos --scales 0.5x 1x 2x
    python tools/pe_ablation.py --smoke --out-dir /tmp/abl       # minutes: 2 iterations, tiny images, for testing

Every arm trains from scratch (tools/train.py's set-up: same checks, same machine fitting) on images resized to
--train-size squares, then is evaluated with whole-image inference on the validation images resized to
factor x --train-size squares (tools/test.py's set-up, vitpe_mm.analysis.sweep). 'abs_nointerp' cannot run on
grids larger than its table: those scales are n/a. Writes results.{md,csv,json} and plot.png to --out-dir (the
table and the plot after every arm, so an interrupted run keeps what it has); checkpoints and logs go to --work-dir.
--reuse skips training an arm whose final checkpoint is already in --work-dir. 'abs_nointerp' trains exactly as
'abs' (same table, used as it is on the training grid), so after an 'abs' arm it evaluates that arm's weights.

What it can show: on tiny synthetic data with a short schedule and one seed, the direction of the effects (which
PE loses accuracy away from the training resolution, which cannot run at all), not the paper's numbers.
"""
import argparse
import json
import shlex
import sys
import time
from pathlib import Path
from typing import Dict, List, Optional

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

SMOKE = dict(budget_iters=2, batch_size=2, train_size=64, scales=['0.5x', '1x', '2x'], train_images=4, val_images=2)
CAVEAT = (
    'What this can and cannot show: the models are tiny, trained from scratch for a few hundred iterations on a '
    'procedurally drawn mini ADE20K (a hundred-odd images of flat textured regions, 15 classes). Such short runs '
    'are chaotic: another seed, or even a numerically equivalent change of a kernel, moves single cells of these '
    'tables by several mIoU points (up to 8 between two runs with the README settings, docs/ablation/repeat), '
    'more than the effects the CPVT paper reports (about 1 point for interpolated absolute PE at 384, about 4 for'
    ' no PE). Read one run as a check that everything runs and as the size of the effects shared by all arms (the'
    ' test resolution itself), and compare PE types only with several seeds (--seeds 0 1 2: means and spread) and'
    ' larger budgets. What holds in every run: a non-interpolated table cannot run on grids larger than its '
    'training grid (n/a), and on smaller grids cropping and resampling it give the same accuracy within the '
    "noise. The numbers are not the paper's, which come from ImageNet-scale training.")


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    from vitpe_mm.analysis.ablation import ABLATION_BACKBONES, ABLATION_PE_TYPES, DEFAULT_FACTORS
    from vitpe_mm.layers import PE_TYPES

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--backbone', choices=tuple(ABLATION_BACKBONES), default='cpvt',
                        help='backbone (its demo semantic-FPN config, shrunk): cpvt (default), swin or vit')
    parser.add_argument('--pe-types', nargs='+', choices=PE_TYPES, default=list(ABLATION_PE_TYPES),
                        help=f'arms of the ablation (default: {" ".join(ABLATION_PE_TYPES)})')
    parser.add_argument('--budget-iters', type=int, default=300, help='training iterations per arm (default 300)')
    parser.add_argument('--batch-size', type=int, default=8, help='training batch (default 8)')
    parser.add_argument('--train-size', type=int, default=128, help='training resolution, square (default 128)')
    parser.add_argument('--scales', nargs='+', default=[f'{f:g}x' for f in DEFAULT_FACTORS],
                        help='test scales: factors of the training size (default 0.5x 0.75x 1x 1.25x 1.5x 2x) or WxH')
    parser.add_argument('--lr', type=float, default=2e-3, help='AdamW learning rate (default 2e-3)')
    parser.add_argument('--seeds', type=int, nargs='+', default=[0],
                        help='training seed(s), the same for every arm (default 0); with several, every arm is '
                        'trained once per seed and the tables show means and the spread over seeds')
    parser.add_argument('--data-root', help='mini ADE20K tree (default: data/pe_ablation/mini_ade, written when '
                        'missing; with --smoke: OUT_DIR/data/mini_ade)')
    parser.add_argument('--train-images', type=int, default=128, help='training images of a generated tree (128)')
    parser.add_argument('--val-images', type=int, default=48, help='validation images of a generated tree (48)')
    parser.add_argument('--out-dir', default='work_dirs/pe_ablation',
                        help='where results.{md,csv,json} and plot.png go (default work_dirs/pe_ablation)')
    parser.add_argument('--work-dir', help='checkpoints and logs of the runs (default: OUT_DIR/runs)')
    parser.add_argument('--reuse', action='store_true', help='skip training arms whose final checkpoint exists')
    parser.add_argument('--threads', type=int, help='torch CPU threads (default: torch\'s choice)')
    parser.add_argument('--smoke', action='store_true',
                        help='minimal budget for testing: ' + ', '.join(f'{k}={v}' for k, v in SMOKE.items()))
    parser.add_argument('--verbose', action='store_true', help="keep mmengine's full logging")
    parser.add_argument('--report-only', action='store_true',
                        help='no training or testing: rewrite results.md and plot.png from OUT_DIR/results.json')
    args = parser.parse_args(argv)
    if args.smoke:
        defaults = {a.dest: a.default for a in parser._actions}
        for key, value in SMOKE.items():  # what the command line sets explicitly wins
            if getattr(args, key) == defaults[key]:
                setattr(args, key, value)
    for name in ('budget_iters', 'batch_size', 'train_size', 'train_images', 'val_images'):
        if getattr(args, name) < 1:
            parser.error(f'--{name.replace("_", "-")} must be positive, got {getattr(args, name)}')
    if len(set(args.pe_types)) != len(args.pe_types) or len(set(args.seeds)) != len(args.seeds):
        parser.error('--pe-types and --seeds take no repeats')
    args.command = 'python tools/pe_ablation.py ' + ' '.join(shlex.quote(a) for a in (argv if argv is not None
                                                                                      else sys.argv[1:]))
    return args


def ensure_data(args: argparse.Namespace) -> Path:
    """The mini ADE20K tree to use: generated when it is a `mini_ade` folder that is missing or differs."""
    from vitpe_mm.datasets import ensure_mini_datasets

    default = Path(args.out_dir) / 'data' / 'mini_ade' if args.smoke else ROOT / 'data' / 'pe_ablation' / 'mini_ade'
    root = Path(args.data_root) if args.data_root else default
    if root.name == 'mini_ade' and (args.data_root is None or not (root / 'images').is_dir()):
        ensure_mini_datasets(str(root.parent), ade_train=args.train_images, ade_val=args.val_images, only='ade',
                             progress=lambda line: print(f'[data] {line}', flush=True))
    if not (root / 'images' / 'validation').is_dir():
        raise FileNotFoundError(f'{root} is no ADE20K tree (images/validation missing); leave --data-root out to '
                                'generate the mini ADE20K')
    return root


def write_results(out_dir: Path, run_rows: List[Dict], meta: Dict) -> List[Path]:
    """results.{md,csv,json} and plot.png for the runs done so far (with several seeds: their means, the spread,
    and results_per_seed.csv)."""
    from vitpe_mm.analysis import SEG_COLUMNS, format_pivot, format_table, write_csv, write_json
    from vitpe_mm.analysis.ablation import aggregate_seeds, summarize_ablation

    miou, aacc = SEG_COLUMNS[0], SEG_COLUMNS[1]
    seeds = meta['seeds']
    rows, spreads = aggregate_seeds(run_rows, SEG_COLUMNS) if len(seeds) > 1 else (run_rows, [])
    summary = summarize_ablation(rows, 'mIoU')
    seed_text = f'seed {seeds[0]}' if len(seeds) == 1 else f'mean of seeds {", ".join(map(str, seeds))}'
    title = (f'PE ablation: {meta["backbone"]} + semantic FPN, mini ADE20K, trained at {meta["train_size"]}^2, '
             f'{meta["budget_iters"]} iters x {meta["batch_size"]}, {seed_text}')
    lines = [f'# {title}', '', f'Command: `{meta["command"]}`', '',
             f'Every arm: the same backbone and head, trained from scratch at {meta["train_size"]}x{meta["train_size"]}'
             f' (images resized, aspect ratio not kept) for {meta["budget_iters"]} iterations of batch '
             f'{meta["batch_size"]} (AdamW, lr {meta["lr"]}, {seed_text}) on {meta["train_images"]} '
             f'images; tested on {meta["val_images"]} validation images resized to factor x {meta["train_size"]} '
             'squares, whole-image inference (the backbone sees grids factor x the training grid). mIoU over the 15 '
             'drawn classes, in %. n/a: the model cannot run at that scale.', '',
             '## mIoU (change from the training scale in brackets)', '', format_pivot(rows, miou), '']
    has_baseline = len({r['label'] for r in rows}) > 1 and any(r['label'] == 'none' and r['status'] == 'ok'
                                                                for r in rows)
    if has_baseline:
        lines += ['## mIoU minus the no-PE arm at the same scale', '',
                  'The test resolution changes more than the grid the PE sees: the objects\' size in pixels and the '
                  'output resolution change too, and every arm shares those effects. The difference from the arm '
                  'without PE at the same scale leaves what each encoding adds (or costs) at that resolution.', '',
                  format_pivot(rows, miou, baseline='none'), '']
    if spreads:
        lines += ['## Spread of mIoU over the seeds (max - min)', '', format_pivot(rows, spreads[0], with_delta=False),
                  '']
    lines += ['## aAcc', '', format_pivot(rows, aacc), '',
              '## Largest drop / gain in mIoU away from the training scale', '',
              '| PE | mIoU at 1x | worst change | best change | n/a at |', '| --- | ---: | ---: | ---: | --- |']
    for s in summary:
        worst = f'{s["worst"][0]:+.2f} at {s["worst"][1]:g}x' if s['worst'] else '-'
        best = f'{s["best"][0]:+.2f} at {s["best"][1]:g}x' if s['best'] else '-'
        at_ref = f'{s["at_reference"]:.2f}' if s['at_reference'] is not None else '-'
        lines.append(f'| {s["label"]} | {at_ref} | {worst} | {best} | '
                     f'{", ".join(f"{f:g}x" for f in s["na"]) or "-"} |')
    timing = meta.get('timings', {})
    lines += ['', '## All rows', '', format_table(rows, SEG_COLUMNS + tuple(spreads)), '',
              'Run time (s): ' + ', '.join(f'{k} train {v.get("train", 0):.0f} + eval {v.get("eval", 0):.0f}'
                                           for k, v in timing.items()) + f'; total {meta.get("seconds", 0):.0f}.',
              '', CAVEAT, '']
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / 'results.md').write_text('\n'.join(lines))
    meta = dict(meta, summary_mIoU=summary, run_rows=run_rows if spreads else None)
    columns = SEG_COLUMNS + tuple(spreads)
    written = [write_csv(out_dir / 'results_per_seed.csv', run_rows, SEG_COLUMNS)] if spreads else []
    return written + [
            out_dir / 'results.md', write_csv(out_dir / 'results.csv', rows, columns),
            write_json(out_dir / 'results.json', rows, columns, json.loads(json.dumps(meta, default=str))),
            plot_ablation(rows, out_dir / 'plot.png', title, has_baseline)]


def plot_ablation(rows: List[Dict], path: Path, title: str, has_baseline: bool) -> Path:
    """mIoU and aAcc vs test scale, and (with a 'none' arm) mIoU minus the no-PE arm at the same scale."""
    from vitpe_mm.analysis import SEG_COLUMNS, baseline_difference, plot_metric_vs_scale

    columns = [SEG_COLUMNS[0], SEG_COLUMNS[1]]
    if has_baseline:
        diff_rows, diff = baseline_difference(rows, SEG_COLUMNS[0], 'none')
        by_key = {(r['label'], r['scale']): r for r in diff_rows}
        rows = [dict(r, **{diff.name: by_key.get((r['label'], r['scale']), {}).get(diff.name)}) for r in rows]
        columns.append(diff)
    return plot_metric_vs_scale(rows, columns, path, title, xlabel='test scale (factor of the training size)')


def train_arm(train_tool, config: str, work_dir: Path, overrides: Dict, label: str, verbose: bool) -> None:
    from vitpe_mm.engine import build_runner

    train_args = train_tool.parse_args([config, '--work-dir', str(work_dir)])
    train_args.cfg_options = overrides
    cfg = train_tool.setup_train_cfg(train_args)
    if not verbose:
        cfg.log_level = 'WARNING'
        interval = max(1, overrides['default_hooks.logger.interval'])
        cfg.custom_hooks = list(cfg.custom_hooks) + [dict(type='ProgressHook', prefix=label, interval=interval)]
    cfg.experiment_name = f'train_{label}'
    build_runner(cfg).train()


def main(argv: Optional[List[str]] = None) -> List[Dict]:
    args = parse_args(argv)
    import torch

    from vitpe_mm.analysis import SEG_COLUMNS, format_pivot, parse_scales
    from vitpe_mm.analysis.ablation import (ABLATION_BACKBONES, ablation_overrides, aggregate_seeds, mini_ade_classes,
                                            run_label)
    from vitpe_mm.analysis.progress import ProgressHook  # noqa: F401  (registers the hook)
    from vitpe_mm.analysis.sweep import evaluate_at_scales
    from vitpe_mm.engine.tool_modules import load_tool

    if args.threads:
        torch.set_num_threads(args.threads)
    out_dir = Path(args.out_dir)
    if args.report_only:
        from vitpe_mm.analysis import read_json
        if not (out_dir / 'results.json').is_file():
            print(f'pe_ablation.py: error: {out_dir / "results.json"} not found (run the ablation first)',
                  file=sys.stderr)
            sys.exit(2)
        payload = read_json(out_dir / 'results.json')
        meta = {k: v for k, v in payload['meta'].items() if k not in ('summary_mIoU', 'run_rows')}
        meta.setdefault('seeds', [meta.pop('seed', 0)])  # results written before --seeds
        run_rows = payload['meta'].get('run_rows') or payload['rows']
        written = write_results(out_dir, run_rows, meta)
        print('written: ' + ', '.join(str(p) for p in written))
        return run_rows
    work_root = Path(args.work_dir) if args.work_dir else out_dir / 'runs'
    try:
        specs = parse_scales(args.scales)
        data_root = ensure_data(args)
    except (FileNotFoundError, ValueError) as err:
        print(f'pe_ablation.py: error: {err}', file=sys.stderr)
        sys.exit(2)
    train_tool, test_tool = load_tool('train'), load_tool('test')
    config = str(ROOT / ABLATION_BACKBONES[args.backbone].config)
    classes = mini_ade_classes()
    meta = dict(command=args.command, backbone=args.backbone, config=ABLATION_BACKBONES[args.backbone].config,
                pe_types=args.pe_types, budget_iters=args.budget_iters, batch_size=args.batch_size,
                train_size=args.train_size, lr=args.lr, seeds=args.seeds, scales=[s.text for s in specs],
                data_root=str(data_root), train_images=len(list((data_root / 'images' / 'training').glob('*.jpg'))),
                val_images=len(list((data_root / 'images' / 'validation').glob('*.jpg'))), classes=list(classes),
                inference='whole', keep_ratio=False, threads=torch.get_num_threads(), timings={})
    start = time.time()
    rows: List[Dict] = []
    runs = [(pe_type, seed) for pe_type in args.pe_types for seed in args.seeds]
    trained: Dict[tuple, Path] = {}
    for k, (pe_type, seed) in enumerate(runs, 1):
        name = run_label(pe_type, seed, args.seeds)
        label = f'[{k}/{len(runs)} {name}]'
        overrides = ablation_overrides(args.backbone, pe_type, args.train_size, args.budget_iters, args.batch_size,
                                       str(data_root), classes, seed=seed, lr=args.lr)
        work_dir = work_root / pe_type if len(args.seeds) == 1 else work_root / pe_type / f'seed{seed}'
        checkpoint = work_dir / f'iter_{args.budget_iters}.pth'
        t0 = time.time()
        if pe_type == 'abs_nointerp' and ('abs', seed) in trained and args.train_size % 32 == 0:
            # on the training grid the table is used as it is, cropped or resampled: the same training as 'abs'
            checkpoint = trained[('abs', seed)]
            print(f'{label} trains exactly as abs (the table is only cropped instead of resampled at other grids): '
                  f'evaluating {checkpoint}', flush=True)
        elif args.reuse and checkpoint.is_file():
            print(f'{label} reusing {checkpoint}', flush=True)
        else:
            print(f'{label} training {args.budget_iters} iterations at {args.train_size}x{args.train_size}', flush=True)
            train_arm(train_tool, config, work_dir, overrides, label, args.verbose)
        trained[(pe_type, seed)] = checkpoint
        t1 = time.time()
        test_args = test_tool.parse_args([config, str(checkpoint), '--work-dir', str(work_dir / 'eval')])
        test_args.cfg_options = overrides
        test_cfg = test_tool.setup_test_cfg(test_args)
        rows += evaluate_at_scales({name: test_cfg}, specs, keep_ratio=False, mode='whole', verbose=args.verbose,
                                   progress=lambda line: print(line, flush=True))
        meta['timings'][name] = dict(train=round(t1 - t0, 1), eval=round(time.time() - t1, 1))
        meta['seconds'] = round(time.time() - start, 1)
        written = write_results(out_dir, rows, meta)
    shown = aggregate_seeds(rows, SEG_COLUMNS)[0] if len(args.seeds) > 1 else rows
    print('\n' + format_pivot(shown, SEG_COLUMNS[0]) + '\n')
    print(f'done in {time.time() - start:.0f}s; written: ' + ', '.join(str(p) for p in written))
    return rows


if __name__ == '__main__':
    main()
