"""The search side end to end on the deterministic curve adapter (real Optuna, real SQLite)."""

from __future__ import annotations

import time

import optuna
import pytest
import yaml

from tests.fakes import CurveAdapter
from trainer.base import TrialError
from tuner import study as st
from tuner.errors import InputError, StudyError
from tuner.export import Pick, edge_params, export, header_lines, load_hyp
from tuner.objective import Objective
from tuner.space import load_space

SPACE = """
study: s
trainer: {adapter: curve, epochs: 5}
objective: {metric: val/acc, direction: maximize}
base: {lr0: 0.001, momentum: 0.7, freeze: 0}
search:
  n_trials: 12
  seed: 0
  sampler: {name: tpe, args: {n_startup_trials: 4}}
  pruner: {name: median, args: {n_startup_trials: 3, n_warmup_steps: 1}}
space:
  freeze: {type: int, low: 0, high: 5}
  lr0: {type: float, low: 1.0e-4, high: 1.0, log: true}
  momentum: {type: float, low: 0.6, high: 0.98}
"""


def run_study(tmp_path, text=SPACE, overrides=(), storage=None):
    path = tmp_path / "space.yaml"
    path.write_text(text)
    config = load_space(path, overrides)
    adapter = config.make_adapter(tmp_path / "cache")
    storage = storage or f"sqlite:///{tmp_path / 'db.sqlite3'}"
    study = st.create_or_load(config, st.open_storage(storage), config.to_dict(adapter), "test")
    st.enqueue_baseline(study, config, config.base_hyp(adapter))
    objective = Objective(config, adapter, config.base_hyp(adapter), tmp_path / "out")
    st.run(study, objective, config, [])
    return config, study


def test_study_prunes_and_beats_baseline(tmp_path):
    _, study = run_study(tmp_path)
    by_state = st.counts(study)
    assert by_state["COMPLETE"] + by_state["PRUNED"] == 12
    assert by_state["PRUNED"] >= 3  # the pruner really stopped trials early
    pruned = study.get_trials(states=(optuna.trial.TrialState.PRUNED,))
    assert all(t.user_attrs["epochs_run"] < 5 for t in pruned)
    base = st.baseline_trial(study)
    assert base.number == 0 and base.params == {"freeze": 0, "lr0": 0.001, "momentum": 0.7}
    assert study.best_value > base.value
    best = study.best_trial
    assert best.user_attrs["hyp"]["lrf"] == 0.01  # adapter default kept for unsearched keys
    assert (tmp_path / "out" / "trials" / f"{best.number:04d}" / "hyp.yaml").exists()
    assert len(best.intermediate_values) == 5


def test_neither_a_trials_last_epoch_nor_the_baseline_is_pruned():
    """A real median pruner that would stop the trial: not at its last epoch (it trained every
    epoch, so it is complete), and never the baseline (every comparison needs it)."""
    from trainer.base import Pruned
    from tuner.objective import OptunaReporter

    study = optuna.create_study(
        direction="maximize", pruner=optuna.pruners.MedianPruner(0, n_warmup_steps=2)
    )
    good = study.ask()
    for step in range(4):
        good.report(0.9, step)
    study.tell(good, 0.9)

    def outcome(**kwargs) -> str:
        reporter = OptunaReporter(study.ask(), "acc", prune=True, **kwargs)
        try:
            for epoch in range(kwargs.get("n_epochs") or 4):
                reporter.report(epoch, {"acc": 0.1})
        except Pruned as exc:
            return f"pruned at epoch {exc.epoch}"
        return "ran to the end"

    # steps 0 and 1 are warm-up; step 2 is below the median
    assert outcome(n_epochs=4) == "pruned at epoch 2"
    assert outcome(n_epochs=3) == "ran to the end"  # step 2 is its last epoch
    assert outcome() == "pruned at epoch 2"  # a trial of unknown length
    assert outcome(n_epochs=4, exempt=True) == "ran to the end"
    # the exempt trial still reported every epoch, for the pruner's view of the others
    assert sorted(study.trials[-1].intermediate_values) == [0, 1, 2, 3]


