"""The positional-encoding resolution study: the same backbone with one PE per arm, trained from scratch at one size
with several seeds, tested on other sizes by one of three sweeps, reported as means with 95% intervals and paired
differences between arms (design: docs/ablation/STUDY.md).

    python tools/pe_ablation.py --sweep canvas                  # CPVT-v2 + semantic FPN: only the token grid changes
    python tools/pe_ablation.py --sweep zoom                    # the same models, test images resized (grid + scale)
    python tools/pe_ablation.py --sweep probe                   # labels defined by absolute position
    python tools/pe_ablation.py --sweep canvas --task det       # box detection (Faster R-CNN) on the mini COCO canvases
    python tools/pe_ablation.py --sweep canvas --backbone swin  # SwinRPB (or vit: ViTPE)
    python tools/pe_ablation.py --smoke --sweep canvas --out-dir /tmp/abl   # about a minute: tiny budget, for tests

Sweeps: 'zoom' resizes the 1x validation canvases to factor x the training size (token grid, object size in
pixels and output resolution change together); 'canvas' tests on validation canvases drawn at factor x the training
size with objects and textures at the training pixel scale (only the token grid changes); 'probe' is the canvas
sweep on the position probe (each texture is one class in the top half and another in the bottom half, the two
halves pixel-identical: a model without usable absolute position stays at or below 33.3 mIoU).

Arms are PE names as the backbone takes them (`pe_type`), 'a+b' for a composition (`pe_type=['a', 'b']`); an arm
the installed backbone does not accept is listed as skipped with the backbone's reason. Every arm trains once per
seed; zoom and canvas train on the same tree, so with the same settings the second sweep reuses the first one's
checkpoints (in --work-dir; --retrain trains again). 'abs_nointerp' trains exactly as 'abs' (the same table, used
as it is on the training grid) and evaluates the 'abs' weights of the same seed. Writes results.{md,csv,json},
results_change.csv (each arm's change from 1x, and that change minus the baseline's), results_per_seed.csv and
plot.png to --out-dir after every run (an interrupted study keeps what it has).
"""
import argparse
import csv
import json
import shlex
import sys
import time
from pathlib import Path
from typing import Dict, List, Optional

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from vitpe_mm.analysis.study_runs import train_run  # noqa: E402  (tests replace it: module level)

SMOKE = dict(budget_iters=2, batch_size=2, train_size=64, scales=['0.5x', '1x', '2x'], train_images=4, val_images=2,
             seeds=[0, 1])
