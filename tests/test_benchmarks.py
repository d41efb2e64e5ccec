"""The benchmarks' own logic (no training): the YOLO genetic search rules, time-to-target,
the SVG plot, the cost-model bound, overhead arithmetic and the RESULTS.md sections."""

from __future__ import annotations

import functools
import math
import statistics
import xml.etree.ElementTree as ET
from datetime import datetime, timedelta
from pathlib import Path

import numpy as np
import pytest

from benchmarks import common
from benchmarks.freeze_speed import bound_speedup
from benchmarks.full_length import holds, mean_std, paired_gain
from benchmarks.genetic import (
    Gene,
    GeneticSearch,
    constrain,
    mutate,
    round_decimals,
    select_parent,
)
from benchmarks.overhead import overhead_of
from benchmarks.search import Run, best_at, compute_to_target, summarize, svg_plot

GENES = {
    "lr0": Gene(1e-4, 0.1),
    "momentum": Gene(0.6, 0.98),
    "fliplr": Gene(0.0, 0.5, step=0.1),
    "epochs": Gene(1, 10, is_int=True),
}
BASE = {"lr0": 0.01, "momentum": 0.937, "fliplr": 0.5, "epochs": 3}


def test_genetic_first_trial_is_the_base_then_children_stay_in_bounds():
    search = GeneticSearch(GENES, BASE, seed=0)
    assert search.ask() == constrain(GENES, BASE)
    search.tell(BASE, 0.5)
    for _ in range(200):
        child = search.ask()
        assert child != constrain(GENES, BASE)  # always some key mutated
        for key, gene in GENES.items():
            assert gene.low <= child[key] <= gene.high
        assert isinstance(child["epochs"], int)
        assert round(child["fliplr"] * 10) == pytest.approx(child["fliplr"] * 10)
        search.tell(child, float(np.random.default_rng(len(search.population)).random()))


def test_genetic_mutation_is_multiplicative_within_yolo_factors():
    rng = np.random.default_rng(1)
    parent = {"lr0": 0.5, "momentum": 0.8}
    genes = {"lr0": Gene(1e-9, 1e9), "momentum": Gene(1e-9, 1e9)}
    for _ in range(500):
        child = mutate(genes, parent, rng)
        for key in parent:
            assert 0.3 - 1e-3 <= child[key] / parent[key] <= 3.0 + 1e-3  # 5-decimal rounding
    # momentum moves with gain 0.3 (the tools' tables): its factors stay closer to 1
    spread = {
        key: np.std([mutate(genes, parent, rng)[key] / parent[key] for _ in range(2000)])
        for key in parent
    }
    assert spread["momentum"] < 0.5 * spread["lr0"]
    # a zero stays zero: the multiplicative rule cannot move it (YOLO's behaviour, kept)
    assert mutate({"mixup": Gene(0.0, 1.0)}, {"mixup": 0.0}, rng)["mixup"] == 0.0


def test_parents_are_the_top_five_weighted_by_fitness():
    population = [({"x": i}, float(i)) for i in range(10)]
    rng = np.random.default_rng(0)
    picks = [select_parent(population, rng)["x"] for _ in range(2000)]
    assert set(picks) <= {5, 6, 7, 8, 9}
    # weights fitness - min + 1e-6: 0, 1, 2, 3, 4 -> the worst of the five almost never
    assert picks.count(5) < 5 and picks.count(9) > picks.count(6)


def test_children_are_rounded_to_five_decimals_like_the_tools():
    assert round_decimals(0.0123456789) == 0.01235
    assert constrain({"lr0": Gene(1e-6, 1.0)}, {"lr0": 0.000012345}) == {"lr0": 0.00001}


def run_of(values, epochs=6, seconds=1.0):
    run = Run()
    for value in values:
        run.add(epochs, seconds, value)
    return run


def test_time_to_target_and_best_at():
    run = run_of([0.5, None, 0.7, 0.6, 0.9])
    curve = run.curve("epochs")
    assert curve == [(6, 0.5), (12, 0.5), (18, 0.7), (24, 0.7), (30, 0.9)]
    assert compute_to_target(curve, 0.7) == 18
    assert compute_to_target(curve, 0.95) == math.inf
    assert best_at(curve, 5) is None and best_at(curve, 20) == 0.7
    assert run.curve("seconds")[-1] == (5.0, 0.9)


def test_summary_targets_are_per_seed_and_count_misses():
    runs = {
        "tuner": [run_of([0.8, 0.9]), run_of([0.95])],
        "random": [run_of([0.5, 0.6, 0.7]), run_of([0.2, 0.3])],
    }
    by_method = {s.method: s for s in summarize(runs)}
    assert by_method["tuner"].n_reached == 2  # 0.9 >= 0.99 * 0.9; 0.95 >= 0.99 * 0.95
    assert by_method["tuner"].epochs_to_target == statistics.median([12, 6])
    assert by_method["random"].n_reached == 0
    assert by_method["random"].epochs_to_target == math.inf


