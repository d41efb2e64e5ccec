"""Confirm the study's best trials on fresh trainer seeds before one is exported.

A short trial's value is one draw: it depends on the trainer's seed (data order, head
initialisation, augmentation draws) as well as on the hyps, and the best of many draws is
biased upwards (the winner's curse: the top trial is often the luckiest, not the best).
:func:`run_confirm` re-trains the ``top_k`` best complete trials, and the baseline, with
``n_seeds`` trainer seeds the search never used, records every value in the study (study user
attr ``confirm``, written after each run so an interrupted confirmation resumes) and
:func:`best_confirmed` names the trial with the best *mean over the fresh seeds*. The search's
own value is left out of that mean on purpose: it is the biased draw.

Fresh seeds are the study's trainer seed + 1 ... + ``n_seeds``; the adapter says which of its
settings is the seed (:attr:`trainer.base.Adapter.seed_setting`).

Every run stays on record: the attr holds the confirmation asked for last (what ``status``,
``report`` and ``export`` show) and, in its ``kept`` list, the runs outside it (other lengths,
trials that left the top k, seeds no longer asked for), so that a confirmation that asks for a
run done before reuses it instead of training it again.
"""

from __future__ import annotations

import dataclasses
import math
import statistics
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from trainer.base import Adapter, DivergedError, NullReporter
from tuner import interrupt
from tuner.errors import InputError
from tuner.objective import (
    checked_metric,
    failure_reason,
    metric_curve,
    reduce_values,
    target_value,
)
from tuner.space import EPOCHS_SETTING, StudyConfig, TrainerConfig, confirm_problem
from tuner.study import gain as study_gain

ATTR = "confirm"
# `tuner confirm` without --top-k, on a space that does not set search.confirm.top_k
DEFAULT_TOP_K = 3


def scoring_text(epochs: int | None, reduce: str | None) -> str:
    """How confirmation runs were measured, for a sentence: `` at 18 epochs, scored by the last
    epoch`` (empty for runs of a trial's length scored by their best epoch).

    Args:
        epochs: The runs' length (None: a trial's).
        reduce: ``last`` when the last epoch scores them; None or ``best`` otherwise.
    """
    length = f" at {epochs} epochs" if epochs is not None else ""
    return length + (", scored by the last epoch" if reduce == "last" else "")


def _tables_attr(
    runs: Mapping[int, Mapping[int, float | None]],
    reasons: Mapping[int, Mapping[int, str]],
    curves: Mapping[int, Mapping[int, tuple[float, ...]]],
) -> dict[str, Any]:
    """The run tables in JSON-safe form (Optuna stores user attrs as JSON: keys become
    strings)."""
    return {
        "runs": {str(t): {str(s): v for s, v in r.items()} for t, r in runs.items()},
        "reasons": {str(t): {str(s): m for s, m in r.items()} for t, r in reasons.items()},
        "curves": {str(t): {str(s): list(c) for s, c in r.items()} for t, r in curves.items()},
    }


def _tables_from_attr(raw: Mapping[str, Any]) -> dict[str, Any]:
    """``runs``, ``reasons`` and ``curves`` read back from :func:`_tables_attr`'s form."""

    def table(key: str) -> dict[int, dict[int, Any]]:
        return {
            int(t): {int(s): v for s, v in runs.items()}
            for t, runs in (raw.get(key) or {}).items()
        }

    return {
        "runs": table("runs"),
        "reasons": table("reasons"),
        "curves": {
            t: {s: tuple(float(v) for v in c) for s, c in r.items()}
            for t, r in table("curves").items()
        },
    }


def _optional_int(value: Any) -> int | None:
    return None if value is None else int(value)


def other_lengths_text(lengths: Mapping[int | None, int]) -> str:
    """``runs on record at other lengths: 8 epochs (2 runs) (...)``, from
    :attr:`ConfirmRecord.other_lengths` (empty when there are none)."""
    if not lengths:
        return ""

    def one(epochs: int | None, n: int) -> str:
        length = "a trial's length" if epochs is None else f"{epochs} epochs"
        return f"{length} ({n} run{'' if n == 1 else 's'})"

    listed = ", ".join(one(e, n) for e, n in lengths.items())
    return f"runs on record at other lengths: {listed} (a confirmation at that length reuses them)"


