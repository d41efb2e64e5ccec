"""`tuner report`: the data behind each figure (no plotly), the HTML, and Chromium drawing it."""

from __future__ import annotations

import json
import math
import shutil
import subprocess
import sys
import time
from html.parser import HTMLParser
from pathlib import Path

import optuna
import pytest
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution
from optuna.trial import TrialState, create_trial

from tuner import study as st
from tuner.cli import main
from tuner.objective import Objective
from tuner.report.data import (
    build_confirm,
    build_curves,
    build_freeze,
    build_history,
    build_importances,
    build_parallel,
    build_pareto,
    build_report,
    build_summary,
    knee_index,
    pareto_front,
    study_info,
)
from tuner.space import load_space

SPACE = """
study: rep
trainer: {adapter: curve, epochs: 5}
objective: {metric: val/acc, direction: maximize}
base: {lr0: 0.001, momentum: 0.7, freeze: 0}
search:
  n_trials: 14
  seed: 0
  sampler: {name: tpe, args: {n_startup_trials: 4}}
  pruner: {name: median, args: {n_startup_trials: 3, n_warmup_steps: 1}}
space:
  freeze: {type: int, low: 0, high: 5}
  lr0: {type: float, low: 1.0e-4, high: 1.0, log: true}
  momentum: {type: float, low: 0.6, high: 0.98}
"""


def make_study(
    folder: Path, text: str = SPACE, overrides: tuple[str, ...] = (), url: str | None = None
) -> optuna.Study:
    """A real study on the curve adapter, as `tuner search` makes it.

    Args:
        folder: Where the space file and trial outputs go.
        text: The space file.
        overrides: ``--set`` style overrides.
        url: A storage URL; in memory when None (SQLite commits would make it 10x slower).
    """
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "space.yaml"
    path.write_text(text)
    config = load_space(path, overrides)
    adapter = config.make_adapter(folder / "cache")
    storage = st.open_storage(url) if url else optuna.storages.InMemoryStorage()
    study = st.create_or_load(config, storage, config.to_dict(adapter), "tuner search --space x")
    st.enqueue_baseline(study, config, config.base_hyp(adapter))
    st.quiet_optuna()
    st.run(study, Objective(config, adapter, config.base_hyp(adapter), folder / "out"), config, [])
    return study


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    """14 trials with pruning, shared by the read-only tests of this module."""
    return make_study(tmp_path_factory.mktemp("report"))


def hand_made(directions=("maximize",), epochs=10, metrics=None) -> optuna.Study:
    """An in-memory study with the user attrs `tuner search` writes, for hand-made trials."""
    study = optuna.create_study(directions=list(directions))
    study.set_user_attr("config", {"trainer": {"adapter": "curve", "epochs": epochs}})
    names = ["val/acc", "train_time", "peak_memory"]
    study.set_user_attr("metrics", metrics or names[: len(directions)])
    return study


def add(study, state=TrialState.COMPLETE, values=None, freeze=0, params=None, **attrs):
    """Add one trial; ``params`` extra to ``freeze`` (floats in [0, 1])."""
    params = {"freeze": freeze, **(params or {})}
    dists = {k: IntDistribution(0, 5) if k == "freeze" else FloatDistribution(0.0, 1.0)
             for k in params}
    inter = attrs.pop("intermediate", None) or {}
    study.add_trial(create_trial(
        state=state, values=values, params=params, distributions=dists, user_attrs=attrs,
        intermediate_values=inter,
    ))
    return study.trials[-1]


# -- data builders on a real study -----------------------------------------------------------