CAVEAT = (
    'What this can and cannot show: the models are tiny and trained from scratch for minutes on procedurally drawn '
    'scenes. The intervals are over training seeds (data order, augmentation draws and initialisation) on one '
    'fixed validation set: they say how far another seed would move a number, not how it would change on other '
    'data or at ImageNet-scale training, and they are not corrected for the number of comparisons (with 9 arms '
    'and 6 scales, a few of 48 differences will exclude 0 by chance at 95%). A difference in parentheses is not '
    'resolved: its interval contains 0.')


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    from vitpe_mm.analysis.ablation import ABLATION_BACKBONES, DEFAULT_FACTORS
    from vitpe_mm.analysis.study import DEFAULT_SEEDS, STUDY_ARMS, SWEEPS, TASKS

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--sweep', choices=tuple(SWEEPS), default='canvas',
                        help='canvas (default: only the token grid changes), zoom (test images resized) or probe')
    parser.add_argument('--task', choices=TASKS, default='seg',
                        help='seg (semantic FPN, mini ADE20K canvases; default) or det (box-only Mask R-CNN, i.e. '
                        'Faster R-CNN, mini COCO canvases); the probe is seg only')
    parser.add_argument('--backbone', choices=tuple(ABLATION_BACKBONES), default='cpvt',
                        help='cpvt (CPVTv2, default), swin (SwinRPB) or vit (ViTPE), their demo configs shrunk')
    parser.add_argument('--arms', '--pe-types', dest='arms', nargs='+', default=list(STUDY_ARMS),
                        help=f'PE names, a+b for a composition (default: {" ".join(STUDY_ARMS)})')
    parser.add_argument('--baseline', default='none',
                        help='the arm every other arm is compared with, seed by seed (default none)')
    parser.add_argument('--seeds', type=int, nargs='+', default=list(DEFAULT_SEEDS),
                        help='training seeds, the same for every arm (default 0 1 2 3 4)')
    parser.add_argument('--level', type=float, default=0.95, help='coverage of the intervals (default 0.95)')
    parser.add_argument('--budget-iters', type=int, default=400, help='training iterations per run (default 400)')
    parser.add_argument('--batch-size', type=int, default=8, help='training batch (default 8)')
    parser.add_argument('--train-size', type=int, default=128, help='training canvas side in pixels (default 128)')
    parser.add_argument('--scales', nargs='+', default=[f'{f:g}x' for f in DEFAULT_FACTORS],
                        help='test scales as factors of the training size (default 0.5x 0.75x 1x 1.25x 1.5x 2x)')
    parser.add_argument('--lr', type=float, default=2e-3, help='AdamW learning rate (default 2e-3)')
    parser.add_argument('--train-images', type=int, default=256, help='training images of the tree (default 256)')
    parser.add_argument('--val-images', type=int, default=64,
                        help='validation images per canvas size (default 64)')
    parser.add_argument('--data-root', help='folder of the study trees (default data/pe_study; with --smoke '
                        'OUT_DIR/data); a tree is written there when missing or made with other settings')
    parser.add_argument('--out-dir', help='where the tables and the plot go (default work_dirs/pe_study/'
                        'SWEEP_TASK_BACKBONE)')
    parser.add_argument('--work-dir', help='checkpoints and logs (default work_dirs/pe_study/runs/<tree and '
                        'budget>: shared by the sweeps that train on the same tree)')
    parser.add_argument('--retrain', action='store_true', help='train again even when a run\'s checkpoint exists')
    parser.add_argument('--reuse', action='store_true', help=argparse.SUPPRESS)  # the default now (old commands)
    parser.add_argument('--threads', type=int, help='torch CPU threads per run (default: torch\'s choice; 1 with '
                        '--jobs above 1)')
    parser.add_argument('--jobs', type=int, default=1,
                        help='runs at a time, each in its own worker process (default 1: in this process). On a '
                        'small CPU machine, --jobs N --threads 1 with N cores beats one run on N threads')
    parser.add_argument('--smoke', action='store_true',
                        help='minimal budget for testing: ' + ', '.join(f'{k}={v}' for k, v in SMOKE.items()))
    parser.add_argument('--verbose', action='store_true', help="keep mmengine's full logging")
    parser.add_argument('--report-only', action='store_true',
                        help='no training or testing: rewrite the tables and the plot from OUT_DIR/results.json')
    args = parser.parse_args(argv)
    if args.smoke:
        defaults = {a.dest: a.default for a in parser._actions}
        for key, value in SMOKE.items():  # what the command line sets explicitly wins
            if getattr(args, key) == defaults[key]:
                setattr(args, key, value)
    if args.jobs > 1 and args.threads is None:
        args.threads = 1
    for name in ('budget_iters', 'batch_size', 'train_size', 'train_images', 'val_images', 'jobs'):
        if getattr(args, name) < 1:
            parser.error(f'--{name.replace("_", "-")} must be positive, got {getattr(args, name)}')
    if not 0 < args.level < 1:
        parser.error(f'--level must be in (0, 1), e.g. 0.95, got {args.level}')
    if len(set(args.arms)) != len(args.arms) or len(set(args.seeds)) != len(args.seeds):
        parser.error('--arms and --seeds take no repeats')
    if args.sweep == 'probe' and args.task != 'seg':
        parser.error('the position probe is a segmentation task (labels per pixel): leave --task out or use seg')
    args.command = 'python tools/pe_ablation.py ' + ' '.join(shlex.quote(a) for a in (argv if argv is not None
                                                                                      else sys.argv[1:]))
    if args.out_dir is None:
        args.out_dir = str(ROOT / 'work_dirs' / 'pe_study' / f'{args.sweep}_{args.task}_{args.backbone}')
    return args


def ensure_tree(args: argparse.Namespace, kind: str, factors: List[float]) -> Path:
    """The study tree of `kind` with validation canvases at `factors` (written when missing or different)."""
    from vitpe_mm.datasets import ensure_study_tree

    root = Path(args.data_root) if args.data_root else (Path(args.out_dir) / 'data' if args.smoke
                                                        else ROOT / 'data' / 'pe_study')
    return ensure_study_tree(str(root), kind, args.train_size, factors, args.train_images, args.val_images,
                             progress=lambda line: print(f'[data] {line}', flush=True))


