"""The numbers behind every figure of the report, as plain objects (no plotly here).

Each builder takes the trials of a study (``optuna.trial.FrozenTrial``) plus a :class:`StudyInfo`
and returns frozen dataclasses of numbers, labels and flags; :mod:`tuner.report.render` only
draws them. The Pareto helpers (:func:`pareto_front`, :func:`knee_index`) are shared with
``tuner export --pick``.
"""

from __future__ import annotations

import math
import warnings
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from optuna.distributions import CategoricalDistribution
from optuna.trial import FrozenTrial, TrialState

from tuner.study import gain as study_gain

FreezeKey = int | str
# PED-ANOVA compares the top trials with the rest; its authors want >= 5 trials in the top
# quantile, so below this many complete trials a fallback evaluator is used.
MIN_PED_ANOVA_TRIALS = 10
PED_ANOVA_TOP = 5
# Above this many points the Pareto figure labels only the front (the rest label on hover).
MAX_LABELLED_POINTS = 12
COSTS = {"train_seconds": "train time (s)", "peak_memory_mb": "peak memory (MB)"}
# The objective each cost is when a study optimises it (tuner.objective.cost_value).
COST_OBJECTIVES = {"train_seconds": "train_time", "peak_memory_mb": "peak_memory"}


# -- study facts -----------------------------------------------------------------------------


@dataclass(frozen=True)
class StudyInfo:
    """What the study says about itself (user attrs written by ``tuner search``).

    Attributes:
        name: Study name.
        metrics: Objective metric names, in direction order.
        directions: ``maximize`` / ``minimize`` per objective.
        max_epochs: Epochs a trial trains to the end (``trainer.epochs``, else the most any
            trial ran; None when no trial recorded epochs).
        space_file: The space file the study was created from.
        command: The command line that created it.
        space_order: Searched parameter names in space-file order.
    """

    name: str
    metrics: tuple[str, ...]
    directions: tuple[str, ...]
    max_epochs: int | None
    space_file: str | None = None
    command: str | None = None
    space_order: tuple[str, ...] = ()

    @property
    def metric(self) -> str:
        """The primary metric (first objective)."""
        return self.metrics[0]

    @property
    def direction(self) -> str:
        """Direction of the primary metric."""
        return self.directions[0]

    @property
    def is_multi(self) -> bool:
        """True for a multi-objective study."""
        return len(self.metrics) > 1


def study_info(study: Any) -> StudyInfo:
    """Read :class:`StudyInfo` from an ``optuna.Study``."""
    attrs = study.user_attrs
    directions = tuple(d.name.lower() for d in study.directions)
    metrics = list(attrs.get("metrics") or [])
    if len(metrics) != len(directions):  # a study made outside `tuner search`
        metrics = ["value"] if len(directions) == 1 else [f"value {i}" for i, _ in
                                                          enumerate(directions)]
    config = attrs.get("config") or {}
    trials = study.get_trials(deepcopy=False)
    return StudyInfo(
        name=study.study_name,
        metrics=tuple(metrics),
        directions=directions,
        max_epochs=max_epochs(config, trials),
        space_file=attrs.get("space_file"),
        command=attrs.get("command"),
        space_order=tuple((config.get("space") or {}).keys()),
    )


def max_epochs(config: dict[str, Any], trials: Sequence[FrozenTrial]) -> int | None:
    """Epochs of a full trial: the configured ``trainer.epochs``, else the most any trial ran."""
    epochs = (config.get("trainer") or {}).get("epochs")
    if isinstance(epochs, int) and not isinstance(epochs, bool) and epochs > 0:
        return epochs
    seen = [e for t in trials if isinstance(e := t.user_attrs.get("epochs_run"), int)]
    return max(seen) if seen else None


def freeze_of(trial: FrozenTrial) -> FreezeKey | None:
    """The trial's freeze index (sampled, else from its full hyp); lists become a label."""
    value = trial.params.get("freeze", (trial.user_attrs.get("hyp") or {}).get("freeze"))
    if value is None or isinstance(value, bool):
        return None
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, int):
        return value
    if isinstance(value, list | tuple):  # YOLO also takes a list of layer indices
        return "[" + ",".join(str(v) for v in value) + "]"
    return str(value)


def freeze_sort_key(key: FreezeKey) -> tuple[int, int, str]:
    """Integers in order first, then labels."""
    return (0, key, "") if isinstance(key, int) else (1, 0, str(key))