def test_history_marks_baseline_and_tracks_best(study):
    info = study_info(study)
    history = build_history(study.trials, info)
    finished = [t for t in study.trials if t.state in (TrialState.COMPLETE, TrialState.PRUNED)]
    assert [p.number for p in history.points] == [t.number for t in finished]
    assert history.baseline is not None and history.baseline.number == 0
    best = [v for _, v in history.best_so_far]
    assert best == sorted(best) and best[-1] == study.best_value  # maximize: never goes down
    assert len(history.best_so_far) == sum(t.state == TrialState.COMPLETE for t in study.trials)
    for p in history.points:
        trial = study.trials[p.number]
        if p.state == "PRUNED":  # its last reported value, not a final one
            assert p.value == trial.intermediate_values[max(trial.intermediate_values)]
        else:
            assert p.value == trial.value


def test_curves_are_cut_where_pruned_trials_stopped(study):
    curves = build_curves(study.trials, study_info(study))
    assert curves.max_epochs == 5
    pruned = [c for c in curves.curves if c.pruned]
    assert pruned, "the median pruner stops trials in this study"
    for c in curves.curves:
        trial = study.trials[c.number]
        assert len(c.epochs) == trial.user_attrs["epochs_run"]
        assert list(c.values) == [trial.intermediate_values[e] for e in c.epochs]
        if c.pruned:
            assert c.stopped_at < 4 and c.state == "PRUNED"
        else:
            assert c.epochs == (0, 1, 2, 3, 4)
    assert [c.baseline for c in curves.curves].count(True) == 1


def test_a_diverged_trial_is_its_own_curve_group():
    study = optuna.create_study(direction="maximize")
    dist = {"freeze": IntDistribution(0, 5)}
    for attrs in ({}, {"diverged": True, "fail_reason": "diverged: nan"}):
        study.add_trial(create_trial(
            state=TrialState.PRUNED, params={"freeze": 2}, distributions=dist,
            intermediate_values={0: 0.4, 1: 0.5}, user_attrs={"epochs_run": 2, **attrs},
        ))
    curves = build_curves(study.trials, study_info(study))
    assert [c.state for c in curves.curves] == ["PRUNED", "DIVERGED"]
    assert [c.pruned for c in curves.curves] == [True, False]  # no "pruned here" cross
    assert curves.curves[1].epochs == (0, 1)  # cut at its last finite epoch
    from tuner.report.render import curves_figure

    names = {trace.name for trace in curves_figure(curves).data}
    assert "diverged (NaN/inf loss next)" in names


def test_freeze_groups(study):
    view = build_freeze(study.trials, study_info(study))
    keys = [g.freeze for g in view.groups]
    assert keys == sorted(keys)
    grouped = {s.number: g.freeze for g in view.groups for s in g.samples}
    for t in study.trials:
        assert grouped[t.number] == t.params["freeze"]
    for g in view.groups:
        complete = [t for t in study.trials
                    if t.params["freeze"] == g.freeze and t.state == TrialState.COMPLETE]
        assert sorted(g.values) == sorted(t.value for t in complete)
        # the curve adapter charges 0.1 s per epoch per unfrozen block (+ real time, tiny)
        assert all(abs(s - 0.1 * (6 - g.freeze)) < 0.05 for s in g.seconds_per_epoch)
        assert g.peak_memory_mb and set(g.peak_memory_mb) == {1.0}
    assert view.has_memory


def test_summary_counts_compute_saved_by_pruning(study):
    s = build_summary(study.trials, study_info(study))
    pruned = [t for t in study.trials if t.state == TrialState.PRUNED]
    assert s.n_pruned == len(pruned) > 0
    assert s.n_epochs_full == 5 * len(study.trials)
    assert s.n_epochs_saved == sum(5 - t.user_attrs["epochs_run"] for t in pruned)
    assert s.n_epochs_run == sum(t.user_attrs["epochs_run"] for t in study.trials)
    assert s.best.number == study.best_trial.number
    assert s.gain == pytest.approx(study.best_value - study.trials[0].value)
    assert s.by_state == dict(st.counts(study))


def test_parallel_rows(study):
    par = build_parallel(study.trials, study_info(study))
    complete = [t for t in study.trials if t.state == TrialState.COMPLETE]
    assert par.numbers == tuple(t.number for t in complete)
    assert [a.name for a in par.axes] == ["freeze", "lr0", "momentum", "val/acc"]
    lr0 = par.axes[1]
    assert lr0.log and lr0.kind == "numeric"
    assert par.color == tuple(t.value for t in complete)


