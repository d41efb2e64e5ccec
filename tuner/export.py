"""Write a trial's configuration as a hyp file a training pipeline takes as it is.

The layout comes from the format registry in :mod:`trainer.formats` (generic, yolov5,
ultralytics); this module adds the provenance header and writes the file atomically.
"""

from __future__ import annotations

import math
import os
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import optuna
from optuna.distributions import FloatDistribution
from optuna.trial import FrozenTrial, TrialState

from trainer.formats import FORMATS
from trainer.yaml_io import dump_yaml, parse_yaml
from tuner.confirm import ConfirmRecord, best_confirmed, load_record
from tuner.errors import InputError
from tuner.study import baseline_trial, best_trial, counts, gain


def _runs(n: int) -> str:
    return f"{n} run" if n == 1 else f"{n} runs"


@dataclass(frozen=True)
class Pick:
    """The trial chosen for export and why."""

    trial: FrozenTrial
    rule: str


def trial_hyp(study: optuna.Study, trial: FrozenTrial) -> dict[str, Any]:
    """The full hyp a trial trained with (base values merged with its sampled ones)."""
    hyp = trial.user_attrs.get("hyp")
    if hyp is None:  # trials created outside `tuner search`
        hyp = {**study.user_attrs.get("config", {}).get("base", {}), **trial.params}
    return dict(hyp)


@dataclass(frozen=True)
class PickRule:
    """How to choose the exported trial (``--pick``).

    Attributes:
        kind: ``best-metric``, ``confirmed``, ``knee`` or ``max-time``.
        max_seconds: The train-time budget of ``max-time``.
    """

    kind: str
    max_seconds: float | None = None


PICK_CHOICES = "best-metric, confirmed, knee or max-time=SECONDS"


def parse_pick(text: str) -> PickRule:
    """Read ``best-metric``, ``confirmed``, ``knee`` or ``max-time=SECONDS`` (``90s`` too).

    Raises:
        InputError: Anything else.
    """
    text = text.strip()
    if text in ("best-metric", "confirmed", "knee"):
        return PickRule(text)
    kind, sep, value = text.partition("=")
    if kind == "max-time" and sep:
        try:
            seconds = float(value.strip().removesuffix("s"))
        except ValueError:
            seconds = math.nan
        if not math.isfinite(seconds) or seconds <= 0:
            raise InputError("--pick", None, f"max-time needs seconds > 0, got {value!r}")
        return PickRule("max-time", seconds)
    raise InputError("--pick", None, f"expected {PICK_CHOICES}, got {text!r}")


def default_pick(study: optuna.Study, confirmation: ConfirmRecord | None = None) -> PickRule:
    """``knee`` for a multi-objective study (the balanced trade); ``confirmed`` once a
    confirmation (:mod:`tuner.confirm`) has finished every run and still covers the study's
    best trial (trials added after it make it stale); else ``best-metric``.

    Args:
        study: The study.
        confirmation: The confirmation to go by (None: the study's, the one asked for last).
    """
    if len(study.directions) > 1:
        return PickRule("knee")
    record = confirmation or load_record(study)
    if record is not None and record.complete and best_confirmed(record) is not None:
        best = best_trial(study)
        if best is not None and best.number in record.confirmed:
            return PickRule("confirmed")
    return PickRule("best-metric")


