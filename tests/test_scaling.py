"""Many workers on one study, crash resume and Ctrl-C, with real processes and storages."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import optuna
import pytest
import yaml

from tests.conftest import ROOT, process_alive
from tuner.cli import main

SPACE = """
study: s
trainer: {{adapter: curve, epochs: 3, sleep: {sleep}}}
objective: {{metric: val/acc}}
base: {{lr0: 0.001, momentum: 0.7}}
search: {{n_trials: {n_trials}, seed: 0, pruner: {{name: median, args: {{n_startup_trials: 2}}}}}}
space:
  freeze: {{type: int, low: 0, high: 5}}
  lr0: {{type: float, low: 1.0e-4, high: 1.0e-1, log: true}}
"""
FINISHED = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)


def write_space(workdir, n_trials, sleep=0.0):
    path = workdir / "s.yaml"
    path.write_text(SPACE.format(n_trials=n_trials, sleep=sleep))
    return path


def load(url="sqlite:///studies/s.db"):
    return optuna.load_study(study_name="s", storage=url)


def assert_exact_total(study, n_trials):
    finished = study.get_trials(states=FINISHED)
    assert len(finished) == n_trials
    numbers = [t.number for t in study.trials]
    assert len(numbers) == len(set(numbers))
    assert sum(bool(t.user_attrs.get("baseline")) for t in study.trials) == 1
    assert all(t.state != optuna.trial.TrialState.RUNNING for t in study.trials)


def test_four_local_workers_share_one_study_exactly(workdir, capsys, monkeypatch):
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    space = write_space(workdir, n_trials=12, sleep=0.05)
    assert main(["search", "--space", str(space), "--workers", "4"]) == 0
    study = load()
    assert_exact_total(study, 12)
    assert "4 workers started" in capsys.readouterr().err
    # every trial ran in a worker process, none in this one, and none failed ("database is
    # locked" would be a FAIL: the workers' own stderr is not captured here)
    pids = {t.system_attrs["tuner:worker"]["pid"] for t in study.trials}
    assert os.getpid() not in pids and len(pids) <= 4
    assert all(t.state != optuna.trial.TrialState.FAIL for t in study.trials)
    # the cores shared out: four torch processes of a thread per core each would oversubscribe
    threads = str(max(1, (os.cpu_count() or 1) // 4))
    assert {t.user_attrs["omp_num_threads"] for t in study.trials} == {threads}


def tuner_process(workdir, *args, **kwargs):
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.Popen(
        [sys.executable, "-m", "tests.run_tuner", *args],
        cwd=workdir,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        **kwargs,
    )


def wait_for(predicate, timeout=60.0, proc=None):
    """Poll ``predicate``; on timeout, say what the tuner process ``proc`` printed."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        if proc is not None and proc.poll() is not None:
            break  # it ended: no use waiting
        time.sleep(0.2)
    said = ""
    if proc is not None:
        if proc.poll() is None:
            proc.kill()
        _, err = proc.communicate(timeout=30)
        said = f"; the tuner (exit code {proc.returncode}) printed:\n{err[-3000:]}"
    raise AssertionError(f"condition not reached in {timeout:g} s{said}")


def running_after_complete(study_url="sqlite:///studies/s.db"):
    try:
        trials = load(study_url).trials
    except Exception:  # noqa: BLE001 - the database or the study does not exist yet
        return False
    states = [t.state for t in trials]
    # inside the training loop of a trial (it reported an epoch), after a finished one
    return (
        optuna.trial.TrialState.COMPLETE in states
        and states[-1].name == "RUNNING"
        and bool(trials[-1].intermediate_values)
    )


@pytest.mark.slow
def test_kill_9_then_resume_keeps_finished_trials_and_retries_the_lost_one(workdir):
    space = write_space(workdir, n_trials=4, sleep=0.4)
    proc = tuner_process(workdir, "search", "--space", str(space))
    wait_for(running_after_complete, proc=proc)
    finished_before = {t.number: t.value for t in load().get_trials(states=FINISHED)}
    lost = load().trials[-1]
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)

    again = tuner_process(workdir, "search", "--space", str(space))
    _, err = again.communicate(timeout=120)
    assert again.returncode == 0, err
    assert f"trial #{lost.number} lost its worker" in err
    study = load()
    assert study.trials[lost.number].state == optuna.trial.TrialState.FAIL
    assert "worker lost" in study.trials[lost.number].user_attrs["fail_reason"]
    for number, value in finished_before.items():
        assert study.trials[number].value == value  # nothing finished was lost
    retried = [t for t in study.trials[lost.number + 1 :] if t.params == lost.params]
    assert retried, "the lost configuration runs again"
    assert len(study.get_trials(states=FINISHED)) == 4


@pytest.mark.slow
def test_ctrl_c_records_the_trial_writes_best_so_far_and_exits_130(workdir):
    space = write_space(workdir, n_trials=20, sleep=0.4)
    proc = tuner_process(workdir, "search", "--space", str(space))
    wait_for(running_after_complete, proc=proc)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    study = load()
    interrupted = study.trials[-1]
    assert interrupted.state == optuna.trial.TrialState.FAIL
    assert "interrupted" in interrupted.user_attrs["fail_reason"]
    best = yaml.safe_load((workdir / "studies" / "s" / "best_hyp.yaml").read_text())
    assert best == study.best_trial.user_attrs["hyp"]