def test_a_search_never_prunes_its_baseline_even_behind_a_better_trial(tmp_path):
    """The Objective marks the baseline exempt: here it runs after a much better trial (as
    under several workers), below the median at every epoch, and still trains all 5."""
    path = tmp_path / "space.yaml"
    path.write_text(SPACE)
    sets = ["search.n_trials=3", "search.pruner.args={n_startup_trials: 1, n_warmup_steps: 0}"]
    config = load_space(path, sets)
    adapter = config.make_adapter(tmp_path / "cache")
    study = st.create_or_load(config, st.open_storage(f"sqlite:///{tmp_path / 'db.sqlite3'}"),
                              config.to_dict(adapter), "test")
    study.enqueue_trial({"freeze": 3, "lr0": 0.03, "momentum": 0.9})  # the best there is
    st.enqueue_baseline(study, config, config.base_hyp(adapter))
    study.enqueue_trial({"freeze": 0, "lr0": 0.001, "momentum": 0.7})  # the baseline's hyps
    objective = Objective(config, adapter, config.base_hyp(adapter), tmp_path / "out")
    st.run(study, objective, config, [])
    good, base, twin = study.trials
    assert base.user_attrs["baseline"] and not twin.user_attrs.get("baseline")
    assert base.state == optuna.trial.TrialState.COMPLETE and base.user_attrs["epochs_run"] == 5
    # the same hyps without the mark: pruned at the first epoch the median looks at
    assert twin.state == optuna.trial.TrialState.PRUNED and twin.user_attrs["epochs_run"] == 1
    assert good.state == optuna.trial.TrialState.COMPLETE


def test_an_exempt_trial_still_sets_the_rungs_of_successive_halving():
    """Successive halving records rung values only when asked: a baseline spared without
    asking would never be compared against, and a poor trial after it would run on."""
    from trainer.base import Pruned
    from tuner.objective import OptunaReporter

    study = optuna.create_study(
        direction="maximize",
        pruner=optuna.pruners.SuccessiveHalvingPruner(min_resource=1, reduction_factor=2),
    )

    def run(value: float, **kwargs) -> str:
        reporter = OptunaReporter(study.ask(), "acc", prune=True, n_epochs=4, **kwargs)
        try:
            for epoch in range(4):
                reporter.report(epoch, {"acc": value})
        except Pruned as exc:
            return f"pruned at epoch {exc.epoch}"
        return "ran to the end"

    assert run(0.9, exempt=True) == "ran to the end"
    assert any(key.startswith("completed_rung") for key in study.trials[0].system_attrs)
    assert run(0.1) == "pruned at epoch 1"  # below the baseline at the first rung


def test_a_failed_baseline_is_queued_again_on_resume(tmp_path):
    """A Ctrl-C (or a lost worker) during the baseline must not leave the study without one."""
    path = tmp_path / "space.yaml"
    path.write_text(SPACE)
    config = load_space(path)
    adapter = config.make_adapter(tmp_path / "cache")
    storage = st.open_storage(f"sqlite:///{tmp_path / 'db.sqlite3'}")
    study = st.create_or_load(config, storage, config.to_dict(adapter), "test")
    assert st.enqueue_baseline(study, config, config.base_hyp(adapter))
    trial = study.ask()
    assert trial.user_attrs["baseline"]
    study.tell(trial, state=optuna.trial.TrialState.FAIL)
    assert st.enqueue_baseline(study, config, config.base_hyp(adapter))
    waiting = study.get_trials(states=(optuna.trial.TrialState.WAITING,))
    assert len(waiting) == 1 and waiting[0].user_attrs["baseline"]
    assert not st.enqueue_baseline(study, config, config.base_hyp(adapter))  # queued: once
    rerun = study.ask()
    assert rerun.user_attrs["baseline"] and rerun.suggest_float("lr0", 1e-4, 1.0) == 0.001


