"""Confirmation on fresh seeds: the top trials and the baseline re-trained, the best mean exported.

The curve adapter with ``noise`` adds a seed-dependent offset to each configuration's score (a
real trainer's run-to-run noise), so the search's best is partly a lucky draw; the tests check
the recorded values against the adapter's own formula, the pick against the fresh-seed means,
resuming after an interrupt, failed runs, and what ``status`` and ``export`` say.
"""

from __future__ import annotations

import re
import statistics
from pathlib import Path

import optuna
import pytest
import yaml

from tests.fakes import CurveAdapter
from tuner import confirm as cf
from tuner.cli import main
from tuner.export import default_pick, load_hyp, pick_trial
from tuner.space import load_space

SPACE = """
study: c
trainer: {adapter: curve, epochs: 2, noise: 0.3}
objective: {metric: val/acc}
base: {lr0: 0.001, momentum: 0.7}
search: {n_trials: 8, seed: 1, sampler: {name: random}, pruner: {name: none}}
space:
  lr0: {type: float, low: 1.0e-3, high: 1.0e-1, log: true}
  momentum: {type: float, low: 0.6, high: 0.98}
"""
URL = "sqlite:///studies/c.db"


def expected_value(hyp: dict, seed: int, epochs: int = 2, noise: float = 0.3) -> float:
    """What the curve adapter scores for ``hyp`` at ``seed`` (best epoch = the last)."""
    adapter = CurveAdapter({"epochs": epochs, "noise": noise, "seed": seed}, Path("."))
    q = adapter.quality(hyp) + adapter.seed_noise(hyp)
    return q * (1 - 2.718281828459045 ** (-epochs))


def load() -> optuna.Study:
    return optuna.load_study(study_name="c", storage=URL)


def crashing_on(seed: int, workdir: Path):
    """A ``make_adapter`` for :func:`tuner.confirm.run_confirm` whose runs crash at ``seed``."""

    def build(seeded):
        adapter = seeded.make_adapter(workdir)
        if adapter.settings.seed == seed:
            def crash(hyp, reporter, trial_dir):
                raise RuntimeError(f"simulated crash on seed {seed}")

            adapter.run = crash
        return adapter

    return build


def test_record_round_trips_through_json_and_ranks_by_fresh_mean():
    record = cf.ConfirmRecord(
        metric="val/loss",
        direction="minimize",
        seeds=(1, 2),
        trials=(4, 7),
        baseline=0,
        runs={4: {1: 0.30, 2: 0.50}, 7: {1: 0.35, 2: None}, 0: {1: 0.6, 2: 0.62}},
        reasons={7: {2: "RuntimeError: boom"}},
        search_values={4: 0.1, 7: 0.2, 0: 0.5},
        epochs=18,
    )
    attr = record.to_attr()
    back = cf.ConfirmRecord.from_attr(yaml.safe_load(yaml.safe_dump(attr)))
    assert back == record
    assert back.confirmed == (4, 7, 0)
    assert back.complete and back.n_done == back.n_runs == 6
    # minimise: trial 7 scored 0.35 on its one good run, but its other run failed; trial 4
    # (mean 0.40, both runs fine) is the safer pick
    assert cf.best_confirmed(back) == 4
    # without that failure, the better mean wins
    clean = cf.ConfirmRecord(**{**back.__dict__, "runs": {**back.runs, 7: {1: 0.35, 2: 0.36}},
                                "reasons": {}})
    assert cf.best_confirmed(clean) == 7
    assert back.mean(4) == pytest.approx(0.40)
    # gains compare the seeds both ran: trial 7 on seed 1 only (0.35 against 0.6), not its
    # one-seed mean against the baseline's two-seed mean (0.61)
    assert back.gain(4) == pytest.approx(0.61 - 0.40)
    assert back.gain(7) == pytest.approx(0.6 - 0.35)
    assert back.gain(0) is None  # the baseline itself
    lost = cf.ConfirmRecord(**{**back.__dict__, "runs": {**back.runs, 0: {1: None, 2: 0.62}}})
    assert lost.gain(7) is None  # no seed in common
    assert lost.gain(4) == pytest.approx(0.62 - 0.50)
    text = "\n".join(cf.summary_lines(back))
    assert "baseline" in text and "picked" in text and "1 failed" in text
    # with runs of other lengths on record: they round-trip, and the table names them
    kept = (cf.KeptRuns("val/loss", "minimize", 6, "best", runs={4: {1: 0.2, 2: None}},
                        reasons={4: {2: "RuntimeError: boom"}}, curves={4: {1: (0.3, 0.2)}}),)
    both = cf.ConfirmRecord(**{**record.__dict__, "kept": kept})
    assert cf.ConfirmRecord.from_attr(yaml.safe_load(yaml.safe_dump(both.to_attr()))) == both
    assert both.other_lengths == {6: 2}
    assert cf.summary_lines(both)[-1] == ("  runs on record at other lengths: 6 epochs (2 runs) "
                                          "(a confirmation at that length reuses them)")