def test_importances_ped_anova_with_enough_trials(tmp_path):
    study = make_study(tmp_path, overrides=("search.n_trials=12", "search.pruner=none"))
    imp = build_importances(study, study_info(study))
    assert imp.method == "PED-ANOVA" and imp.n_trials == 12
    values = imp.by_objective["val/acc"]
    assert set(values) == {"freeze", "lr0", "momentum"}
    assert sum(values.values()) == pytest.approx(1.0)
    assert list(values.values()) == sorted(values.values(), reverse=True)


@pytest.mark.parametrize("sklearn", [True, False], ids=["fanova", "rank-correlation"])
def test_importances_fall_back_and_handle_few_trials(study, monkeypatch, sklearn):
    if sklearn:
        pytest.importorskip("sklearn", reason="scikit-learn (the dev extra) is not installed")
    else:
        monkeypatch.setitem(sys.modules, "sklearn", None)  # import sklearn raises ImportError
    info = study_info(study)
    imp = build_importances(study, info)  # 6 complete trials: below PED-ANOVA's minimum
    assert imp.method == ("fANOVA" if sklearn else "rank correlation")
    assert "PED-ANOVA needs 10" in imp.note
    assert set(imp.by_objective["val/acc"]) == {"freeze", "lr0", "momentum"}
    assert sum(imp.by_objective["val/acc"].values()) == pytest.approx(1.0)
    empty = hand_made()
    add(empty, values=[0.5], freeze=1)
    one = build_importances(empty, study_info(empty))
    assert one.by_objective == {} and "at least 2 complete trials" in one.note


@pytest.mark.parametrize("sklearn", [True, False], ids=["fanova", "rank-correlation"])
def test_importances_handle_conditional_params(monkeypatch, sklearn):
    if sklearn:
        pytest.importorskip("sklearn", reason="scikit-learn (the dev extra) is not installed")
    else:
        monkeypatch.setitem(sys.modules, "sklearn", None)
    study = hand_made()
    for i in range(12):  # `x` exists in every trial, `lr_decay` only in odd ones
        params = {"x": i / 12} | ({"lr_decay": (i % 5) / 5} if i % 2 else {})
        add(study, values=[i / 12], freeze=i % 3, params=params)
    info = study_info(study)
    imp = build_importances(study, info)
    assert imp.method == "PED-ANOVA" and "lr_decay" in imp.by_objective["val/acc"]
    par = build_parallel(study.trials, info)
    decay = next(a for a in par.axes if a.name == "lr_decay")
    assert decay.values[0] is None and decay.values[1] == 0.2
    few = hand_made()
    for t in study.trials[:6]:
        few.add_trial(t)
    imp = build_importances(few, study_info(few))
    if sklearn:
        assert imp.method == "fANOVA" and "lr_decay" in imp.skipped  # needs it in every trial
        assert "lr_decay" not in imp.by_objective["val/acc"]
    else:
        assert imp.method == "rank correlation" and "lr_decay" in imp.by_objective["val/acc"]