@pytest.mark.slow
def test_ctrl_c_with_workers_stops_every_worker_and_records_their_trials(workdir):
    """The terminal's Ctrl-C reaches the parent (each worker runs in a process group of its
    own), which forwards one SIGINT to each worker: no trial stays RUNNING, exit code 130."""
    space = write_space(workdir, n_trials=40, sleep=0.4)
    proc = tuner_process(workdir, "search", "--space", str(space), "--workers", "2",
                         start_new_session=True)  # a terminal's foreground group of its own
    wait_for(running_after_complete, proc=proc)
    os.killpg(proc.pid, signal.SIGINT)  # what a terminal does: the whole foreground group
    _, err = proc.communicate(timeout=90)
    assert proc.returncode == 130, err
    assert "Traceback" not in err
    study = load()
    assert not study.get_trials(states=(optuna.trial.TrialState.RUNNING,))
    failed = study.get_trials(states=(optuna.trial.TrialState.FAIL,))
    assert failed and all("interrupted" in t.user_attrs["fail_reason"] for t in failed)
    assert len(study.get_trials(states=FINISHED)) < 40


def test_postgres_two_workers(workdir):
    url = os.environ.get("TUNER_TEST_POSTGRES_URL")
    if not url:
        pytest.skip(
            "TUNER_TEST_POSTGRES_URL not set (.ci/postgres.sh starts a server and sets it)"
        )
    import uuid

    import sqlalchemy

    name = f"pg-{uuid.uuid4().hex[:8]}"
    # a schema of its own, empty: both workers create Optuna's tables at once, as workers
    # started together on a new database do (they raced in CREATE TABLE before the retry)
    schema = f"t_{uuid.uuid4().hex[:8]}"
    engine = sqlalchemy.create_engine(url)
    with engine.begin() as connection:
        connection.execute(sqlalchemy.text(f"CREATE SCHEMA {schema}"))
    engine.dispose()
    url = f"{url}?options=-csearch_path%3D{schema}"
    space = write_space(workdir, n_trials=8, sleep=0.05)
    args = ["search", "--space", str(space), "--storage", url, "--study", name]
    # each machine gets its own seed, or both would sample the same startup trials
    procs = [tuner_process(workdir, *args, "--seed", str(seed)) for seed in (1, 2)]
    for proc in procs:
        _, err = proc.communicate(timeout=180)
        assert proc.returncode == 0, err
    study = optuna.load_study(study_name=name, storage=url)
    assert_exact_total(study, 8)


@pytest.mark.parametrize("user_flags", [["--seed", "5"], ["--set", "search.seed=5"]])
def test_each_worker_gets_its_own_seed_however_the_seed_was_given(workdir, user_flags):
    """The parent hands worker i the seed N+i-1; a user's --set search.seed=N must not win."""
    from tuner.backends.local import _seed_flag
    from tuner.cli import _space_overrides, build_parser
    from tuner.space import load_space

    write_space(workdir, 4)
    argv = ["search", "--space", "s.yaml", *user_flags, "--workers", "2"]
    seeds = []
    for index in (1, 2):
        args = build_parser().parse_args([*argv, *_seed_flag(5, index)])
        seeds.append(load_space(args.space, _space_overrides(args)).search.seed)
    assert seeds == [5, 6]


SLOW_SCRIPT = """
import json, os, sys, time
with open("train.pid", "w") as out:
    out.write(str(os.getpid()))
with open(os.environ["TUNER_METRICS_FILE"], "a") as rows:
    rows.write(json.dumps({"val/acc": 0.5}) + "\\n")
time.sleep(120)
"""
SLOW_SPACE = """
study: s
trainer:
  adapter: command
  command: ["{{python}}", "{script}"]
  metrics_file: metrics.jsonl
  metrics: [val/acc]
  metric: val/acc
  epochs: 3
  keys: [lr0]
  grace: 2
base: {{lr0: 0.001}}
search: {{n_trials: 3, seed: 0}}
space:
  lr0: {{type: float, low: 1.0e-4, high: 1.0e-1, log: true}}
"""


@pytest.mark.slow
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="signals and /proc")
@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGKILL], ids=["term", "kill"])
def test_a_stopped_tuner_takes_its_training_subprocess_with_it(workdir, signum):
    """SIGTERM stops the tuner as Ctrl-C does (trial recorded, child stopped, exit 130); even a
    SIGKILLed tuner does not leave a training process running in its own session."""
    script = workdir / "train.py"
    script.write_text(SLOW_SCRIPT)
    (workdir / "s.yaml").write_text(SLOW_SPACE.format(script=script))
    proc = tuner_process(workdir, "search", "--space", "s.yaml")
    pid_file = workdir / "train.pid"  # the script runs in the current folder
    wait_for(lambda: pid_file.exists() and pid_file.read_text(), proc=proc)
    wait_for(lambda: bool(load().trials) and bool(load().trials[0].intermediate_values),
             proc=proc)
    child = int(pid_file.read_text())
    proc.send_signal(signum)
    _, err = proc.communicate(timeout=60)
    wait_for(lambda: not process_alive(child), timeout=30)
    if signum == signal.SIGTERM:
        assert proc.returncode == 130, err
        trial = load().trials[0]
        assert trial.state == optuna.trial.TrialState.FAIL
        assert trial.user_attrs["fail_reason"] == "interrupted (SIGTERM)"