def test_resume_adds_only_missing_trials(tmp_path):
    _, study = run_study(tmp_path, overrides=["search.n_trials=4"])
    assert st.n_finished(study) == 4
    _, study = run_study(tmp_path, overrides=["search.n_trials=7"])
    assert st.n_finished(study) == 7
    assert len(study.trials) == 7  # resumed, not restarted; one baseline only
    assert sum(bool(t.user_attrs.get("baseline")) for t in study.trials) == 1
    _, study = run_study(tmp_path, overrides=["search.n_trials=7"])
    assert len(study.trials) == 7  # a finished study runs nothing


def test_failed_trials_do_not_count_and_keep_their_reason(tmp_path):
    _, study = run_study(
        tmp_path,
        overrides=["search.n_trials=6", "trainer.crash_above_lr0=0.3", "search.max_failures=50"],
    )
    failed = study.get_trials(states=(optuna.trial.TrialState.FAIL,))
    assert st.n_finished(study) == 6
    assert failed, "the space reaches lr0 > 0.3, so some trials must fail"
    assert all("simulated crash" in t.user_attrs["fail_reason"] for t in failed)


def test_diverged_trials_count_as_pruned_and_keep_their_reason(tmp_path):
    _, study = run_study(
        tmp_path,
        overrides=["search.n_trials=6", "trainer.fail_above_lr0=0.3", "search.max_failures=1"],
    )
    assert st.n_finished(study) == len(study.trials) == 6  # none failed, none ran in vain
    diverged = [t for t in study.trials if t.user_attrs.get("diverged")]
    assert diverged, "the space reaches lr0 > 0.3, so some trials must diverge"
    for trial in diverged:
        assert trial.state == optuna.trial.TrialState.PRUNED
        assert trial.user_attrs["fail_reason"].startswith("diverged: non-finite loss")


def test_budget_counts_failures_and_divergences_in_a_row():
    budget = st.Budget(n_trials=10, max_failures=2)
    fail, pruned = optuna.trial.TrialState.FAIL, optuna.trial.TrialState.PRUNED
    budget.count(fail)
    budget.count(pruned, diverged=True)  # a divergence breaks a row of failures
    budget.count(fail)  # ... and a failure a row of divergences
    assert budget.failures_in_a_row == 1 and budget.diverged_in_a_row == 0
    for _ in range(3):
        budget.count(pruned, diverged=True)
    assert budget.diverged_in_a_row == 3 and not budget.stopped_for_failures
    budget.count(pruned)  # an ordinary pruned trial: the loss is finite after all
    assert budget.diverged_in_a_row == 0 and not budget.stopped_for_failures
    for _ in range(4):
        budget.count(pruned, diverged=True)
    assert budget.stopped_for == "divergence"
    assert "4 diverged trials in a row" in str(budget.failure_error())


def test_crashing_setup_stops_after_max_failures(tmp_path):
    with pytest.raises(StudyError, match="3 failed trials in a row"):
        run_study(
            tmp_path,
            overrides=[
                "trainer.crash_above_lr0=0.0",
                "search.max_failures=3",
                "search.baseline=false",
            ],
        )


def test_export_round_trip(tmp_path):
    _, study = run_study(tmp_path, overrides=["search.n_trials=5"])
    out = tmp_path / "best.yaml"
    pick, text = export(study, out, command="tuner search --space x")
    loaded = load_hyp(out)
    assert loaded == pick.trial.user_attrs["hyp"]
    assert set(CurveAdapter.default_hyp()) <= set(loaded)
    header = [line for line in text.splitlines() if line.startswith("#")]
    joined = "\n".join(header)
    assert f"trial: {study.best_trial.number}" in joined
    assert "baseline (trial 0)" in joined and "gain +" in joined
    assert "command: tuner search --space x" in joined and "date: " in joined
    # freeze-strategy keys come last, after the plain hyp keys
    keys = list(yaml.safe_load(text))
    assert keys[-2:] == ["freeze", "lr_decay"]
    # a chosen trial
    _, text = export(study, out, number=1)
    assert load_hyp(out) == study.trials[1].user_attrs["hyp"]