def _finite(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _is_complete(trial: FrozenTrial) -> bool:
    """Complete with every objective value finite."""
    return (
        trial.state == TrialState.COMPLETE and bool(trial.values)
        and all(_finite(v) for v in trial.values)
    )


def complete_trials(trials: Sequence[FrozenTrial]) -> list[FrozenTrial]:
    """Complete trials whose values are all finite."""
    return [t for t in trials if _is_complete(t)]


def _better(direction: str) -> Callable[[float, float], bool]:
    return (lambda a, b: a > b) if direction == "maximize" else (lambda a, b: a < b)


def primary_curve(trial: FrozenTrial, metric: str) -> list[tuple[int, float]]:
    """(epoch, value) of the primary metric: Optuna's intermediate values, else the history.

    Multi-objective trials keep no intermediate values (Optuna cannot store them), so their
    curves come from the ``history`` user attr.
    """
    if trial.intermediate_values:
        steps = trial.intermediate_values.items()
        return sorted((int(s), float(v)) for s, v in steps if _finite(v))
    history = trial.user_attrs.get("history") or []
    return [
        (i, float(h[metric])) for i, h in enumerate(history)
        if isinstance(h, dict) and _finite(h.get(metric))
    ]


# -- Pareto helpers --------------------------------------------------------------------------


def pareto_front(points: Sequence[Sequence[float]], directions: Sequence[str]) -> list[bool]:
    """Which points no other point dominates.

    A point dominates another when it is at least as good in every objective and strictly
    better in one. Equal points do not dominate each other, so duplicates on the front all
    stay on it (as in Optuna's ``study.best_trials``).

    Args:
        points: One value per objective for each point (finite numbers).
        directions: ``maximize`` or ``minimize`` per objective.

    Returns:
        One flag per point, True on the front.
    """
    import numpy as np

    if len(points) == 0:
        return []
    signs = np.array([-1.0 if d == "maximize" else 1.0 for d in directions])
    loss = np.asarray(points, dtype=float) * signs  # everything minimised from here on
    flags = []
    for row in loss:
        dominated = ((loss <= row).all(axis=1) & (loss < row).any(axis=1)).any()
        flags.append(not bool(dominated))
    return flags


def knee_index(points: Sequence[Sequence[float]], directions: Sequence[str]) -> int | None:
    """The knee of the Pareto front: the balanced trade between the objectives.

    Rule: scale each objective to [0, 1] between its best and worst value over all the
    points (the utopia point is 0 in every objective), then take the front point closest
    (Euclidean) to the utopia point. Scaling over all points rather than the front alone keeps
    noise-level spreads on the front (train times that differ by milliseconds) from counting as
    a whole trade-off axis. An objective equal on all points scales to 0. Ties go to the
    better first objective, then to the earlier point.

    Returns:
        The index into ``points``, or None when there are none.
    """
    if not points:
        return None
    on_front = pareto_front(points, directions)
    front = [i for i, flag in enumerate(on_front) if flag]
    signs = [-1.0 if d == "maximize" else 1.0 for d in directions]
    scaled: dict[int, list[float]] = {i: [] for i in front}
    for k, sign in enumerate(signs):
        losses = [sign * p[k] for p in points]
        lo, hi = min(losses), max(losses)
        for i in front:
            scaled[i].append((losses[i] - lo) / (hi - lo) if hi > lo else 0.0)
    return min(
        front,
        key=lambda i: (math.dist(scaled[i], [0.0] * len(signs)), signs[0] * points[i][0], i),
    )


# -- optimization history --------------------------------------------------------------------


@dataclass(frozen=True)
class HistoryPoint:
    """One trial on the optimization-history plot.

    Attributes:
        number: Trial number.
        value: Primary metric (a pruned trial: its last reported value).
        state: ``COMPLETE`` or ``PRUNED``.
        baseline: True for the enqueued baseline trial.
        freeze: Freeze index.
    """

    number: int
    value: float
    state: str
    baseline: bool = False
    freeze: FreezeKey | None = None


@dataclass(frozen=True)
class History:
    """Primary metric per trial, the baseline, and the best value so far.

    Attributes:
        metric: The primary metric.
        direction: Its direction.
        points: Complete and pruned trials in trial order.
        best_so_far: ``(trial number, best complete value up to that trial)`` after each
            complete trial (pruned values never count: they stopped before the end).
    """

    metric: str
    direction: str
    points: tuple[HistoryPoint, ...]
    best_so_far: tuple[tuple[int, float], ...]

    @property
    def baseline(self) -> HistoryPoint | None:
        """The baseline trial's point, if it finished."""
        return next((p for p in self.points if p.baseline and p.state == "COMPLETE"), None)


def build_history(trials: Sequence[FrozenTrial], info: StudyInfo) -> History:
    """The optimization history of the primary metric."""
    better = _better(info.direction)
    points: list[HistoryPoint] = []
    best_so_far: list[tuple[int, float]] = []
    best: float | None = None
    for t in sorted(trials, key=lambda t: t.number):
        baseline = bool(t.user_attrs.get("baseline"))
        if _is_complete(t):
            value = float(t.values[0])
            points.append(HistoryPoint(t.number, value, "COMPLETE", baseline, freeze_of(t)))
            if best is None or better(value, best):
                best = value
            best_so_far.append((t.number, best))
        elif t.state == TrialState.PRUNED:
            curve = primary_curve(t, info.metric)
            if curve:
                last = curve[-1][1]
                points.append(HistoryPoint(t.number, last, "PRUNED", baseline, freeze_of(t)))
    return History(info.metric, info.direction, tuple(points), tuple(best_so_far))


# -- learning curves -------------------------------------------------------------------------


@dataclass(frozen=True)
class Curve:
    """One trial's primary metric per epoch (0-based), as far as it trained.

    Attributes:
        number: Trial number.
        state: ``COMPLETE``, ``PRUNED``, ``DIVERGED`` (a pruned trial whose loss went NaN or
            infinite: cut at its last finite epoch) or ``FAIL``.
        epochs: Epochs reported.
        values: The metric at those epochs.
        baseline: True for the baseline trial.
        freeze: Freeze index.
    """

    number: int
    state: str
    epochs: tuple[int, ...]
    values: tuple[float, ...]
    baseline: bool = False
    freeze: FreezeKey | None = None

    @property
    def pruned(self) -> bool:
        """True when the pruner stopped this trial."""
        return self.state == "PRUNED"

    @property
    def stopped_at(self) -> int | None:
        """The last epoch reported."""
        return self.epochs[-1] if self.epochs else None


@dataclass(frozen=True)
class Curves:
    """Learning curves of every trial that reported an epoch."""

    metric: str
    direction: str
    max_epochs: int | None
    curves: tuple[Curve, ...]


def build_curves(trials: Sequence[FrozenTrial], info: StudyInfo) -> Curves:
    """Learning curves of complete, pruned and failed trials, each cut where it stopped."""
    curves = []
    states = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)
    for t in sorted(trials, key=lambda t: t.number):
        if t.state not in states:
            continue
        points = primary_curve(t, info.metric)
        if not points:
            continue
        state = "DIVERGED" if t.user_attrs.get("diverged") else t.state.name
        curves.append(Curve(
            t.number, state, tuple(e for e, _ in points), tuple(v for _, v in points),
            bool(t.user_attrs.get("baseline")), freeze_of(t),
        ))
    return Curves(info.metric, info.direction, info.max_epochs, tuple(curves))


