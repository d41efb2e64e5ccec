"""The Ray Tune backend on a real local Ray instance (2 CPUs), with the curve adapter.

One Ray start serves the module (it takes seconds). Its trials must land in the same Optuna
study the optuna backend writes, so ``tuner status`` and ``tuner export`` read them as usual.
"""

from __future__ import annotations

import os

import optuna
import pytest
import yaml

from tests.conftest import ROOT
from tuner.cli import main

ray = pytest.importorskip("ray", reason="the ray extra is not installed")

pytestmark = pytest.mark.slow

SPACE = """
study: r
trainer: {{adapter: curve, epochs: 4, sleep: 0.05, fail_above_lr0: 0.08}}
objective: {{metric: val/acc}}
base: {{lr0: 0.001, momentum: 0.7}}
search: {{n_trials: {n_trials}, seed: 0, max_failures: 50, pruner: {pruner}}}
space:
  freeze: {{type: int, low: 0, high: 5}}
  lr0: {{type: float, low: 1.0e-4, high: 1.0e-1, log: true}}
"""
URL = "sqlite:///studies/r.db"
TrialState = optuna.trial.TrialState
ATTRS = {"hyp", "hyp_path", "epochs_run", "train_seconds", "history", "wall_seconds",
         "report_seconds"}


@pytest.fixture(scope="module")
def local_ray():
    """A local Ray instance whose workers can import the test adapter (tests.fakes)."""
    for key, value in {
        "RAY_USAGE_STATS_ENABLED": "0",
        "PYTHONPATH": os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p),
    }.items():
        os.environ[key] = value
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level="ERROR")
    yield
    ray.shutdown()


def search(workdir, n_trials, pruner="{name: none}", *flags):
    (workdir / "r.yaml").write_text(SPACE.format(n_trials=n_trials, pruner=pruner))
    return main(["search", "--space", "r.yaml", "--backend", "ray", *flags])


def test_ray_trials_land_in_the_study_with_states_and_attrs(local_ray, workdir, capsys):
    pruner = "{name: successive_halving, args: {min_resource: 1, reduction_factor: 2}}"
    assert search(workdir, 8, pruner, "--concurrency", "2", "--resources-per-trial", "cpu=1") == 0
    err = capsys.readouterr().err
    study = optuna.load_study(study_name="r", storage=URL)
    finished = study.get_trials(states=(TrialState.COMPLETE, TrialState.PRUNED))
    assert len(finished) == 8, err  # exact, failures replaced
    assert not study.get_trials(states=(TrialState.RUNNING, TrialState.WAITING))
    numbers = [t.number for t in study.trials]
    assert numbers == sorted(set(numbers))
    baseline = study.trials[0]
    assert baseline.user_attrs["baseline"] and baseline.params["lr0"] == 0.001
    assert sum(bool(t.user_attrs.get("baseline")) for t in study.trials) == 1
    for trial in study.get_trials(states=(TrialState.COMPLETE,)):
        assert sorted(trial.intermediate_values) == [0, 1, 2, 3]  # one value per epoch
        assert trial.user_attrs["epochs_run"] == 4
        if trial.user_attrs.get("stopped_at_last_epoch"):
            # ASHA stopped it at a rung on its last epoch: complete, scored from its history
            assert trial.value == max(h["val/acc"] for h in trial.user_attrs["history"])
        else:
            assert ATTRS | {"peak_memory_mb", "n_params_trainable", "n_params_frozen"} <= set(
                trial.user_attrs
            )
        hyp = yaml.safe_load(open(trial.user_attrs["hyp_path"]))
        assert hyp == trial.user_attrs["hyp"] and hyp["lr0"] == trial.params["lr0"]
    pruned = study.get_trials(states=(TrialState.PRUNED,))
    stopped = [t for t in pruned if not t.user_attrs.get("diverged")]
    assert stopped, err  # ASHA (from successive_halving) stopped trials early
    for trial in stopped:
        assert 0 < trial.user_attrs["epochs_run"] < 4  # stopped early by ASHA
        assert len(trial.intermediate_values) == trial.user_attrs["epochs_run"]
    assert not study.get_trials(states=(TrialState.FAIL,))
    for trial in study.trials:
        # lr0 above 0.08 diverges: PRUNED with its reason, as under the optuna backend
        diverged = bool(trial.user_attrs.get("diverged"))
        assert diverged == (trial.params["lr0"] > 0.08)
        if diverged:
            assert trial.state == TrialState.PRUNED
            assert trial.user_attrs["fail_reason"] == "diverged: non-finite loss at epoch 1"
    # actors are reused: at most --concurrency worker processes ran the trials (a pruned trial
    # stops its actor's function, not the actor), so each decodes its data once
    complete = study.get_trials(states=(TrialState.COMPLETE,))
    pids = {t.user_attrs["worker_pid"] for t in complete if "worker_pid" in t.user_attrs}
    assert 1 <= len(pids) <= 2, pids
    assert (workdir / "studies" / "r" / "ray").is_dir()
    assert (workdir / "studies" / "r" / "best_hyp.yaml").exists()

    # the other commands read a Ray-made study like any other
    assert main(["status", "--storage", URL]) == 0
    assert "trials " in capsys.readouterr().out
    out = workdir / "best.yaml"
    assert main(["export", "--storage", URL, "--out", str(out)]) == 0
    assert yaml.safe_load(out.read_text()) == study.best_trial.user_attrs["hyp"]

    # a resumed study only runs what is missing, whichever backend ran the rest
    assert search(workdir, 10) == 0
    study = optuna.load_study(study_name="r", storage=URL)
    assert len(study.get_trials(states=(TrialState.COMPLETE, TrialState.PRUNED))) == 10