def _trial(params):
    dists = {
        "lr0": optuna.distributions.FloatDistribution(1e-4, 0.1, log=True),
        "momentum": optuna.distributions.FloatDistribution(0.6, 0.98),
        "fliplr": optuna.distributions.FloatDistribution(0.0, 0.5),
        "freeze": optuna.distributions.IntDistribution(0, 5),
    }
    return optuna.trial.create_trial(
        params=params, distributions={k: dists[k] for k in params}, value=0.5
    )


def test_edge_params_flag_searched_floats_at_a_bound():
    # lr0 0.09 is 98.5% along its log range (flagged), 90% along a linear one; momentum at
    # either end is flagged; 0 as a lower bound is "off", not a guess; integers never
    trial = _trial({"lr0": 0.09, "momentum": 0.6, "fliplr": 0.0, "freeze": 5})
    assert edge_params(trial) == [
        "lr0=0.09 (high end of 0.0001..0.1)",
        "momentum=0.6 (low end of 0.6..0.98)",
    ]
    assert edge_params(_trial({"momentum": 0.975, "fliplr": 0.5})) == [
        "momentum=0.975 (high end of 0.6..0.98)",
        "fliplr=0.5 (high end of 0..0.5)",
    ]
    assert edge_params(_trial({"lr0": 0.01, "momentum": 0.9, "fliplr": 0.01})) == []
    # a value outside its range (an enqueued base value) is not "at a bound"
    outside = _trial({"momentum": 0.9})
    outside.params["momentum"] = 0.99
    assert edge_params(outside) == []
    # the baseline's values are the base hyps, not tuned: nothing to widen
    baseline = _trial({"momentum": 0.6})
    baseline.set_user_attr("baseline", True)
    assert edge_params(baseline) == []


def test_export_header_names_values_at_a_bound():
    study = optuna.create_study(direction="maximize")
    study.add_trial(_trial({"lr0": 0.1, "momentum": 0.8}))
    study.add_trial(_trial({"lr0": 0.01, "momentum": 0.8}))
    edge, inner = (Pick(t, "test") for t in study.trials)
    assert any(
        line == "at a bound of their searched range (widen it, unless the bound is a hard limit): "
        "lr0=0.1 (high end of 0.0001..0.1)"
        for line in header_lines(study, edge, None)
    )
    assert not any("at a bound" in line for line in header_lines(study, inner, None))


def test_unknown_pruner_and_bad_args_are_input_errors(tmp_path):
    with pytest.raises(InputError, match="search.pruner.name: unknown pruner 'medain'"):
        run_study(tmp_path, SPACE.replace("name: median", "name: medain"))
    with pytest.raises(InputError, match="search.sampler.args.n_startup: not an argument of tpe"):
        run_study(tmp_path, SPACE.replace("n_startup_trials: 4", "n_startup: 4"))


@pytest.mark.parametrize("url,message", [
    ("not-a-url", "'not-a-url' is not a storage URL"),
    ("nosuchdb://x/y", "cannot open nosuchdb://x/y"),
    ("postgresql://u@127.0.0.1:1/db", "cannot open postgresql://u@127.0.0.1:1/db"),
])
def test_bad_storage_urls(url, message):
    with pytest.raises(InputError, match="--storage") as caught:
        st.open_storage(url)
    assert message in str(caught.value)


def test_same_seed_same_trials(tmp_path):
    """A study is reproducible from its seed: the same sampled values, in the same order."""
    def params(seed, folder):
        folder.mkdir()
        _, study = run_study(folder, overrides=["search.n_trials=8", f"search.seed={seed}"])
        return [t.params for t in study.trials]

    first = params(3, tmp_path / "a")
    assert params(3, tmp_path / "b") == first
    assert params(4, tmp_path / "c") != first