# -- parameter importances -------------------------------------------------------------------


@dataclass(frozen=True)
class Importances:
    """How much each parameter matters for each objective.

    Attributes:
        method: ``PED-ANOVA``, ``fANOVA`` or ``rank correlation``; empty when not computed.
        by_objective: Objective metric -> {param: importance}, each normalised to sum 1 (all
            zeros when no parameter separates the trials), most important first.
        n_trials: Complete trials the importances rest on.
        note: Why they are missing, or which fallback was used and why.
        skipped: Parameters not assessed (conditional ones under fANOVA).
    """

    method: str
    by_objective: dict[str, dict[str, float]]
    n_trials: int
    note: str = ""
    skipped: tuple[str, ...] = ()


def build_importances(study: Any, info: StudyInfo) -> Importances:
    """Parameter importances per objective.

    PED-ANOVA (which handles conditional parameters: a trial without a parameter is its own
    regime) when there are at least :data:`MIN_PED_ANOVA_TRIALS` complete trials; below that
    fANOVA on the parameters every complete trial has (when scikit-learn is installed), else
    the rank correlation of each parameter with each objective over the trials that have it,
    adjusted for chance (:func:`_rank_importance`).
    """
    trials = study.get_trials(deepcopy=False)
    complete = complete_trials(trials)
    n = len(complete)
    if n < 2:
        return Importances("", {}, n, f"importances need at least 2 complete trials; the study "
                                      f"has {n}")
    params = _ordered_params(complete, info)
    if not params:
        return Importances("", {}, n, "no parameter was searched")
    if n >= MIN_PED_ANOVA_TRIALS:
        by_objective = _ped_anova(study, info, params, n)
        note = (f"PED-ANOVA: what sets the top {_ped_anova_quantile(n):.0%} of the {n} complete "
                "trials apart from all of them")
        return Importances("PED-ANOVA", by_objective, n, note)
    reason = f"{n} complete trials (PED-ANOVA needs {MIN_PED_ANOVA_TRIALS})"
    common = [p for p in params if all(p in t.params for t in complete)]
    # a parameter with one value in every complete trial explains nothing, and fANOVA's forest
    # cannot split on it (with nothing else to split on it raises): it scores 0
    constant = [p for p in common if len({repr(t.params[p]) for t in complete}) == 1]
    varied = [p for p in common if p not in constant]
    if not common:
        fanova, why_not, flat = None, "no parameter is in every complete trial (fANOVA)", []
    elif not varied:
        fanova, why_not, flat = None, "no parameter varies across the complete trials", []
    else:
        fanova, why_not, flat = _fanova(study, info, varied, complete)
    if fanova is not None:
        for scores in fanova.values():
            scores.update({p: 0.0 for p in constant})
        skipped = tuple(p for p in params if p not in common)
        note = f"fANOVA: {reason}" + (
            f"; not assessed (absent from some trials): {', '.join(skipped)}" if skipped else ""
        ) + (f"; the same in every complete trial: {', '.join(constant + flat)}"
             if constant or flat else "")
        return Importances("fANOVA", fanova, n, note, skipped)
    by_objective = {
        metric: _normalise({p: _rank_importance(complete, p, k) for p in params})
        for k, metric in enumerate(info.metrics)
    }
    return Importances(
        "rank correlation", by_objective, n,
        "rank correlation with each objective, adjusted for chance (|Spearman rho| for "
        f"numbers, the correlation ratio for categoricals): {reason}, {why_not}",
    )


