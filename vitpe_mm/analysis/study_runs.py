"""One run of the resolution study (train one arm with one seed, evaluate it at every test scale) and the schedule
that runs many of them, in this process or in `jobs` worker processes (tools/pe_ablation.py's `--jobs`).

A run is described by a picklable `StudyRun`; `execute_run` does it where it is called, so the serial path and the
workers are the same code. `run_schedule` keeps at most `jobs` runs going, starts a run only when the run it
depends on is done ('abs_nointerp' evaluates the checkpoint of 'abs' with the same seed), and hands every finished
run to a callback at once (the tool rewrites its tables after each one, so an interrupted study keeps what it has).
Workers are spawned, not forked: torch's thread pools do not survive a fork.
"""
import time
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from dataclasses import dataclass, field
from multiprocessing import get_context
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

__all__ = ['StudyRun', 'RunOutcome', 'train_run', 'execute_run', 'run_schedule']

RunKey = Tuple[str, int]


@dataclass
class StudyRun:
    """What one (arm, seed) run needs, all picklable.

    Attributes:
        arm, seed: the arm and the training seed.
        label: the progress prefix, e.g. '[3/45 peg@seed0]'.
        config: the demo config the study starts from.
        overrides: its changes for this arm and seed (`study_overrides`).
        work_dir: where the run trains and evaluates.
        checkpoint: the weights to evaluate (trained into `work_dir` when missing and `train` is set).
        train: train when `checkpoint` is missing or `retrain` is set; False evaluates another run's checkpoint.
        retrain: train again even when `checkpoint` exists.
        sweep_name, resized, task: which test sets (`SWEEPS`), and seg or det.
        specs: the test scales (`parse_scales`).
        threads: torch CPU threads in this run (None: torch's choice).
        verbose: keep mmengine's logging.
        after: the run whose checkpoint this one evaluates (it starts only once that one is done).
    """
    arm: str
    seed: int
    label: str
    config: str
    overrides: Dict[str, Any]
    work_dir: str
    checkpoint: str
    train: bool
    sweep_name: str
    resized: bool
    task: str
    specs: Sequence[Any]
    retrain: bool = False
    threads: Optional[int] = None
    verbose: bool = False
    after: Optional[RunKey] = None

    @property
    def key(self) -> RunKey:
        return self.arm, self.seed


@dataclass
class RunOutcome:
    """A finished run: its metric rows (one per scale), train and eval seconds, or the error that stopped training."""
    run: StudyRun
    rows: List[Dict[str, Any]] = field(default_factory=list)
    train_s: float = 0.0
    eval_s: float = 0.0
    error: Optional[str] = None


def train_run(cli, config: str, work_dir: Path, overrides: Dict, label: str, verbose: bool) -> None:
    """Trains one arm as tools/train.py does (`cli`: vitpe_mm.engine.cli, its arguments and config set-up)."""
    from vitpe_mm.engine import build_runner

    train_args = cli.parse_train_args([config, '--work-dir', str(work_dir)])
    train_args.cfg_options = overrides
    cfg = cli.setup_train_cfg(train_args)
    if not verbose:
        cfg.log_level = 'WARNING'
        interval = max(1, overrides['default_hooks.logger.interval'])
        cfg.custom_hooks = list(cfg.custom_hooks) + [dict(type='ProgressHook', prefix=label, interval=interval)]
    cfg.experiment_name = f'train_{label}'
    build_runner(cfg).train()


