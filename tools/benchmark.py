#!/usr/bin/env python
"""Speed and memory of the vitpe_mm backbones side by side with the reference implementations.

Each pair runs ours and a reference in the same process with the same weights (the reference's random weights go
through our checkpoint converters into ours); the pairs, the method and the cost curve live in vitpe_mm/bench/
(pairs.py, measure.py, cost_curve.py). `--compile` runs both sides under torch.compile (inductor, dynamic=False);
`--cost-curve` measures time and memory against the token count for one attention block of each kind (ours) and
writes CSV, JSON and a PNG plot.

Examples:
    python tools/benchmark.py --models swin-mmdet,cpvt-mmseg --sizes 512 --batch 1 --modes fwdbwd --out bench.json
    python tools/benchmark.py --quick --out /tmp/quick.json
    python tools/benchmark.py --models cpvt-mmseg --sizes 512 --modes fwdbwd --compile
    python tools/benchmark.py --cost-curve --out cost_curve.json
"""
import argparse
import json
import os
import sys
import warnings
from pathlib import Path
from typing import List, Optional, Sequence, Tuple

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from vitpe_mm.bench import measure  # noqa: E402
from vitpe_mm.bench.cost_curve import cost_curve, write_cost_curve_outputs  # noqa: E402
from vitpe_mm.bench.measure import DTYPES, MODES, raise_recompile_limit, run_benchmark  # noqa: E402
from vitpe_mm.bench.pairs import FAMILIES, PAIR_CLASSES, PAIRS  # noqa: E402


def _epilog() -> str:
    pairs = '\n'.join(f'    {name:<14} {cls.description}' for name, cls in PAIR_CLASSES.items())
    families = '\n'.join(f'    {name:<14} {", ".join(names)}' for name, names in FAMILIES.items())
    method = measure.__doc__.split('\n', 2)[2].split('\n\n`run_benchmark(args)`')[0]  # the method paragraphs
    return (f'Pairs (--models):\n{pairs}\n\nFamilies (--models):\n{families}\n\n{method}\n'
            + __doc__.split('\n', 1)[1].split('\n\n', 1)[1])


def parse_size(text: str) -> Tuple[int, int]:
    parts = text.lower().split('x')
    if len(parts) == 1:
        return int(parts[0]), int(parts[0])
    if len(parts) == 2:
        return int(parts[0]), int(parts[1])
    raise argparse.ArgumentTypeError(f'size {text!r} must be N or HxW')


def parse_pairs(text: str) -> List[str]:
    names = []
    for item in text.split(','):
        item = item.strip()
        if item in FAMILIES:
            names.extend(FAMILIES[item])
        elif item in PAIRS:
            names.append(item)
        else:
            raise argparse.ArgumentTypeError(f'unknown model {item!r}; accepted: {", ".join(FAMILIES)}, '
                                             f'{", ".join(PAIRS)}')
    return list(dict.fromkeys(names))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=_epilog())
    parser.add_argument('--models', type=parse_pairs, default=list(PAIRS),
                        help=f'comma list of pairs ({", ".join(PAIRS)}) or families ({", ".join(FAMILIES)})')
    parser.add_argument('--sizes', type=lambda s: [parse_size(v) for v in s.split(',')],
                        default=[(224, 224), (512, 512), (800, 1333), (1024, 1024)], help='N or HxW, comma separated')
    parser.add_argument('--batch', type=lambda s: [int(v) for v in s.split(',')], default=[1])
    parser.add_argument('--dtype', type=lambda s: s.split(','), default=['fp32'], help='fp32, bf16 (autocast)')
    parser.add_argument('--modes', type=lambda s: s.split(','), default=list(MODES), help='fwd, fwdbwd')
    parser.add_argument('--device', default='cuda' if torch.cuda.is_available() else 'cpu')
    parser.add_argument('--repeats', type=int, default=5)
    parser.add_argument('--warmup', type=int, default=1)
    parser.add_argument('--threads', type=int, default=None, help='torch.set_num_threads (default: torch default)')
    parser.add_argument('--tiny', action='store_true', help='narrow, shallow versions of the presets')
    parser.add_argument('--quick', action='store_true',
                        help='smoke run: --tiny, 224x224 (cost curve: 64, 96), batch 1, fp32, 1 repeat, no warm-up')
    parser.add_argument('--compile', action='store_true',
                        help='both sides under torch.compile (inductor, dynamic=False); implies --warmup >= 2 and '
                        '--no-flops')
    parser.add_argument('--no-memory', action='store_true', help='skip the memory measurement')
    parser.add_argument('--no-flops', action='store_true', help='skip FLOP counting')
    parser.add_argument('--peak-tflops', type=float, default=None,
                        help="the device's peak TFLOP/s for the dtype (e.g. 989 for H100 SXM bf16 dense)")
    parser.add_argument('--cost-curve', action='store_true', help='time/memory vs token count per attention kind')
    parser.add_argument('--curve-sizes', type=lambda s: [parse_size(v) for v in s.split(',')],
                        default=[parse_size(v) for v in ('224', '320', '448', '512', '640', '800', '1024')])
    parser.add_argument('--curve-pe', type=lambda s: s.split(','), default=['none'],
                        help="cost curve: positional encodings per block, e.g. none,abs,peg,rel_bias,rope_axial,"
                        "rope_mixed,rope_dinov3 (each one's per-forward work included)")
    parser.add_argument('--out', default=None, help='JSON file (cost curve: also .csv and .png next to it)')
    return parser


def main(argv: Optional[Sequence[str]] = None) -> dict:
    args = build_parser().parse_args(argv)
    warnings.filterwarnings('ignore', category=UserWarning)  # toolbox deprecation notices
    for dtype in args.dtype:
        if dtype not in DTYPES:
            raise SystemExit(f'--dtype {dtype!r}: accepted {", ".join(DTYPES)}')
    for mode in args.modes:
        if mode not in MODES:
            raise SystemExit(f'--modes {mode!r}: accepted {", ".join(MODES)}')
    if args.device.startswith('cuda') and not torch.cuda.is_available():
        raise SystemExit('--device cuda: no CUDA device available')
    if args.quick:
        args.tiny = True
        args.repeats, args.warmup = 1, 0
        if '--sizes' not in ' '.join(argv if argv is not None else sys.argv):
            args.sizes = [(224, 224)]  # every Swin map at least one window: all pairs equal
        if '--curve-sizes' not in ' '.join(argv if argv is not None else sys.argv):
            args.curve_sizes = [(64, 64), (96, 96)]
    if args.compile:
        if args.cost_curve:
            raise SystemExit('--compile applies to the pairs, not to --cost-curve')
        args.warmup = max(args.warmup, 2)  # the first run of each mode compiles, the second settles the allocator
        args.no_flops = True  # compiled kernels do not dispatch the aten ops FlopCounterMode counts
        raise_recompile_limit()
    if args.threads:
        torch.set_num_threads(args.threads)
    data = cost_curve(args) if args.cost_curve else run_benchmark(args)
    if args.out:
        os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
        with open(args.out, 'w') as f:
            json.dump(data, f, indent=1)
        written = [args.out]
        if args.cost_curve:
            written += write_cost_curve_outputs(data, args.out)
        print(f'# wrote {", ".join(written)}')
    return data


if __name__ == '__main__':
    main()