def _ordered_params(complete: Sequence[FrozenTrial], info: StudyInfo) -> list[str]:
    seen = {p for t in complete for p in t.distributions if not t.distributions[p].single()}
    ordered = [p for p in info.space_order if p in seen]
    return ordered + sorted(seen - set(ordered))


def _ped_anova_quantile(n: int) -> float:
    # 10% by default, widened so that the top holds at least PED_ANOVA_TOP trials
    return min(0.5, max(0.1, PED_ANOVA_TOP / n))


def _target(k: int, direction: str | None) -> Callable[[FrozenTrial], float]:
    sign = -1.0 if direction == "maximize" else 1.0
    return lambda t: sign * t.values[k]


def _ped_anova(
    study: Any, info: StudyInfo, params: list[str], n: int
) -> dict[str, dict[str, float]]:
    from optuna.importance import PedAnovaImportanceEvaluator

    evaluator = PedAnovaImportanceEvaluator(target_quantile=_ped_anova_quantile(n))
    out = {}
    with warnings.catch_warnings():
        # it warns that it minimises `target` (we pass a signed one) and about tiny regimes
        warnings.simplefilter("ignore")
        for k, (metric, direction) in enumerate(zip(info.metrics, info.directions)):
            # target=None would ask for the Pareto front in a multi-objective study; one
            # objective at a time tells which parameter buys accuracy and which buys speed.
            target = None if not info.is_multi else _target(k, direction)
            raw = evaluator.evaluate(study, params=params, target=target)
            out[metric] = _normalise(raw)
    return out


def _fanova(
    study: Any, info: StudyInfo, params: list[str], complete: Sequence[FrozenTrial]
) -> tuple[dict[str, dict[str, float]] | None, str, list[str]]:
    """fANOVA importances of ``params`` per objective.

    Returns:
        The importances (None: fANOVA could not run), why not, and the objectives every
        complete trial scored the same on (they explain nothing: all parameters score 0; with
        one flat objective fANOVA's forest would raise "zero total variance").
    """
    try:
        import sklearn  # noqa: F401  (fANOVA's random forest)
    except ImportError:
        return None, "scikit-learn for fANOVA not installed", []
    from optuna.importance import FanovaImportanceEvaluator

    out: dict[str, dict[str, float]] = {}
    flat = [m for k, m in enumerate(info.metrics) if len({t.values[k] for t in complete}) == 1]
    if len(flat) == len(info.metrics):
        return None, f"every complete trial has the same {', '.join(flat)}", flat
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for k, metric in enumerate(info.metrics):
            if metric in flat:
                out[metric] = {p: 0.0 for p in params}
                continue
            evaluator = FanovaImportanceEvaluator(seed=0)
            try:
                raw = evaluator.evaluate(study, params=params, target=_target(k, None))
            except RuntimeError as exc:  # a forest with nothing to split: say so, fall back
                return None, f"fANOVA failed ({exc})", flat
            out[metric] = _normalise(raw)
    return out, "", flat


def _rank_importance(complete: Sequence[FrozenTrial], param: str, k: int) -> float:
    """How much of the objective's rank order ``param`` explains, beyond chance.

    The square root of the adjusted R² of the objective's ranks regressed on the parameter:
    its ranks for a number (|Spearman ρ|, adjusted for one predictor), one level per choice for
    a categorical (the correlation ratio, adjusted for choices - 1 predictors). Unadjusted, a
    parameter explains the more the more levels it has (with as many choices as trials, all of
    it): ranking choices by their own trials' mean objective made an irrelevant categorical
    look like the most important parameter of a small study.
    """
    from scipy.stats import rankdata, spearmanr

    rows = [(t.params[param], t.values[k]) for t in complete if param in t.params]
    if len(rows) < 3:
        return 0.0
    dist = next(t.distributions[param] for t in complete if param in t.params)
    ranks = rankdata([y for _, y in rows])
    if len(set(ranks)) < 2 or len({repr(x) for x, _ in rows}) < 2:
        return 0.0
    if isinstance(dist, CategoricalDistribution):
        levels: dict[str, list[float]] = {}
        for (x, _), r in zip(rows, ranks):
            levels.setdefault(repr(x), []).append(float(r))
        mean = float(ranks.mean())
        between = sum(len(v) * (sum(v) / len(v) - mean) ** 2 for v in levels.values())
        r2 = between / float(((ranks - mean) ** 2).sum())
        n_predictors = len(levels) - 1
    else:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            rho = spearmanr([x for x, _ in rows], ranks).statistic
        if not _finite(rho):
            return 0.0
        r2, n_predictors = float(rho) ** 2, 1
    n = len(rows)
    if n - n_predictors - 1 <= 0:
        return 0.0  # as many levels as trials can explain anything: no evidence
    adjusted = 1.0 - (1.0 - r2) * (n - 1) / (n - n_predictors - 1)
    return math.sqrt(max(0.0, adjusted))