@pytest.mark.parametrize("direction,how,value", [
    ("maximize", "best", 0.9), ("maximize", "last", 0.7),
    ("minimize", "best", 0.5), ("minimize", "last", 0.7),
])
def test_reduce_metric(direction, how, value):
    from tuner.objective import reduce_metric

    history = [{"m": 0.5}, {"m": 0.9}, {"m": 0.7}, {"other": 0.1}]
    assert reduce_metric(history, "m", direction, how) == value
    with pytest.raises(TrialError, match="'x' was never reported"):
        reduce_metric(history, "x", direction, how)


def test_timeout_starts_no_trial_after_it_and_lets_the_running_one_finish(tmp_path):
    _, study = run_study(tmp_path, SPACE.replace("epochs: 5}", "epochs: 3, sleep: 0.2}"),
                         overrides=["search.n_trials=100", "search.timeout=1"])
    assert 1 <= len(study.trials) < 100
    states = {t.state for t in study.trials}
    assert states <= {optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED}


def test_journal_storage(tmp_path):
    _, study = run_study(
        tmp_path, overrides=["search.n_trials=3"], storage=f"journal:{tmp_path / 'j.log'}"
    )
    assert st.n_finished(study) == 3


def test_multi_objective_study_disables_pruning(tmp_path):
    text = SPACE.replace(
        "objective: {metric: val/acc, direction: maximize}",
        "objective: [{metric: val/acc, direction: maximize}, {metric: train_time}]",
    )
    config, study = run_study(tmp_path, text, overrides=["search.n_trials=5"])
    assert st.pruning_disabled_notice(config)
    assert st.counts(study)["COMPLETE"] == 5
    assert all(len(t.values) == 2 for t in study.trials)
    assert study.directions[1] == optuna.study.StudyDirection.MINIMIZE


def test_sqlite_storage_writes_ahead_without_a_sync_per_commit(tmp_path):
    import sqlite3

    storage = st.open_storage(f"sqlite:///{tmp_path / 'w.db'}")
    study = optuna.create_study(storage=storage, study_name="w")
    study.optimize(lambda t: t.suggest_float("x", 0, 1), n_trials=2)
    with storage.engine.connect() as conn:
        sync = conn.exec_driver_sql("PRAGMA synchronous").scalar()
    assert sync == 1  # NORMAL: fsync at checkpoints, not at every one of ~40 commits a trial
    # WAL is a property of the file: any other process (a worker, `tuner status`) sees it
    with sqlite3.connect(tmp_path / "w.db") as other:
        assert other.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert len(optuna.load_study(study_name="w", storage=storage).trials) == 2


def test_a_search_leaves_the_garbage_collector_as_it_found_it(tmp_path, monkeypatch):
    import gc

    from tuner.cli import main

    monkeypatch.chdir(tmp_path)
    (tmp_path / "g.yaml").write_text(
        "trainer: {adapter: curve, epochs: 2}\nobjective: {metric: val/acc}\n"
        "search: {n_trials: 2}\nspace: {lr0: {type: float, low: 0.001, high: 0.1}}\n"
    )
    seen = []
    run = CurveAdapter.run

    def counting_run(self, *args, **kwargs):
        seen.append(gc.get_freeze_count())
        return run(self, *args, **kwargs)

    monkeypatch.setattr(CurveAdapter, "run", counting_run)
    assert gc.get_freeze_count() == 0
    assert main(["search", "--space", "g.yaml"]) == 0
    # frozen during the trials (long-lived objects out of the per-trial collection), not after
    assert len(seen) == 2 and all(n > 1000 for n in seen)
    assert gc.get_freeze_count() == 0


def test_frozen_heap_gives_the_collector_back_after_an_error():
    import gc

    from tuner.objective import frozen_heap

    with pytest.raises(RuntimeError), frozen_heap():
        assert gc.get_freeze_count() > 1000  # what lived before: out of the per-trial scans
        raise RuntimeError("a trial loop that fails")
    assert gc.get_freeze_count() == 0


