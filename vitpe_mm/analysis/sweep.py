"""Evaluating checkpoints at several test scales with mmengine runners (mmdet and mmseg configs).

The caller prepares one test config per checkpoint as tools/test.py does (`setup_test_cfg`: data and checkpoint
checks, machine fitting, `load_from`); `evaluate_at_scales` then, for every scale, copies it, writes the scale into
the test `Resize` (and the mmseg inference mode), builds a runner with `vitpe_mm.engine.build_runner` and tests.
Every checkpoint must hold exactly the weights of its config's model (`CheckpointMatchHook`). A scale the
model cannot run (e.g. an 'abs_nointerp' PE asked for a grid larger than its table raises a
ValueError, or memory runs out) becomes an 'n/a' row carrying the error, instead of ending the sweep.

In a distributed run every process evaluates its share of the images and the evaluator gathers them, as
tools/test.py; an error must then happen on every process alike (it does for a grid that is too large when all
test images share a size, e.g. keep_ratio=False).
"""
import copy
import itertools
import re
import time
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence

from mmengine.dist import is_main_process

from vitpe_mm.engine.hooks import CheckpointMatchHook, CheckpointMismatchError  # registers both hooks

from .results import MetricColumn, columns_for, metric_row
from .scales import ScaleSpec, TestScale, apply_test_scale, reference_scale, resolve_scales, set_inference_mode

__all__ = ['CheckpointMatchHook', 'CheckpointMismatchError', 'evaluate_at_scales', 'prepare_scale_config',
           'scales_for']

Progress = Optional[Callable[[str], None]]
_RUN_IDS = itertools.count()  # experiment names unique within the process (mmengine keys its instances by them)


def _safe_name(text: str) -> str:
    return re.sub(r'[^A-Za-z0-9_.-]+', '_', text).strip('_') or 'run'


def scales_for(cfg: Mapping, specs: Sequence[ScaleSpec]) -> List[TestScale]:
    """The scales `specs` resolve to for `cfg` (factors multiply its test Resize scale)."""
    return resolve_scales(specs, reference_scale(cfg))


def prepare_scale_config(cfg: Any, scale: TestScale, keep_ratio: Optional[bool] = True, mode: Optional[str] = None,
                         crop_size: Optional[Sequence[int]] = None, stride: Optional[Sequence[int]] = None) -> Any:
    """A copy of a test config evaluating at `scale` (and, for mmseg, with inference `mode`)."""
    cfg = copy.deepcopy(cfg)
    apply_test_scale(cfg, scale, keep_ratio)
    if mode is not None:
        if cfg.get('default_scope') != 'mmseg':
            raise ValueError(f'--mode {mode} is for segmentation configs (mmseg); this config is '
                             f'{cfg.get("default_scope")!r}')
        set_inference_mode(cfg, mode, crop_size, stride)
    return cfg


def evaluate_at_scales(cfgs: Mapping[str, Any], specs: Sequence[ScaleSpec], keep_ratio: Optional[bool] = True,
                       mode: Optional[str] = None, crop_size: Optional[Sequence[int]] = None,
                       stride: Optional[Sequence[int]] = None, verbose: bool = False,
                       progress: Progress = print, build_runner: Optional[Callable] = None,
                       progress_interval: int = 10,
                       per_scale: Optional[Callable[[Any, TestScale], None]] = None) -> List[Dict[str, Any]]:
    """Evaluates every test config of `cfgs` ({label: config with load_from set}) at every scale of `specs`.

    Args:
        cfgs: test configs prepared as tools/test.py does, one per checkpoint, all of one toolbox.
        specs: parsed scales (`parse_scales`); factors multiply each config's own test scale.
        keep_ratio: write keep_ratio into the test Resize (None keeps the config's).
        mode, crop_size, stride: mmseg inference ('whole' or 'slide', see `set_inference_mode`); None keeps the
            config's `model.test_cfg`.
        verbose: keep mmengine's INFO logging (environment, config, per-iteration lines) for every runner;
            otherwise only warnings and the sweep's own progress lines are printed.
        progress: called with one line per step on the main process (None: silent).
        build_runner: runner factory (default `vitpe_mm.engine.build_runner`).
        progress_interval: batches between progress lines while testing.
        per_scale: called with each scale's config copy and the scale after the scale is written, to change more
            than the test resize (e.g. the study's canvas sweep points the test set at images drawn at that size).

    Returns:
        One row per (label, scale) in order (see `vitpe_mm.analysis.results`).
    """
    if build_runner is None:
        from vitpe_mm.engine import build_runner
    say = progress if (progress is not None and is_main_process()) else (lambda line: None)
    toolboxes = {cfg.get('default_scope') for cfg in cfgs.values()}
    if len(toolboxes) != 1:
        raise ValueError(f'all checkpoints must be evaluated with configs of one toolbox, got {sorted(toolboxes)}')
    columns: Sequence[MetricColumn] = columns_for(toolboxes.pop())
    plan = [(label, cfg, scale) for label, cfg in cfgs.items() for scale in scales_for(cfg, specs)]
    rows = []
    for step, (label, base_cfg, scale) in enumerate(plan, 1):
        cfg = prepare_scale_config(base_cfg, scale, keep_ratio, mode, crop_size, stride)
        if per_scale is not None:
            per_scale(cfg, scale)
        name = f'{_safe_name(label)}@{scale.label}'
        cfg.work_dir = f'{base_cfg.work_dir}/{_safe_name(label)}/{scale.label}'
        cfg.experiment_name = f'{name}_{next(_RUN_IDS)}'
        if isinstance(cfg.get('visualizer'), dict):  # one visualizer per run, not the first run's (named) one
            cfg.visualizer['name'] = cfg.experiment_name
        if not verbose:
            cfg.log_level = 'WARNING'
        prefix = f'[{step}/{len(plan)}] {label} @ {scale.label} ({scale.factor:g}x)'
        cfg.custom_hooks = list(cfg.get('custom_hooks') or []) + [
            dict(type='ProgressHook', prefix=prefix, interval=progress_interval), dict(type='CheckpointMatchHook')]
        say(f'{prefix}: building the runner')
        start = time.time()
        runner = build_runner(cfg)
        try:
            metrics = runner.test()
        except CheckpointMismatchError:
            raise  # the checkpoint, not the scale: no run of it can be right
        except (ValueError, RuntimeError) as err:  # the model cannot run at this scale: record it, go on
            reason = f'{type(err).__name__}: {str(err).strip().splitlines()[0] if str(err).strip() else ""}'
            say(f'{prefix}: n/a ({reason})')
            rows.append(metric_row(label, scale, columns, None, note=reason))
            continue
        row = metric_row(label, scale, columns, metrics)
        shown = ', '.join(f'{c.name} {row[c.name]:.{c.digits}f}' for c in columns if row.get(c.name) is not None)
        say(f'{prefix}: {shown} ({time.time() - start:.1f}s)')
        rows.append(row)
    return rows