def test_importances_of_few_trials_with_a_constant_param_or_objective():
    """fANOVA's forest cannot split on a parameter that never changed (all three trials chose
    freeze 0: a categorical freeze under pruning does that) nor explain a constant objective;
    it raised "zero total variance" and `tuner report` failed."""
    pytest.importorskip("sklearn", reason="scikit-learn (the dev extra) is not installed")
    study = hand_made()
    for x, value in ((0.1, 0.5), (0.5, 0.8), (0.9, 0.6)):
        add(study, values=[value], params={"x": x})  # freeze 0 in each
    imp = build_importances(study, study_info(study))
    assert imp.method == "fANOVA" and imp.by_objective["val/acc"]["freeze"] == 0.0
    assert imp.by_objective["val/acc"]["x"] == pytest.approx(1.0)
    assert "the same in every complete trial: freeze" in imp.note
    only = hand_made()
    for value in (0.5, 0.8, 0.6):
        add(only, values=[value])  # nothing varied at all
    imp = build_importances(only, study_info(only))
    assert imp.method == "rank correlation" and imp.by_objective["val/acc"] == {"freeze": 0.0}
    assert "no parameter varies across the complete trials" in imp.note
    flat = hand_made()
    for x in (0.1, 0.5, 0.9):
        add(flat, values=[0.5], params={"x": x})  # every trial scored the same
    imp = build_importances(flat, study_info(flat))
    assert imp.method == "rank correlation"
    assert "every complete trial has the same val/acc" in imp.note
    # one flat objective of two (a cost that did not vary) does not cost the other its fANOVA
    two = hand_made(("maximize", "minimize"))
    for x, value in ((0.1, 0.5), (0.5, 0.8), (0.9, 0.6)):
        add(two, values=[value, 1.0], params={"x": x})
    imp = build_importances(two, study_info(two))
    assert imp.method == "fANOVA" and imp.by_objective["val/acc"]["x"] == pytest.approx(1.0)
    assert imp.by_objective["train_time"] == {"x": 0.0, "freeze": 0.0}
    assert "the same in every complete trial: freeze, train_time" in imp.note


def test_rank_importance_does_not_favour_a_categorical_for_its_many_choices(monkeypatch):
    """Eight trials: lr sets the objective, a four-choice categorical is noise. Ranking each
    choice by its own trials' mean objective gave the categorical 16% of the importance."""
    monkeypatch.setitem(sys.modules, "sklearn", None)  # the rank-correlation fallback
    lr = [0.1, 0.2, 0.3, 0.4, 0.5, 0.7, 0.8, 0.9]
    aug = ["a", "b", "c", "d", "c", "d", "a", "b"]  # each choice has a low and a high lr

    def study_of(value):
        study = hand_made()
        for i in range(8):
            study.add_trial(create_trial(
                state=TrialState.COMPLETE, values=[value(i)],
                params={"freeze": 0, "lr": lr[i], "aug": aug[i]},
                distributions={"freeze": IntDistribution(0, 5),
                               "lr": FloatDistribution(0.0, 1.0),
                               "aug": CategoricalDistribution(["a", "b", "c", "d"])},
            ))
        return build_importances(study, study_info(study))

    imp = study_of(lambda i: lr[i] + 0.001 * (i % 3))
    assert imp.method == "rank correlation" and "adjusted for chance" in imp.note
    assert imp.by_objective["val/acc"] == {"lr": 1.0, "aug": 0.0, "freeze": 0.0}
    # a categorical that does set the objective is seen as such
    by_choice = {"a": 0.1, "b": 0.4, "c": 0.6, "d": 0.9}
    values = study_of(lambda i: by_choice[aug[i]] + 0.01 * lr[i]).by_objective["val/acc"]
    assert values["aug"] > 0.7 > values["lr"]


# -- hand-made studies: exact numbers --------------------------------------------------------


def test_gain_is_positive_for_an_improvement_in_either_direction(tmp_path):
    """A loss study's best 0.2 against the baseline's 0.5 gained +0.3 (not -0.3), in the
    report, the export header and ``tuner status`` alike."""
    from tuner.cli import _status_text
    from tuner.export import Pick, header_lines

    study = hand_made(("minimize",), metrics=["val/loss"])
    add(study, values=[0.5], freeze=0, baseline=True)
    add(study, values=[0.2], freeze=3)
    assert build_summary(study.trials, study_info(study)).gain == pytest.approx(0.3)
    assert "gain +0.3" in "\n".join(header_lines(study, Pick(study.best_trial, "best"), None))
    assert "gain +0.3" in _status_text(study, "memory")


