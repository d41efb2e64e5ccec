"""Write a trial's configuration as a hyp file a training pipeline takes as it is.

The layout comes from the format registry in :mod:`trainer.formats` (generic, yolov5,
ultralytics); this module adds the provenance header and writes the file atomically.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import optuna
import yaml
from optuna.trial import FrozenTrial, TrialState

from trainer.formats import FORMATS
from tuner.errors import InputError
from tuner.study import baseline_trial, best_trial, counts


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


def pick_trial(study: optuna.Study, number: int | None = None) -> Pick:
    """The best complete trial, or trial ``number``.

    Raises:
        InputError: No such trial, or no complete trial yet.
    """
    if number is not None:
        trials = study.get_trials(deepcopy=False)
        if not 0 <= number < len(trials):
            raise InputError("--trial", None, f"study {study.study_name!r} has no trial {number}")
        return Pick(trials[number], f"trial {number} (chosen with --trial)")
    if len(study.directions) > 1:
        raise InputError(
            "--pick",
            None,
            "a multi-objective study has no single best trial; choose one with "
            "--trial N (see `tuner status`)",
        )
    best = best_trial(study)
    if best is None:
        raise InputError("--study", None, f"study {study.study_name!r} has no complete trial yet")
    return Pick(best, "best value")


def _fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.6g}"


def header_lines(study: optuna.Study, pick: Pick, command: str | None) -> list[str]:
    """Provenance: study, trial, metric and value, baseline and gain, date, command."""
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
    if base is not None and base.values and values:
        gain = values[0] - base.values[0]
        lines.append(
            f"baseline (trial {base.number}): {metrics[0]} {_fmt(base.values[0])}, "
            f"gain {gain:+.6g}"
        )
    else:
        lines.append("baseline: not in this study")
    if trial.state != TrialState.COMPLETE:
        lines.append(f"state: {trial.state.name} (not a complete trial)")
    lines.append(f"date: {datetime.now(timezone.utc).strftime('%Y-%m-%d %H:%M:%S UTC')}")
    lines.append(f"command: {command or study.user_attrs.get('command', 'n/a')}")
    return lines


def render(
    study: optuna.Study, pick: Pick, fmt: str | None = None, command: str | None = None
) -> str:
    """The file text: ``#`` header, then the format's mapping as YAML."""
    config = study.user_attrs.get("config", {})
    settings = dict(config.get("trainer", {}))
    fmt = fmt or _native_format(settings.get("adapter"))
    if fmt not in FORMATS:
        raise InputError(
            "--format", None, f"unknown format {fmt!r}; choose from {', '.join(FORMATS)}"
        )
    mapping, extra = FORMATS[fmt].render(trial_hyp(study, pick.trial), settings)
    lines = header_lines(study, pick, command) + [f"format: {fmt}"] + extra
    head = "".join(f"# {line}\n" for line in lines)
    return head + yaml.safe_dump(_plain(mapping), sort_keys=False)


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
) -> tuple[Pick, str]:
    """Pick a trial, render it and write it to ``out``; returns the pick and the text."""
    pick = pick_trial(study, number)
    text = render(study, pick, fmt, command)
    write_atomic(out, text)
    return pick, text


def load_hyp(path: Path) -> dict[str, Any]:
    """Read a hyp file written by :func:`export` (or any flat hyp YAML)."""
    data = yaml.safe_load(Path(path).read_text())
    return dict(data or {})
