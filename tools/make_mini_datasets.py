"""Writes the mini COCO 2017 and ADE20K trees (procedurally drawn scenes) used by the demo configs and tests.

    python tools/make_mini_datasets.py --out data                       # data/mini_coco + data/mini_ade
    python tools/make_mini_datasets.py --out data --only coco --coco-train 200 --force
    python tools/make_mini_datasets.py --out data/pe_study --study ade coco probe   # the PE study's trees

The trees use the real COCO / ADEChallengeData2016 layouts (see vitpe_mm/datasets/mini.py); a complete tree made
with the same settings is kept (nothing rewritten) unless --force is given. Every tree is validated after writing.
"""
import argparse
import importlib.util
import sys
import time
from pathlib import Path

# vitpe_mm/datasets/mini.py needs only numpy and Pillow: load it by path, without `import vitpe_mm` (which
# imports torch and mmengine to register the backbones), so that this tool starts in a fraction of a second.
_spec = importlib.util.spec_from_file_location(
    'vitpe_mm_mini_datasets', Path(__file__).resolve().parents[1] / 'vitpe_mm' / 'datasets' / 'mini.py')
_mini = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_mini)
ensure_mini_datasets = _mini.ensure_mini_datasets
ensure_study_tree = _mini.ensure_study_tree


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--out', default='data', help='folder that gets mini_coco/ and mini_ade/ (default: data)')
    parser.add_argument('--coco-train', type=int, default=64, help='COCO train2017 images (default: 64)')
    parser.add_argument('--coco-val', type=int, default=16, help='COCO val2017 images (default: 16)')
    parser.add_argument('--ade-train', type=int, default=64, help='ADE20K training images (default: 64)')
    parser.add_argument('--ade-val', type=int, default=16, help='ADE20K validation images (default: 16)')
    parser.add_argument('--seed', type=int, default=0, help='generation seed (default: 0)')
    parser.add_argument('--only', choices=('coco', 'ade'), default=None, help='make one tree only')
    parser.add_argument('--force', action='store_true', help='regenerate even when a complete tree exists')
    study = parser.add_argument_group('the PE study\'s trees (tools/pe_ablation.py makes them itself when missing)')
    study.add_argument('--study', nargs='+', choices=_mini.STUDY_KINDS,
                       help='instead of mini_coco / mini_ade: study_<kind>_<size> trees (square canvases at one pixel '
                       'scale; probe: the position probe)')
    study.add_argument('--study-size', type=int, default=128, help='training canvas side (default 128)')
    study.add_argument('--canvases', type=float, nargs='+', default=[0.5, 0.75, 1.0, 1.25, 1.5, 2.0],
                       help='validation canvas factors (default 0.5 0.75 1 1.25 1.5 2)')
    study.add_argument('--study-train', type=int, default=256, help='training canvases (default 256)')
    study.add_argument('--study-val', type=int, default=64, help='validation images per canvas size (default 64)')
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    start = time.time()
    try:
        if args.study:
            trees = {kind: ensure_study_tree(args.out, kind, args.study_size, args.canvases, args.study_train,
                                             args.study_val, seed=args.seed, force=args.force, progress=print)
                     for kind in args.study}
        else:
            trees = ensure_mini_datasets(args.out, coco_train=args.coco_train, coco_val=args.coco_val,
                                         ade_train=args.ade_train, ade_val=args.ade_val, seed=args.seed,
                                         only=args.only, force=args.force, progress=print)
    except (ValueError, FileExistsError) as err:
        print(f'make_mini_datasets: error: {err}', file=sys.stderr)
        return 2
    print(f'done in {time.time() - start:.1f}s: ' + ', '.join(f'{k} -> {v}' for k, v in trees.items()))
    return 0


if __name__ == '__main__':
    sys.exit(main())