@pytest.mark.parametrize("kind", ["journal", "sqlite"])
def test_a_trial_of_a_silent_worker_elsewhere_fails_and_is_retried_once(tmp_path, kind):
    """Another machine's worker cannot be looked up: its missed heartbeats fail its trial,
    whose configuration runs again, once (a config that kills its worker twice is dropped)."""
    url = f"journal:{tmp_path / 'j.log'}" if kind == "journal" else f"sqlite:///{tmp_path}/s.db"
    storage = st.open_storage(url, heartbeat_interval=1, grace_period=1)
    study = optuna.create_study(storage=storage, study_name="h", direction="maximize")
    elsewhere = {"host": "other-machine", "pid": 4242, "pid_table": "not-this-one"}

    def silent_trial(params=None):
        trial = study.ask({"lr0": optuna.distributions.FloatDistribution(1e-4, 1.0)}
                          if params is None else None)
        if params is not None:  # a queued retry: its fixed params are applied on suggest
            trial.suggest_float("lr0", 1e-4, 1.0)
        storage.set_trial_system_attr(trial._trial_id, st.WORKER_ATTR, elsewhere)
        if kind == "journal":
            storage.set_trial_system_attr(trial._trial_id, st.HEARTBEAT_ATTR, time.time() - 60)
        else:
            storage.record_heartbeat(trial._trial_id)
        return trial

    first = silent_trial()
    time.sleep(2.2)  # past the grace period without a beat
    assert st.fail_stale_trials(study) == [first.number]
    lost = study.trials[first.number]
    assert lost.state == optuna.trial.TrialState.FAIL
    assert lost.user_attrs["fail_reason"] == (
        "worker lost: no heartbeat from pid 4242 on other-machine for over 1s"
    )
    waiting = study.get_trials(states=(optuna.trial.TrialState.WAITING,))
    assert [t.params for t in waiting] == [lost.params]
    assert waiting[0].user_attrs["retry_of"] == first.number
    retry = silent_trial(params=lost.params)
    assert retry.params == lost.params
    time.sleep(2.2)
    assert st.fail_stale_trials(study) == [retry.number]
    assert not study.get_trials(states=(optuna.trial.TrialState.WAITING,))  # retried once only


def test_a_worker_waits_for_the_last_running_trial_and_replaces_it_when_it_fails(tmp_path):
    """Two workers, one trial left: the second waits instead of overshooting the total, and
    when the running trial fails, the total is still met exactly (by whichever worker)."""
    import threading

    path = tmp_path / "space.yaml"
    path.write_text(SPACE)
    config = load_space(path, ["search.n_trials=1"])
    storage = st.open_storage(f"sqlite:///{tmp_path / 'w.db'}")
    study = optuna.create_study(storage=storage, study_name="w", direction="maximize")
    calls = []

    def objective(trial):
        calls.append(trial.number)
        trial.suggest_float("lr0", 1e-4, 1.0)
        if len(calls) == 1:
            time.sleep(1.0)  # long enough for the other worker to find nothing to start
            raise RuntimeError("first trial fails")
        return 0.5

    lock, waited = st.SlotLock(), []
    workers = [
        threading.Thread(target=st.run, args=(study, objective, config, []),
                         kwargs={"lock": lock, "on_wait": waited.append, "poll_seconds": 0.1})
        for _ in range(2)
    ]
    workers[0].start()
    time.sleep(0.3)  # the first trial is running
    workers[1].start()
    for worker in workers:
        worker.join(timeout=30)
    states = [t.state for t in study.trials]
    assert states == [optuna.trial.TrialState.FAIL, optuna.trial.TrialState.COMPLETE]
    assert waited and waited[0] == 1  # told it waits for 1 running trial