@dataclass(frozen=True)
class KeptRuns:
    """Confirmation runs on record outside the current confirmation, of one metric and length.

    They are the runs an earlier confirmation made that the current one does not show: at
    another length, of a trial that left the top k, on a seed no longer asked for. A later
    confirmation that asks for one of them takes it instead of training it again.

    Attributes:
        metric: The objective metric the values are of.
        direction: ``maximize`` or ``minimize`` (to re-score a curve).
        epochs: The runs' length (None: a record that predates the field, whose runs were a
            trial's length, or an adapter without an epochs setting).
        reduce: How a run's epochs became its value, ``best`` or ``last``.
        runs: Trial -> seed -> value (None: the run failed; see ``reasons``).
        reasons: Trial -> seed -> why the run failed.
        curves: Trial -> seed -> the metric at each epoch of a successful run.
    """

    metric: str
    direction: str
    epochs: int | None
    reduce: str
    runs: Mapping[int, Mapping[int, float | None]] = field(default_factory=dict)
    reasons: Mapping[int, Mapping[int, str]] = field(default_factory=dict)
    curves: Mapping[int, Mapping[int, tuple[float, ...]]] = field(default_factory=dict)

    @property
    def n_runs(self) -> int:
        return sum(len(r) for r in self.runs.values())

    def to_attr(self) -> dict[str, Any]:
        """JSON-safe form."""
        return {
            "metric": self.metric,
            "direction": self.direction,
            "epochs": self.epochs,
            "reduce": self.reduce,
            **_tables_attr(self.runs, self.reasons, self.curves),
        }

    @classmethod
    def from_attr(cls, raw: Mapping[str, Any]) -> KeptRuns:
        return cls(
            metric=str(raw["metric"]),
            direction=str(raw["direction"]),
            epochs=_optional_int(raw.get("epochs")),
            reduce=str(raw["reduce"]),
            **_tables_from_attr(raw),
        )