def test_ray_stops_after_max_failures(local_ray, workdir, capsys):
    code = search(workdir, 6, "{name: median}", "--max-failures", "2", "--set",
                  "trainer.crash_above_lr0=0", "--set", "search.baseline=false")
    err = capsys.readouterr().err
    assert code == 1, err
    assert "stopped after 2 failed trials in a row" in err
    study = optuna.load_study(study_name="r", storage=URL)
    assert all(t.state == TrialState.FAIL for t in study.trials)
    assert all("simulated crash" in t.user_attrs["fail_reason"] for t in study.trials)


def test_ray_timeout_starts_no_new_trial_and_lets_running_ones_finish(local_ray, workdir, capsys):
    # trials of ~1.2 s against a 2-s timeout: trials are running when it passes
    flags = ["--timeout", "2", "--concurrency", "2", "--set", "trainer.sleep=0.3"]
    code = search(workdir, 200, "{name: none}", *flags)
    err = capsys.readouterr().err
    assert code == 0, err  # a timeout is the budget, not an interrupt
    assert "interrupted" not in err
    study = optuna.load_study(study_name="r", storage=URL)
    assert 1 <= len(study.trials) < 200
    assert not study.get_trials(states=(TrialState.RUNNING, TrialState.WAITING))
    # the trials running at the deadline trained to the end (lr0 above 0.08 diverges: PRUNED)
    assert not study.get_trials(states=(TrialState.FAIL,)), [
        t.user_attrs.get("fail_reason") for t in study.trials
    ]
    for trial in study.get_trials(states=(TrialState.COMPLETE,)):
        assert trial.user_attrs["epochs_run"] == 4


# -- the schedulers, fed by hand: what Ray calls, in Ray's order ------------------------------


class FakeTrial:
    """What the schedulers read of a Ray trial: its id and config (hashed by identity)."""

    def __init__(self, trial_id: str, baseline: bool = False) -> None:
        from tuner.backends.ray import BASELINE_KEY

        self.trial_id = trial_id
        self.config = {"lr0": 0.01, BASELINE_KEY: True} if baseline else {"lr0": 0.01}


class FakeController:
    """A Tune controller with a trial waiting for resources (Ray's median rule would yield)."""

    def get_live_trials(self):
        from ray.tune.experiment import Trial

        waiting = FakeTrial("waiting")
        waiting.status = Trial.PENDING
        return [waiting]


def epoch(t, acc):
    from tuner.backends.ray import EPOCH_KEY

    return {EPOCH_KEY: t, "val/acc": acc, "training_iteration": t}


def summary():
    from tuner.backends.ray import SUMMARY_KEY

    return {SUMMARY_KEY: '{"state": "COMPLETE"}', "training_iteration": 5}


def test_median_rule_ignores_summaries_never_stops_the_baseline_and_never_pauses():
    from ray.tune.schedulers import TrialScheduler

    from tuner.backends.ray import EPOCH_KEY, MedianRule

    rule = MedianRule(time_attr=EPOCH_KEY, metric="val/acc", mode="max", grace_period=1,
                      min_samples_required=1)
    ctl = FakeController()
    good, bad, base, other = (FakeTrial("good"), FakeTrial("bad"), FakeTrial("base", True),
                              FakeTrial("other"))
    # nothing to compare with: Ray's rule would pause the trial for the pending one
    assert rule.on_trial_result(ctl, good, epoch(1, 0.5)) == TrialScheduler.CONTINUE
    assert rule.on_trial_result(ctl, good, epoch(2, 0.6)) == TrialScheduler.CONTINUE
    rule.on_trial_complete(ctl, good, summary())  # the trainable's last result
    assert [r[EPOCH_KEY] for r in rule._results[good]] == [1, 2]
    # Ray's rule read the summary's epoch here (KeyError)
    assert rule.on_trial_result(ctl, bad, epoch(1, 0.1)) == TrialScheduler.STOP
    rule.on_trial_complete(ctl, bad, epoch(1, 0.1))  # Ray passes the stopped result again
    assert len(rule._results[bad]) == 1  # counted once
    # the baseline is worse than the median at every epoch, and runs on
    assert rule.on_trial_result(ctl, base, epoch(1, 0.1)) == TrialScheduler.CONTINUE
    assert rule.on_trial_result(ctl, base, epoch(2, 0.12)) == TrialScheduler.CONTINUE
    assert rule.n_spared == 2
    rule.on_trial_complete(ctl, base, summary())
    # ... but its results count: the median of good, bad and the baseline at epoch 1 is 0.1
    # (0.3 without the baseline, which would stop this trial)
    assert rule.on_trial_result(ctl, other, epoch(1, 0.12)) == TrialScheduler.CONTINUE