def test_search_with_confirm_exports_the_best_fresh_mean(workdir, capsys):
    (workdir / "c.yaml").write_text(SPACE)
    assert main(["search", "--space", "c.yaml", "--confirm", "3"]) == 0
    err = capsys.readouterr().err
    assert "confirm: re-training the top 3 trials and the baseline (trial 0)" in err
    assert "confirm 8/8:" in err

    study = load()
    record = cf.load_record(study)
    assert record is not None and record.complete
    assert record.seeds == (1, 2)  # the study's trainer seed is 0
    assert record.baseline == 0 and 0 not in record.trials
    complete = sorted(
        study.get_trials(states=(optuna.trial.TrialState.COMPLETE,)), key=lambda t: -t.value
    )
    assert list(record.trials) == [t.number for t in complete[:3]]
    trials = {t.number: t for t in study.trials}
    means = {}
    for number in record.confirmed:
        hyp = trials[number].user_attrs["hyp"]
        fresh = [expected_value(hyp, seed) for seed in (1, 2)]
        assert [record.runs[number][s] for s in (1, 2)] == pytest.approx(fresh)
        means[number] = statistics.fmean(fresh)
        assert (workdir / "studies" / "c" / "confirm" / f"{number:04d}-seed1-2ep").is_dir()
    picked = max(means, key=means.get)

    pick = pick_trial(study)
    assert pick.trial.number == picked and pick.rule.startswith("confirmed:")
    best_file = workdir / "studies" / "c" / "best_hyp.yaml"
    text = best_file.read_text()
    assert (
        f"trial: {picked} (confirmed: the best mean val/acc over fresh trainer seeds 1, 2 at 2 "
        "epochs" in text
    )
    assert "fresh trainer seeds 1, 2 at 2 epochs: val/acc mean" in text
    if picked != 0:
        assert "baseline (trial 0) on the same seeds: mean" in text
        assert "gain on fresh seeds" in text
    assert load_hyp(best_file)["lr0"] == pytest.approx(trials[picked].user_attrs["hyp"]["lr0"])

    assert main(["status", "--storage", URL]) == 0
    out = capsys.readouterr().out
    assert "confirmed on trainer seeds 1, 2 at 2 epochs (8/8 runs):" in out
    # the plain best is still there on request
    assert pick_trial(study, rule="best-metric").trial.number == complete[0].number


def test_interrupted_confirmation_resumes_without_repeating_runs(workdir, capsys):
    (workdir / "c.yaml").write_text(SPACE)
    assert main(["search", "--space", "c.yaml"]) == 0
    config = load_space(workdir / "c.yaml")
    study = load()
    calls: list[tuple[float, int]] = []

    def build(seeded, stop_after=None):
        adapter = seeded.make_adapter(workdir)
        real_run = adapter.run

        def run(hyp, reporter, trial_dir):
            if stop_after is not None and len(calls) == stop_after:
                raise KeyboardInterrupt
            calls.append((hyp["lr0"], adapter.settings.seed))
            return real_run(hyp, reporter, trial_dir)

        adapter.run = run
        return adapter

    adapter = config.make_adapter(workdir)
    with pytest.raises(KeyboardInterrupt):
        cf.run_confirm(study, config, adapter, workdir / "out", 2, 2, print,
                       make_adapter=lambda c: build(c, stop_after=3))
    partial = cf.load_record(load())
    assert partial.n_done == 3 and not partial.complete
    # an unfinished confirmation does not change the default pick
    assert pick_trial(load()).rule.startswith("best-metric")
    first = list(calls)
    record = cf.run_confirm(load(), config, adapter, workdir / "out", 2, 2, print,
                            make_adapter=build)
    assert record.complete and record.n_runs == 6
    assert len(calls) == 6 and calls[:3] == first  # three new runs, none repeated
    assert len(set(calls)) == 6


