"""Search efficiency: ``tuner`` against random search, the YOLO genetic search and a freeze grid.

Same trainer, task and compute budget for every method (issue section 1). For each task and
seed, each method trains trials until it has spent ``--budget-epochs`` training epochs:

* ``tuner``: the tool's own path (space file -> study on SQLite -> :class:`Objective`), the
  space's sampler with the seed (the default, a Gaussian process that learns from pruned
  trials, since 2026-12-01; multivariate TPE before, measured in RESULTS.md's history),
  Hyperband pruning over epochs, freeze in the space, the baseline enqueued first;
* ``random``: Optuna's random sampler, no pruning, same space and same path;
* ``genetic``: :mod:`benchmarks.genetic` (YOLOv5 ``--evolve`` / Ultralytics ``Tuner`` rules)
  over the same keys minus the freeze-strategy keys (``freeze``, ``unfreeze_epoch``,
  ``lr_decay`` stay at their base values), every trial to the end;
* ``freeze-grid``: freeze in {0, middle, all but head} with the base hyps.

The trainer's seed is the task's, so a configuration always scores the same and only the
search's seed varies; the freeze grid is therefore run once per task and shared by the seeds.
A method's best is the best ``val/acc`` (best epoch, as the objective's ``reduce: best``) among
its COMPLETE trials, i.e. what ``tuner export`` could hand out. Compute is counted in epochs
trained and in the trainer's own seconds (``train_seconds``), pruned trials included.

Time-to-target: per task and seed, target = 0.99 x the best value any method found; a
method's compute-to-target is what it had spent when its best first reached the target.
Because that target rises with the budget (tuner's own late best sets it), two more readings
are printed: the fixed target (a rival's own final best: the rival's epochs to it over tuner's
epochs to match it) and the claim head-on (tuner's trials cut at 1/4 of the budget, strictly:
the trial that would cross it is left out; the rivals with all of it: the rivals' epochs to
99% of the best any of them found, over tuner's). A rival that never reached that target
gives only a lower bound (``>=``: the epochs it spent over tuner's), so the head-on verdict is
"met" when the median holds the factor with the bounds as they stand, "NOT met" when it
misses it even with every bound taken as infinite, and "not shown" in between.

Run: ``python -m benchmarks.search [--tasks demo,fewshot] [--seeds 5] [--budget-epochs 60]
[--trial-epochs 6]`` (longer trials give pruning more room: Hyperband's rungs follow).
Writes ``benchmarks/search.svg``, every trial's compute and value as
``benchmarks/<section>.runs.json`` (so a reading can be recomputed without training) and the
``search`` section of RESULTS.md; prints the ratios last.

A tuner setting is compared without retraining the rivals: ``--reuse RUNS.json`` takes every
method but tuner from an earlier run of the same tasks, seeds, budget and trial length, and
``--tuner-set KEY=VALUE`` (repeatable, ``--set`` syntax) changes tuner's study, e.g.
``--tuner-set "search.sampler={name: tpe, args: {n_startup_trials: 3}}"``; such a run gets its
own section (``--label`` names it; ``--label`` alone names the section of a ``--reuse`` run
after tuner's own defaults changed). ``--first-seed N`` runs search seeds N.. instead of 0..,
to check on fresh seeds what a comparison on the first ones suggested. ``--rescore RUNS.json``
rewrites a run's section from its runs file with the current readings, without training (the
stamp keeps the command, machine and date the runs were trained with, which the runs file
records; the section's hand-written reading, if any, has to be written again).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import statistics
import tempfile
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple
from xml.sax.saxutils import escape

from benchmarks.common import (
    ROOT,
    Recorder,
    add_common_flags,
    command_line,
    load_task,
    machine,
    prepared_adapter,
    set_quick,
    set_trial_epochs,
    table,
    utc_now,
    write_section,
)
from benchmarks.genetic import Gene, GeneticSearch

METHODS = ("tuner", "random", "genetic", "freeze-grid")
# the methods tuner's compute is compared with (the freeze grid has a fixed size)
RIVALS = ("random", "genetic")
FREEZE_KEYS = ("freeze", "unfreeze_epoch", "lr_decay")
TARGET_FRACTION = 0.99
# the factor: tuner should need at most 1/QUARTER of a rival's compute
QUARTER = 4.0
COLORS = {"tuner": "#1f77b4", "random": "#ff7f0e", "genetic": "#2ca02c", "freeze-grid": "#777"}


@dataclass
class Run:
    """One method's trials at one seed, in order.

    Attributes:
        epochs: Epochs each trial trained.
        seconds: Trainer seconds of each trial.
        values: The trial's metric, or None (pruned or failed: not a selectable result).
    """

    epochs: list[int] = field(default_factory=list)
    seconds: list[float] = field(default_factory=list)
    values: list[float | None] = field(default_factory=list)

    def add(self, epochs: int, seconds: float, value: float | None) -> None:
        self.epochs.append(int(epochs))
        self.seconds.append(float(seconds))
        self.values.append(value)

    @property
    def spent_epochs(self) -> int:
        return sum(self.epochs)

    def curve(self, unit: str = "epochs") -> list[tuple[float, float]]:
        """``(compute spent, best so far)`` after each trial that has a best."""
        costs = self.epochs if unit == "epochs" else self.seconds
        out, spent, best = [], 0.0, -math.inf
        for cost, value in zip(costs, self.values):
            spent += cost
            if value is not None and value > best:
                best = value
            if best > -math.inf:
                out.append((spent, best))
        return out

    def best(self) -> float:
        found = [v for v in self.values if v is not None]
        return max(found) if found else -math.inf

    def to_dict(self) -> dict[str, list]:
        return {"epochs": self.epochs, "seconds": self.seconds, "values": self.values}

    @classmethod
    def from_dict(cls, data: Mapping[str, Sequence]) -> Run:
        return cls(list(data["epochs"]), list(data["seconds"]), list(data["values"]))


RunsByTask = dict[str, dict[str, list[Run]]]


def save_runs(
    path: Path,
    runs: RunsByTask,
    settings: Mapping[str, object],
    measured: Mapping[str, object] | None = None,
) -> None:
    """Every trial's epochs, seconds and value (null: pruned or failed), with the settings that
    must match for :func:`load_runs` to reuse them and how they were measured (``measured``:
    command, machine, date, minutes; what ``--rescore`` stamps its section with)."""
    data = {
        "settings": dict(settings),
        **({"measured": dict(measured)} if measured else {}),
        "runs": {
            task: {method: [r.to_dict() for r in seeds] for method, seeds in by_method.items()}
            for task, by_method in runs.items()
        },
    }
    path.write_text(json.dumps(data, indent=1) + "\n")


class RunsFile(NamedTuple):
    """What :func:`load_runs` read: the runs and how they were measured (``measured``: empty
    for files written before it was kept)."""

    runs: RunsByTask
    measured: dict[str, object]


def load_runs(path: Path, settings: Mapping[str, object], flag: str = "--reuse") -> RunsFile:
    """The runs :func:`save_runs` wrote, checked against this run's settings (``flag``: the
    option that named the file, for the error messages).

    Raises:
        SystemExit: The file is missing, malformed or from a run with other settings.
    """
    try:
        data = json.loads(path.read_text())
        saved = data["settings"]
        runs = {
            task: {m: [Run.from_dict(r) for r in seeds] for m, seeds in by_method.items()}
            for task, by_method in data["runs"].items()
        }
        measured = data.get("measured", {})
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        raise SystemExit(f"{flag} {path}: not a runs file of benchmarks.search ({exc})") from None
    for key, value in settings.items():
        if saved.get(key) != value:
            raise SystemExit(
                f"{flag} {path}: {key} is {saved.get(key)!r} there, {value!r} here; "
                "rerun with the same settings"
            )
    return RunsFile(runs, measured if isinstance(measured, dict) else {})


def compute_to_target(curve: Sequence[tuple[float, float]], target: float) -> float:
    """Compute spent when the best first reached ``target``; inf when it never did."""
    for spent, best in curve:
        if best >= target:
            return spent
    return math.inf


def best_at(curve: Sequence[tuple[float, float]], spent: float) -> float | None:
    """The best value after ``spent`` compute (None before the first result)."""
    value = None
    for at, best in curve:
        if at > spent:
            break
        value = best
    return value


def median(values: Iterable[float]) -> float:
    """Median that treats inf as larger than everything (a 'not reached' seed)."""
    return statistics.median(list(values))


def ratio_text(value: float, reference: float) -> str:
    """``value / reference`` as text: ``>`` lower bounds where one side never reached."""
    if math.isinf(value) and math.isinf(reference):
        return "n/a"
    if math.isinf(value):
        return "never"
    if math.isinf(reference):
        return "tuner never"
    return f"{value / reference:.2f}x"


def verdict_text(
    method: Summary, tuner: Summary, budget: float, wanted: float = QUARTER
) -> str:
    """How much more compute ``method`` needs than ``tuner`` to reach the target, and whether
    that shows the wanted factor. A method that never reached the target within the budget
    only shows a lower bound, budget / tuner's compute, which proves the factor only if it is
    itself at least ``wanted``."""
    if math.isinf(tuner.epochs_to_target):
        return "n/a: tuner did not reach the target in most seeds"
    if math.isinf(method.epochs_to_target):
        bound = budget / tuner.epochs_to_target
        shown = "met" if bound >= wanted else "not shown: the budget is too small to tell"
        return (
            f"did not reach the target within {budget:.0f} epochs in most seeds: it needs more "
            f"than {bound:.1f}x tuner's {tuner.epochs_to_target:.0f} epochs "
            f"(>= {wanted:g}x wanted: {shown})"
        )
    ratio = method.epochs_to_target / tuner.epochs_to_target
    return (
        f"needs {ratio:.2f}x the epochs and "
        f"{ratio_text(method.seconds_to_target, tuner.seconds_to_target)} the seconds tuner "
        f"needs to reach the target (>= {wanted:g}x wanted: "
        f"{'met' if ratio >= wanted else 'NOT met'})"
    )


# -- the methods -----------------------------------------------------------------------------


def _value(history: list[dict[str, float]], metric: str) -> float:
    return max(h[metric] for h in history)


def _fresh_features() -> None:
    """Empty the frozen-feature cache, so each method and seed pays for its own feature
    passes (otherwise a method's seconds would profit from the features of the one before)."""
    from trainer.torchvision import features

    features.store().clear()


def run_optuna(
    task: str, seed: int, budget: int, method: str, work: Path, extra: Sequence[str] = ()
) -> Run:
    """``tuner`` or ``random``: a real study through the tool's Objective on SQLite.

    Args:
        extra: More ``--set`` style overrides of the study, applied last (``--tuner-set``).
    """
    import optuna

    _fresh_features()

    from tuner import study as st
    from tuner.objective import Objective, frozen_heap

    adapter = prepared_adapter(load_task(task))
    epochs = adapter.settings_dict()["epochs"]
    if method == "tuner":
        # Hyperband's largest budget is the trial length (its 'auto' needs finished trials)
        overrides = [
            f"search.pruner={{name: hyperband, args: {{min_resource: 1, max_resource: {epochs}, "
            "reduction_factor: 3}}",
        ]
    else:
        overrides = [
            "search.sampler={name: random}",
            "search.pruner={name: none}",
            "search.baseline=false",
        ]
    config = load_task(
        task, [*overrides, *extra, f"search.seed={seed}", f"study={method}-{seed}"]
    )
    storage = st.open_storage(f"sqlite:///{work / f'{method}-{seed}.db'}")
    study = st.create_or_load(config, storage, {}, "benchmarks.search")
    base_hyp = config.base_hyp(adapter)
    st.enqueue_baseline(study, config, base_hyp)
    objective = Objective(config, adapter, base_hyp, work / f"{method}-{seed}")
    run = Run()

    def account(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        attrs = trial.user_attrs
        value = trial.value if trial.state == optuna.trial.TrialState.COMPLETE else None
        run.add(attrs.get("epochs_run", 0), attrs.get("train_seconds", 0.0), value)
        print(
            f"    {method:>7} seed {seed} trial {trial.number:>2} {trial.state.name:<8} "
            f"{attrs.get('epochs_run', 0)} ep  best {run.best():.4f}  "
            f"spent {run.spent_epochs}/{budget} ep",
            flush=True,
        )
        if run.spent_epochs >= budget:
            study.stop()

    with frozen_heap():  # as `tuner search` runs its trials
        study.optimize(objective, callbacks=[account], catch=(Exception,))
    return run


def run_genetic(task: str, seed: int, budget: int, work: Path) -> Run:
    """The YOLO genetic search over the non-freeze keys, every trial to the end."""
    _fresh_features()
    config = load_task(task)
    adapter = prepared_adapter(config)
    base = config.base_hyp(adapter)
    genes = {
        key: Gene(
            low=float(spec.low),
            high=float(spec.high),
            step=spec.step,
            is_int=spec.type == "int",
        )
        for key, spec in config.space.items()
        if key not in FREEZE_KEYS and spec.type != "categorical"
    }
    search = GeneticSearch(genes, {k: base[k] for k in genes}, seed)
    metric = config.objective.primary.metric
    run = Run()
    n = 0
    while run.spent_epochs < budget:
        hyp = {**base, **search.ask()}
        try:
            result = adapter.run(hyp, Recorder(), work / f"genetic-{seed}" / f"{n:04d}")
            value: float | None = _value(result.history, metric)
            fitness = value
        except Exception as exc:  # noqa: BLE001 - a failed child is the worst, as in YOLO's GA
            result = getattr(exc, "result", None)
            value, fitness = None, 0.0
        search.tell({k: hyp[k] for k in genes}, fitness)
        run.add(
            result.epochs_run if result else 0, result.train_seconds if result else 0.0, value
        )
        state = "COMPLETE" if value is not None else "FAIL"
        print(
            f"    genetic seed {seed} trial {n:>2} {state:<8} best {run.best():.4f}  "
            f"spent {run.spent_epochs}/{budget} ep",
            flush=True,
        )
        n += 1
    return run


def run_freeze_grid(task: str, work: Path) -> Run:
    """freeze in {0, middle, all but head} with the base hyps."""
    _fresh_features()
    config = load_task(task)
    adapter = prepared_adapter(config)
    base = config.base_hyp(adapter)
    head = adapter.n_blocks() - 1
    metric = config.objective.primary.metric
    run = Run()
    for freeze in (0, head // 2, head):
        result = adapter.run({**base, "freeze": freeze}, Recorder(), work / f"grid-{freeze}")
        run.add(result.epochs_run, result.train_seconds, _value(result.history, metric))
        print(f"    freeze-grid freeze {freeze}: {run.values[-1]:.4f}", flush=True)
    return run


# -- summary and plot ------------------------------------------------------------------------


@dataclass
class Summary:
    """One method on one task, over the seeds."""

    method: str
    best: float
    epochs_to_target: float
    seconds_to_target: float
    n_reached: int
    n_seeds: int


def summarize(runs: Mapping[str, Sequence[Run]]) -> list[Summary]:
    """Per method: median best, median compute to the per-seed target, seeds reaching it.

    Args:
        runs: Method -> one run per seed (same seed order for every method).
    """
    n_seeds = len(next(iter(runs.values())))
    targets = [
        TARGET_FRACTION * max(method_runs[i].best() for method_runs in runs.values())
        for i in range(n_seeds)
    ]
    out = []
    for method, method_runs in runs.items():
        epochs = [compute_to_target(r.curve("epochs"), t) for r, t in zip(method_runs, targets)]
        seconds = [compute_to_target(r.curve("seconds"), t) for r, t in zip(method_runs, targets)]
        out.append(
            Summary(
                method=method,
                best=median(r.best() for r in method_runs),
                epochs_to_target=median(epochs),
                seconds_to_target=median(seconds),
                n_reached=sum(not math.isinf(e) for e in epochs),
                n_seeds=n_seeds,
            )
        )
    return out


def matching_ratio(rival: Run, tuner: Run) -> float:
    """Fixed-target reading: epochs ``rival`` spent to reach its own final best, divided by the
    epochs ``tuner`` needed to match that value (0 when tuner never did: no speed-up shown;
    inf when the rival found nothing)."""
    final = rival.best()
    rival_epochs = compute_to_target(rival.curve("epochs"), final)
    tuner_epochs = compute_to_target(tuner.curve("epochs"), final)
    if math.isinf(rival_epochs):
        return math.inf
    return 0.0 if math.isinf(tuner_epochs) else rival_epochs / tuner_epochs


def truncated(run: Run, budget: float) -> Run:
    """The first trials of ``run`` whose epochs add up to at most ``budget``.

    Strictly within it, not as a real run would end (that finishes the trial that crosses
    its budget): "at most 1/4 of the compute" must not credit tuner with the epochs of a trial
    that ran past its quarter.
    """
    out = Run()
    for epochs, seconds, value in zip(run.epochs, run.seconds, run.values):
        if out.spent_epochs + epochs > budget:
            break
        out.add(epochs, seconds, value)
    return out


@dataclass(frozen=True)
class HeadOn:
    """One seed's head-on ratio: a rival's epochs to the target over tuner's.

    Attributes:
        ratio: The ratio; 0 where tuner missed the target within its share.
        bound: The rival never reached the target within its budget, so ``ratio`` (the epochs
            it spent over tuner's) is only a lower bound of the true one.
    """

    ratio: float
    bound: bool = False

    def __str__(self) -> str:
        return f"{'>=' if self.bound else ''}{self.ratio:.2f}"


def head_on_verdict(results: Sequence[HeadOn], wanted: float = QUARTER) -> tuple[str, str]:
    """The median ratio over seeds as text ("at least" where bounds decide it) and the verdict.

    The median only grows when a bound is replaced by the true ratio, so the factor is met if
    the median of the values as they stand holds it, NOT met if even the median with every
    bound taken as infinite misses it, and not shown otherwise.
    """
    low = median(r.ratio for r in results)
    high = median(math.inf if r.bound else r.ratio for r in results)
    text = f"{'' if high == low else 'at least '}{low:.2f}x"
    if low >= wanted:
        return text, "met"
    if high < wanted:
        return text, "NOT met"
    return text, "not shown: rivals that never reached the target give only lower bounds"


def reduced_budget_ratios(
    runs: Mapping[str, Sequence[Run]], budget: float, factor: float = QUARTER
) -> dict[str, list[HeadOn]]:
    """The issue's claim tested head-on: tuner gets ``budget / factor`` epochs, every other
    method the whole ``budget``.

    Per seed, target = 0.99 x the best any of them found so (tuner's best in its short run, the
    rivals' in their full ones); a rival's ratio is its epochs to that target over tuner's. A
    rival that never reached it gets the lower bound (epochs it spent) / tuner's, marked as a
    bound: at least ``factor``, as tuner's share never exceeds ``budget / factor`` (see
    :func:`truncated`). 0 where tuner missed the target within its share. Methods other than
    :data:`RIVALS` (the freeze grid) count for the target only.

    Returns:
        Rival method -> one ratio per seed.
    """
    n_seeds = len(runs["tuner"])
    short = [truncated(r, budget / factor) for r in runs["tuner"]]
    out: dict[str, list[HeadOn]] = {m: [] for m in runs if m in RIVALS}
    for i in range(n_seeds):
        target = TARGET_FRACTION * max(
            short[i].best(), *(runs[m][i].best() for m in runs if m != "tuner")
        )
        tuner_epochs = compute_to_target(short[i].curve("epochs"), target)
        for method in out:
            rival_epochs = compute_to_target(runs[method][i].curve("epochs"), target)
            if math.isinf(tuner_epochs):
                out[method].append(HeadOn(0.0))
            elif math.isinf(rival_epochs):
                out[method].append(HeadOn(runs[method][i].spent_epochs / tuner_epochs, True))
            else:
                out[method].append(HeadOn(rival_epochs / tuner_epochs))
    return out


def median_curve(runs: Sequence[Run], grid: Sequence[float], unit: str) -> list[float | None]:
    """Median over seeds of the best so far at each point of ``grid``."""
    out: list[float | None] = []
    for spent in grid:
        values = [best_at(r.curve(unit), spent) for r in runs]
        known = [v for v in values if v is not None]
        out.append(statistics.median(known) if len(known) * 2 > len(values) else None)
    return out


def svg_plot(
    panels: Sequence[tuple[str, str, Mapping[str, Sequence[tuple[float, float]]]]],
    width: int = 420,
    height: int = 300,
) -> str:
    """Small-multiple step plots as one self-contained SVG (no plotting library needed).

    Args:
        panels: ``(title, x label, {series name: [(x, y), ...]})`` per panel.
    """
    pad_l, pad_r, pad_t, pad_b = 52, 12, 28, 40
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width * len(panels)}" '
        f'height="{height + 24}" font-family="sans-serif" font-size="11">',
        f'<rect width="{width * len(panels)}" height="{height + 24}" fill="white"/>',
    ]
    for index, (title, xlabel, series) in enumerate(panels):
        ox = index * width
        points = [p for s in series.values() for p in s]
        if not points:
            continue
        x_max = max(p[0] for p in points) or 1.0
        y_lo, y_hi = min(p[1] for p in points), max(p[1] for p in points)
        if y_hi - y_lo < 1e-9:
            y_lo, y_hi = y_lo - 0.01, y_hi + 0.01
        plot_w, plot_h = width - pad_l - pad_r, height - pad_t - pad_b

        def sx(x: float, ox: int = ox, x_max: float = x_max, plot_w: int = plot_w) -> float:
            return ox + pad_l + plot_w * x / x_max

        def sy(y: float, y_lo: float = y_lo, y_hi: float = y_hi, plot_h: int = plot_h) -> float:
            return pad_t + plot_h * (1 - (y - y_lo) / (y_hi - y_lo))

        parts.append(
            f'<text x="{ox + width / 2}" y="16" text-anchor="middle" font-weight="bold">'
            f"{escape(title)}</text>"
        )
        parts.append(
            f'<rect x="{ox + pad_l}" y="{pad_t}" width="{plot_w}" height="{plot_h}" '
            'fill="none" stroke="#ccc"/>'
        )
        for k in range(5):
            y = y_lo + (y_hi - y_lo) * k / 4
            x = x_max * k / 4
            parts.append(
                f'<text x="{ox + pad_l - 4}" y="{sy(y) + 4:.1f}" text-anchor="end">{y:.3f}</text>'
            )
            parts.append(
                f'<text x="{sx(x):.1f}" y="{pad_t + plot_h + 14}" text-anchor="middle">'
                f"{x:.0f}</text>"
            )
        parts.append(
            f'<text x="{ox + pad_l + plot_w / 2}" y="{pad_t + plot_h + 30}" '
            f'text-anchor="middle">{escape(xlabel)}</text>'
        )
        for n, (name, pts) in enumerate(series.items()):
            if not pts:
                continue
            steps = []
            for i, (x, y) in enumerate(pts):
                if i:
                    steps.append(f"{sx(x):.1f},{sy(pts[i - 1][1]):.1f}")
                steps.append(f"{sx(x):.1f},{sy(y):.1f}")
            color = COLORS.get(name, "#000")
            parts.append(
                f'<polyline data-series="{escape(name)}" fill="none" stroke="{color}" '
                f'stroke-width="2" points="{" ".join(steps)}"/>'
            )
            parts.append(
                f'<text x="{ox + pad_l + 8}" y="{pad_t + plot_h - 8 - 14 * n}" fill="{color}">'
                f"{escape(name)}</text>"
            )
    parts.append("</svg>")
    return "\n".join(parts)


def _series(runs: Sequence[Run], unit: str, n_points: int = 60) -> list[tuple[float, float]]:
    x_max = max((r.curve(unit)[-1][0] for r in runs if r.curve(unit)), default=0.0)
    grid = [x_max * k / n_points for k in range(n_points + 1)]
    return [(x, y) for x, y in zip(grid, median_curve(runs, grid, unit)) if y is not None]


# -- main ------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tasks", default="demo,fewshot")
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument(
        "--first-seed", type=int, default=0,
        help="search seeds first-seed .. first-seed+seeds-1 (fresh seeds check a finding)",
    )
    parser.add_argument("--budget-epochs", type=int, default=60)
    parser.add_argument(
        "--trial-epochs", type=int,
        help="epochs of one full trial (default: the space's 6); Hyperband's range follows",
    )
    parser.add_argument("--svg", help="plot path (default: benchmarks/<section>.svg)")
    parser.add_argument(
        "--reuse", metavar="RUNS.json",
        help="take every method but tuner from this runs file of an earlier run (same tasks, "
        "seeds, budget and trial length); only tuner trains",
    )
    parser.add_argument(
        "--tuner-set", action="append", default=[], metavar="KEY=VALUE",
        help="override of tuner's study (--set syntax), after the benchmark's own; repeatable",
    )
    parser.add_argument(
        "--label",
        help="section suffix '-tuner-LABEL' of a --tuner-set run (default: a hash of the "
        "settings) or of a --reuse run after tuner's own defaults changed",
    )
    parser.add_argument(
        "--rescore", metavar="RUNS.json",
        help="write the section of the run that saved this runs file (give the flags it ran "
        "with) from the file, with the current readings; nothing trains",
    )
    add_common_flags(parser)
    args = parser.parse_args(argv)
    set_quick(args.quick)
    set_trial_epochs(args.trial_epochs)
    if args.quick:
        args.tasks, args.seeds, args.budget_epochs = "demo", 2, 4
        args.svg = str(Path(tempfile.mkdtemp(prefix="bench-search-")) / "search.svg")
    tasks = [t.strip() for t in args.tasks.split(",") if t.strip()]
    # the default run owns the `search` section; other task sets and budgets get their own,
    # so a longer follow-up run does not replace the main figures
    section = "search"
    if tasks != ["demo", "fewshot"] or args.budget_epochs != 60 or args.seeds != 5:
        section = f"search-{'-'.join(tasks)}-{args.budget_epochs}ep-{args.seeds}seeds"
    if args.trial_epochs is not None:
        section = f"{section}-{args.trial_epochs}ep-trials"
    if args.first_seed:
        section = f"{section}-from-seed-{args.first_seed}"
    if args.tuner_set or args.label:
        label = args.label or hashlib.sha1("\n".join(args.tuner_set).encode()).hexdigest()[:8]
        section = f"{section}-tuner-{label}"
    args.svg = args.svg or str(ROOT / "benchmarks" / f"{section}.svg")
    trial_epochs = args.trial_epochs or load_task(tasks[0]).trainer.settings.get("epochs")
    settings = {
        "budget_epochs": args.budget_epochs,
        "seeds": args.seeds,
        "first_seed": args.first_seed,
        "trial_epochs": trial_epochs,
        "quick": args.quick,
    }
    reused: RunsByTask = {}
    measured: dict[str, object] = {}
    for flag, path in (("--reuse", args.reuse), ("--rescore", args.rescore)):
        if path:
            reused, measured = load_runs(Path(path), settings, flag)
            missing = [t for t in tasks if t not in reused]
            if missing:
                raise SystemExit(f"{flag} {path}: has no runs of task {', '.join(missing)}")
    from tuner import study as st

    st.quiet_optuna()
    work = Path(tempfile.mkdtemp(prefix="bench-search-"))
    started = time.perf_counter()
    all_runs: RunsByTask = {t: reused[t] for t in tasks} if args.rescore else {}
    for task in tasks if not args.rescore else ():
        print(f"task {task}:", flush=True)
        runs: dict[str, list[Run]] = {m: [] for m in METHODS}
        if task in reused:
            runs.update({m: reused[task][m] for m in METHODS if m != "tuner"})
        grid = None if task in reused else run_freeze_grid(task, work / task)
        for seed in range(args.first_seed, args.first_seed + args.seeds):
            # methods interleaved per seed, so machine noise hits them alike
            runs["tuner"].append(
                run_optuna(
                    task, seed, args.budget_epochs, "tuner", work / task, args.tuner_set
                )
            )
            if task in reused:
                continue
            runs["random"].append(
                run_optuna(task, seed, args.budget_epochs, "random", work / task)
            )
            runs["genetic"].append(run_genetic(task, seed, args.budget_epochs, work / task))
            runs["freeze-grid"].append(grid)
        all_runs[task] = runs
    if args.rescore:
        runs_path = Path(args.rescore)
    else:
        runs_path = Path(args.svg).with_suffix(".runs.json")
        measured = {
            "command": command_line(),
            "machine": machine(),
            "date": utc_now(),
            "minutes": round((time.perf_counter() - started) / 60, 1),
        }
        save_runs(runs_path, all_runs, settings, measured)

    sections, ratio_lines, panels = [], [], []
    for task, runs in all_runs.items():
        summaries = summarize(runs)
        ref = next(s for s in summaries if s.method == "tuner")
        rows = [
            (
                s.method,
                f"{s.best:.4f}",
                _fmt(s.epochs_to_target, "ep"),
                _fmt(s.seconds_to_target, "s"),
                f"{s.n_reached}/{s.n_seeds}",
                ratio_text(s.epochs_to_target, ref.epochs_to_target),
                ratio_text(s.seconds_to_target, ref.seconds_to_target),
            )
            for s in summaries
        ]
        header = (
            "method", "best (median)", "epochs to target", "seconds to target",
            "seeds reaching", "epochs vs tuner", "seconds vs tuner",
        )
        sections.append(f"**{task}**\n\n{table(header, rows)}")
        for s in summaries:
            if s.method in RIVALS:
                verdict = verdict_text(s, ref, args.budget_epochs)
                ratio_lines.append(f"{task}: {s.method} {verdict}")
                per_seed = [
                    matching_ratio(rival, mine)
                    for rival, mine in zip(runs[s.method], runs["tuner"])
                ]
                ratio_lines.append(
                    f"{task}: {s.method}, fixed target (its own final best): it spent "
                    f"{median(per_seed):.2f}x the epochs tuner needed to match it (median; "
                    f"per seed {', '.join(f'{r:.2f}' for r in per_seed)}; 0 = tuner never "
                    "matched it)"
                )
        quarter = reduced_budget_ratios(runs, args.budget_epochs, QUARTER)
        for method, ratios in quarter.items():
            # the same with the target set by tuner and this rival alone
            alone = reduced_budget_ratios(
                {"tuner": runs["tuner"], method: runs[method]}, args.budget_epochs, QUARTER
            )[method]
            ratio, verdict = head_on_verdict(ratios, QUARTER)
            ratio_lines.append(
                f"{task}: {method}, tuner held to 1/{QUARTER:g} of the budget (at most "
                f"{args.budget_epochs / QUARTER:g} epochs), the rivals all of it: {method} "
                f"needed {ratio} tuner's epochs to reach 99% of the best any found (median; "
                f"per seed {', '.join(map(str, ratios))}; 0 = tuner missed it in its share, "
                f">= a lower bound: {method} never reached it; >= {QUARTER:g}x wanted: "
                f"{verdict}); with the target from tuner and {method} alone "
                f"{head_on_verdict(alone, QUARTER)[0]} (per seed {', '.join(map(str, alone))})"
            )
        for unit, label in (("epochs", "epochs trained"), ("seconds", "trainer seconds")):
            panels.append(
                (
                    f"{task}: best val/acc (median of {args.seeds} seeds)",
                    label,
                    {m: _series(r, unit) for m, r in runs.items()},
                )
            )
    Path(args.svg).write_text(svg_plot(panels))
    provenance = []
    if args.tuner_set:
        provenance.append(
            "tuner's study with "
            + ", ".join(f"`{o}`" for o in args.tuner_set)
            + " on top of the benchmark's own settings."
        )
    if args.reuse:
        provenance.append(
            f"random, genetic and the freeze grid: the runs in `{Path(args.reuse).name}` "
            "(not retrained)."
        )
    body = "\n\n".join(
        [
            *provenance,
            f"Budget per method and seed: {args.budget_epochs} training epochs (the last trial "
            f"may overshoot); trials of {trial_epochs} epochs; {args.seeds} search seeds "
            f"({args.first_seed}-{args.first_seed + args.seeds - 1}); "
            "trainer seed fixed (so the freeze grid is one run per task, shared by the seeds). "
            "Best = best val/acc of the method's complete trials (median over seeds). "
            f"Target per seed = {TARGET_FRACTION} x the best any method found at that seed; "
            "compute to target = median over seeds (inf = not reached in most seeds).",
            *sections,
            f"![best so far vs compute]({Path(args.svg).name}); every trial: "
            f"`{runs_path.name}`",
            "\n".join(f"- {line}" for line in ratio_lines),
            f"Total benchmark time: {measured.get('minutes', '(not recorded)')} min"
            + (" (training; this section re-scored from the runs file)." if args.rescore else "."),
        ]
    )
    title = "1. Search efficiency" + ("" if section == "search" else f" ({section})")
    if args.rescore:
        # stamped as the training run, which the figures are of, naming the re-score too
        write_section(
            section, title, body,
            command=str(measured.get("command", "(not recorded)")),
            command_note=f"; re-scored from its runs file by `{command_line()}` on {utc_now()}",
            machine_line=str(measured.get("machine", "(not recorded)")),
            date=str(measured.get("date", "(not recorded)")),
        )
    else:
        write_section(section, title, body)
    for section in sections:
        print(section)
    print(f"every trial: {runs_path}")
    print("ratios:")
    for line in ratio_lines:
        print(" ", line)
    return 0


def _fmt(value: float, unit: str) -> str:
    return "not reached" if math.isinf(value) else f"{value:.0f} {unit}"


if __name__ == "__main__":
    raise SystemExit(main())