def execute_run(run: StudyRun, train: Optional[Callable] = None) -> RunOutcome:
    """Trains `run` when needed, then evaluates its checkpoint at every scale of `run.specs`.

    A ValueError, RuntimeError or NotImplementedError while training (the arm builds but cannot train) is returned
    as `RunOutcome.error` with no rows; errors while testing at one scale become 'n/a' rows
    (`evaluate_at_scales`). `train` replaces `train_run` (tests).
    """
    import torch

    from vitpe_mm.analysis.study import canvas_config_hook
    from vitpe_mm.analysis.sweep import evaluate_at_scales
    from vitpe_mm.engine import cli

    if run.threads:
        torch.set_num_threads(run.threads)
    train = train or train_run
    outcome = RunOutcome(run)
    checkpoint = Path(run.checkpoint)
    t0 = time.time()
    if not run.train:
        print(f'{run.label} evaluating {checkpoint}', flush=True)
    elif checkpoint.is_file() and not run.retrain:
        print(f'{run.label} reusing {checkpoint}', flush=True)
    else:
        iters = run.overrides['train_cfg']['max_iters']
        print(f'{run.label} training {iters} iterations', flush=True)
        try:
            train(cli, run.config, Path(run.work_dir), run.overrides, run.label, run.verbose)
        except (ValueError, RuntimeError, NotImplementedError) as err:  # builds, but cannot train: report it
            text = str(err).strip().splitlines()[0] if str(err).strip() else ''
            outcome.error = f'training failed with seed {run.seed}: {type(err).__name__}: {text}'
            outcome.train_s = time.time() - t0
            return outcome
    t1 = time.time()
    test_args = cli.parse_test_args([run.config, str(checkpoint), '--work-dir',
                                     str(Path(run.work_dir) / f'eval_{run.sweep_name}')])
    test_args.cfg_options = run.overrides
    test_cfg = cli.setup_test_cfg(test_args)
    name = f'{run.arm}@seed{run.seed}'
    per_scale = None if run.resized else canvas_config_hook(run.task)
    for row in evaluate_at_scales({name: test_cfg}, run.specs, keep_ratio=False,
                                  mode='whole' if run.task == 'seg' else None, verbose=run.verbose,
                                  progress=lambda line: print(f'{run.label} {line}', flush=True),
                                  per_scale=per_scale):
        outcome.rows.append(dict(row, arm=run.arm, seed=run.seed))
    outcome.train_s, outcome.eval_s = t1 - t0, time.time() - t1
    return outcome


def run_schedule(runs: Sequence[StudyRun], jobs: int, on_done: Callable[[RunOutcome], None],
                 train: Optional[Callable] = None, execute: Callable[..., RunOutcome] = execute_run) -> None:
    """Runs `runs` in order, at most `jobs` at a time, calling `on_done` with each outcome as it finishes.

    With `jobs == 1` every run executes in this process, one after the other (and `train` may replace
    `train_run`); otherwise in `jobs` spawned worker processes. A run whose `after` run failed or is not in
    `runs` is not started: `on_done` gets it with that error. After an arm fails to train, its later runs are
    dropped (`on_done` is not called for them): the arm is reported once, as skipped. `execute` replaces
    `execute_run` (tests; a module-level function when `jobs > 1`, since the workers import it).
    """
    if jobs < 1:
        raise ValueError(f'jobs must be at least 1, got {jobs}')
    failed_arms: Dict[str, str] = {}
    done: Dict[RunKey, bool] = {}
    keys = {r.key for r in runs}

    def blocked(run: StudyRun) -> Optional[str]:
        if run.after is None:
            return None
        if run.after not in keys:
            return f'{run.after[0]}@seed{run.after[1]} is not part of this study'
        if run.after[0] in failed_arms:
            return f'{run.after[0]} could not be trained: {failed_arms[run.after[0]]}'
        return None

    def finish(outcome: RunOutcome) -> None:
        done[outcome.run.key] = outcome.error is None
        if outcome.error is not None:
            failed_arms.setdefault(outcome.run.arm, outcome.error)
        on_done(outcome)

    pending = list(runs)

    def next_ready() -> Optional[StudyRun]:
        """Removes and returns the first run that can start now (reporting blocked ones on the way), or None."""
        for run in list(pending):
            if run.arm in failed_arms:
                pending.remove(run)
                continue
            reason = blocked(run)
            if reason:
                pending.remove(run)
                finish(RunOutcome(run, error=reason))
            elif run.after is None or run.after in done:
                pending.remove(run)
                return run
        return None

    if jobs == 1:
        while pending:
            run = next_ready()
            if run is None:
                if pending:
                    raise RuntimeError(f'study runs waiting on nothing: {[r.key for r in pending]}')
                break
            finish(execute(run, train))
        return
    with ProcessPoolExecutor(max_workers=jobs, mp_context=get_context('spawn')) as pool:
        running: Dict[Any, StudyRun] = {}
        while pending or running:
            while len(running) < jobs:
                run = next_ready()
                if run is None:
                    break
                running[pool.submit(execute, run)] = run
            if not running:
                if pending:  # waiting on runs that are neither pending nor running: their keys were checked
                    raise RuntimeError(f'study runs waiting on nothing: {[r.key for r in pending]}')
                break
            finished, _ = wait(running, return_when=FIRST_COMPLETED)
            for future in finished:
                running.pop(future)
                finish(future.result())