def test_a_failing_confirmation_run_is_recorded_and_the_rest_go_on(workdir, capsys):
    (workdir / "c.yaml").write_text(SPACE)
    assert main(["search", "--space", "c.yaml"]) == 0
    config = load_space(workdir / "c.yaml")
    build = crashing_on(2, workdir)
    record = cf.run_confirm(load(), config, config.make_adapter(workdir), workdir / "out", 2, 2,
                            print, make_adapter=build)
    assert record.complete
    for number in record.confirmed:
        assert record.runs[number][2] is None
        assert record.reasons[number][2] == "RuntimeError: simulated crash on seed 2"
        assert record.values(number) == [record.runs[number][1]]
    assert cf.best_confirmed(record) == max(record.confirmed, key=lambda n: record.runs[n][1])
    capsys.readouterr()
    assert main(["status", "--storage", URL]) == 0
    assert "1 failed" in capsys.readouterr().out
    # a crash (out of memory beside another job, a timeout) is not what the hyps measure: a
    # later confirmation trains those runs again, and only those
    said = []
    again = cf.run_confirm(load(), config, config.make_adapter(workdir), workdir / "out", 2, 2,
                           said.append, make_adapter=lambda seeded: seeded.make_adapter(workdir))
    assert all(again.runs[n][2] is not None for n in again.confirmed)
    assert {n: again.runs[n][1] for n in again.confirmed} == {
        n: record.runs[n][1] for n in record.confirmed}
    assert any(f"{len(record.confirmed)} earlier runs that failed" in line for line in said)


def test_a_diverged_confirmation_run_is_not_trained_again(workdir):
    """A divergence is the hyps' doing: on the same seed it would only diverge again."""
    from trainer.base import DivergedError

    (workdir / "c.yaml").write_text(SPACE)
    assert main(["search", "--space", "c.yaml"]) == 0
    config = load_space(workdir / "c.yaml")
    calls = []

    def diverging(seeded):
        adapter = seeded.make_adapter(workdir)
        run = adapter.run

        def counted(hyp, reporter, trial_dir):
            calls.append(adapter.settings.seed)
            if adapter.settings.seed == 2:
                raise DivergedError("non-finite val/loss at epoch 1")
            return run(hyp, reporter, trial_dir)

        adapter.run = counted
        return adapter

    first = cf.run_confirm(load(), config, config.make_adapter(workdir), workdir / "out", 2, 2,
                           print, make_adapter=diverging)
    n_first = len(calls)
    again = cf.run_confirm(load(), config, config.make_adapter(workdir), workdir / "out", 2, 2,
                           print, make_adapter=diverging)
    assert len(calls) == n_first  # nothing trained again
    reasons = [r for by_seed in again.reasons.values() for r in by_seed.values()]
    assert again.reasons == first.reasons and reasons
    assert all(r.startswith("DivergedError") for r in reasons)


def test_confirm_command_on_an_existing_study(workdir, capsys):
    (workdir / "c.yaml").write_text(SPACE)
    assert main(["search", "--space", "c.yaml"]) == 0
    capsys.readouterr()
    assert main(["confirm", "--space", "c.yaml", "--top-k", "2", "--n-seeds", "3"]) == 0
    err = capsys.readouterr().err
    record = cf.load_record(load())
    assert record.seeds == (1, 2, 3) and len(record.trials) == 2 and record.complete
    assert f"trial {cf.best_confirmed(record)} (confirmed:" in err
    assert "written to studies/c/best_hyp.yaml" in err


def test_confirm_command_bad_input(workdir, capsys):
    (workdir / "c.yaml").write_text(SPACE)
    # no study yet
    assert main(["confirm", "--space", "c.yaml"]) == 2
    assert "--storage: no such study file: studies/c.db" in capsys.readouterr().err
    # an explicit pick that needs a confirmation the study does not have
    assert main(["search", "--space", "c.yaml"]) == 0
    capsys.readouterr()
    code = main(["export", "--storage", URL, "--pick", "confirmed", "--out", "x.yaml"])
    assert code == 2
    assert "has not been confirmed; run `tuner confirm --space SPACE`" in capsys.readouterr().err
    # fresh-seed runs under other trainer settings would rank trials by something else
    # (its length may change: that is --epochs)
    assert main(["confirm", "--space", "c.yaml", "--set", "trainer.noise=0.5"]) == 2
    assert capsys.readouterr().err.strip() == (
        "tuner: error: --set: trainer.noise: study 'c' ran its trials with 0.3, not 0.5; their "
        "values would not compare: confirm with the settings the study was searched with"
    )
    assert cf.load_record(load()) is None  # nothing trained
    # an adapter with no seed to vary: nothing to confirm with, said before anything trains
    (workdir / "n.yaml").write_text(SPACE.replace("adapter: curve,", "adapter: curve-noseed,"))
    assert main(["confirm", "--space", "n.yaml"]) == 2
    err = capsys.readouterr().err
    assert "n.yaml: search.confirm: adapter 'curve-noseed' has no seed setting to vary" in err