@dataclass(frozen=True)
class ConfirmRecord:
    """The fresh-seed runs of a study, as stored in its ``confirm`` user attr.

    Attributes:
        metric: The objective metric the values are of.
        direction: ``maximize`` or ``minimize``.
        seeds: The fresh trainer seeds.
        trials: The top-k trial numbers, best search value first.
        baseline: The baseline trial's number (confirmed too, whether or not it is among
            ``trials``), or None when the study has none.
        runs: Trial -> seed -> value (None: the run failed; see ``reasons``).
        reasons: Trial -> seed -> why the run failed.
        search_values: Trial -> its value in the search (for comparison only).
        epochs: The length of each run in epochs (None: the adapter has no epochs setting,
            or the record predates this field and its runs were a trial's length).
        reduce: How a run's epochs became its value, ``best`` or ``last`` (None: the record
            predates this field and scored runs as the search's ``objective.reduce``).
        curves: Trial -> seed -> the metric at each epoch of a successful run, so that a
            confirmation scored another way re-scores its runs instead of training them again.
        kept: The study's other confirmation runs (:class:`KeptRuns`): not part of this
            confirmation, on record so that a later one reuses them. Empty in a record that
            predates the field.
    """

    metric: str
    direction: str
    seeds: tuple[int, ...]
    trials: tuple[int, ...]
    runs: Mapping[int, Mapping[int, float | None]] = field(default_factory=dict)
    reasons: Mapping[int, Mapping[int, str]] = field(default_factory=dict)
    search_values: Mapping[int, float] = field(default_factory=dict)
    baseline: int | None = None
    epochs: int | None = None
    reduce: str | None = None
    curves: Mapping[int, Mapping[int, tuple[float, ...]]] = field(default_factory=dict)
    kept: tuple[KeptRuns, ...] = ()

    @property
    def scoring(self) -> str:
        """How the runs were measured, for a sentence (:func:`scoring_text`)."""
        return scoring_text(self.epochs, self.reduce)

    @property
    def confirmed(self) -> tuple[int, ...]:
        """Every confirmed trial: the top-k, then the baseline when it is not among them."""
        extra = () if self.baseline is None or self.baseline in self.trials else (self.baseline,)
        return (*self.trials, *extra)

    def values(self, number: int) -> list[float]:
        """The trial's successful fresh-seed values."""
        return [v for v in self.runs.get(number, {}).values() if v is not None]

    def mean(self, number: int) -> float | None:
        values = self.values(number)
        return statistics.fmean(values) if values else None

    def std(self, number: int) -> float | None:
        values = self.values(number)
        return statistics.stdev(values) if len(values) > 1 else None

    def gain(self, number: int) -> float | None:
        """Trial ``number``'s fresh mean over the baseline's on the same seeds (positive is
        better, :func:`tuner.study.gain`); None without a baseline, for the baseline itself,
        or when no seed has a successful run of both.

        Only the seeds where both runs succeeded count: a seed is a shared draw of data order,
        initialisation and augmentation, so means over different seed sets would compare the
        draws as much as the hyps.
        """
        if self.baseline is None or number == self.baseline:
            return None
        mine, base = self.runs.get(number, {}), self.runs.get(self.baseline, {})
        shared = [s for s in self.seeds if mine.get(s) is not None and base.get(s) is not None]
        if not shared:
            return None
        return study_gain(
            statistics.fmean(mine[s] for s in shared),
            statistics.fmean(base[s] for s in shared),
            self.direction,
        )

    @property
    def n_runs(self) -> int:
        return len(self.confirmed) * len(self.seeds)

    @property
    def n_done(self) -> int:
        return sum(
            1 for t in self.confirmed for s in self.seeds if s in self.runs.get(t, {})
        )

    @property
    def complete(self) -> bool:
        """Every (trial, seed) pair ran (successfully or not)."""
        return self.n_done == self.n_runs

    @property
    def other_lengths(self) -> dict[int | None, int]:
        """Length -> how many runs of this metric are kept at that length, for every length
        but this confirmation's (what a confirmation at that length would reuse)."""
        out: dict[int | None, int] = {}
        for group in self.kept:
            if group.metric == self.metric and group.epochs != self.epochs and group.n_runs:
                out[group.epochs] = out.get(group.epochs, 0) + group.n_runs
        return dict(sorted(out.items(), key=lambda item: (item[0] is None, item[0] or 0)))

    def to_attr(self) -> dict[str, Any]:
        """JSON-safe form (Optuna stores user attrs as JSON: keys become strings).

        The keys of a record without ``kept`` stay as they were, so a tuner that predates
        ``kept`` still reads the current confirmation.
        """
        return {
            "metric": self.metric,
            "direction": self.direction,
            "seeds": list(self.seeds),
            "trials": list(self.trials),
            "baseline": self.baseline,
            "search_values": {str(t): v for t, v in self.search_values.items()},
            "epochs": self.epochs,
            "reduce": self.reduce,
            **_tables_attr(self.runs, self.reasons, self.curves),
            "kept": [group.to_attr() for group in self.kept],
        }

    @classmethod
    def from_attr(cls, raw: Mapping[str, Any]) -> ConfirmRecord:
        return cls(
            metric=str(raw["metric"]),
            direction=str(raw["direction"]),
            seeds=tuple(int(s) for s in raw["seeds"]),
            trials=tuple(int(t) for t in raw["trials"]),
            search_values={int(t): float(v) for t, v in (raw.get("search_values") or {}).items()},
            baseline=raw.get("baseline"),
            epochs=_optional_int(raw.get("epochs")),
            reduce=None if raw.get("reduce") is None else str(raw["reduce"]),
            kept=tuple(KeptRuns.from_attr(g) for g in raw.get("kept") or ()),
            **_tables_from_attr(raw),
        )


def load_record(study: optuna.Study) -> ConfirmRecord | None:
    """The study's confirmation, if one was run (or started)."""
    raw = study.user_attrs.get(ATTR)
    if not raw:
        return None
    try:
        return ConfirmRecord.from_attr(raw)
    except (KeyError, TypeError, ValueError):
        return None  # written by something else: ignore rather than fail every command


