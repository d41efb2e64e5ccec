"""Accuracy-vs-cost studies: sampling, no pruning, export pick rules, the Pareto listing."""

from __future__ import annotations

import optuna
import pytest
import yaml
from optuna.trial import TrialState

from tests.test_report import SPACE, add, hand_made, make_study
from tuner import study as st
from tuner.cli import _status_text, main
from tuner.errors import InputError
from tuner.export import export, parse_pick, pick_trial
from tuner.report.data import build_curves, build_pareto, study_info
from tuner.space import load_space

MULTI = SPACE.replace(
    "objective: {metric: val/acc, direction: maximize}",
    "objective: [{metric: val/acc, direction: maximize}, {metric: train_time}]",
).replace("  sampler: {name: tpe, args: {n_startup_trials: 4}}\n", "")  # the default sampler


def test_default_sampler_runs_a_multi_objective_study_without_pruning(tmp_path):
    study = make_study(tmp_path, MULTI, ("search.n_trials=8",))
    config = load_space(tmp_path / "space.yaml", ("search.n_trials=8",))
    assert config.search.sampler.name == "tpe"  # multivariate TPE stays the default
    assert isinstance(st.make_sampler(config), optuna.samplers.TPESampler)
    assert "cannot prune multi-objective" in st.pruning_disabled_notice(config)
    assert st.counts(study) == {"COMPLETE": 8}
    for t in study.trials:
        assert len(t.values) == 2 and t.values[1] == pytest.approx(t.user_attrs["train_seconds"],
                                                                  abs=1e-3)
        assert t.intermediate_values == {} and t.user_attrs["epochs_run"] == 5
    # curves come from the history user attr (Optuna keeps none for multi-objective trials)
    curves = build_curves(study.trials, study_info(study))
    assert all(c.epochs == (0, 1, 2, 3, 4) for c in curves.curves)
    # the Pareto view of the plane the study optimises is the study's own front
    view = build_pareto(study.trials, study_info(study))[0]
    assert {p.number for p in view.points if p.on_front} == {t.number for t in study.best_trials}


@pytest.mark.parametrize("sampler", ["nsga2", "random"])
def test_other_multi_objective_samplers(tmp_path, sampler):
    overrides = ("search.n_trials=4", f"search.sampler={sampler}")
    study = make_study(tmp_path, MULTI, overrides)
    assert st.counts(study) == {"COMPLETE": 4}
    path = tmp_path / "m.yaml"
    path.write_text(MULTI)
    kinds = {"nsga2": optuna.samplers.NSGAIISampler, "random": optuna.samplers.RandomSampler}
    assert isinstance(st.make_sampler(load_space(path, overrides)), kinds[sampler])


def test_peak_memory_objective(tmp_path):
    text = MULTI.replace("{metric: train_time}", "{metric: peak_memory}")
    study = make_study(tmp_path, text, ("search.n_trials=3",))
    assert all(t.values[1] == 1.0 for t in study.trials)


def trade_study() -> optuna.Study:
    """Hand-made accuracy-vs-time trials with a known front.

    trial  acc   time  freeze   front
    0      0.60  30    0        no (1 is better in both)
    1      0.90  20    0        yes: best-metric
    2      0.85  8     3        yes: knee (closest to (0.90, 2) once scaled over all trials)
    3      0.70  2     5        yes: fastest
    4      0.65  5     4        no (3 is faster and better)
    5      -     -     2        failed
    """
    study = hand_made(("maximize", "minimize"))
    for acc, secs, freeze in [(0.6, 30.0, 0), (0.9, 20.0, 0), (0.85, 8.0, 3), (0.7, 2.0, 5),
                              (0.65, 5.0, 4)]:
        add(study, values=[acc, secs], freeze=freeze, train_seconds=secs, epochs_run=10)
    add(study, TrialState.FAIL, freeze=2, fail_reason="out of memory")
    return study