def test_ctrl_c_during_confirmation_exits_130_and_keeps_finished_runs(workdir, capsys,
                                                                      monkeypatch):
    (workdir / "c.yaml").write_text(SPACE)
    assert main(["search", "--space", "c.yaml"]) == 0
    n_runs = []
    real = cf._prepared

    def interrupting(config):
        adapter = real(config)
        run = adapter.run

        def run_once_then_interrupt(hyp, reporter, trial_dir):
            if len(n_runs) == 2:
                raise KeyboardInterrupt
            n_runs.append(1)
            return run(hyp, reporter, trial_dir)

        adapter.run = run_once_then_interrupt
        return adapter

    monkeypatch.setattr(cf, "_prepared", interrupting)
    capsys.readouterr()
    assert main(["confirm", "--space", "c.yaml"]) == 130
    err = capsys.readouterr().err
    assert "interrupted: finished confirmation runs are kept; `tuner confirm` resumes" in err
    assert "best configuration so far written to studies/c/best_hyp.yaml" in err
    assert cf.load_record(load()).n_done == 2
    monkeypatch.setattr(cf, "_prepared", real)
    assert main(["confirm", "--space", "c.yaml"]) == 0
    assert "(8 runs, 2 done earlier)" in capsys.readouterr().err
    assert cf.load_record(load()).complete


def test_a_confirmation_overtaken_by_later_trials_is_not_the_default_pick(workdir, capsys):
    (workdir / "c.yaml").write_text(SPACE)
    assert main(["search", "--space", "c.yaml", "--confirm", "2"]) == 0
    study = load()
    assert default_pick(study).kind == "confirmed"
    # a later trial (another worker, or a resumed search without --confirm) beats them all
    best = study.best_trial
    study.add_trial(optuna.trial.create_trial(
        params=best.params, distributions=best.distributions, value=best.value + 1.0,
        user_attrs={"hyp": best.user_attrs["hyp"]},
    ))
    assert default_pick(load()).kind == "best-metric"
    assert pick_trial(load()).trial.number == len(study.trials) - 1


def test_confirmation_at_full_length_trains_longer_and_never_mixes_lengths(workdir, capsys):
    (workdir / "c.yaml").write_text(SPACE)
    assert main(["search", "--space", "c.yaml"]) == 0  # trials of 2 epochs
    capsys.readouterr()
    assert main(["confirm", "--space", "c.yaml", "--top-k", "1", "--epochs", "5"]) == 0
    err = capsys.readouterr().err
    assert "on fresh trainer seeds 1, 2 at 5 epochs" in err
    assert "confirmed on trainer seeds 1, 2 at 5 epochs (4/4 runs)" in err
    record = cf.load_record(load())
    assert record.epochs == 5 and record.complete
    for number in record.confirmed:
        hyp = load().trials[number].user_attrs["hyp"]
        for seed in (1, 2):  # each run trained 5 epochs: the curve's value at 5, not at 2
            assert record.runs[number][seed] == pytest.approx(expected_value(hyp, seed, 5))
    header = (workdir / "studies" / "c" / "best_hyp.yaml").read_text()
    assert "fresh trainer seeds 1, 2 at 5 epochs" in header
    folders = sorted(p.name for p in (workdir / "studies" / "c" / "confirm").iterdir())
    assert folders and all(name.endswith("-5ep") for name in folders)
    # confirming at the trial length again measures again: 5-epoch values are not mixed in
    # (they stay on record for a confirmation at 5 epochs)
    assert main(["confirm", "--space", "c.yaml", "--top-k", "1"]) == 0
    err = capsys.readouterr().err
    assert "the 4 runs of the earlier confirmation (5 epochs) are kept; a confirmation at that " \
           "length reuses them" in err
    assert "at 2 epochs (4 runs)" in err  # none done earlier: trained at 2 epochs
    again = cf.load_record(load())
    assert again.epochs == 2  # the trial length, resolved
    for number in again.confirmed:
        hyp = load().trials[number].user_attrs["hyp"]
        assert again.runs[number][1] == pytest.approx(expected_value(hyp, 1, 2))
    # the same length, said either way, is the same measurement: nothing is re-trained
    for flags in (["--epochs", "2"], ["--set", "trainer.epochs=2"]):
        assert main(["confirm", "--space", "c.yaml", "--top-k", "1", *flags]) == 0
        err = capsys.readouterr().err
    assert "(4 runs, 4 done earlier)" in err and "confirm: nothing to train, on record: " in err
    # a record of an older tuner (no length: its runs were a trial's length) is kept as well
    attr = dict(load().user_attrs["confirm"])
    del attr["epochs"]
    load().set_user_attr("confirm", attr)
    assert main(["confirm", "--space", "c.yaml", "--top-k", "1"]) == 0
    assert "(4 runs, 4 done earlier)" in capsys.readouterr().err
    # while another length via the trainer setting is another measurement
    assert main(["confirm", "--space", "c.yaml", "--top-k", "1", "--set", "trainer.epochs=3"]) == 0
    assert "at 3 epochs (4 runs)" in capsys.readouterr().err
    # the space field, the flag of `tuner search`, and their bounds
    assert main(["confirm", "--space", "c.yaml", "--epochs", "0"]) == 2
    assert "tuner: error: --epochs: must be >= 1, got 0" in capsys.readouterr().err
    no_length = SPACE.replace("adapter: curve, epochs: 2,", "adapter: curve-noepochs,")
    (workdir / "n.yaml").write_text(no_length)
    code = main(["search", "--space", "n.yaml", "--confirm", "1", "--confirm-epochs", "4"])
    assert code == 2
    assert "--confirm-epochs: adapter 'curve-noepochs' has no epochs setting" in (
        capsys.readouterr().err
    )