def best_confirmed(record: ConfirmRecord) -> int | None:
    """The confirmed trial with the best mean over the fresh seeds (None: no run succeeded).

    A trial with a failed (e.g. diverged) fresh run ranks below every trial whose runs all
    succeeded: a config that breaks on another seed is no safe pick, whatever its other
    runs scored. Among equals, the better mean wins, then more successful runs, then the
    better search value.
    """
    sign = 1.0 if record.direction == "maximize" else -1.0
    scored = [
        (
            not record.reasons.get(t),
            sign * mean,
            len(record.values(t)),
            sign * record.search_values.get(t, -math.inf),
            t,
        )
        for t in record.confirmed
        if (mean := record.mean(t)) is not None
    ]
    return max(scored)[-1] if scored else None


def candidates(study: optuna.Study, top_k: int) -> tuple[list[FrozenTrial], FrozenTrial | None]:
    """The ``top_k`` best complete trials (distinct hyps) and the baseline trial.

    The baseline is confirmed too, so the export can say whether the pick beats the defaults
    beyond the seed's noise; when a top trial has the baseline's hyps, that trial stands for it.
    """
    from tuner.export import trial_hyp
    from tuner.study import baseline_trial

    reverse = study.direction == optuna.study.StudyDirection.MAXIMIZE
    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    ranked = sorted(complete, key=lambda t: (-t.value if reverse else t.value, t.number))
    chosen: list[FrozenTrial] = []
    seen: list[dict[str, Any]] = []
    for trial in ranked:
        hyp = trial_hyp(study, trial)
        if hyp in seen:  # a sampler may repeat a configuration; confirm it once
            continue
        seen.append(hyp)
        chosen.append(trial)
        if len(chosen) == top_k:
            break
    base = baseline_trial(study)
    if base is not None:
        hyp = trial_hyp(study, base)
        base = next((t for t, h in zip(chosen, seen) if h == hyp), base)
    return chosen, base


def seeded_config(
    config: StudyConfig, setting: str, seed: int, epochs: int | None = None
) -> StudyConfig:
    """The same space with the trainer's seed setting replaced.

    Args:
        config: The study's space.
        setting: The adapter's seed setting.
        seed: Its new value.
        epochs: A new length (the ``epochs`` setting), or None to keep the space's.
    """
    settings = {**config.trainer.settings, setting: seed}
    if epochs is not None:
        settings[EPOCHS_SETTING] = epochs
    return dataclasses.replace(config, trainer=TrainerConfig(config.trainer.adapter, settings))


def seed_of(adapter: Adapter, study: optuna.Study | None = None) -> tuple[str, int]:
    """The adapter's seed setting and the value the study's trials used.

    The value comes from the config the study saved when it was created (a later
    ``tuner confirm`` without the search's ``--set trainer.seed=...`` would otherwise take a
    "fresh" seed that the search used), else from the adapter's settings. The adapter must
    have a seed setting: :func:`tuner.space.confirm_problem` says so before this is called.
    """
    setting = adapter.seed_setting
    assert setting is not None, "checked by confirm_problem"
    saved = (study.user_attrs.get("config") or {}).get("trainer") if study is not None else None
    if isinstance(saved, dict) and saved.get(setting) is not None:
        value = saved[setting]
    else:
        value = adapter.settings_dict().get(setting, 0)
    return setting, int(value or 0)