def test_summary_numbers_exact():
    study = hand_made(epochs=10)
    add(study, values=[0.5], freeze=0, baseline=True, epochs_run=10, train_seconds=20.0,
        wall_seconds=21.0)
    add(study, values=[0.8], freeze=3, epochs_run=10, train_seconds=10.0, wall_seconds=11.0)
    # pruned after 3 epochs at its own 2 s/epoch: 7 epochs and 14 s saved
    add(study, TrialState.PRUNED, freeze=1, epochs_run=3, train_seconds=6.0,
        intermediate={0: 0.1, 1: 0.2, 2: 0.25})
    # pruned after 1 epoch, no time recorded: 9 epochs at the study's mean 1.5 s/epoch
    add(study, TrialState.PRUNED, freeze=2, epochs_run=1, intermediate={0: 0.1})
    # a diverged trial is stored as PRUNED, but the pruner did not stop it: nothing saved
    add(study, TrialState.PRUNED, freeze=4, epochs_run=2, train_seconds=2.0, diverged=True,
        intermediate={0: 0.1, 1: 0.1})
    # failed trials cost time but pruning saved nothing there
    add(study, TrialState.FAIL, freeze=5, epochs_run=2, train_seconds=2.0,
        fail_reason="non-finite loss")
    s = build_summary(study.trials, study_info(study))
    assert s.by_state == {"COMPLETE": 2, "FAIL": 1, "PRUNED": 3}
    assert (s.best.number, s.baseline.number) == (1, 0)
    assert s.gain == pytest.approx(0.3)
    assert s.n_epochs_run == 10 + 10 + 3 + 1 + 2 + 2
    assert s.train_seconds == pytest.approx(40.0) and s.wall_seconds == pytest.approx(32.0)
    assert (s.n_pruned, s.n_diverged, s.n_epochs_full, s.n_epochs_saved) == (2, 1, 50, 16)
    assert s.saved_fraction == pytest.approx(0.32)
    assert s.seconds_saved == pytest.approx(14.0 + 9 * 1.4)  # rates 2, 1, 2, 1, 1 s/epoch
    assert s.knee is None
    from tuner.report.render import summary_rows

    rows = dict(summary_rows(s))
    # one count of pruned trials per row: the pruner's 2, and the diverged one named apart
    assert rows["trials"] == "6: complete 2, fail 1, pruned 3 (1 of them diverged)"
    assert "not run by 2 pruned trials" in rows["saved by pruning"]


def test_max_epochs_falls_back_to_the_longest_trial():
    study = hand_made(epochs=None)
    add(study, values=[0.5], epochs_run=7)
    add(study, TrialState.PRUNED, epochs_run=2, intermediate={0: 0.1, 1: 0.2})
    s = build_summary(study.trials, study_info(study))
    assert s.info.max_epochs == 7 and s.n_epochs_saved == 5


def test_pareto_front_matches_optuna():
    points = [(0.9, 10.0), (0.85, 3.0), (0.6, 1.0), (0.5, 5.0), (0.85, 3.0), (0.85, 4.0)]
    expected = [True, True, True, False, True, False]  # equal points both stay on the front
    assert pareto_front(points, ("maximize", "minimize")) == expected
    study = hand_made(("maximize", "minimize"))
    for acc, secs in points:
        add(study, values=[acc, secs], train_seconds=secs)
    assert {t.number for t in study.best_trials} == {i for i, f in enumerate(expected) if f}
    assert pareto_front([], ("maximize",)) == []
    assert pareto_front([(1.0, 2.0), (2.0, 1.0)], ("minimize", "minimize")) == [True, True]
    # knee: scaled over all points, (0.85, 3) is closest to (best acc, least time)
    assert knee_index(points, ("maximize", "minimize")) == 1
    assert knee_index([(0.5, 1.0)], ("maximize", "minimize")) == 0
    assert knee_index([], ("maximize", "minimize")) is None


