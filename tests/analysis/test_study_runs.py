"""vitpe_mm.analysis.study_runs: the study's schedule, in this process and in spawned workers. A run that depends on
another (abs_nointerp evaluates abs's checkpoint) starts only after it, wherever it is listed; an arm that fails to
train is reported once and its other runs are dropped; a run whose dependency failed or is missing is reported
with the reason. The real training and evaluation path runs in tests/tools/test_pe_ablation.py."""
import os
import time

import pytest

from vitpe_mm.analysis.study_runs import RunOutcome, StudyRun, run_schedule


def _run(arm, seed, after=None):
    return StudyRun(arm, seed, f'[{arm}@seed{seed}]', 'config.py', {}, '/nowhere', '/nowhere/iter_1.pth', after is None,
                    'canvas', False, 'seg', [], after=after)


def fake_execute(run, train=None):  # module level: the spawned workers import it
    start = time.time()
    time.sleep(1.0)  # longer than a spawned worker takes to start, so both workers get a run
    if run.arm.startswith('bad'):
        return RunOutcome(run, error=f'training failed with seed {run.seed}: RuntimeError: {run.arm}')
    return RunOutcome(run, rows=[dict(arm=run.arm, seed=run.seed, pid=os.getpid(), start=start, end=time.time())])


def _schedule(runs, jobs):
    outcomes = []
    run_schedule(runs, jobs, outcomes.append, execute=fake_execute)
    return outcomes


@pytest.mark.parametrize('jobs', [1, 2])
def test_a_dependent_run_starts_after_its_dependency(jobs):
    runs = [_run('abs_nointerp', 0, after=('abs', 0)), _run('none', 0), _run('abs', 0), _run('none', 1)]
    outcomes = _schedule(runs, jobs)
    assert sorted(o.run.key for o in outcomes) == sorted(r.key for r in runs)
    assert all(o.error is None for o in outcomes)
    rows = {o.run.key: o.rows[0] for o in outcomes}
    assert rows[('abs_nointerp', 0)]['start'] >= rows[('abs', 0)]['end']
    pids = {row['pid'] for row in rows.values()}
    if jobs == 1:
        assert pids == {os.getpid()}
    else:  # worker processes, two at a time
        assert os.getpid() not in pids and len(pids) == 2


@pytest.mark.parametrize('jobs', [1, 2])
def test_a_failed_arm_is_reported_once_and_its_dependants_say_why(jobs):
    runs = [_run('bad', 0), _run('none', 0), _run('bad', 1), _run('none', 1),
            _run('abs_nointerp', 1, after=('bad', 1)), _run('orphan', 0, after=('abs', 0))]
    outcomes = _schedule(runs, jobs)
    by = {}
    for o in outcomes:
        by.setdefault(o.run.arm, []).append(o)
    assert [o.error for o in by['bad']][:1] == ['training failed with seed 0: RuntimeError: bad']
    if jobs == 1:  # bad@seed1 comes after bad@seed0 failed: never started
        assert len(by['bad']) == 1
    assert sorted(o.run.seed for o in by['none']) == [0, 1] and all(o.error is None for o in by['none'])
    assert by['abs_nointerp'][0].error.startswith('bad could not be trained: training failed with seed 0')
    assert by['orphan'][0].error == 'abs@seed0 is not part of this study' and not by['orphan'][0].rows


def test_jobs_must_be_positive():
    with pytest.raises(ValueError, match='jobs must be at least 1, got 0'):
        run_schedule([], 0, print)