def test_a_trials_user_attrs_are_one_transaction_on_rdb_storages(tmp_path):
    from sqlalchemy import event

    storage = st.open_storage(f"sqlite:///{tmp_path / 'a.db'}")
    study = optuna.create_study(storage=storage, study_name="a")
    trial = study.ask()
    commits = []
    event.listen(storage.engine, "commit", lambda conn: commits.append(conn))
    attrs = {"a": 1, "b": [1, 2.5], "c": {"x": "y"}}
    st.set_user_attrs(trial, attrs)
    assert len(commits) == 1  # Optuna's set_user_attr commits once per key
    assert trial.user_attrs == attrs  # the Trial's own copy, as its setter keeps it
    assert optuna.load_study(study_name="a", storage=storage).trials[0].user_attrs == attrs
    st.set_user_attrs(trial, {"a": 2})  # an upsert, as Optuna's
    assert study.trials[0].user_attrs["a"] == 2
    study.tell(trial, 0.5)
    with pytest.raises(optuna.exceptions.UpdateFinishedTrialError):
        st.set_user_attrs(trial, {"d": 1})  # all or nothing, as Optuna refuses one
    assert "d" not in study.trials[0].user_attrs


def test_user_attrs_fall_back_to_one_write_each_on_a_conflict_or_a_journal(tmp_path, monkeypatch):
    import sqlalchemy.exc

    storage = st.open_storage(f"sqlite:///{tmp_path / 'a.db'}")
    study = optuna.create_study(storage=storage, study_name="a")
    trial = study.ask()
    write = storage._set_trial_attr_without_commit
    calls = []

    def conflict_once(session, *args):
        # another writer inserted the same key first: the batch rolls back, one by one wins
        calls.append(args)
        if len(calls) == 2:
            raise sqlalchemy.exc.IntegrityError("insert", {}, Exception("unique"))
        write(session, *args)

    monkeypatch.setattr(storage, "_set_trial_attr_without_commit", conflict_once)
    st.set_user_attrs(trial, {"a": 1, "b": 2})
    assert study.trials[0].user_attrs == {"a": 1, "b": 2}
    journal = optuna.create_study(storage=st.open_storage(f"journal:{tmp_path / 'j.log'}"))
    trial = journal.ask()
    st.set_user_attrs(trial, {"a": 1, "b": 2})
    assert journal.trials[0].user_attrs == {"a": 1, "b": 2} == trial.user_attrs


def test_the_reporters_time_is_recorded_apart_from_the_trainers(tmp_path):
    # the reporter runs inside the trainer's loop, but what it does (storing the value, the
    # pruning decision, the progress hook) is the tuner's cost: the overhead benchmark needs it
    path = tmp_path / "space.yaml"
    path.write_text(SPACE)
    config = load_space(path, ["search.n_trials=3"])
    adapter = config.make_adapter(tmp_path / "cache")
    study = st.create_or_load(
        config, st.open_storage(f"sqlite:///{tmp_path / 'db.sqlite3'}"),
        config.to_dict(adapter), "test",
    )
    objective = Objective(
        config, adapter, config.base_hyp(adapter), tmp_path / "out",
        on_epoch=lambda number, epoch, metrics: time.sleep(0.01),
    )
    st.run(study, objective, config, [])
    for trial in study.trials:
        n_reports = len(trial.intermediate_values)
        assert n_reports and trial.user_attrs["report_seconds"] >= 0.01 * n_reports
        assert trial.user_attrs["wall_seconds"] >= trial.user_attrs["report_seconds"]


def test_written_files_get_the_mode_open_would_give(tmp_path):
    """The hyp file and the report are read by pipelines and teammates: not private (0600)."""
    import os

    from tuner.export import write_atomic

    old = os.umask(0o027)
    try:
        write_atomic(tmp_path / "a.yaml", "lr0: 0.01\n")
        os.umask(0o022)
        write_atomic(tmp_path / "b.yaml", "lr0: 0.01\n")
    finally:
        os.umask(old)
    assert (tmp_path / "a.yaml").stat().st_mode & 0o777 == 0o640
    assert (tmp_path / "b.yaml").stat().st_mode & 0o777 == 0o644
    # a rewrite keeps the mode the file has (one a person made private stays private)
    (tmp_path / "a.yaml").chmod(0o600)
    write_atomic(tmp_path / "a.yaml", "lr0: 0.02\n")
    assert (tmp_path / "a.yaml").stat().st_mode & 0o777 == 0o600
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.yaml", "b.yaml"]  # no temp file