def test_fresh_seeds_follow_the_seed_the_study_was_searched_with(workdir, capsys):
    (workdir / "c.yaml").write_text(SPACE)
    assert main(["search", "--space", "c.yaml", "--set", "trainer.seed=5"]) == 0
    # confirm without the search's --set: the saved config still says seed 5
    assert main(["confirm", "--space", "c.yaml", "--top-k", "1"]) == 0
    assert cf.load_record(load()).seeds == (6, 7)


def test_reasons_of_seeds_no_longer_confirmed_are_dropped(workdir, capsys):
    (workdir / "c.yaml").write_text(SPACE)
    assert main(["search", "--space", "c.yaml"]) == 0
    config = load_space(workdir / "c.yaml")
    build = crashing_on(3, workdir)
    adapter = config.make_adapter(workdir)
    three = cf.run_confirm(load(), config, adapter, workdir / "out", 1, 3, print,
                           make_adapter=build)
    assert all(3 in three.reasons[t] for t in three.confirmed)
    two = cf.run_confirm(load(), config, adapter, workdir / "out", 1, 2, print,
                         make_adapter=build)
    assert two.seeds == (1, 2) and two.complete
    assert not any(two.reasons.values())
    assert "failed" not in "\n".join(cf.summary_lines(two))


@pytest.mark.slow
def test_two_machines_confirm_once(workdir):
    import os
    import subprocess
    import sys

    from tests.conftest import ROOT

    space = SPACE.replace("noise: 0.3}", "noise: 0.3, sleep: 0.2}")
    (workdir / "c.yaml").write_text(space)
    assert main(["search", "--space", "c.yaml"]) == 0
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "tests.run_tuner", "confirm", "--space", "c.yaml"],
            cwd=workdir, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )
        for _ in range(2)
    ]
    errs = []
    for proc in procs:
        _, err = proc.communicate(timeout=180)
        assert proc.returncode == 0, err
        errs.append(err)
    record = cf.load_record(load())
    assert record.complete
    # the study's lock: one process ran every run, the other found them done
    n_ran = [len(re.findall(r"^confirm \d+/\d+: ", err, flags=re.M)) for err in errs]
    assert sorted(n_ran) == [0, record.n_runs], errs
    assert any(f"{record.n_runs} done earlier" in err for err in errs)


COLLAPSE = 0.01  # lr0 above this peaks at its third epoch, then halves each epoch
# the top trials collapse (lr0 above COLLAPSE), the baseline does not
COLLAPSE_SPACE = SPACE.replace(
    "noise: 0.3}", f"noise: 0.02, collapse_above_lr0: {COLLAPSE}}}"
).replace("base: {lr0: 0.001, momentum: 0.7}", "base: {lr0: 0.005, momentum: 0.9}").replace(
    "low: 1.0e-3, high: 1.0e-1", "low: 3.0e-3, high: 1.0e-1"
)