def _normalise(raw: dict[str, float]) -> dict[str, float]:
    total = sum(v for v in raw.values() if _finite(v))
    items = {k: (float(v) / total if total > 0 and _finite(v) else 0.0) for k, v in raw.items()}
    return dict(sorted(items.items(), key=lambda kv: -kv[1]))


# -- parallel coordinates --------------------------------------------------------------------


@dataclass(frozen=True)
class Axis:
    """One vertical axis of the parallel-coordinates plot.

    Attributes:
        name: Parameter or objective name.
        kind: ``numeric`` or ``categorical``.
        values: One per row; None where the trial lacks the parameter (conditional).
        log: Sampled on a log scale.
        choices: The categories, for a categorical axis.
        objective: True for an objective axis.
    """

    name: str
    kind: str
    values: tuple[Any, ...]
    log: bool = False
    choices: tuple[Any, ...] = ()
    objective: bool = False


@dataclass(frozen=True)
class Parallel:
    """Rows of the parallel-coordinates plot: complete trials, parameters then objectives."""

    numbers: tuple[int, ...]
    axes: tuple[Axis, ...]
    color_metric: str
    direction: str

    @property
    def color(self) -> tuple[float, ...]:
        """The primary metric per row (the line colour)."""
        return next(a.values for a in self.axes if a.objective)


def build_parallel(trials: Sequence[FrozenTrial], info: StudyInfo) -> Parallel:
    """Parallel-coordinates rows of the complete trials."""
    complete = sorted(complete_trials(trials), key=lambda t: t.number)
    axes: list[Axis] = []
    for name in _ordered_params(complete, info) if complete else []:
        dist = next(t.distributions[name] for t in complete if name in t.distributions)
        values = tuple(t.params.get(name) for t in complete)
        if isinstance(dist, CategoricalDistribution):
            axes.append(Axis(name, "categorical", values, choices=tuple(dist.choices)))
        else:
            axes.append(Axis(name, "numeric", values, log=bool(getattr(dist, "log", False))))
    for k, metric in enumerate(info.metrics):
        axes.append(Axis(metric, "numeric", tuple(float(t.values[k]) for t in complete),
                         objective=True))
    return Parallel(tuple(t.number for t in complete), tuple(axes), info.metric, info.direction)


# -- freeze view -----------------------------------------------------------------------------


@dataclass(frozen=True)
class FreezeSample:
    """One trial in the freeze view.

    Attributes:
        number: Trial number.
        state: ``COMPLETE`` or ``PRUNED``.
        value: Primary metric (complete trials only; a pruned value is not comparable).
        train_seconds: Training time as recorded.
        seconds_per_epoch: ``train_seconds / epochs_run`` (pruned trials count here: the
            cost of an epoch does not depend on when the trial stopped).
        peak_memory_mb: Peak memory, where recorded.
    """

    number: int
    state: str
    value: float | None
    train_seconds: float | None
    seconds_per_epoch: float | None
    peak_memory_mb: float | None


@dataclass(frozen=True)
class FreezeGroup:
    """The trials of one freeze index."""

    freeze: FreezeKey
    samples: tuple[FreezeSample, ...]

    def _pick(self, attr: str) -> tuple[list[int], list[float]]:
        rows = [(s.number, getattr(s, attr)) for s in self.samples if _finite(getattr(s, attr))]
        return [r[0] for r in rows], [float(r[1]) for r in rows]

    @property
    def values(self) -> list[float]:
        """Primary metric of its complete trials."""
        return self._pick("value")[1]

    @property
    def value_numbers(self) -> list[int]:
        """Trial numbers matching :attr:`values`."""
        return self._pick("value")[0]

    @property
    def seconds_per_epoch(self) -> list[float]:
        """Seconds per epoch of its complete and pruned trials."""
        return self._pick("seconds_per_epoch")[1]

    @property
    def train_seconds(self) -> list[float]:
        """Train seconds of its complete trials (all epochs)."""
        return [s.train_seconds for s in self.samples
                if s.state == "COMPLETE" and _finite(s.train_seconds)]

    @property
    def peak_memory_mb(self) -> list[float]:
        """Peak memory of its trials, where recorded."""
        return self._pick("peak_memory_mb")[1]


