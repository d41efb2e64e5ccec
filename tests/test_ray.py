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