def expected_curve(hyp: dict, seed: int, epochs: int) -> list[float]:
    """The collapsing curve adapter's val/acc at each epoch of a run."""
    adapter = CurveAdapter({"epochs": epochs, "noise": 0.02, "seed": seed}, Path("."))
    q = adapter.quality(hyp) + adapter.seed_noise(hyp)
    factor = 0.5 if hyp["lr0"] > COLLAPSE else 1.0
    return [q * (1 - 2.718281828459045 ** -(e + 1)) * factor ** max(0, e - 2)
            for e in range(epochs)]


def test_confirmation_scored_by_the_last_epoch_rescores_without_training(workdir, capsys):
    (workdir / "c.yaml").write_text(COLLAPSE_SPACE)
    assert main(["search", "--space", "c.yaml"]) == 0  # trials of 2 epochs see no collapse
    assert main(["confirm", "--space", "c.yaml", "--epochs", "5"]) == 0
    capsys.readouterr()
    study = load()
    hyps = {t.number: t.user_attrs["hyp"] for t in study.trials}

    def check(record: cf.ConfirmRecord, reduce) -> int:
        """The recorded values are the curves reduced so; returns the expected pick."""
        means = {}
        for number in record.confirmed:
            curves = [expected_curve(hyps[number], seed, 5) for seed in (1, 2)]
            values = [reduce(c) for c in curves]
            assert [record.runs[number][s] for s in (1, 2)] == pytest.approx(values)
            for seed, curve in zip((1, 2), curves):
                assert record.curves[number][seed] == pytest.approx(curve)
            means[number] = statistics.fmean(values)
        assert cf.best_confirmed(record) == max(means, key=means.get)
        return cf.best_confirmed(record)

    by_best = cf.load_record(study)
    assert by_best.reduce == "best"
    picked = check(by_best, max)
    assert hyps[picked]["lr0"] > COLLAPSE  # its early peak wins when runs keep their best epoch

    # scored by the last epoch, the same runs are re-scored from their curves, not re-trained
    assert main(["confirm", "--space", "c.yaml", "--epochs", "5", "--reduce", "last"]) == 0
    err = capsys.readouterr().err
    assert "confirm: 8 earlier runs re-scored by their last epoch" in err
    assert "at 5 epochs, scored by the last epoch (8 runs, 8 done earlier)" in err
    assert not re.search(r"^confirm \d+/\d+: ", err, flags=re.M)  # nothing trained
    by_last = cf.load_record(load())
    assert by_last.reduce == "last"
    picked = check(by_last, lambda curve: curve[-1])
    assert hyps[picked]["lr0"] <= COLLAPSE  # the collapsing configs are out
    header = (workdir / "studies" / "c" / "best_hyp.yaml").read_text()
    assert f"trial: {picked} (confirmed: the best mean val/acc over fresh trainer seeds 1, 2 " \
           "at 5 epochs, scored by the last epoch" in header
    assert main(["status", "--storage", URL]) == 0
    assert "confirmed on trainer seeds 1, 2 at 5 epochs, scored by the last epoch (8/8 runs)" \
        in capsys.readouterr().out
    # and back, again without training
    assert main(["confirm", "--space", "c.yaml", "--epochs", "5", "--reduce", "best"]) == 0
    assert "8 earlier runs re-scored by their best epoch" in capsys.readouterr().err
    assert cf.load_record(load()) == by_best

    # a record of an older tuner has no curves: its runs are trained again
    attr = dict(load().user_attrs["confirm"])
    del attr["curves"]
    load().set_user_attr("confirm", attr)
    assert main(["confirm", "--space", "c.yaml", "--epochs", "5", "--reduce", "last"]) == 0
    err = capsys.readouterr().err
    assert "0 earlier runs re-scored by their last epoch; 8 without a recorded curve train " \
           "again" in err
    assert "(8 runs)" in err and len(re.findall(r"^confirm \d+/8: ", err, flags=re.M)) == 8
    assert cf.load_record(load()) == by_last