@dataclass(frozen=True)
class FreezeView:
    """Metric, time and memory grouped by freeze index (sorted)."""

    metric: str
    direction: str
    groups: tuple[FreezeGroup, ...]

    @property
    def has_memory(self) -> bool:
        """Whether any trial recorded its peak memory."""
        return any(g.peak_memory_mb for g in self.groups)


def build_freeze(trials: Sequence[FrozenTrial], info: StudyInfo) -> FreezeView:
    """Complete and pruned trials grouped by freeze index."""
    groups: dict[FreezeKey, list[FreezeSample]] = {}
    for t in sorted(trials, key=lambda t: t.number):
        if t.state not in (TrialState.COMPLETE, TrialState.PRUNED):
            continue
        key = freeze_of(t)
        if key is None:
            continue
        seconds = t.user_attrs.get("train_seconds")
        epochs = t.user_attrs.get("epochs_run")
        timed = _finite(seconds) and _finite(epochs) and epochs > 0
        per_epoch = seconds / epochs if timed else None
        value = float(t.values[0]) if _is_complete(t) else None
        memory = t.user_attrs.get("peak_memory_mb")
        groups.setdefault(key, []).append(FreezeSample(
            t.number, t.state.name, value, seconds if _finite(seconds) else None, per_epoch,
            memory if _finite(memory) else None,
        ))
    ordered = sorted(groups, key=freeze_sort_key)
    return FreezeView(info.metric, info.direction,
                      tuple(FreezeGroup(k, tuple(groups[k])) for k in ordered))


# -- Pareto view -----------------------------------------------------------------------------


@dataclass(frozen=True)
class ParetoPoint:
    """One complete trial in a metric-vs-cost plane."""

    number: int
    metric: float
    cost: float
    freeze: FreezeKey | None
    on_front: bool
    baseline: bool = False

    @property
    def label(self) -> str:
        """``#12 f3``: trial number and freeze index."""
        return f"#{self.number}" + (f" f{self.freeze}" if self.freeze is not None else "")


@dataclass(frozen=True)
class ParetoView:
    """The primary metric against one cost, with the front of that plane.

    Attributes:
        metric: The primary metric (y).
        direction: Its direction.
        cost: The user attr on x (``train_seconds`` or ``peak_memory_mb``; lower is better).
        cost_label: Axis title for the cost.
        points: Complete trials that recorded the cost, in trial order.
    """

    metric: str
    direction: str
    cost: str
    cost_label: str
    points: tuple[ParetoPoint, ...]

    @property
    def front(self) -> list[ParetoPoint]:
        """Points on the front, cheapest first."""
        return sorted((p for p in self.points if p.on_front), key=lambda p: (p.cost, p.number))

    @property
    def labelled(self) -> list[ParetoPoint]:
        """Points that get a visible label (all of them, or the front in a crowded plot)."""
        if len(self.points) <= MAX_LABELLED_POINTS:
            return list(self.points)
        return [p for p in self.points if p.on_front or p.baseline]


def build_pareto(trials: Sequence[FrozenTrial], info: StudyInfo) -> tuple[ParetoView, ...]:
    """Metric vs train time, and vs peak memory when recorded; each with its own front.

    When the study optimises the cost itself, its objective value is used (the user attr is
    rounded), so the front matches the study's own front.
    """
    complete = sorted(complete_trials(trials), key=lambda t: t.number)
    views = []
    for cost, label in COSTS.items():
        objective = COST_OBJECTIVES[cost]
        k = info.metrics.index(objective) if objective in info.metrics else None

        def cost_of(t: FrozenTrial, k: int | None = k, cost: str = cost) -> Any:
            return t.values[k] if k is not None else t.user_attrs.get(cost)

        rows = [t for t in complete if _finite(cost_of(t))]
        if not rows:
            continue
        points = [(float(t.values[0]), float(cost_of(t))) for t in rows]
        flags = pareto_front(points, (info.direction, "minimize"))
        views.append(ParetoView(info.metric, info.direction, cost, label, tuple(
            ParetoPoint(t.number, m, c, freeze_of(t), flag, bool(t.user_attrs.get("baseline")))
            for t, (m, c), flag in zip(rows, points, flags)
        )))
    return tuple(views)


# -- summary ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class TrialBrief:
    """The facts of one trial the summary shows."""

    number: int
    values: tuple[float, ...]
    params: dict[str, Any]
    freeze: FreezeKey | None
    train_seconds: float | None
    epochs_run: int | None


def brief(trial: FrozenTrial) -> TrialBrief:
    """A :class:`TrialBrief` of a complete trial."""
    return TrialBrief(
        trial.number, tuple(float(v) for v in trial.values or ()), dict(trial.params),
        freeze_of(trial), trial.user_attrs.get("train_seconds"),
        trial.user_attrs.get("epochs_run"),
    )