@pytest.mark.parametrize("rule,number", [
    ("best-metric", 1), ("knee", 2), (None, 2), ("max-time=10", 2), ("max-time=8", 2),
    ("max-time=7.9", 3), ("max-time=20s", 1),
])
def test_pick_rules(rule, number):
    study = trade_study()
    assert {t.number for t in study.best_trials} == {1, 2, 3}
    pick = pick_trial(study, rule=rule)
    assert pick.trial.number == number
    kind = (rule or "knee").split("=")[0]  # the header names the rule it used
    assert pick.rule.split(":")[0].split("=")[0] == kind


def test_pick_errors():
    study = trade_study()
    with pytest.raises(InputError, match="no complete trial trained within 1 s; the fastest, "
                                         "trial 3, took 2 s"):
        pick_trial(study, rule="max-time=1")
    # `tuner confirm` refuses several objectives: the hint must not send the user there
    with pytest.raises(InputError, match="several objectives, which `tuner confirm` does not"):
        pick_trial(study, rule="confirmed")
    for bad in ["fastest", "max-time=", "max-time=-3", "max-time=abc", "max-time"]:
        with pytest.raises(InputError, match="--pick"):
            parse_pick(bad)
    single = hand_made()
    add(single, values=[0.5], train_seconds=3.0)
    add(single, values=[0.7], train_seconds=9.0)
    with pytest.raises(InputError, match="knee needs a multi-objective study"):
        pick_trial(single, rule="knee")
    assert pick_trial(single, rule="best-metric").trial.number == 1
    assert pick_trial(single).rule.startswith("best-metric")
    assert pick_trial(single, rule="max-time=5").trial.number == 0
    with pytest.raises(InputError, match="no complete trial yet"):
        pick_trial(hand_made(("maximize", "minimize")), rule="knee")


def test_export_header_states_the_rule(tmp_path):
    study = trade_study()
    out = tmp_path / "hyp.yaml"
    pick, text = export(study, out, command="tuner export", pick="max-time=10")
    assert pick.trial.number == 2
    assert "# trial: 2 (max-time=10: the best val/acc among trials trained in <= 10 s)" in text
    assert "# train_time (minimize): 8" in text
    _, text = export(study, out)
    assert "(knee: the Pareto-front trial closest to the utopia point" in text
    assert yaml.safe_load(out.read_text())["freeze"] == 3


def test_status_lists_the_front():
    text = _status_text(trade_study(), "sqlite:///x.db")
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("pareto front"))
    assert "3 of 5 complete trials" in lines[start]
    header = lines[start + 1].split()
    assert header == ["trial", "val/acc", "train_time", "freeze", "epochs", "params"]
    rows = [line.split() for line in lines[start + 2:start + 5]]
    assert [r[0] for r in rows] == ["1", "2", "3"]  # best val/acc first
    assert [r[3] for r in rows] == ["0", "3", "5"]  # freeze index
    assert rows[0][1:3] == ["0.9", "20"]
    assert "best-metric" in lines[start + 2] and "knee (default export)" in lines[start + 3]
    assert "out of memory" in text  # failed trials still listed


def test_cli_search_export_and_status(workdir, write_space, capsys):
    space = write_space(MULTI.replace("study: rep", "study: mo").replace("epochs: 5",
                                                                          "epochs: 2"))
    assert main(["search", "--space", str(space), "--n-trials", "4"]) == 0
    out, err = capsys.readouterr()
    assert "pruner 'median' is disabled" in err and "pareto front" in err
    best = workdir / "studies" / "mo" / "best_hyp.yaml"
    assert "(knee: " in best.read_text() and "written to" in err
    url = "sqlite:///studies/mo.db"
    assert main(["export", "--storage", url, "--pick", "best-metric", "--out", "b.yaml"]) == 0
    assert "best-metric: the best val/acc on the Pareto front" in (workdir / "b.yaml").read_text()
    assert main(["export", "--storage", url, "--pick", "max-time=0.001", "--out", "c.yaml"]) == 2
    assert "no complete trial trained within 0.001 s" in capsys.readouterr().err
    with pytest.raises(SystemExit):  # --trial and --pick exclude each other
        main(["export", "--storage", url, "--pick", "knee", "--trial", "1", "--out", "d.yaml"])
    capsys.readouterr()
    assert main(["status", "--storage", url]) == 0
    out = capsys.readouterr().out
    assert "pareto front" in out and "train_time" in out and "knee (default export)" in out