def test_pareto_views_label_trials_and_freeze():
    study = hand_made()  # single-objective: the trade is still shown against the costs
    rows = [(0.9, 10.0, 0), (0.85, 3.0, 3), (0.6, 1.0, 5), (0.5, 5.0, 4)]
    for acc, secs, freeze in rows:
        add(study, values=[acc], freeze=freeze, train_seconds=secs, peak_memory_mb=100.0 - freeze)
    add(study, TrialState.PRUNED, freeze=1, train_seconds=0.1, intermediate={0: 0.1})
    time_view, memory_view = build_pareto(study.trials, study_info(study))
    assert time_view.cost == "train_seconds" and memory_view.cost == "peak_memory_mb"
    assert len(time_view.points) == 4  # pruned trials are not comparable: left out
    assert [p.label for p in time_view.front] == ["#2 f5", "#1 f3", "#0 f0"]
    assert [p.number for p in memory_view.front] == [2, 1, 0]  # memory falls as freeze rises
    assert not time_view.points[3].on_front
    assert len(time_view.labelled) == 4  # few points: every one gets a visible label


# -- HTML ------------------------------------------------------------------------------------


def test_render_html_is_self_contained(study, tmp_path):
    from tuner.report import write_report
    from tuner.report.render import figures

    report = build_report(study)
    out = write_report(study, tmp_path / "r.html")
    text = out.read_text()
    n_figures = sum(fig is not None for _, _, fig, _ in figures(report))
    assert text.count('class="tuner-figure"') == n_figures >= 6
    # works offline: nothing loaded from elsewhere (plotly.js names a CDN only for geo maps)
    assert "<script src=" not in text and 'src="http' not in text
    assert text.count("Plotly.newPlot") == n_figures
    assert '<table class="summary">' in text and "saved by pruning" in text
    assert "every complete trial recorded the same peak memory" in text  # constant: no figure