@dataclass(frozen=True)
class Summary:
    """The study in numbers.

    Attributes:
        info: The study's own facts.
        by_state: Trials per state name.
        best: The trial with the best primary metric (in a multi-objective study: the best
            primary metric on the Pareto front).
        baseline: The baseline trial, if it finished.
        gain: What the best trial gained over the baseline in the primary metric (positive is
            better, also for a minimised metric: :func:`tuner.study.gain`).
        knee: The knee of the Pareto front (multi-objective studies only).
        n_epochs_run: Epochs trained by all trials (failed ones included).
        train_seconds: Train seconds of all trials.
        wall_seconds: Wall seconds of all trials (set-up included).
        n_pruned: Trials the pruner stopped.
        n_diverged: Trials stopped by a non-finite metric or loss (stored as PRUNED, so
            ``by_state`` counts them with ``n_pruned``).
        n_epochs_full: Epochs the complete and pruned trials would have run to the end.
        n_epochs_saved: Epochs the pruned trials did not run.
        seconds_saved: Estimate of the seconds those epochs would have taken (each pruned trial
            at its own seconds per epoch; the study's mean where it recorded none); None when
            no trial recorded its time.
    """

    info: StudyInfo
    by_state: dict[str, int]
    best: TrialBrief | None
    baseline: TrialBrief | None
    gain: float | None
    knee: TrialBrief | None
    n_epochs_run: int
    train_seconds: float
    wall_seconds: float
    n_pruned: int
    n_diverged: int
    n_epochs_full: int
    n_epochs_saved: int
    seconds_saved: float | None
    n_trials: int

    @property
    def saved_fraction(self) -> float:
        """Share of the full-length epochs that pruning spared."""
        return self.n_epochs_saved / self.n_epochs_full if self.n_epochs_full else 0.0


def best_primary(trials: Sequence[FrozenTrial], info: StudyInfo) -> FrozenTrial | None:
    """The complete trial with the best primary metric, taken from the Pareto front.

    On the front, ties in the primary metric are broken by the other objectives; among equal
    points the earlier trial wins.
    """
    complete = complete_trials(trials)
    if not complete:
        return None
    flags = pareto_front([t.values for t in complete], info.directions)
    front = [t for t, flag in zip(complete, flags) if flag]
    sign = -1.0 if info.direction == "maximize" else 1.0
    return min(front, key=lambda t: (sign * t.values[0], t.number))


def knee_trial(trials: Sequence[FrozenTrial], info: StudyInfo) -> FrozenTrial | None:
    """The complete trial at the knee of the Pareto front (see :func:`knee_index`)."""
    complete = sorted(complete_trials(trials), key=lambda t: t.number)
    index = knee_index([t.values for t in complete], info.directions)
    return None if index is None else complete[index]


def build_summary(trials: Sequence[FrozenTrial], info: StudyInfo) -> Summary:
    """Best, baseline, gain, states, compute spent and compute saved by pruning."""
    by_state = Counter(t.state.name for t in trials)
    best = best_primary(trials, info)
    base = next((t for t in complete_trials(trials) if t.user_attrs.get("baseline")), None)
    gain = None
    if best is not None and base is not None:
        gain = study_gain(best.values[0], base.values[0], info.directions[0])
    knee = knee_trial(trials, info) if info.is_multi else None

    def attr(t: FrozenTrial, key: str) -> float:
        value = t.user_attrs.get(key)
        return float(value) if _finite(value) else 0.0

    finished = [t for t in trials if t.state in (TrialState.COMPLETE, TrialState.PRUNED)]
    # diverged trials are PRUNED too, but the pruner did not stop them: no savings of its own
    pruned = [
        t for t in trials if t.state == TrialState.PRUNED and not t.user_attrs.get("diverged")
    ]
    rates = [attr(t, "train_seconds") / attr(t, "epochs_run") for t in trials
             if attr(t, "epochs_run") > 0 and attr(t, "train_seconds") > 0]
    mean_rate = sum(rates) / len(rates) if rates else None
    n_full = n_saved = 0
    seconds_saved = 0.0
    if info.max_epochs:
        n_full = info.max_epochs * len(finished)
        for t in pruned:
            n_left = max(0, info.max_epochs - int(attr(t, "epochs_run")))
            n_saved += n_left
            ran = attr(t, "epochs_run")
            rate = attr(t, "train_seconds") / ran if ran > 0 and attr(t, "train_seconds") > 0 \
                else mean_rate
            seconds_saved += n_left * (rate or 0.0)
    return Summary(
        info=info,
        by_state=dict(sorted(by_state.items())),
        best=brief(best) if best is not None else None,
        baseline=brief(base) if base is not None else None,
        gain=gain,
        knee=brief(knee) if knee is not None else None,
        n_epochs_run=int(sum(attr(t, "epochs_run") for t in trials)),
        train_seconds=sum(attr(t, "train_seconds") for t in trials),
        wall_seconds=sum(attr(t, "wall_seconds") for t in trials),
        n_pruned=len(pruned),
        n_diverged=by_state["PRUNED"] - len(pruned),
        n_epochs_full=n_full,
        n_epochs_saved=n_saved,
        seconds_saved=seconds_saved if mean_rate is not None else None,
        n_trials=len(trials),
    )