def write_results(out_dir: Path, run_rows: List[Dict], meta: Dict) -> List[Path]:
    """results.md / results.csv (per cell: mean, interval, paired difference) / results_per_seed.csv /
    results.json / plot.png for the runs done so far."""
    from vitpe_mm.analysis import ROW_FIELDS, MetricColumn, format_table
    from vitpe_mm.analysis.plotting import plot_study
    from vitpe_mm.analysis.stats import (
        blind_pair_miou_bound,
        cell_intervals,
        change_from_reference,
        paired_differences,
    )
    from vitpe_mm.analysis.study import SWEEPS, cell_records, difference_table, interval_table

    metric, level, baseline = meta['metric'], meta['level'], meta['baseline']
    sweep = SWEEPS[meta['sweep']]
    cells = cell_intervals(run_rows, metric, level)
    arms = list(dict.fromkeys(r['arm'] for r in run_rows))
    diffs = paired_differences(run_rows, metric, baseline, level) if baseline in arms and len(arms) > 1 else []
    records = cell_records(cells, diffs)
    # what leaving the training size costs each arm, apart from how good it is there: the change from 1x (same
    # seed), and that change minus the baseline's (a difference of differences, paired by seed)
    has_reference = any(r['factor'] is not None and abs(r['factor'] - 1.0) < 1e-9 for r in run_rows)
    changes = change_from_reference(run_rows, metric) if has_reference else []
    change_cells = cell_intervals(changes, metric, level) if changes else []
    change_diffs = (paired_differences(changes, metric, baseline, level) if changes and baseline in arms
                    and len(arms) > 1 else [])
    change_records = cell_records(change_cells, change_diffs)
    seeds = meta['seeds']
    chance = blind_pair_miou_bound() if sweep.probe else None
    title = (f'PE study, {meta["sweep"]} sweep: {meta["backbone"]} ({meta["task"]}), trained at '
             f'{meta["train_size"]}^2, {meta["budget_iters"]} iters x {meta["batch_size"]}, {len(seeds)} seeds')
    pct = int(round(100 * level))
    lines = [f'# {title}', '', f'Command: `{meta["command"]}`', '',
             f'Sweep: {sweep.changes}. Every arm: the same backbone and head, trained from scratch on '
             f'{meta["train_images"]} canvases of {meta["train_size"]}x{meta["train_size"]} for '
             f'{meta["budget_iters"]} iterations of batch {meta["batch_size"]} (AdamW, lr {meta["lr"]}), once per '
             f'seed ({", ".join(map(str, seeds))}: data order, augmentation and initialisation), tested on '
             f'{meta["val_images"]} validation images per scale, whole-image inference. {metric} in %.', '',
             f'## {metric}: mean ± half-width of the {pct}% t-interval over the seeds', '',
             interval_table(cells, metric, skipped=meta.get('skipped')), '']
    if chance is not None:
        lines += [f'A model that cannot tell the top half from the bottom half scores at most {chance:.1f} mIoU '
                  '(it gives both copies of a texture the same class; with perfect texture recognition each of '
                  'the two classes then gets 1/3 IoU at best).', '']
    if diffs:
        lines += [f'## {metric} minus {baseline}, paired by seed: mean [{pct}% interval]', '',
                  'Each arm\'s difference from the baseline arm trained with the same seed, at the same scale; in '
                  'parentheses when the interval contains 0 (not resolved).', '',
                  difference_table(diffs, metric), '']
    if change_cells:
        lines += [f'## Change from the training scale: {metric} at the scale minus at 1x, same seed: mean ± '
                  f'half-width of the {pct}% t-interval', '',
                  'What leaving the training size costs each arm, whatever its accuracy at 1x.', '',
                  interval_table(change_cells, f'{metric} change'), '']
    if change_diffs:
        lines += [f'## That change minus {baseline}\'s, paired by seed: mean [{pct}% interval]', '',
                  f'Positive: the arm loses less (or gains more) than {baseline} when the test size leaves the '
                  'training size; in parentheses when the interval contains 0 (not resolved).', '',
                  difference_table(change_diffs, f'{metric} change'), '']
    ref = [c for c in cells if c['factor'] is not None and abs(c['factor'] - 1.0) < 1e-9 and c['interval']]
    if ref:
        lines += ['## Seed spread at the training scale', '',
                  '| arm | sd over seeds | max - min | values by seed |', '| --- | ---: | ---: | --- |']
        for c in ref:
            values = [v for v in c['values'].values() if v is not None]
            sd = c['interval'].sd
            lines.append(f'| {c["arm"]} | {"-" if sd is None else f"{sd:.2f}"} | {max(values) - min(values):.2f} | '
                         + ', '.join(f'{s}: {v:.2f}' for s, v in c['values'].items() if v is not None) + ' |')
        lines.append('')
    if meta.get('skipped'):
        lines += ['## Skipped arms', '', '| arm | why |', '| --- | --- |']
        lines += [f'| {arm} | {reason} |' for arm, reason in meta['skipped'].items()]
        lines.append('')
    columns = [MetricColumn(c, c, 1.0, 2, optional=True) for c in meta['columns']]
    timing = meta.get('timings', {})
    lines += ['## All runs', '', format_table(run_rows, columns), '',
              'Run time (s): ' + ', '.join(f'{k} train {v.get("train", 0):.0f} + eval {v.get("eval", 0):.0f}'
                                           for k, v in timing.items()) + f'; total {meta.get("seconds", 0):.0f}.',
              '', CAVEAT, '']
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / 'results.md').write_text('\n'.join(lines))
    per_seed_fields = ['arm', 'seed'] + list(ROW_FIELDS) + [c.name for c in columns]
    for name, fields, records_ in (('results.csv', list(records[0]) if records else ['arm', 'scale'], records),
                                   ('results_change.csv', list(change_records[0]) if change_records
                                    else ['arm', 'scale'], change_records),
                                   ('results_per_seed.csv', per_seed_fields, run_rows)):
        with (out_dir / name).open('w', newline='') as f:
            writer = csv.DictWriter(f, fieldnames=fields, extrasaction='ignore')
            writer.writeheader()
            for record in records_:
                writer.writerow({k: '' if record.get(k) is None else record.get(k) for k in fields})
    per_seed = out_dir / 'results_per_seed.csv'
    payload = dict(meta=meta, cells=records, change_cells=change_records, run_rows=run_rows)
    (out_dir / 'results.json').write_text(json.dumps(payload, indent=1, default=str) + '\n')
    plot = plot_study(cells, diffs, out_dir / 'plot.png', metric, title, chance=chance, change_diffs=change_diffs,
                      xlabel='test scale (factor of the training size)' +
                      (': resized 1x canvases' if sweep.resized else ': canvases drawn at that size'))
    return [out_dir / 'results.md', out_dir / 'results.csv', out_dir / 'results_change.csv', per_seed,
            out_dir / 'results.json', plot]