def pick_trial(
    study: optuna.Study,
    number: int | None = None,
    rule: str | PickRule | None = None,
    confirmation: ConfirmRecord | None = None,
) -> Pick:
    """Trial ``number``, or the trial the pick rule chooses (default: :func:`default_pick`).

    ``confirmation`` is the confirmation that ``confirmed`` (and the default rule) go by: the
    one a command has just run, at the length it asked for (None: the study's, the one asked
    for last; another process may have confirmed at another length since).

    Rules, over the complete trials:

    - ``best-metric``: the best primary (first) metric; in a multi-objective study it is
      taken from the Pareto front, so a tie in it goes to the better other objectives.
    - ``confirmed``: the trial with the best mean over the fresh trainer seeds of the study's
      confirmation (``tuner confirm`` or ``search.confirm``); see :mod:`tuner.confirm`.
    - ``knee``: the Pareto-front trial closest to the utopia point once each objective is
      scaled to [0, 1] between its best and worst complete trial (multi-objective studies
      only; see :func:`tuner.report.data.knee_index`).
    - ``max-time=S``: the best primary metric among trials whose ``train_seconds`` <= S
      (a tie goes to the faster trial).

    Raises:
        InputError: No such trial, no complete trial yet, a rule that does not apply, or no
            trial within the time budget.
    """
    from tuner.report.data import best_primary, knee_trial, study_info

    if number is not None:
        trials = study.get_trials(deepcopy=False)
        if not 0 <= number < len(trials):
            raise InputError("--trial", None, f"study {study.study_name!r} has no trial {number}")
        return Pick(trials[number], "chosen with --trial")
    if isinstance(rule, str):
        rule = parse_pick(rule)
    rule = rule or default_pick(study, confirmation)
    info = study_info(study)
    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    if rule.kind == "knee" and not info.is_multi:
        raise InputError(
            "--pick", None, f"knee needs a multi-objective study; {study.study_name!r} "
            f"optimises only {info.metric} (use best-metric or max-time=SECONDS)"
        )
    if not complete:
        raise InputError("--study", None, f"study {study.study_name!r} has no complete trial yet")
    if rule.kind == "confirmed":
        return _confirmed(study, confirmation or load_record(study))
    if rule.kind == "knee":
        trial = knee_trial(complete, info)
        text = (
            "knee: the Pareto-front trial closest to the utopia point, each objective scaled "
            "to [0, 1] between its best and worst complete trial"
        )
    elif rule.kind == "max-time":
        trial, text = _within_time(complete, info, rule.max_seconds or 0.0)
    else:
        trial = best_primary(complete, info) if info.is_multi else best_trial(study)
        text = f"best-metric: the best {info.metric}"
        if info.is_multi:
            text += " on the Pareto front"
    if trial is None:
        raise InputError("--study", None, f"study {study.study_name!r} has no complete trial yet")
    return Pick(trial, text)


def _confirmed(study: optuna.Study, record: ConfirmRecord | None) -> Pick:
    if record is None and len(study.directions) > 1:
        raise InputError(
            "--pick", None, f"study {study.study_name!r} has several objectives, which "
            "`tuner confirm` does not confirm; use --pick knee, best-metric or "
            "max-time=SECONDS"
        )
    if record is None:
        raise InputError(
            "--pick", None, f"study {study.study_name!r} has not been confirmed; run "
            "`tuner confirm --space SPACE` (or set search.confirm.top_k) first"
        )
    number = best_confirmed(record)
    if number is None:
        raise InputError(
            "--pick", None, f"no confirmation run of study {study.study_name!r} succeeded "
            "(see `tuner status`)"
        )
    text = (
        f"confirmed: the best mean {record.metric} over fresh trainer seeds "
        f"{', '.join(map(str, record.seeds))}{record.scoring}"
        + f" among the top {len(record.trials)} trials"
        + (" and the baseline" if record.baseline is not None else "")
    )
    if not record.complete:
        text += f" (unfinished: {record.n_done}/{_runs(record.n_runs)})"
    return Pick(study.get_trials(deepcopy=False)[number], text)


def _seconds(trial: FrozenTrial) -> float | None:
    value = trial.user_attrs.get("train_seconds")
    ok = isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
    return float(value) if ok else None


def _within_time(
    complete: list[FrozenTrial], info: Any, budget: float
) -> tuple[FrozenTrial | None, str]:
    import dataclasses

    from tuner.report.data import best_primary

    timed = [t for t in complete if _seconds(t) is not None]
    within = [t for t in timed if _seconds(t) <= budget]
    if not within:
        fastest = min(timed, key=lambda t: _seconds(t), default=None)
        seen = (
            f"the fastest, trial {fastest.number}, took {_seconds(fastest):.4g} s"
            if fastest is not None else "no complete trial recorded train_seconds"
        )
        raise InputError("--pick", None, f"no complete trial trained within {budget:g} s; {seen}")
    # only the primary metric ranks here: the time budget already settles the cost side
    primary = dataclasses.replace(info, metrics=info.metrics[:1], directions=info.directions[:1])
    best = best_primary(within, primary)
    trial = min(
        (t for t in within if t.values[0] == best.values[0]), key=lambda t: (_seconds(t), t.number)
    )
    rule = f"max-time={budget:g}: the best {info.metric} among trials trained in <= {budget:g} s"
    return trial, rule