def test_svg_is_valid_with_one_line_per_series():
    svg = svg_plot(
        [("task: best", "epochs", {"tuner": [(0, 0.5), (10, 0.8)], "random": [(5, 0.6)]})]
    )
    root = ET.fromstring(svg)
    lines = [e for e in root.iter() if e.tag.endswith("polyline")]
    assert [e.get("data-series") for e in lines] == ["tuner", "random"]


def test_cost_model_bound():
    # full epoch 10 s; frozen prefix forward 2 s + trainable step 0.5 s + data 0.5 s -> 3.33x
    assert bound_speedup(10.0, 0.5, 2.0, 0.5) == pytest.approx(10 / 3)


def test_overhead_from_trial_times():
    t0 = datetime(2026, 1, 1)
    starts = [t0, t0 + timedelta(seconds=2.1)]
    ends = [t0 + timedelta(seconds=2.0), t0 + timedelta(seconds=4.2)]
    result = overhead_of(starts, ends, [1.95, 2.05])
    assert result.per_trial == pytest.approx(0.1)
    assert result.share == pytest.approx(0.05)
    # the reporter runs inside adapter.run but is the tuner's: 0.2 s of it moves across
    result = overhead_of(starts, ends, [1.95, 2.05], [0.1, 0.1])
    assert result.in_trainer == pytest.approx(3.8) and result.in_reporter == pytest.approx(0.2)
    assert result.per_trial == pytest.approx(0.2)
    assert result.share == pytest.approx(0.2 / 1.9)


def test_gain_statistics():
    assert mean_std([1.0]) == (1.0, 0.0)
    gain, spread, n_won = paired_gain([0.8, 0.7, 0.9], [0.75, 0.72, 0.8])
    assert gain == pytest.approx((0.05 - 0.02 + 0.1) / 3) and n_won == 2 and spread > 0


def test_a_pick_holds_only_with_a_positive_gain_on_most_seeds():
    assert holds(0.02, 2, 3) == "holds"
    assert holds(0.02, 1, 3) == "does NOT hold"  # one big win, two losses
    assert holds(-0.01, 2, 3) == "does NOT hold"
    assert holds(0.01, 1, 2) == "does NOT hold"  # a tie in seeds is not a majority


def test_sections_replace_themselves_and_keep_the_others(tmp_path):
    results = tmp_path / "RESULTS.md"
    common.write_section("a", "A", "first", results)
    common.write_section("b", "B", "other", results)
    common.write_section("a", "A", "second", results)
    text = results.read_text()
    assert "second" in text and "first" not in text and "other" in text
    assert text.count("<!-- a -->") == 1 and text.index("## A") < text.index("## B")
    assert "Machine: " in text and "Date: " in text and "Command: `python -m" in text


@pytest.mark.slow
@pytest.mark.parametrize(
    "name", ["search", "freeze_speed", "feature_cache", "overhead", "full_length"]
)
def test_each_benchmark_runs_end_to_end_quick(name, workdir, capsys):
    """Every benchmark's real code path on tiny settings; RESULTS.md and the plot untouched."""
    import importlib

    before = common.RESULTS.read_text() if common.RESULTS.exists() else None
    svg = common.ROOT / "benchmarks" / "search.svg"
    svg_before = svg.read_bytes() if svg.exists() else None
    module = importlib.import_module(f"benchmarks.{name}")
    try:
        assert module.main(["--quick"]) == 0
    finally:
        common.set_quick(False)
    out = capsys.readouterr().out
    assert out.strip().splitlines()[-1].strip()  # something printed last...
    assert "ratios:" in out  # ...the ratios, after the progress
    if name == "full_length":  # the picks of `tuner confirm --epochs` are trained and read too
        assert "confirmed-full pick (trial" in out and "confirmed-last pick (trial" in out
    assert (common.RESULTS.read_text() if common.RESULTS.exists() else None) == before
    assert (svg.read_bytes() if svg.exists() else None) == svg_before


