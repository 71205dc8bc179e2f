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
random draws per iteration, vitpe_mm/engine/hooks.py). The options and the config set-up live in
vitpe_mm/engine/cli.py (shared with tools/pe_ablation.py).
"""
import sys
from pathlib import Path
from typing import List, Optional

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from vitpe_mm.engine.cli import parse_train_args as parse_args  # noqa: E402
from vitpe_mm.engine.cli import setup_train_cfg  # noqa: E402


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