def run_confirm(
    study: optuna.Study,
    config: StudyConfig,
    adapter: Adapter,
    out_dir: Path,
    top_k: int,
    n_seeds: int,
    say: Callable[[str], None],
    make_adapter: Callable[[StudyConfig], Adapter] | None = None,
    epochs: int | None = None,
    reduce: str | None = None,
) -> ConfirmRecord:
    """Re-train the top trials and the baseline on ``n_seeds`` fresh seeds; record each run.

    A run on record (of this confirmation when it was interrupted, or kept from an earlier
    one) of the same trial, seed, metric and length is taken instead of trained again; scored
    another way (``reduce``), it is re-scored from its curve. Runs of the earlier confirmation
    that this one does not ask for (another length, a trial no longer in the top k) stay on
    record, in :attr:`ConfirmRecord.kept`.

    Args:
        study: A single-objective study with complete trials.
        config: Its validated space.
        adapter: The search's adapter (gives the seed setting and the study's seed).
        out_dir: The study's output folder; runs go to ``out_dir/confirm/<trial>-seed<seed>``.
        top_k: How many of the best trials to confirm.
        n_seeds: Fresh seeds per trial.
        say: Progress output.
        make_adapter: Builds a prepared adapter for a config (default: build and prepare).
        epochs: Train each run this long (None: a trial's length, ``trainer.epochs`` of
            ``config``).
        reduce: Score each run by its ``best`` or ``last`` epoch (None: as the search scores
            a trial, the objective's ``reduce``).

    Raises:
        InputError: A multi-objective study, an adapter without a seed, or no complete trial.
    """
    problem = confirm_problem(config.objective.is_multi, adapter, adapter.name)
    if problem:
        raise config.error("search.confirm", problem)
    setting, study_seed = seed_of(adapter, study)
    chosen, base = candidates(study, top_k)
    if not chosen:
        raise InputError("--study", None, f"study {study.study_name!r} has no complete trial yet")
    seeds = tuple(study_seed + i for i in range(1, n_seeds + 1))
    numbers = [t.number for t in chosen]
    extra = base is not None and base.number not in numbers
    trials = [*chosen, *([base] if extra else [])]
    target = config.objective.primary
    how = reduce or config.objective.reduce
    # the length the runs train, resolved (a `--set trainer.epochs=50` is 50 as much as
    # `--epochs 50`), so that runs of another length, another measurement, are never mixed in
    length = epochs if epochs is not None else adapter.settings_dict().get(EPOCHS_SETTING)
    tables = _Tables.of([t.number for t in trials])
    runs, reasons, curves = tables.runs, tables.reasons, tables.curves
    kept = _reuse(
        load_record(study),
        _Asked(target.metric, length, epochs is None, _trial_length(study), how,
               config.objective.reduce, seeds),
        tables, say,
    )
    baseline = base.number if base is not None else None

    def record() -> ConfirmRecord:
        return ConfirmRecord(
            metric=target.metric,
            direction=target.direction,
            seeds=seeds,
            trials=tuple(t.number for t in chosen),
            runs=runs,
            reasons=reasons,
            search_values={t.number: float(t.value) for t in trials},
            baseline=baseline,
            epochs=length,
            reduce=how,
            curves=curves,
            kept=kept,
        )

    build = make_adapter or _prepared
    adapters: dict[int, Adapter] = {}
    todo = [(t, s) for t in trials for s in seeds if s not in runs[t.number]]
    n_total = len(trials) * len(seeds)
    done = n_total - len(todo)
    say(
        f"confirm: {'re-training' if todo else 'nothing to train, on record:'} "
        f"the top {len(chosen)} trials"
        + (f" and the baseline (trial {base.number})" if extra else "")
        + f" on fresh trainer seeds {', '.join(map(str, seeds))}"
        + scoring_text(length, how)
        + f" ({n_total} runs"
        + (f", {done} done earlier" if done else "")
        + ")"
    )
    from tuner.export import trial_hyp

    for trial, seed in todo:
        if seed not in adapters:
            adapters[seed] = build(seeded_config(config, setting, seed, epochs))
        # one folder per length too: a confirmation at full length keeps the short one's files
        suffix = f"-{length}ep" if length is not None else ""
        run_dir = out_dir / "confirm" / f"{trial.number:04d}-seed{seed}{suffix}"
        run_dir.mkdir(parents=True, exist_ok=True)
        started = time.perf_counter()
        try:
            interrupt.check()
            result = adapters[seed].run(trial_hyp(study, trial), _Finite(target.metric), run_dir)
            value: float | None = target_value(result, target, how)
            reasons[trial.number].pop(seed, None)
            curve = metric_curve(result.history, target.metric)
            if curve:
                curves[trial.number][seed] = curve
            shown = f"{target.metric} {value:.4g}"
        except KeyboardInterrupt:
            raise
        except Exception as exc:  # noqa: BLE001 - a failed run is recorded, the rest go on
            if interrupt.received() is not None:
                # it died of the interrupt (a loader worker killed by the same Ctrl-C): it is
                # missing, not failed
                raise KeyboardInterrupt(interrupt.received()) from exc
            value = None
            reasons[trial.number][seed] = failure_reason(exc)
            shown = f"failed: {reasons[trial.number][seed]}"
        runs[trial.number][seed] = value
        done += 1
        study.set_user_attr(ATTR, record().to_attr())
        say(
            f"confirm {done}/{n_total}: trial {trial.number} (search {trial.value:.4g}) "
            f"seed {seed}: {shown}  [{time.perf_counter() - started:.1f} s]"
        )
    final = record()
    study.set_user_attr(ATTR, final.to_attr())
    return final