def _fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.6g}"


# how near a bound (share of the range, on the log scale where the search was log) counts as at it
EDGE_TOLERANCE = 0.02


def edge_params(trial: FrozenTrial, tolerance: float = EDGE_TOLERANCE) -> list[str]:
    """The trial's searched floats that sit at a bound of their range, as
    ``name=value (low end of L..H)``.

    A tuned value at a bound says the optimum may lie beyond it (Gaussian processes and TPE
    both go to the edges when the metric keeps improving there). A lower bound of 0 is left
    out: it is the "off" of the augmentation gains and probabilities, nothing lies below it.
    Integers (freeze index, unfreeze epoch) and categoricals are left out: their ends are the
    choices themselves, not a guess of the user's. The baseline trial has nothing: its values
    are the base hyps, not tuned.

    Args:
        trial: A trial with the distributions it was sampled from.
        tolerance: The share of the range next to each bound that counts as at it.
    """
    out: list[str] = []
    if trial.user_attrs.get("baseline"):
        return out
    for name, dist in trial.distributions.items():
        value = trial.params.get(name)
        if not isinstance(dist, FloatDistribution) or not isinstance(value, int | float):
            continue
        if not dist.low <= value <= dist.high or dist.high == dist.low:
            continue
        low, high, at = dist.low, dist.high, value
        if dist.log:
            low, high, at = math.log(low), math.log(high), math.log(value)
        position = (at - low) / (high - low)
        span = f"{dist.low:g}..{dist.high:g}"
        if position <= tolerance and dist.low != 0:
            out.append(f"{name}={value:.4g} (low end of {span})")
        elif position >= 1 - tolerance:
            out.append(f"{name}={value:.4g} (high end of {span})")
    return out


def header_lines(
    study: optuna.Study, pick: Pick, command: str | None,
    confirmation: ConfirmRecord | None = None,
) -> list[str]:
    """Provenance: study, trial, metric and value, baseline and gain, fresh-seed means (of
    ``confirmation``, else the study's), date, command."""
    trial = pick.trial
    metrics = study.user_attrs.get("metrics") or ["value"]
    by_state = counts(study)
    lines = [
        "tuner: tuned hyperparameters and freeze strategy",
        f"study: {study.study_name}",
        f"trial: {trial.number} ({pick.rule}); study has {sum(by_state.values())} trials: "
        + ", ".join(f"{n} {s.lower()}" for s, n in sorted(by_state.items())),
    ]
    values = trial.values or []
    for metric, direction, value in zip(metrics, study.directions, values):
        lines.append(f"{metric} ({direction.name.lower()}): {_fmt(value)}")
    base = baseline_trial(study)
    direction = study.directions[0].name.lower()
    if base is not None and base.values and values:
        lines.append(
            f"baseline (trial {base.number}): {metrics[0]} {_fmt(base.values[0])}, "
            f"gain {gain(values[0], base.values[0], direction):+.6g}"
        )
    else:
        lines.append("baseline: not in this study")
    lines += _confirm_lines(confirmation or load_record(study), trial.number)
    edges = edge_params(trial)
    if edges:
        lines.append(
            "at a bound of their searched range (widen it, unless the bound is a hard limit): "
            + ", ".join(edges)
        )
    if trial.state != TrialState.COMPLETE:
        lines.append(f"state: {trial.state.name} (not a complete trial)")
    lines.append(f"date: {datetime.now(timezone.utc).strftime('%Y-%m-%d %H:%M:%S UTC')}")
    lines.append(f"command: {command or study.user_attrs.get('command', 'n/a')}")
    return lines