def test_runs_file_round_trips_and_is_only_reused_with_the_same_settings(tmp_path):
    from benchmarks.search import load_runs, save_runs

    settings = {"budget_epochs": 12, "seeds": 1, "first_seed": 0, "trial_epochs": 6}
    runs = {"demo": {"tuner": [run_of([0.5, None])], "random": [run_of([0.4], seconds=2.5)]}}
    path = tmp_path / "x.runs.json"
    save_runs(path, runs, settings)
    back, measured = load_runs(path, settings)
    assert back["demo"]["tuner"][0].values == [0.5, None]
    assert back["demo"]["random"][0].seconds == [2.5]
    assert measured == {}  # a file without the record (written before it was kept)
    save_runs(path, runs, settings, {"machine": "Some CPU"})
    assert load_runs(path, settings).measured == {"machine": "Some CPU"}
    with pytest.raises(SystemExit, match="budget_epochs is 12 there, 24 here"):
        load_runs(path, {**settings, "budget_epochs": 24})
    path.write_text("{not json")
    with pytest.raises(SystemExit, match="not a runs file"):
        load_runs(path, settings)


@pytest.mark.slow
def test_reuse_trains_only_tuner_and_keeps_the_rivals_runs(workdir, capsys):
    """A tuner-setting comparison: the rivals come from the first run's runs file as they are."""
    import json
    import re

    from benchmarks import search

    try:
        assert search.main(["--quick"]) == 0
        first = Path(re.search(r"every trial: (\S+)", capsys.readouterr().out)[1])
        args = ["--quick", "--reuse", str(first), "--tuner-set", "search.sampler={name: random}"]
        with pytest.raises(SystemExit, match="first_seed is 0 there, 3 here"):
            search.main([*args, "--first-seed", "3"])  # other seeds: refused before training
        assert search.main(args) == 0
    finally:
        common.set_quick(False)
    out = capsys.readouterr().out
    assert " tuner seed 1 " in out
    assert " random seed " not in out and "genetic seed" not in out  # not retrained
    second = Path(re.search(r"every trial: (\S+)", out)[1])
    old, new = (json.loads(p.read_text())["runs"]["demo"] for p in (first, second))
    assert new["random"] == old["random"] and new["genetic"] == old["genetic"]
    assert new["freeze-grid"] == old["freeze-grid"]
    assert len(new["tuner"]) == 2 and all(r["epochs"] for r in new["tuner"])


def test_verdict_only_claims_what_the_budget_shows():
    from benchmarks.search import Summary, verdict_text

    tuner = Summary("tuner", 0.9, 10, 5.0, 5, 5)
    assert "wanted: met" in verdict_text(Summary("g", 0.8, 40, 20.0, 5, 5), tuner, 60)
    assert "NOT met" in verdict_text(Summary("g", 0.8, 30, 20.0, 5, 5), tuner, 60)
    never = Summary("r", 0.7, math.inf, math.inf, 0, 5)
    # never reached in 60 epochs: more than 6x tuner's 10 -> shown; in 30 epochs: not shown
    assert "more than 6.0x" in verdict_text(never, tuner, 60) and "met" in verdict_text(
        never, tuner, 60
    )
    assert "not shown" in verdict_text(never, tuner, 30)


def test_matching_ratio_reads_a_fixed_target():
    from benchmarks.search import matching_ratio

    rival = run_of([0.5, 0.6, 0.7])  # reaches its final 0.7 after 18 epochs
    assert matching_ratio(rival, run_of([0.7])) == 3.0  # tuner matched it after 6
    assert matching_ratio(rival, run_of([0.65, 0.66])) == 0.0  # never matched


def test_reduced_budget_gives_tuner_a_quarter_and_the_rivals_all():
    from benchmarks.search import HeadOn, reduced_budget_ratios, truncated

    assert truncated(run_of([0.1, 0.2, 0.3, 0.4]), 12).values == [0.1, 0.2]
    # strictly within the share: the trial that would cross it is not tuner's
    assert truncated(run_of([0.1, 0.2, 0.3, 0.4]), 17).values == [0.1, 0.2]
    # tuner finds 0.845 in its 2nd trial (12 ep) and 0.9 only after its quarter (24 ep): the
    # target is 0.99 x random's 0.85, which random reaches after 36 epochs = 3x tuner's 12
    tuner = run_of([0.5, 0.845, 0.845, 0.845, 0.9])
    random_run = run_of([0.1, 0.2, 0.3, 0.3, 0.3, 0.85, 0.3, 0.3])
    genetic = run_of([0.5] * 8)  # never there: the lower bound, 48 / 12 = 4x
    ratios = reduced_budget_ratios(
        {"tuner": [tuner], "random": [random_run], "genetic": [genetic]}, 48, 4
    )
    assert ratios == {"random": [HeadOn(3.0)], "genetic": [HeadOn(4.0, bound=True)]}
    assert [str(r) for r in (*ratios["random"], *ratios["genetic"])] == ["3.00", ">=4.00"]
    # the freeze grid raises the target (tuner misses it: 0) but gets no ratio of its own
    grid = run_of([0.95])
    ratios = reduced_budget_ratios(
        {"tuner": [tuner], "random": [random_run], "freeze-grid": [grid]}, 48, 4
    )
    assert ratios == {"random": [HeadOn(0.0)]}