# -- confirmation on fresh seeds -------------------------------------------------------------


@dataclass(frozen=True)
class ConfirmRow:
    """One confirmed trial: its search value next to its fresh-seed runs.

    Attributes:
        number: The trial.
        search_value: Its value in the search (the draw the winner's curse biases).
        runs: ``(seed, value)`` per fresh seed, value None where the run failed.
        mean: Mean of the successful runs (None: all failed).
        std: Their sample standard deviation (None: fewer than two).
        baseline: It is the baseline trial.
        picked: It has the best fresh mean (what ``--pick confirmed`` exports).
    """

    number: int
    search_value: float | None
    runs: tuple[tuple[int, float | None], ...]
    mean: float | None
    std: float | None
    baseline: bool
    picked: bool

    @property
    def n_failed(self) -> int:
        """Fresh runs that failed."""
        return sum(v is None for _, v in self.runs)


@dataclass(frozen=True)
class ConfirmView:
    """The study's confirmation (:mod:`tuner.confirm`), best search value first.

    Attributes:
        metric: The metric the runs scored.
        direction: Its direction.
        seeds: The fresh trainer seeds.
        epochs: The length of each run (None: a trial's length).
        reduce: ``last`` when the last epoch scored the runs (None: the best epoch).
        rows: The top trials, then the baseline when it is not among them.
        n_done: Runs that finished (successfully or not).
        n_runs: Runs the confirmation asked for.
        gain: The picked trial's fresh mean over the baseline's (positive is better); None
            without both.
        exported: The default export takes the pick (False while runs are missing, or once a
            later trial beat every confirmed one: ``tuner export`` then takes the best metric).
        best_number: The study's best trial by search value, for saying what overtook it.
        other_lengths: Length -> runs on record at each other length (a confirmation at that
            length takes them instead of training; :attr:`tuner.confirm.ConfirmRecord.kept`).
    """

    metric: str
    direction: str
    seeds: tuple[int, ...]
    epochs: int | None
    rows: tuple[ConfirmRow, ...]
    n_done: int
    n_runs: int
    gain: float | None
    exported: bool = False
    best_number: int | None = None
    reduce: str | None = None
    other_lengths: Mapping[int | None, int] = field(default_factory=dict)

    @property
    def scoring(self) -> str:
        """How the runs were measured, for a sentence (:func:`tuner.confirm.scoring_text`)."""
        from tuner.confirm import scoring_text

        return scoring_text(self.epochs, self.reduce)

    @property
    def picked(self) -> ConfirmRow | None:
        """The row with the best fresh mean (None: no run succeeded)."""
        return next((r for r in self.rows if r.picked), None)


def build_confirm(study: Any) -> ConfirmView | None:
    """The confirmation recorded in the study (the one asked for last), or None when it has
    none."""
    from tuner.confirm import best_confirmed, load_record
    from tuner.export import default_pick
    from tuner.study import best_trial

    record = load_record(study)
    if record is None:
        return None
    picked = best_confirmed(record)
    rows = tuple(
        ConfirmRow(
            number=n,
            search_value=record.search_values.get(n),
            runs=tuple((seed, value) for seed, value in record.runs.get(n, {}).items()
                       if seed in record.seeds),
            mean=record.mean(n),
            std=record.std(n),
            baseline=n == record.baseline,
            picked=n == picked,
        )
        for n in record.confirmed
    )
    best = best_trial(study)
    return ConfirmView(record.metric, record.direction, record.seeds, record.epochs, rows,
                       record.n_done, record.n_runs,
                       record.gain(picked) if picked is not None else None,
                       exported=default_pick(study, record).kind == "confirmed",
                       best_number=best.number if best is not None else None,
                       reduce=record.reduce, other_lengths=record.other_lengths)


# -- the whole report ------------------------------------------------------------------------


@dataclass(frozen=True)
class Report:
    """Everything the HTML report draws."""

    summary: Summary
    history: History
    curves: Curves
    importances: Importances
    parallel: Parallel
    freeze: FreezeView
    pareto: tuple[ParetoView, ...]
    confirm: ConfirmView | None = None

    @property
    def info(self) -> StudyInfo:
        """The study's own facts."""
        return self.summary.info


def build_report(study: Any) -> Report:
    """All the report's data from an ``optuna.Study``."""
    info = study_info(study)
    trials = study.get_trials(deepcopy=False)
    return Report(
        summary=build_summary(trials, info),
        history=build_history(trials, info),
        curves=build_curves(trials, info),
        importances=build_importances(study, info),
        parallel=build_parallel(trials, info),
        freeze=build_freeze(trials, info),
        pareto=build_pareto(trials, info),
        confirm=build_confirm(study),
    )