def _confirm_lines(record: ConfirmRecord | None, number: int) -> list[str]:
    """The fresh-seed means of the pick and the baseline (what the pick is worth)."""
    if record is None or number not in record.confirmed:
        return []

    def spread(n: int) -> str:
        mean, std = record.mean(n), record.std(n)
        if mean is None:
            return "every run failed"
        return f"{mean:.6g}" + (f" +- {std:.3g}" if std is not None else "") + (
            f" ({_runs(len(record.values(n)))})"
        )

    seeds = ", ".join(map(str, record.seeds))
    lines = [f"fresh trainer seeds {seeds}{record.scoring}: {record.metric} mean {spread(number)}"]
    base = record.baseline
    if base is not None and base != number:
        lines.append(f"baseline (trial {base}) on the same seeds: mean {spread(base)}")
        fresh_gain = record.gain(number)
        if fresh_gain is not None:
            lines.append(f"gain on fresh seeds {fresh_gain:+.6g}")
    return lines


def render(
    study: optuna.Study,
    pick: Pick,
    fmt: str | None = None,
    command: str | None = None,
    filename: str = "best_hyp.yaml",
    confirmation: ConfirmRecord | None = None,
) -> str:
    """The file text: ``#`` header, then the format's mapping as YAML.

    Args:
        study: The study.
        pick: The chosen trial.
        fmt: A format name (default: the study's adapter's own).
        command: The command that wrote the file, for the header.
        filename: The name the file is written under (the header's commands use it).
        confirmation: The confirmation the header's fresh-seed means come from (None: the
            study's).
    """
    config = study.user_attrs.get("config", {})
    settings = dict(config.get("trainer", {}))
    fmt = fmt or _native_format(settings.get("adapter"))
    if fmt not in FORMATS:
        raise InputError(
            "--format", None, f"unknown format {fmt!r}; choose from {', '.join(FORMATS)}"
        )
    mapping, extra = FORMATS[fmt].render(trial_hyp(study, pick.trial), settings, filename)
    lines = header_lines(study, pick, command, confirmation) + [f"format: {fmt}"] + extra
    head = "".join(f"# {line}\n" for line in lines)
    return head + dump_yaml(_plain(mapping))


def _native_format(adapter: str | None) -> str:
    if adapter is None:
        return "generic"
    from trainer.base import get_adapter

    try:
        return get_adapter(adapter).export_format
    except (KeyError, ImportError):
        return "generic"


def _plain(value: Any) -> Any:
    # numpy scalars and tuples would become python/object tags that pipelines cannot read
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if hasattr(value, "item") and callable(value.item):
        return value.item()
    return value


def _mode_for(path: Path) -> int:
    """The permission bits a rewrite of ``path`` keeps: its own, or 0666 less the umask."""
    try:
        return path.stat().st_mode & 0o777
    except OSError:
        # the only way to read the umask is to set it; set it straight back
        mask = os.umask(0o022)
        os.umask(mask)
        return 0o666 & ~mask


def write_atomic(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` so that readers never see a half-written file.

    Raises:
        InputError: The folder cannot be created or written.
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        try:
            with os.fdopen(fd, "w") as handle:
                handle.write(text)
                handle.flush()
                os.fsync(handle.fileno())
            # mkstemp makes the file private (0600); the hyp file and the report are for the
            # pipeline and the team: the mode of the file replaced, or the one open() gives
            os.chmod(tmp, _mode_for(path))
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
    except OSError as exc:
        raise InputError("--out", None, f"cannot write {path}: {exc.strerror or exc}") from None


def export(
    study: optuna.Study,
    out: Path,
    number: int | None = None,
    fmt: str | None = None,
    command: str | None = None,
    pick: str | PickRule | None = None,
    confirmation: ConfirmRecord | None = None,
) -> tuple[Pick, str]:
    """Pick a trial (``number``, else by rule ``pick``), render it and write it to ``out``.

    ``confirmation`` is the one the pick and the header go by (see :func:`pick_trial`).

    Returns:
        The pick and the text written.
    """
    chosen = pick_trial(study, number, pick, confirmation)
    # the path as written (relative to where the tuner ran): a bare name fails elsewhere
    text = render(study, chosen, fmt, command, str(out), confirmation)
    write_atomic(out, text)
    return chosen, text


def load_hyp(path: Path) -> dict[str, Any]:
    """Read a hyp file written by :func:`export` (or any flat hyp YAML)."""
    data = parse_yaml(Path(path).read_text())
    return dict(data or {})