def test_confirmation_view_pairs_search_values_with_fresh_runs():
    from tuner.confirm import ConfirmRecord
    from tuner.report.render import figures, render_html

    study = hand_made()
    for value in (0.5, 0.8, 0.7):
        add(study, values=[value], train_seconds=1.0, epochs_run=10)
    assert build_confirm(study) is None
    assert "not confirmed: `tuner confirm --space SPACE`" in render_html(build_report(study))
    record = ConfirmRecord(
        metric="val/acc", direction="maximize", seeds=(1, 2), trials=(1, 2), baseline=0,
        runs={1: {1: 0.70, 2: 0.72}, 2: {1: 0.74, 2: None}, 0: {1: 0.60, 2: 0.64}},
        reasons={2: {2: "DivergedError: nan loss"}},
        search_values={1: 0.8, 2: 0.7, 0: 0.5}, epochs=30,
    )
    study.set_user_attr("confirm", record.to_attr())
    view = build_confirm(study)
    assert [r.number for r in view.rows] == [1, 2, 0] and view.epochs == 30
    # trial 2's one good run is higher, but its other run failed: trial 1 is the pick
    assert [r.picked for r in view.rows] == [True, False, False]
    assert view.rows[1].runs == ((1, 0.74), (2, None)) and view.rows[1].n_failed == 1
    assert view.rows[0].mean == pytest.approx(0.71) and view.rows[2].baseline
    assert view.gain == pytest.approx(0.71 - 0.62)
    assert (view.n_done, view.n_runs) == (6, 6)
    report = build_report(study)
    anchor, title, fig, note = figures(report)[0]
    assert (anchor, title) == ("confirm", "Confirmation on fresh seeds")
    assert note == ("trainer seeds 1, 2 at 30 epochs, 6/6 runs; picked trial 1: mean 0.71 ± "
                    "0.014 vs baseline (trial 0) 0.62, gain +0.09")
    # a dot per successful run, a mean per trial with one, a diamond per search value
    assert [len(t.x) for t in fig.data] == [5, 3, 3]
    assert list(fig.data[0].x[:2]) == ["#1 (picked)", "#1 (picked)"]
    assert "#2 (1 failed)" in fig.data[0].x and "#0 (baseline)" in fig.data[2].x
    assert 'data-figure="confirm"' in render_html(report)
    assert view.exported  # complete, and it covers the study's best trial
    # runs scored by their last epoch: the note and the figure's title say so
    last = ConfirmRecord(**{**record.__dict__, "reduce": "last"})
    study.set_user_attr("confirm", last.to_attr())
    anchor, title, fig, note = figures(build_report(study))[0]
    assert note.startswith("trainer seeds 1, 2 at 30 epochs, scored by the last epoch, 6/6 runs")
    assert fig.layout.title.text.endswith("at 30 epochs, scored by the last epoch")
    study.set_user_attr("confirm", record.to_attr())
    # unfinished: said so, and the export does not take it yet
    partial = ConfirmRecord(**{**record.__dict__, "runs": {1: {1: 0.70}, 2: {}, 0: {}},
                               "reasons": {}})
    study.set_user_attr("confirm", partial.to_attr())
    note = figures(build_report(study))[0][3]
    assert note.startswith("trainer seeds 1, 2 at 30 epochs, 1/6 runs (unfinished: `tuner "
                           "confirm` resumes; the export takes the best metric); picked trial 1")
    study.set_user_attr("confirm", {**partial.to_attr(), "runs": {}})
    assert figures(build_report(study))[0][2:] == (None, "trainer seeds 1, 2 at 30 epochs, 0/6 "
                                                   "runs (unfinished: `tuner confirm` resumes; "
                                                   "the export takes the best metric); no run "
                                                   "finished yet")
    # stale: a later trial beat every confirmed one, so the export takes that one
    study.set_user_attr("confirm", record.to_attr())
    add(study, values=[0.95], train_seconds=1.0, epochs_run=10)
    view = build_confirm(study)
    assert not view.exported and view.best_number == 3
    assert figures(build_report(study))[0][3].endswith(
        "; stale: trial 3 finished later and beat every confirmed trial, so the export takes it "
        "until `tuner confirm` runs again"
    )
    # multi-objective studies cannot be confirmed: no section points at `tuner confirm`
    multi = hand_made(("maximize", "minimize"))
    add(multi, values=[0.5, 1.0], train_seconds=1.0, epochs_run=10)
    assert "confirm" not in [anchor for anchor, *_ in figures(build_report(multi))]


def test_report_of_an_empty_study_says_why(tmp_path):
    from tuner.report.render import render_html

    study = hand_made()
    text = render_html(build_report(study))
    assert "no trial finished yet" in text and "importances need at least 2" in text
    assert 'class="tuner-figure"' not in text


def test_report_command(workdir, capsys):
    url = f"sqlite:///{workdir / 'db.sqlite3'}"
    make_study(workdir / "s", overrides=("search.n_trials=2",), url=url)
    assert main(["report", "--storage", url]) == 0
    assert (workdir / "studies" / "rep" / "report.html").exists()
    assert main(["report", "--storage", url, "--out", "x/r.html"]) == 0
    assert (workdir / "x" / "r.html").stat().st_size > 1_000_000  # plotly.js inlined
    assert main(["report", "--storage", url, "--study", "nope"]) == 2
    assert "no study 'nope'" in capsys.readouterr().err


# -- Chromium --------------------------------------------------------------------------------

CHROMIUM = next(
    (p for p in map(shutil.which, ("chromium", "chromium-browser", "google-chrome")) if p), None
)
# Records console.error calls, uncaught errors and rejections on <html data-errors>, which
# --dump-dom prints (Chromium's own log does not tell console levels apart).
ERROR_HOOK = """<script>(function () {
  var errors = [];
  function record(kind, message) {
    errors.push(kind + ": " + message);
    document.documentElement.setAttribute("data-errors", JSON.stringify(errors));
  }
  var original = console.error;
  console.error = function () {
    record("console.error", Array.prototype.join.call(arguments, " "));
    original.apply(console, arguments);
  };
  window.addEventListener("error", function (e) { record("uncaught", e.message); });
  window.addEventListener("unhandledrejection", function (e) {
    record("unhandled rejection", String(e.reason));
  });
  document.documentElement.setAttribute("data-errors", "[]");
})();</script>"""