def test_settings_differences_are_key_by_key_and_paths_compare_by_file_name():
    from tuner.study import _differences

    had = {"epochs": 3, "data": "/a/data/coco.yaml", "synthetic": {"n_train": 300, "seed": 0},
           "device": "cpu", "old_setting": 1, "train_args": {"plots": False, "lr": 1}}
    same = {**had, "data": "/b/elsewhere/coco.yaml", "device": "cuda", "new_setting": 2,
            "synthetic": {"n_train": 300, "seed": 0, "new_nested": 1},
            "train_args": {"plots": True, "lr": 1}}
    skip = {"device", "train_args.plots"}
    assert list(_differences(had, same, skip)) == []
    other = {**same, "data": "/a/data/voc.yaml", "synthetic": {"n_train": 600, "seed": 0},
             "train_args": {"plots": True, "lr": 2}, "epochs": 4}
    assert list(_differences(had, other, skip)) == [
        ("data", "/a/data/coco.yaml", "/a/data/voc.yaml"),
        ("epochs", 3, 4),
        ("synthetic.n_train", 300, 600),
        ("train_args.lr", 1, 2),
    ]
    # a relative path or a name is compared as it is
    assert list(_differences({"w": "yolov5s.pt"}, {"w": "x/yolov5s.pt"}, ())) == [
        ("w", "yolov5s.pt", "x/yolov5s.pt")
    ]


def _open_at(url: str, start: float) -> str:
    """Open ``url`` at the wall time ``start`` (in a process of its own); say what happened."""
    from tuner.errors import TunerError
    from tuner.study import open_storage

    time.sleep(max(0.0, start - time.time()))
    try:
        open_storage(url)
    except TunerError as exc:
        return str(exc)
    return "ok"


def test_processes_opening_a_new_sqlite_file_at_once_all_get_the_study(tmp_path):
    """The first open of a file creates Optuna's tables; a second process creating them at the
    same instant failed with "table studies already exists" (a search starting while `tuner
    status` or the dashboard opened its file) and is retried now."""
    import multiprocessing

    url = f"sqlite:///{tmp_path / 'new.db'}"
    ctx = multiprocessing.get_context("spawn")
    with ctx.Pool(4) as pool:
        start = time.time() + 3.0  # after every process has imported optuna
        results = pool.starmap(_open_at, [(url, start)] * 4)
    assert results == ["ok"] * 4


@pytest.mark.parametrize("sampler", ["random", "tpe"])
def test_a_resumed_search_draws_new_configurations(workdir, sampler):
    """A resumed process seeded as the study was drew its start-up points again and so
    re-trained configurations the study already had; a new study keeps its seed."""
    from tuner.cli import main

    (workdir / "s.yaml").write_text(
        "study: r\ntrainer: {adapter: curve, epochs: 2}\nobjective: {metric: val/acc}\n"
        f"search: {{n_trials: 3, seed: 0, sampler: {{name: {sampler}}}, pruner: {{name: none}}}}\n"
        "space:\n  lr0: {type: float, low: 1.0e-4, high: 1.0e-1, log: true}\n"
        "  momentum: {type: float, low: 0.6, high: 0.98}\n"
    )
    assert main(["search", "--space", "s.yaml"]) == 0
    first = [t.params for t in optuna.load_study(study_name="r",
                                                 storage="sqlite:///studies/r.db").trials]
    assert main(["search", "--space", "s.yaml", "--n-trials", "6"]) == 0
    study = optuna.load_study(study_name="r", storage="sqlite:///studies/r.db")
    params = [tuple(sorted(t.params.items())) for t in study.trials]
    assert len(params) == 6 and len(set(params)) == 6  # nothing drawn twice
    # the same study made again from nothing draws what the first run drew
    assert main(["search", "--space", "s.yaml", "--study", "r2"]) == 0
    again = optuna.load_study(study_name="r2", storage="sqlite:///studies/r2.db").trials
    assert [t.params for t in again] == first