def _trial_length(study: optuna.Study) -> int | None:
    """The study's trial length (``trainer.epochs`` of the config it saved when created)."""
    saved = (study.user_attrs.get("config") or {}).get("trainer")
    value = saved.get(EPOCHS_SETTING) if isinstance(saved, dict) else None
    return value if isinstance(value, int) and not isinstance(value, bool) else None


@dataclass(frozen=True)
class _Asked:
    """What a confirmation measures, to tell which runs on record it can take.

    Attributes:
        metric: The objective metric.
        length: The runs' length, resolved (None: the adapter has no epochs setting).
        trial_length_asked: No ``epochs`` was given (the runs are a trial's length).
        trial_length: The study's trial length, None when its saved config does not say.
        reduce: How its runs are scored.
        default_reduce: The objective's ``reduce``: how a record that predates the field
            scored its runs.
        seeds: The fresh seeds it asks for.
    """

    metric: str
    length: int | None
    trial_length_asked: bool
    trial_length: int | None
    reduce: str
    default_reduce: str
    seeds: tuple[int, ...]

    def same_length(self, epochs: int | None) -> bool:
        """Whether runs recorded with length ``epochs`` are this length."""
        if epochs is not None:
            return epochs == self.length
        # a record that predates the length field: its runs were a trial's length
        if self.trial_length is not None:
            return self.length == self.trial_length
        return self.trial_length_asked

    def takes(self, group: KeptRuns) -> bool:
        """Whether the group's runs are this measurement (same metric and length)."""
        return group.metric == self.metric and self.same_length(group.epochs)


@dataclass
class _Tables:
    """Run tables being filled: trial -> seed -> value, failure reason, curve."""

    runs: dict[int, dict[int, float | None]] = field(default_factory=dict)
    reasons: dict[int, dict[int, str]] = field(default_factory=dict)
    curves: dict[int, dict[int, tuple[float, ...]]] = field(default_factory=dict)

    @classmethod
    def of(cls, numbers: list[int]) -> _Tables:
        """Empty tables with a row for each of these trials."""
        return cls({n: {} for n in numbers}, {n: {} for n in numbers}, {n: {} for n in numbers})

    def put(
        self, number: int, seed: int, value: float | None, reason: str | None,
        curve: tuple[float, ...] | None,
    ) -> None:
        self.runs.setdefault(number, {})[seed] = value
        if reason is not None:
            self.reasons.setdefault(number, {})[seed] = reason
        if curve:
            self.curves.setdefault(number, {})[seed] = curve