class FigureScan(HTMLParser):
    """Per ``div.tuner-figure``: the classes found inside it."""

    def __init__(self) -> None:
        super().__init__()
        self.depth = 0
        self.inside: tuple[str, int] | None = None
        self.found: dict[str, set[str]] = {}
        self.errors: list[str] | None = None

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        classes = set((attrs.get("class") or "").split())
        if tag == "html" and "data-errors" in attrs:
            self.errors = json.loads(attrs["data-errors"])
        if tag == "div":
            self.depth += 1
            if "tuner-figure" in classes:
                self.inside = (attrs["data-figure"], self.depth)
                self.found[attrs["data-figure"]] = set()
        if self.inside is not None:
            self.found[self.inside[0]] |= classes

    def handle_endtag(self, tag):
        if tag == "div":
            if self.inside is not None and self.inside[1] == self.depth:
                self.inside = None
            self.depth -= 1


def chromium_dom(html: Path, profile: Path) -> tuple[str, str]:
    """Load ``html`` in headless Chromium; returns the DOM after scripts ran, and its log."""
    args = [
        CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
        "--no-first-run", "--disable-background-networking", "--disable-component-update",
        "--disable-sync", f"--user-data-dir={profile}", "--enable-logging=stderr", "--v=0",
        # parcoords draws with WebGL: opt in to the software renderer, as a GPU-less CI has
        "--enable-unsafe-swiftshader", "--virtual-time-budget=10000", "--dump-dom",
        html.resolve().as_uri(),
    ]
    done = subprocess.run(args, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout, done.stderr


@pytest.mark.slow
@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (apt-get install "
                    "chromium); CI installs it")
@pytest.mark.parametrize("kind", ["single", "multi"])
def test_chromium_draws_every_figure_without_errors(kind, study, workdir):
    from tuner.report.render import figures, render_html

    tmp_path = workdir  # the confirmation's runs go to studies/ there, not the repository's

    if kind == "multi":
        text = SPACE.replace("objective: {metric: val/acc, direction: maximize}",
                             "objective: [{metric: val/acc}, {metric: train_time}]")
        shown = make_study(tmp_path / "m", text, ("search.n_trials=8",))
    else:  # a confirmed study, so the confirmation figure is drawn too
        url = f"sqlite:///{tmp_path / 's.db'}"
        shown = make_study(tmp_path / "s", overrides=("search.n_trials=6",), url=url)
        code = main(["confirm", "--space", str(tmp_path / "s" / "space.yaml"), "--storage", url,
                     "--top-k", "2", "--out", str(tmp_path / "best.yaml")])
        assert code == 0
        shown = optuna.load_study(study_name="rep", storage=url)
    report = build_report(shown)
    assert kind == "multi" or report.confirm is not None
    expected = [anchor for anchor, _, fig, _ in figures(report) if fig is not None]
    html = tmp_path / "report.html"
    html.write_text(render_html(report).replace("<head>", "<head>" + ERROR_HOOK, 1))
    started = time.perf_counter()
    dom, log = chromium_dom(html, tmp_path / "profile")
    print(f"chromium took {time.perf_counter() - started:.1f}s")
    scan = FigureScan()
    scan.feed(dom)
    assert scan.errors == [], scan.errors  # no console error, no uncaught exception
    assert not [line for line in log.splitlines() if "Uncaught" in line]
    assert list(scan.found) == expected
    for anchor, classes in scan.found.items():
        assert {"plot-container", "main-svg"} <= classes, anchor
        assert classes & {"trace", "parcoords"}, f"{anchor}: no trace drawn"
    assert math.isfinite(report.summary.train_seconds)
