"""The ``command`` adapter: any training script that writes one metrics row per epoch.

For a team with its own pipeline. Per trial the adapter writes the full hyp mapping (every
key, freeze strategy included) to ``TRIAL_DIR/train_hyp.yaml``, substitutes placeholders in the
command and runs it in a process group of its own, following ``metrics_file`` (relative to the
trial folder) as it grows: one row per finished epoch, CSV with a header line or JSON lines
(one object per line). A prune terminates the process group; a non-zero exit is a failed trial
with the log's last lines (stdout and stderr go to ``TRIAL_DIR/train.log``).

Example ``trainer:`` section::

    trainer:
      adapter: command
      command: "{python} train_my_model.py --hyp {hyp} --freeze {freeze} --epochs {epochs}
                --out {trial_dir} --device {device}"
      metrics_file: metrics.jsonl        # the script appends {"val/acc": 0.8, "loss": 0.3}
      metrics: [val/acc, loss]           # what the script reports (objective candidates)
      metric: val/acc                    # the default objective
      direction: maximize
      epochs: 10
      keys: [lr0, momentum, freeze]      # hyp keys the script reads (what a space may search)
      defaults: {dropout: 0.1}           # hyp defaults for keys outside the YOLO set
      cwd: path/to/project               # default: the current folder
      env: {CUDA_VISIBLE_DEVICES: "0"}
      timeout: 3600                      # seconds a trial may run, then it fails (default none)

Placeholders: ``{hyp}`` (the hyp YAML), ``{freeze}``, ``{epochs}``, ``{trial_dir}``,
``{device}``, ``{metrics_file}`` (absolute), ``{python}`` (this interpreter), ``{seed}`` (the
``seed`` setting, 0 by default; ``tuner confirm`` re-runs trials with other seeds) and
``{KEY}`` for any hyp key (``{lr0}``); ``{{`` and ``}}`` are literal braces. A string command
is split like a shell would (``shlex``) but not run through a shell; use a list such as
``["bash", "-c", "..."]`` for shell features. The same values are in the environment as
``TUNER_HYP``, ``TUNER_FREEZE``, ``TUNER_EPOCHS``, ``TUNER_TRIAL_DIR``, ``TUNER_DEVICE``,
``TUNER_METRICS_FILE`` and ``TUNER_SEED``.

Rows whose columns carry YOLO names (``metrics/mAP50(B)``, ``metrics/mAP_0.5:0.95``...) are also
reported under the simple names ``mAP50``, ``mAP50-95``, ``precision``, ``recall`` and
``fitness``; a row's ``epoch`` column is ignored (rows are counted). ``fitness`` follows the
pipeline that names the columns so: Ultralytics' (``...(B)``) is mAP50-95 alone, as
Ultralytics scores since 8.3.198; YOLOv5's (``metrics/mAP_0.5``...) and plain ``mAP50`` /
``mAP50-95`` columns give 0.1 mAP50 + 0.9 mAP50-95. A ``fitness`` column the script writes
itself wins (for an Ultralytics before 8.3.198, which weighed 0.1 / 0.9 too).
"""

from __future__ import annotations

import os
import shlex
import string
import sys
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from trainer.base import (
    FREEZE_KEYS,
    Adapter,
    ConfigError,
    Pruned,
    Reporter,
    TrialError,
    TrialResult,
)
from trainer.yaml_io import dump_yaml
from trainer.yolo_common import (
    FREEZE_DEFAULTS,
    YOLOV5_HYP,
    ProcessRun,
    SettingsReader,
    add_aliases,
    check_losses,
    run_and_follow,
    tail,
)

# Hyp keys a space may search by default: the common YOLO keys and the freeze strategy.
COMMON_HYP: dict[str, Any] = {**YOLOV5_HYP, **FREEZE_DEFAULTS}
_BUILTIN_FIELDS = (
    "hyp", "freeze", "epochs", "trial_dir", "device", "metrics_file", "python", "seed"
)
_N_LOG_LINES = 20


@dataclass(frozen=True)
class CommandSettings:
    """Resolved settings of the ``command`` adapter."""

    command: tuple[str, ...]
    metrics_file: str
    epochs: int = 10
    device: str = ""
    seed: int = 0
    cwd: str | None = None
    env: dict[str, str] = field(default_factory=dict)
    metrics: tuple[str, ...] = ("fitness",)
    metric: str = "fitness"
    direction: str = "maximize"
    keys: tuple[str, ...] = tuple(COMMON_HYP)
    defaults: dict[str, Any] = field(default_factory=dict)
    grace: float = 10.0
    timeout: float | None = None  # seconds a trial's process may run (None: no limit)


class _HybridMethod:
    """A method that receives the instance when called on one, the class otherwise.

    ``default_hyp`` is a classmethod in :class:`Adapter`, but this adapter's defaults depend on
    its settings (``defaults:``); called on an instance it includes them.
    """

    def __init__(self, func: Any) -> None:
        self.func = func
        self.__doc__ = func.__doc__
        self.__isabstractmethod__ = False

    def __get__(self, obj: Any, owner: type) -> Any:
        target = owner if obj is None else obj
        return lambda *args, **kwargs: self.func(target, *args, **kwargs)