def test_head_on_verdict_reads_never_reached_rivals_as_lower_bounds():
    from benchmarks.search import HeadOn, head_on_verdict

    exact = [HeadOn(4.5), HeadOn(5.0), HeadOn(1.0)]
    assert head_on_verdict(exact) == ("4.50x", "met")
    assert head_on_verdict([HeadOn(1.5), HeadOn(3.0), HeadOn(9.0)]) == ("3.00x", "NOT met")
    # rivals that never got there but stopped short of 4x tuner's epochs (a budget too small
    # to tell): the truth lies somewhere above, so nothing is shown...
    bounds = [HeadOn(3.91, True), HeadOn(3.83, True), HeadOn(0.0), HeadOn(6.43, True)]
    ratio, verdict = head_on_verdict(bounds)
    assert ratio == "at least 3.87x" and verdict.startswith("not shown")
    # ...unless the exact seeds alone already miss it, or the bounds alone hold it
    assert head_on_verdict([HeadOn(0.0), HeadOn(1.0), HeadOn(3.9, True)])[1] == "NOT met"
    assert head_on_verdict([HeadOn(4.2, True), HeadOn(5.0, True), HeadOn(0.0)]) == (
        "at least 4.20x", "met",
    )


def test_rescore_writes_the_section_from_the_runs_file_and_trains_nothing(
    tmp_path, monkeypatch, capsys
):
    from benchmarks import search

    def no_training(*_args, **_kwargs):
        raise AssertionError("a rescore trains nothing")

    for name in ("run_optuna", "run_genetic", "run_freeze_grid"):
        monkeypatch.setattr(search, name, no_training)
    results = tmp_path / "RESULTS.md"
    monkeypatch.setattr(
        search, "write_section", functools.partial(common.write_section, results=results)
    )
    settings = {"budget_epochs": 24, "seeds": 1, "first_seed": 0, "trial_epochs": 6,
                "quick": False}
    measured = {"command": "python -m benchmarks.search --tasks demo --budget-epochs 24 "
                "--seeds 1", "machine": "Some CPU, 2 cores", "date": "2026-12-03 09:23 UTC",
                "minutes": 7.5}
    # tuner's first trial (3 of its 6-epoch share of 24) finds 0.9; the rivals never do
    runs = {"demo": {"tuner": [run_of([0.9, 0.5], epochs=3)],
                     "random": [run_of([0.5, 0.6], epochs=12)],
                     "genetic": [run_of([0.4, 0.4], epochs=12)],
                     "freeze-grid": [run_of([0.3])]}}
    path = tmp_path / "x.runs.json"
    search.save_runs(path, runs, settings, measured)
    before = path.read_text()
    args = ["--tasks", "demo", "--seeds", "1", "--budget-epochs", "24",
            "--svg", str(tmp_path / "x.svg")]
    with pytest.raises(SystemExit, match="--rescore .*budget_epochs is 24 there, 12 here"):
        search.main([*args[:4], "--budget-epochs", "12", "--rescore", str(path)])
    assert search.main([*args, "--rescore", str(path)]) == 0
    assert path.read_text() == before  # the runs file is the record: left as it is
    text = results.read_text()
    assert "<!-- search-demo-24ep-1seeds -->" in text
    # stamped with the training run's command, machine and date, which the figures are of
    stamp = text.split("\n\n")[2].splitlines()
    assert stamp[0].startswith(f"Command: `{measured['command']}`; re-scored from its runs file")
    assert stamp[1:] == ["Machine: Some CPU, 2 cores  ", "Date: 2026-12-03 09:23 UTC"]
    body = text
    # 24 epochs spent without reaching tuner's target, which tuner reached after 3: >= 8x
    assert "needed at least 8.00x tuner's epochs" in body and "per seed >=8.00;" in body
    assert "wanted: met" in body
    assert "Total benchmark time: 7.5 min (training; this section re-scored" in body
    assert "ratios:" in capsys.readouterr().out


def test_fullspace_task_searches_the_yolo_tuner_keys_on_fewshot_data():
    config = common.load_task("fullspace")
    fewshot = common.load_task("fewshot")
    assert config.trainer.settings == fewshot.trainer.settings
    assert set(fewshot.space) < set(config.space)
    for key, (low, high) in common.FULL_SPACE.items():
        assert (config.space[key].low, config.space[key].high) == (low, high)
    assert config.space["lr0"] == fewshot.space["lr0"]  # the demo's log range is kept