def test_confirm_reduce_from_the_space_and_the_search_flags(workdir, capsys):
    space = COLLAPSE_SPACE.replace(
        "pruner: {name: none}}", "pruner: {name: none}, confirm: {top_k: 2, reduce: last}}"
    )
    (workdir / "c.yaml").write_text(space)
    assert main(["search", "--space", "c.yaml", "--confirm-epochs", "4"]) == 0
    assert "at 4 epochs, scored by the last epoch (6 runs)" in capsys.readouterr().err
    record = cf.load_record(load())
    assert record.reduce == "last" and record.epochs == 4 and record.complete
    config = yaml.safe_load((workdir / "studies" / "c" / "config.yaml").read_text())
    assert config["search"]["confirm"]["reduce"] == "last"
    # a flag beats the space
    assert main(["confirm", "--space", "c.yaml", "--epochs", "4", "--reduce", "best"]) == 0
    assert cf.load_record(load()).reduce == "best"

    (workdir / "bad.yaml").write_text(space.replace("reduce: last", "reduce: worst"))
    assert main(["confirm", "--space", "bad.yaml"]) == 2
    assert "bad.yaml: search.confirm.reduce: unknown value 'worst'; choose from best, last" in (
        capsys.readouterr().err
    )
    (workdir / "plain.yaml").write_text(SPACE)
    assert main(["search", "--space", "plain.yaml", "--confirm-reduce", "last"]) == 2
    assert "--confirm-reduce: needs --confirm K" in capsys.readouterr().err


def counting_runs(monkeypatch) -> list[tuple[int, int]]:
    """Every run of the curve adapter in this process, as ``(seed, epochs)``: the search's
    trials and the confirmation's runs alike."""
    calls: list[tuple[int, int]] = []
    real = CurveAdapter.run

    def run(self, hyp, reporter, trial_dir):
        calls.append((self.settings.seed, self.settings.epochs))
        return real(self, hyp, reporter, trial_dir)

    monkeypatch.setattr(CurveAdapter, "run", run)
    return calls


def without_date(text: str) -> list[str]:
    """A hyp file's lines but the date and the command that wrote it."""
    return [line for line in text.splitlines() if not line.startswith(("# date:", "# command:"))]


# the demo's setting: the top trials confirmed at the trials' own length after the search
CONFIRMING_SPACE = SPACE.replace(
    "pruner: {name: none}}", "pruner: {name: none}, confirm: {top_k: 2, n_seeds: 2}}"
)


def test_switching_confirmation_lengths_back_and_forth_trains_nothing_twice(workdir, capsys,
                                                                           monkeypatch):
    from tuner.report.data import build_confirm
    from tuner.report.render import confirm_note

    (workdir / "c.yaml").write_text(CONFIRMING_SPACE)
    calls = counting_runs(monkeypatch)
    best_file = workdir / "studies" / "c" / "best_hyp.yaml"
    assert main(["search", "--space", "c.yaml"]) == 0  # 8 trials, then the confirmation
    short = cf.load_record(load())
    assert short.epochs == 2 and short.complete and not short.kept
    assert len(calls) == 8 + short.n_runs
    short_file = without_date(best_file.read_text())
    capsys.readouterr()

    # the pick at full length: 1 trial and the baseline on 1 seed, trained 5 epochs
    calls.clear()
    assert main(["confirm", "--space", "c.yaml", "--top-k", "1", "--n-seeds", "1",
                 "--epochs", "5"]) == 0
    err = capsys.readouterr().err
    long = cf.load_record(load())
    assert long.epochs == 5 and long.complete
    assert calls == [(1, 5)] * long.n_runs
    assert f"the {short.n_runs} runs of the earlier confirmation (2 epochs) are kept" in err
    assert long.other_lengths == {2: short.n_runs}
    # export, status and report go by the confirmation asked for last: 5 epochs
    assert "fresh trainer seeds 1 at 5 epochs" in best_file.read_text()
    view = build_confirm(load())
    assert view.epochs == 5 and view.seeds == (1,) and view.exported
    note = confirm_note(view)
    assert note.startswith("trainer seeds 1 at 5 epochs, 2/2 runs; picked trial")
    assert note.endswith(f"; runs on record at other lengths: 2 epochs ({short.n_runs} runs) (a "
                         "confirmation at that length reuses them)")
    assert main(["status", "--storage", URL]) == 0
    out = capsys.readouterr().out
    assert "confirmed on trainer seeds 1 at 5 epochs (2/2 runs)" in out
    assert f"runs on record at other lengths: 2 epochs ({short.n_runs} runs)" in out

    # the finished study searched again (the space asks for 2 epochs): it just reports
    calls.clear()
    assert main(["search", "--space", "c.yaml", "--n-trials", "8"]) == 0
    err = capsys.readouterr().err
    assert calls == []
    assert "replaced" not in err and not re.search(r"^confirm \d+/\d+: ", err, flags=re.M)
    assert f"({short.n_runs} runs, {short.n_runs} done earlier)" in err
    again = cf.load_record(load())
    assert dataclass_fields(again, kept=()) == dataclass_fields(short, kept=())
    assert again.other_lengths == {5: long.n_runs}
    # the same file as after the first search: the 2-epoch confirmation's pick and means
    assert without_date(best_file.read_text()) == short_file
    view = build_confirm(load())
    assert view.epochs == 2 and view.seeds == (1, 2) and view.exported
    assert confirm_note(view).startswith(f"trainer seeds 1, 2 at 2 epochs, {short.n_runs}/")
    assert confirm_note(view).endswith(f"other lengths: 5 epochs ({long.n_runs} runs) (a "
                                       "confirmation at that length reuses them)")

    # and back to 5 epochs: nothing trained either
    assert main(["confirm", "--space", "c.yaml", "--top-k", "1", "--n-seeds", "1",
                 "--epochs", "5"]) == 0
    assert "(2 runs, 2 done earlier)" in capsys.readouterr().err
    assert calls == []
    assert dataclass_fields(cf.load_record(load()), kept=()) == dataclass_fields(long, kept=())
    assert "fresh trainer seeds 1 at 5 epochs" in best_file.read_text()