class CommandAdapter(Adapter):
    """Runs a command per trial and follows its metrics file; see the module docstring.

    ``supported_keys``, ``metrics``, ``default_metric`` and ``default_direction`` are set per
    instance from the settings (the class values are the defaults).
    """

    name = "command"
    supported_keys = frozenset(COMMON_HYP)
    metrics = ("fitness",)
    default_metric = "fitness"
    default_direction = "maximize"
    export_format = "generic"
    seed_setting = "seed"
    # where and how the script runs, and what it declares; the objective is checked apart
    runtime_settings = frozenset(
        {"device", "cwd", "env", "grace", "timeout", "metrics", "metric", "direction"}
    )

    def __init__(self, settings: Mapping[str, Any], cache_dir: Path) -> None:
        super().__init__(settings, cache_dir)
        reader = SettingsReader(settings, CommandSettings.__dataclass_fields__)
        command = reader.raw.get("command")
        if isinstance(command, str) and command.strip():
            tokens = shlex.split(command)
        elif isinstance(command, list) and command and all(isinstance(t, str) for t in command):
            tokens = list(command)
        else:
            raise ConfigError("command", f"must be a non-empty string or list of strings, "
                                         f"got {command!r}")
        metrics_file = reader.string("metrics_file", None)
        if metrics_file is None:
            raise ConfigError("metrics_file", "is required: the CSV or JSON-lines file the "
                                              "command appends one row per epoch to")
        if Path(metrics_file).suffix.lower() not in (".csv", ".jsonl", ".json", ".ndjson"):
            raise ConfigError("metrics_file", f"must end in .csv or .jsonl, got {metrics_file!r}")
        if Path(metrics_file).is_absolute():
            raise ConfigError("metrics_file", "must be relative to the trial folder")
        # without `metric`, the default objective is YOLO's fitness where the declared columns
        # give it (mAP50 and mAP50-95, as YOLO names them), else the first declared metric:
        # never a name the script may not write, which would fail every trial
        metrics = reader.string_list("metrics", None) or []
        gives_fitness = not metrics or "fitness" in add_aliases(dict.fromkeys(metrics, 0.0))
        metric = reader.string("metric", "fitness" if gives_fitness else metrics[0])
        if metric not in metrics:
            metrics = [metric, *metrics]
        defaults = reader.mapping("defaults")
        keys = reader.string_list("keys", list(COMMON_HYP))
        for key in keys:
            if key not in COMMON_HYP and key not in defaults:
                raise ConfigError("keys", f"{key!r} has no default; add it to 'defaults'")
        env = reader.mapping("env")
        cwd = reader.path("cwd", None)
        self.settings = CommandSettings(
            command=tuple(tokens),
            metrics_file=metrics_file,
            epochs=reader.integer("epochs", 10, minimum=1),
            device=reader.string("device", "", allow_empty=True),
            seed=reader.integer("seed", 0, minimum=0),
            cwd=cwd,
            env={key: str(value) for key, value in env.items()},
            metrics=tuple(metrics),
            metric=metric,
            direction=reader.string("direction", "maximize", choices=("maximize", "minimize")),
            keys=tuple(keys),
            defaults=defaults,
            grace=reader.number("grace", 10.0, minimum=0.0),
            timeout=reader.seconds("timeout"),
        )
        # Per instance: what the user's script supports and reports.
        self.supported_keys = frozenset(keys)
        self.metrics = self.settings.metrics
        self.default_metric = metric
        self.default_direction = self.settings.direction
        self._check_placeholders()

    @_HybridMethod
    def default_hyp(self_or_cls: Any) -> dict[str, Any]:  # noqa: N805 - see _HybridMethod
        """The common YOLO keys and freeze keys, plus the settings' ``defaults`` on an instance."""
        out = dict(COMMON_HYP)
        if not isinstance(self_or_cls, type):
            out.update(self_or_cls.settings.defaults)
        return out

    def hyp_keys(self) -> frozenset[str] | None:
        """None: the script gets every hyp key in its hyp file, whichever it reads."""
        return None

    def settings_dict(self) -> dict[str, Any]:
        out = asdict(self.settings)
        for key in ("command", "metrics", "keys"):
            out[key] = list(out[key])
        return out

    def _fields(self) -> set[str]:
        return set(_BUILTIN_FIELDS) | set(self.default_hyp()) | set(self.supported_keys)

    def _check_placeholders(self) -> None:
        known = self._fields()
        for token in self.settings.command:
            try:
                parsed = list(string.Formatter().parse(token))
            except ValueError as exc:
                raise ConfigError("command", f"bad placeholder in {token!r}: {exc}") from None
            for _, name, _, _ in parsed:
                if name is not None and name not in known:
                    raise ConfigError("command", f"unknown placeholder {{{name}}}; known: "
                                                 f"{', '.join(sorted(known))}")

    def trial_epochs(self) -> int | None:
        """None: ``epochs`` is passed on (``{epochs}``, ``TUNER_EPOCHS``), but how long the
        script trains is its own affair, so no epoch is taken for its last one."""
        return None

    def limits(self) -> dict[str, tuple[float, float]]:
        return {"unfreeze_epoch": (0, self.settings.epochs)} if "unfreeze_epoch" in \
            self.supported_keys else {}

    def describe(self) -> str:
        return (
            f"command: {shlex.join(self.settings.command)}\n"
            f"metrics from TRIAL_DIR/{self.settings.metrics_file}: "
            f"{', '.join(self.settings.metrics)}\n"
            "freeze N means whatever the script does with --freeze / {freeze}."
        )

    def check_data(self) -> None:
        cwd = self.settings.cwd
        if cwd is not None and not Path(cwd).is_dir():
            raise ConfigError("cwd", f"no such folder: {cwd}")

    # -- running --------------------------------------------------------------------------

    def build_command(self, hyp: Mapping[str, Any], hyp_file: Path, trial_dir: Path) -> list[str]:
        """The command for one trial, placeholders substituted."""
        values = self._values(hyp, hyp_file, trial_dir)
        return [token.format_map(values) for token in self.settings.command]

    def _values(self, hyp: Mapping[str, Any], hyp_file: Path, trial_dir: Path) -> dict[str, Any]:
        return {
            **{key: value for key, value in hyp.items()},
            "hyp": str(hyp_file),
            "freeze": hyp.get("freeze", 0),
            "epochs": self.settings.epochs,
            "trial_dir": str(trial_dir),
            "device": self.settings.device,
            "metrics_file": str(trial_dir / self.settings.metrics_file),
            "python": sys.executable,
            "seed": self.settings.seed,
        }

    def run(self, hyp: Mapping[str, Any], reporter: Reporter, trial_dir: Path) -> TrialResult:
        s = self.settings
        trial_dir = Path(trial_dir).absolute()
        full = {**self.default_hyp(), **hyp}
        # Plain keys first, then the freeze strategy, as in the generic export.
        ordered = {k: v for k, v in full.items() if k not in FREEZE_KEYS}
        ordered.update({k: full[k] for k in FREEZE_KEYS if k in full})
        hyp_file = trial_dir / "train_hyp.yaml"
        hyp_file.write_text(dump_yaml(_plain(ordered)))
        metrics_path = trial_dir / s.metrics_file
        metrics_path.parent.mkdir(parents=True, exist_ok=True)
        metrics_path.unlink(missing_ok=True)  # rows of an earlier attempt would mix in
        cmd = self.build_command(full, hyp_file, trial_dir)
        values = self._values(full, hyp_file, trial_dir)
        env = {
            **os.environ,
            **{f"TUNER_{key.upper()}": str(values[key])
               for key in ("hyp", "freeze", "epochs", "trial_dir", "device", "metrics_file",
                           "seed")},
            **s.env,
        }
        log = trial_dir / "train.log"
        result = TrialResult(extra={"log": str(log), "command": shlex.join(cmd),
                                    "run_dir": str(trial_dir)})
        proc = ProcessRun()

        def on_row(row: dict[str, Any]) -> None:
            epoch = result.epochs_run
            metrics = add_aliases({k: v for k, v in row.items() if k != "epoch"})
            result.train_seconds = time.perf_counter() - proc.started
            check_losses(metrics, epoch, also=s.metrics)
            result.add_epoch(metrics)
            reporter.report(epoch, metrics)

        try:
            run_and_follow(cmd, cwd=Path(s.cwd) if s.cwd else None, env=env, log_path=log,
                           metrics_path=metrics_path, on_row=on_row, grace=s.grace,
                           timeout=s.timeout, run=proc)
        except FileNotFoundError as exc:  # the program itself does not exist
            raise TrialError(f"cannot run {cmd[0]!r}: {exc.strerror or exc}", result) from None
        except Pruned as exc:
            _finish(result, proc)
            exc.result = result
            raise
        except TrialError as exc:
            _finish(result, proc)
            exc.result = exc.result or result
            raise
        _finish(result, proc)
        if proc.returncode != 0:
            raise TrialError(
                f"command exited with code {proc.returncode} after {result.epochs_run} "
                f"epoch(s); last lines of {log}:\n{tail(log, _N_LOG_LINES)}",
                result,
            )
        if result.epochs_run == 0:
            raise TrialError(f"the command wrote no rows to {metrics_path}; last lines of {log}:"
                             f"\n{tail(log, _N_LOG_LINES)}", result)
        return result


def _finish(result: TrialResult, proc: ProcessRun) -> None:
    if proc.seconds:
        result.train_seconds = proc.seconds
    result.peak_memory_mb = proc.peak_rss_mb
    result.extra["returncode"] = proc.returncode


def _plain(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if hasattr(value, "item") and callable(value.item):
        return value.item()
    return value