def test_the_rules_never_stop_a_trial_at_its_last_epoch():
    """Stopped there, a trial that trained every epoch would end without its summary (no
    parameter counts, no peak memory): as under the optuna backend, it runs to the end."""
    from ray.tune.schedulers import TrialScheduler

    from tuner.backends.ray import EPOCH_KEY, AshaRule, MedianRule

    median = MedianRule(last_epoch=2, time_attr=EPOCH_KEY, metric="val/acc", mode="max",
                        grace_period=1, min_samples_required=1)
    ctl = FakeController()
    good, bad = FakeTrial("good"), FakeTrial("bad")
    for n in (1, 2):
        median.on_trial_result(ctl, good, epoch(n, 0.9))
    assert median.on_trial_result(ctl, bad, epoch(2, 0.1)) == TrialScheduler.CONTINUE
    assert median.n_spared == 1
    unbounded = MedianRule(time_attr=EPOCH_KEY, metric="val/acc", mode="max", grace_period=1,
                           min_samples_required=1)
    for n in (1, 2):
        unbounded.on_trial_result(ctl, good, epoch(n, 0.9))
    assert unbounded.on_trial_result(ctl, bad, epoch(2, 0.1)) == TrialScheduler.STOP
    # ASHA with a rung on the last epoch (max_resource = the trials' length)
    asha = AshaRule(last_epoch=3, time_attr=EPOCH_KEY, metric="val/acc", mode="max", max_t=9,
                    grace_period=3, reduction_factor=3, brackets=1)
    for trial in (good, bad):
        asha.on_trial_add(ctl, trial)
    assert asha.on_trial_result(ctl, good, epoch(3, 0.9)) == TrialScheduler.CONTINUE
    assert asha.on_trial_result(ctl, bad, epoch(3, 0.1)) == TrialScheduler.CONTINUE
    assert asha.n_spared == 1 and asha._num_stopped == 0


def test_asha_never_stops_the_baseline_and_counts_its_results():
    from ray.tune.schedulers import TrialScheduler

    from tuner.backends.ray import EPOCH_KEY, AshaRule

    rule = AshaRule(time_attr=EPOCH_KEY, metric="val/acc", mode="max", max_t=5, grace_period=1,
                    reduction_factor=2, brackets=1)
    ctl = FakeController()
    good, bad, base = FakeTrial("good"), FakeTrial("bad"), FakeTrial("base", True)
    for trial in (good, bad, base):
        rule.on_trial_add(ctl, trial)
    assert rule.on_trial_result(ctl, good, epoch(1, 0.5)) == TrialScheduler.CONTINUE
    assert rule.on_trial_result(ctl, bad, epoch(1, 0.1)) == TrialScheduler.STOP
    assert rule.on_trial_result(ctl, base, epoch(1, 0.05)) == TrialScheduler.CONTINUE
    assert rule.n_spared == 1 and rule._num_stopped == 1
    recorded = [r for milestone, r in rule._brackets[0]._rungs if milestone == 1][0]
    assert recorded["base"] == 0.05  # in the rung's cutoff like any trial
    rule.on_trial_complete(ctl, good, summary())  # ASHA skips a result without its epoch
    assert all("good" in r for milestone, r in rule._brackets[0]._rungs if milestone == 1)


# -- on a real local Ray ---------------------------------------------------------------------


def enqueue_first(monkeypatch, *params):
    """Queue these trials in the study ahead of the baseline (what ``ask`` pops first)."""
    from tuner import study as st

    real = st.enqueue_baseline

    def enqueue(study, config, base_hyp):
        for values in params:
            study.enqueue_trial(values)
        return real(study, config, base_hyp)

    monkeypatch.setattr(st, "enqueue_baseline", enqueue)


GOOD = {"freeze": 3, "lr0": 0.03}  # the curve's best lr0 and freeze: 0.72 (momentum 0.7)
BAD = {"freeze": 0, "lr0": 1.0e-4}  # 0.002
MEDIAN = "{name: median, args: {n_startup_trials: 1, n_warmup_steps: 0}}"