def _report_only(out_dir: Path) -> List[Dict]:
    if not (out_dir / 'results.json').is_file():
        print(f'pe_ablation.py: error: {out_dir / "results.json"} not found (run the study first)', file=sys.stderr)
        sys.exit(2)
    payload = json.loads((out_dir / 'results.json').read_text())
    written = write_results(out_dir, payload['run_rows'], payload['meta'])
    print('written: ' + ', '.join(str(p) for p in written))
    return payload['run_rows']


def main(argv: Optional[List[str]] = None) -> List[Dict]:
    args = parse_args(argv)
    out_dir = Path(args.out_dir)
    if args.report_only:
        return _report_only(out_dir)
    import torch

    from vitpe_mm.analysis import columns_for, parse_scales
    from vitpe_mm.analysis.ablation import ABLATION_BACKBONES
    from vitpe_mm.analysis.progress import ProgressHook  # noqa: F401  (registers the hook)
    from vitpe_mm.analysis.study import (
        SWEEPS,
        arm_support,
        study_classes,
        study_data_kind,
        study_metric,
        study_overrides,
    )
    from vitpe_mm.analysis.study_runs import RunOutcome, StudyRun, run_schedule
    from vitpe_mm.engine import load_config

    if args.threads:
        torch.set_num_threads(args.threads)
    sweep = SWEEPS[args.sweep]
    kind = study_data_kind(args.sweep, args.task)
    try:
        specs = parse_scales(args.scales)
        if any(s.factor is None for s in specs):
            raise ValueError('the study takes test scales as factors of the training size (0.5x 1x 2x), not WxH')
        data_root = ensure_tree(args, kind, [s.factor for s in specs])  # zoom and canvas: one tree
    except (FileNotFoundError, ValueError) as err:
        print(f'pe_ablation.py: error: {err}', file=sys.stderr)
        sys.exit(2)
    entry = ABLATION_BACKBONES[args.backbone]
    config = str(ROOT / (entry.config if args.task == 'seg' else entry.det_config))
    classes = study_classes(kind)
    metric = study_metric(args.task)
    budget = f'{args.train_size}px_{args.budget_iters}it_b{args.batch_size}_lr{args.lr:g}_n{args.train_images}'
    work_root = Path(args.work_dir) if args.work_dir else (
        out_dir / 'runs' if args.smoke else ROOT / 'work_dirs' / 'pe_study' / 'runs' /
        f'{kind}_{args.task}_{args.backbone}_{budget}')

    def overrides_for(arm: str, seed: int) -> Dict:
        return study_overrides(args.backbone, args.task, arm, args.train_size, args.budget_iters, args.batch_size,
                               str(data_root), classes, seed=seed, lr=args.lr)

    skipped: Dict[str, str] = {}
    for arm in args.arms:
        try:
            backbone_cfg = load_config(config, overrides_for(arm, args.seeds[0])).model.backbone
            reason = arm_support(backbone_cfg.to_dict() if hasattr(backbone_cfg, 'to_dict') else backbone_cfg, arm)
        except ValueError as err:
            reason = f'ValueError: {err}'
        if reason is not None:
            skipped[arm] = reason
            print(f'[skip] {arm}: the {args.backbone} backbone does not take it ({reason})', flush=True)
    arms = [a for a in args.arms if a not in skipped]
    if args.baseline not in args.arms:
        print(f'[note] baseline {args.baseline!r} is not an arm: no paired differences', flush=True)
    meta = dict(command=args.command, sweep=args.sweep, task=args.task, backbone=args.backbone,
                config=str(Path(config).relative_to(ROOT)), arms=args.arms, skipped=skipped, baseline=args.baseline,
                seeds=args.seeds, level=args.level, metric=metric.name, budget_iters=args.budget_iters,
                batch_size=args.batch_size, train_size=args.train_size, lr=args.lr, scales=[s.text for s in specs],
                data_root=str(data_root), train_images=args.train_images, val_images=args.val_images,
                classes=list(classes), columns=[c.name for c in columns_for('mmseg' if args.task == 'seg'
                                                                            else 'mmdet')],
                inference='whole', threads=torch.get_num_threads(), jobs=args.jobs, timings={})
    start = time.time()
    rows: List[Dict] = []
    written: List[Path] = []
    if not arms:
        meta['seconds'] = 0.0
        written = write_results(out_dir, rows, meta)
    # seed-major: an interrupted study has every arm at its first seeds rather than some arms at every seed
    order = [(arm, seed) for seed in args.seeds for arm in arms]
    runs = []
    for k, (arm, seed) in enumerate(order, 1):
        work_dir = work_root / arm / f'seed{seed}'
        checkpoint, train, after = work_dir / f'iter_{args.budget_iters}.pth', True, None
        if arm == 'abs_nointerp' and 'abs' in arms and args.train_size % 32 == 0:
            # on the training grid the table is used as it is: abs's training, so abs's checkpoint
            checkpoint, train, after = work_root / 'abs' / f'seed{seed}' / f'iter_{args.budget_iters}.pth', False, \
                ('abs', seed)
        runs.append(StudyRun(arm, seed, f'[{k}/{len(order)} {arm}@seed{seed}]', config, overrides_for(arm, seed),
                             str(work_dir), str(checkpoint), train, args.sweep, sweep.resized, args.task, specs,
                             retrain=args.retrain, threads=args.threads, verbose=args.verbose, after=after))
    arm_rank = {arm: i for i, arm in enumerate(args.arms)}
    seed_rank = {seed: i for i, seed in enumerate(args.seeds)}

    def on_done(outcome: RunOutcome) -> None:
        nonlocal rows, written
        run = outcome.run
        if run.arm in skipped:  # a run of an arm that failed with another seed meanwhile
            return
        if outcome.error is not None:
            skipped[run.arm] = outcome.error
            print(f'[skip] {run.arm}: {outcome.error}', flush=True)
            rows = [r for r in rows if r['arm'] != run.arm]
        else:
            rows = sorted(rows + outcome.rows, key=lambda r: (arm_rank[r['arm']], seed_rank[r['seed']]))
            meta['timings'][f'{run.arm}@seed{run.seed}'] = dict(train=round(outcome.train_s, 1),
                                                               eval=round(outcome.eval_s, 1))
        meta['timings'] = {k: meta['timings'][k] for k in sorted(
            meta['timings'], key=lambda k: (arm_rank[k.split('@seed')[0]], seed_rank[int(k.split('@seed')[1])]))}
        meta['seconds'] = round(time.time() - start, 1)
        written = write_results(out_dir, rows, meta)

    run_schedule(runs, args.jobs, on_done, train=train_run)
    print('\n' + (out_dir / 'results.md').read_text().split('\n## ')[1].split('\n', 1)[1].strip() + '\n')
    print(f'done in {time.time() - start:.0f}s; written: ' + ', '.join(str(p) for p in written))
    return rows


if __name__ == '__main__':
    main()