def _reuse(
    old: ConfirmRecord | None, asked: _Asked, into: _Tables, say: Callable[[str], None]
) -> tuple[KeptRuns, ...]:
    """Take the runs on record that this confirmation asks for; return the rest, to keep.

    ``into`` (a row per confirmed trial) gets every run on record of those trials and
    ``asked.seeds`` at the same metric and length, from the earlier confirmation first, then
    from its kept runs. Scored another way, a run is re-scored from its curve; a failed run
    stays failed (scoring does not change why training failed); a successful run without a
    curve (an older record) is dropped and trains again.

    Returns:
        The runs this confirmation does not ask for: the kept groups of other lengths and
        metrics as they were (the earlier confirmation among them when it was one of those),
        and the runs of this length outside the confirmed trials and seeds.
    """
    if old is None:
        return ()
    current = KeptRuns(old.metric, old.direction, old.epochs, old.reduce or asked.default_reduce,
                       old.runs, old.reasons, old.curves)
    groups = [current, *old.kept]
    if not asked.takes(current) and old.n_done:
        # they used to be replaced, and switching lengths back and forth re-trained every time
        why, which = ("another metric", "of that metric") if old.metric != asked.metric else (
            (f"{old.epochs} epochs" if old.epochs is not None else "a trial's length"),
            "at that length")
        say(f"confirm: the {old.n_done} runs of the earlier confirmation ({why}) are kept; a "
            f"confirmation {which} reuses them")
    others = tuple(g for g in groups if not asked.takes(g) and g.n_runs)
    # runs of this length outside the confirmation, by how they were scored
    leftover: dict[str, tuple[str, _Tables]] = {}
    seen: set[tuple[int, int]] = set()
    n_rescored = n_dropped = n_retried = 0
    for group in (g for g in groups if asked.takes(g)):
        rescore = asked.reduce if group.reduce != asked.reduce else None
        for number, by_seed in group.runs.items():
            for seed, value in by_seed.items():
                if (number, seed) in seen:
                    continue  # the earlier confirmation's run comes first
                seen.add((number, seed))
                curve = group.curves.get(number, {}).get(seed)
                reason = group.reasons.get(number, {}).get(seed)
                if number not in into.runs or seed not in asked.seeds:
                    _, tables = leftover.setdefault(group.reduce, (group.direction, _Tables()))
                    tables.put(number, seed, value, reason, curve)
                    continue
                if value is None and not _diverged(reason):
                    # out of memory beside another job, a timeout, a crash: not what the
                    # hyps measure, so it trains again (a divergence would only repeat)
                    n_retried += 1
                    continue
                if value is not None and rescore is not None:
                    if not curve:
                        n_dropped += 1
                        continue
                    value = reduce_values(curve, group.direction, rescore)
                    n_rescored += 1
                into.put(number, seed, value, reason, curve)
    if n_rescored or n_dropped:
        say(f"confirm: {n_rescored} earlier runs re-scored by their {asked.reduce} epoch"
            + (f"; {n_dropped} without a recorded curve train again" if n_dropped else ""))
    if n_retried:
        say(f"confirm: {n_retried} earlier run{'s' if n_retried != 1 else ''} that failed "
            "(not by diverging) train again")
    return (*others, *(
        KeptRuns(asked.metric, direction, asked.length, how, t.runs, t.reasons, t.curves)
        for how, (direction, t) in leftover.items()
    ))


def _diverged(reason: str | None) -> bool:
    """Whether a failed run's recorded reason is a divergence (NaN or infinite values)."""
    return bool(reason) and reason.startswith(DivergedError.__name__)


def _prepared(config: StudyConfig) -> Adapter:
    from tuner.study import STUDIES_DIR

    adapter = config.make_adapter(STUDIES_DIR / ".cache")
    config.prepare(adapter)
    return adapter


class _Finite(NullReporter):
    """Never prunes; stops a diverged run at once (as a trial's reporter would)."""

    def __init__(self, metric: str) -> None:
        super().__init__()
        self.metric = metric

    def report(self, epoch: int, metrics: Mapping[str, float]) -> None:
        interrupt.check()  # an interrupt Python swallowed where it landed stops the run here
        checked_metric(self.metric, epoch, metrics)
        super().report(epoch, metrics)


def summary_lines(record: ConfirmRecord) -> list[str]:
    """A table: each confirmed trial's search value, fresh-seed mean ± std and runs."""
    best = best_confirmed(record)
    lines = [
        f"confirmed on trainer seeds {', '.join(map(str, record.seeds))}{record.scoring} "
        + f"({record.n_done}/{record.n_runs} runs"
        + f"{'' if record.complete else ', unfinished'}):",
        f"  {'trial':>5}  {'search':>8}  {'fresh mean':>10}  {'std':>7}  runs",
    ]
    for number in record.confirmed:
        mean, std = record.mean(number), record.std(number)
        n_ok = len(record.values(number))
        n_failed = len(record.reasons.get(number, {}))
        notes = []
        if number == record.baseline:
            notes.append("baseline")
        if number == best:
            notes.append("picked")
        if n_failed:
            notes.append(f"{n_failed} failed")
        lines.append(
            f"  {number:>5}  {record.search_values.get(number, math.nan):>8.4g}  "
            f"{'n/a' if mean is None else f'{mean:.4g}':>10}  "
            f"{'' if std is None else f'{std:.3g}':>7}  {n_ok}"
            + (f"  ({', '.join(notes)})" if notes else "")
        )
    other = other_lengths_text(record.other_lengths)
    if other:
        lines.append(f"  {other}")
    return lines