def test_ray_median_rule_after_a_complete_trial(local_ray, workdir, monkeypatch, capsys):
    # one at a time: trial 0 completes (its last result is the summary), trial 1 is compared
    # with it from its first epoch on
    enqueue_first(monkeypatch, GOOD, BAD)
    code = search(workdir, 4, MEDIAN, "--concurrency", "1", "--set", "search.baseline=false")
    err = capsys.readouterr().err
    assert code == 0, err
    study = optuna.load_study(study_name="r", storage=URL)
    assert not study.get_trials(states=(TrialState.FAIL,)), err
    assert len(study.get_trials(states=(TrialState.COMPLETE, TrialState.PRUNED))) == 4
    first, second = study.trials[:2]
    assert first.state == TrialState.COMPLETE and first.user_attrs["epochs_run"] == 4
    assert second.state == TrialState.PRUNED and not second.user_attrs.get("diverged")
    assert second.user_attrs["epochs_run"] == 1  # stopped by the median rule


@pytest.mark.parametrize("pruner", [
    MEDIAN, "{name: successive_halving, args: {min_resource: 1, reduction_factor: 2}}",
])
def test_ray_scheduler_never_stops_the_baseline(local_ray, workdir, monkeypatch, capsys, pruner):
    from tuner.backends import ray as ray_backend

    schedulers = []
    real = ray_backend.make_scheduler

    def keep(*args, **kwargs):
        schedulers.append(real(*args, **kwargs))
        return schedulers[-1]

    monkeypatch.setattr(ray_backend, "make_scheduler", keep)
    # the baseline (0.07) runs after a trial of 0.72: either rule would stop it
    enqueue_first(monkeypatch, GOOD)
    code = search(workdir, 3, pruner, "--concurrency", "1")
    err = capsys.readouterr().err
    assert code == 0, err
    study = optuna.load_study(study_name="r", storage=URL)
    baseline = study.trials[1]
    assert baseline.user_attrs["baseline"]
    assert baseline.state == TrialState.COMPLETE, err
    assert baseline.user_attrs["epochs_run"] == 4
    hyp = yaml.safe_load(open(baseline.user_attrs["hyp_path"]))
    assert hyp == baseline.user_attrs["hyp"]  # the scheduler's mark is no hyp
    assert schedulers[0].n_spared >= 1  # it would have been stopped


def test_ray_queues_a_trial_whose_worker_died_again_once(local_ray, workdir, monkeypatch,
                                                         capsys):
    dies = {"freeze": 1, "lr0": 0.05}
    enqueue_first(monkeypatch, dies)
    code = search(workdir, 2, "{name: none}", "--concurrency", "1", "--set",
                  "search.baseline=false", "--set", "trainer.exit_at_lr0=0.05")
    err = capsys.readouterr().err
    assert code == 0, err
    study = optuna.load_study(study_name="r", storage=URL)
    first, retry = study.trials[:2]
    assert first.state == retry.state == TrialState.FAIL
    assert "worker died" in first.user_attrs["fail_reason"]
    assert retry.params == dies and retry.user_attrs["retry_of"] == 0
    assert retry.system_attrs["retry_history"] == [0]
    assert "trial #0 lost its Ray worker: queued again as #1" in err
    # the retry died too: not queued a second time; two other trials make the total
    assert [t.number for t in study.trials if t.params == dies] == [0, 1]
    assert len(study.get_trials(states=(TrialState.COMPLETE, TrialState.PRUNED))) == 2
    assert not study.get_trials(states=(TrialState.WAITING, TrialState.RUNNING))


def test_ctrl_c_after_the_ray_run_stops_the_confirmation(local_ray, workdir, monkeypatch,
                                                         capsys):
    """Ray Tune's fit leaves its own SIGINT handler installed when it returns: a Ctrl-C during
    the confirmation only asked the finished Tune run to stop, and every confirmation run went
    on (exit 0). The driver runs the confirmation itself; the trials ran in Ray's workers."""
    import signal

    from tests.fakes import CurveAdapter

    run = CurveAdapter.run

    def interrupted(self, hyp, reporter, trial_dir):
        signal.raise_signal(signal.SIGINT)  # this process only: Ray's workers are others
        return run(self, hyp, reporter, trial_dir)

    monkeypatch.setattr(CurveAdapter, "run", interrupted)
    before = signal.getsignal(signal.SIGINT)
    code = search(workdir, 2, "{name: none}", "--set", "search.confirm.top_k=1",
                  "--set", "search.confirm.n_seeds=2")
    err = capsys.readouterr().err
    assert code == 130, err
    assert "interrupted: finished confirmation runs are kept" in err
    assert "confirm 1/" not in err  # the first confirmation run was the one interrupted
    assert signal.getsignal(signal.SIGINT) == before  # main() put it back
