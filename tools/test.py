"""Evaluates a trained detector (mmdet) or segmentor (mmseg) checkpoint; the toolbox is read from the config.

    python tools/test.py configs/cpvt_maskrcnn.py work_dirs/cpvt_maskrcnn/epoch_12.pth
    python tools/test.py CONFIG CKPT --out results.pkl       # mmdet: dump predictions; mmseg: a folder of masks
    python tools/test.py CONFIG CKPT --show-dir vis           # save drawn predictions
    bash tools/dist_test.sh CONFIG CKPT 8

The same options as mmdet's and mmseg's tools/test.py. The checkpoint is read with torch's weights-only unpickler
plus the few types an mmengine checkpoint holds (vitpe_mm/engine/safe_load.py). The options and the config set-up
live in vitpe_mm/engine/cli.py (shared with tools/eval_resolutions.py and tools/pe_ablation.py).
"""
import sys
from pathlib import Path
from typing import List, Optional

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from vitpe_mm.engine.cli import parse_test_args as parse_args  # noqa: E402
from vitpe_mm.engine.cli import setup_test_cfg  # noqa: E402


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
    from vitpe_mm.engine.hooks import CheckpointMatchHook, CheckpointMismatchError
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