def test_runs_outside_a_smaller_confirmation_are_reused_by_a_larger_one(workdir, capsys,
                                                                        monkeypatch):
    (workdir / "c.yaml").write_text(CONFIRMING_SPACE)
    calls = counting_runs(monkeypatch)
    assert main(["search", "--space", "c.yaml"]) == 0
    full = cf.load_record(load())
    # fewer trials and seeds at the same length: all done; the rest stay on record
    calls.clear()
    assert main(["confirm", "--space", "c.yaml", "--top-k", "1", "--n-seeds", "1"]) == 0
    small = cf.load_record(load())
    assert calls == [] and small.complete and small.seeds == (1,)
    assert small.other_lengths == {}  # runs of its own length are not another length's
    assert sum(g.n_runs for g in small.kept) == full.n_runs - small.n_runs
    # the search's confirmation again: every run is on record, none trains
    assert main(["search", "--space", "c.yaml"]) == 0
    assert calls == []
    assert dataclass_fields(cf.load_record(load()), kept=()) == dataclass_fields(full, kept=())
    assert not cf.load_record(load()).kept


def test_export_goes_by_the_confirmation_it_is_given(workdir, capsys):
    from tuner.export import export

    (workdir / "c.yaml").write_text(SPACE)
    assert main(["search", "--space", "c.yaml"]) == 0
    assert main(["confirm", "--space", "c.yaml", "--top-k", "1", "--epochs", "5"]) == 0
    long = cf.load_record(load())
    assert main(["confirm", "--space", "c.yaml", "--top-k", "1"]) == 0  # the study's now
    assert cf.load_record(load()).epochs == 2
    # a command exports the confirmation it ran, even if another length was confirmed since
    pick, text = export(load(), workdir / "x.yaml", confirmation=long)
    assert pick.trial.number == cf.best_confirmed(long)
    assert "over fresh trainer seeds 1, 2 at 5 epochs" in text
    assert "fresh trainer seeds 1, 2 at 5 epochs: val/acc mean" in text
    # `tuner export` without one takes the study's: the one asked for last
    capsys.readouterr()
    assert main(["export", "--storage", URL, "--out", "y.yaml"]) == 0
    assert "fresh trainer seeds 1, 2 at 2 epochs" in (workdir / "y.yaml").read_text()


def test_a_record_without_kept_runs_still_loads_and_keeps_its_runs(workdir, capsys,
                                                                  monkeypatch):
    (workdir / "c.yaml").write_text(SPACE)
    assert main(["search", "--space", "c.yaml", "--confirm", "1"]) == 0
    # as the tuner before `kept` wrote it
    attr = dict(load().user_attrs["confirm"])
    del attr["kept"]
    load().set_user_attr("confirm", attr)
    before = cf.load_record(load())
    assert before is not None and before.kept == () and before.complete
    calls = counting_runs(monkeypatch)
    assert main(["confirm", "--space", "c.yaml", "--top-k", "1", "--epochs", "3"]) == 0
    assert len(calls) == before.n_runs  # the new length trains
    assert main(["confirm", "--space", "c.yaml", "--top-k", "1"]) == 0
    assert len(calls) == before.n_runs  # the old record's runs are still there
    assert cf.load_record(load()).runs == before.runs


def dataclass_fields(record: cf.ConfirmRecord, **replaced) -> dict:
    """The record's fields, some replaced (to compare records but for their kept runs)."""
    return {**record.__dict__, **replaced}
