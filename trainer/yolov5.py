"""The ``yolov5`` adapter: drives a user's YOLOv5 checkout (``train.py``) as a subprocess.

For every trial it writes the full hyp file (every key ``train.py`` reads, see
:data:`trainer.yolo_common.YOLOV5_HYP`) to ``TRIAL_DIR/train_hyp.yaml`` and runs, with
``cwd=yolov5_dir`` in a process group of its own::

    PYTHON train.py --hyp H --freeze N --epochs E --data D --weights W --img S --batch-size B
        --device X --project TRIAL_DIR --name trial_NNNN --exist-ok
        [--seed SEED] [--cfg C] [--workers K] [--noplots] [extra_args...]

stdout/stderr go to ``TRIAL_DIR/train.log``. ``TRIAL_DIR/trial_NNNN/results.csv`` (one padded
row per finished epoch) is followed as it grows and each row is reported as ``mAP50``,
``mAP50-95``, ``fitness`` (0.1 mAP50 + 0.9 mAP50-95), ``precision``, ``recall`` and the
losses. A prune terminates the whole process group (SIGTERM, SIGKILL after ``grace`` seconds);
a non-zero exit or a NaN loss is a :class:`~trainer.base.TrialError` carrying the log's last
lines. The subprocess runs offline: its config directories (``YOLOV5_CONFIG_DIR``,
``YOLO_CONFIG_DIR``, ``MPLCONFIGDIR``) live under the adapter cache with a local font copied in
as ``Arial.ttf``, and ``YOLO_OFFLINE=true``.

Settings (``trainer:`` section): ``yolov5_dir`` (required), ``data`` (a data YAML or
``synthetic``), ``weights`` (a local ``.pt`` or ``''`` with ``cfg``), ``cfg``, ``imgsz``,
``batch``, ``epochs``, ``device``, ``workers``, ``seed``, ``python``, ``noplots``,
``extra_args``, ``env``, ``grace``, ``timeout`` (seconds a trial's ``train.py`` may run, then
it is stopped and the trial fails; default none), ``synthetic``. Relative paths are taken from
the current folder first, then from ``yolov5_dir``.
"""

from __future__ import annotations

import os
import shlex
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from trainer.base import Adapter, ConfigError, Pruned, Reporter, TrialError, TrialResult
from trainer.yaml_io import dump_yaml
from trainer.yolo_common import (
    YOLOV5_HYP,
    YOLOV5_METRICS,
    ProcessRun,
    SettingsReader,
    as_float,
    check_losses,
    data_yaml_problem,
    early_stop_problem,
    module_table,
    normalise_metrics,
    offline_env,
    run_and_follow,
    synthetic_data,
    synthetic_spec,
    tail,
    yaml_modules,
    yolov5_hyp_file,
)

# Flags the adapter sets itself; extra_args must not repeat them.
_MANAGED_FLAGS = (
    "--hyp", "--freeze", "--epochs", "--data", "--weights", "--img", "--imgsz", "--img-size",
    "--batch", "--batch-size", "--device", "--project", "--name", "--exist-ok", "--cfg",
    "--workers", "--noplots", "--evolve", "--resume", "--seed",
)
_N_LOG_LINES = 20


def _flag_value(args: Sequence[str], flag: str) -> str | None:
    """The value of ``flag`` in ``args`` (``--flag V`` or ``--flag=V``; the last one wins)."""
    value = None
    for index, arg in enumerate(args):
        if arg == flag and index + 1 < len(args):
            value = args[index + 1]
        elif arg.startswith(flag + "="):
            value = arg.split("=", 1)[1]
    return value


@dataclass(frozen=True)
class YoloV5Settings:
    """Resolved settings of the ``yolov5`` adapter (paths absolute)."""

    yolov5_dir: str
    data: str
    weights: str = "yolov5s.pt"
    cfg: str | None = None
    imgsz: int = 640
    batch: int = 16
    epochs: int = 30
    device: str = ""
    workers: int | None = None
    seed: int | None = None  # None: no --seed flag (train.py before v7.0 has none; default 0)
    python: str = sys.executable
    noplots: bool = True
    extra_args: tuple[str, ...] = ()
    env: dict[str, str] = field(default_factory=dict)
    grace: float = 10.0
    timeout: float | None = None  # seconds a trial's process may run (None: no limit)
    synthetic: dict[str, int] = field(default_factory=dict)


class YoloV5Adapter(Adapter):
    """Trains with a YOLOv5 checkout's ``train.py``; see the module docstring."""

    name = "yolov5"
    # Every key of hyp.scratch-low plus freeze; train.py has no lr_decay / unfreeze_epoch.
    supported_keys = frozenset(YOLOV5_HYP) | {"freeze"}
    metrics = YOLOV5_METRICS
    default_metric = "fitness"
    default_direction = "maximize"
    export_format = "yolov5"
    seed_setting = "seed"
    runtime_settings = frozenset(
        {"device", "workers", "yolov5_dir", "python", "noplots", "env", "grace", "timeout"}
    )

    def __init__(self, settings: Mapping[str, Any], cache_dir: Path) -> None:
        super().__init__(settings, cache_dir)
        reader = SettingsReader(settings, YoloV5Settings.__dataclass_fields__)
        if not reader.has("yolov5_dir"):
            raise ConfigError("yolov5_dir", "is required: the folder of your YOLOv5 checkout")
        if not reader.has("data"):
            raise ConfigError("data", "is required: a dataset YAML, or 'synthetic'")
        yolov5_dir = Path(reader.path("yolov5_dir", None))
        imgsz = reader.integer("imgsz", 640, minimum=32)
        extra_args = reader.string_list("extra_args", [])
        for arg in extra_args:
            if arg.split("=")[0] in _MANAGED_FLAGS:
                raise ConfigError("extra_args", f"{arg} is set by the adapter; use the setting")
        epochs = reader.integer("epochs", 30, minimum=1)
        problem = early_stop_problem(_flag_value(extra_args, "--patience"), epochs)
        if problem:
            raise ConfigError("extra_args", f"--patience {problem}")
        env = reader.mapping("env")
        for key, value in env.items():
            if not isinstance(value, str | int | float) or isinstance(value, bool):
                raise ConfigError(f"env.{key}", f"must be a string, got {value!r}")
        weights = reader.string("weights", "yolov5s.pt", allow_empty=True)
        cfg = reader.string("cfg", None)
        self.settings = YoloV5Settings(
            yolov5_dir=str(yolov5_dir),
            data=reader.path("data", None, words=("synthetic",)),
            weights=_resolve(weights, yolov5_dir) if weights else "",
            cfg=_resolve_cfg(cfg, yolov5_dir) if cfg else None,
            imgsz=imgsz,
            batch=reader.integer("batch", 16, minimum=1),
            epochs=epochs,
            device=reader.string("device", "", allow_empty=True),
            workers=reader.integer("workers", None, minimum=0),
            seed=reader.integer("seed", None, minimum=0),
            python=reader.string("python", sys.executable),
            noplots=reader.boolean("noplots", True),
            extra_args=tuple(extra_args),
            env={key: str(value) for key, value in env.items()},
            grace=reader.number("grace", 10.0, minimum=0.0),
            timeout=reader.seconds("timeout"),
            synthetic=synthetic_spec(reader, imgsz),
        )

    # -- declarations ---------------------------------------------------------------------

    @classmethod
    def default_hyp(cls) -> dict[str, Any]:
        """YOLOv5's hyp.scratch-low.yaml values, plus ``freeze: 0``."""
        return {**YOLOV5_HYP, "freeze": 0}

    def hyp_keys(self) -> frozenset[str] | None:
        """None: extra keys go into the ``--hyp`` file as they are (``anchors``, say)."""
        return None

    def settings_dict(self) -> dict[str, Any]:
        out = asdict(self.settings)
        out["extra_args"] = list(self.settings.extra_args)
        return out

    def _modules(self) -> list[tuple[int, str]] | None:
        s = self.settings
        if s.cfg:
            return yaml_modules(Path(s.cfg))
        if s.weights:
            # yolov5s.pt was built from models/yolov5s.yaml (P6 models from models/hub/).
            stem = Path(s.weights).stem
            for folder in ("models", "models/hub"):
                path = Path(s.yolov5_dir) / folder / f"{stem}.yaml"
                if path.is_file():
                    return yaml_modules(path)
        return None

    def limits(self) -> dict[str, tuple[float, float]]:
        """``freeze`` up to the Detect module's index (which must stay trainable), when known."""
        modules = self._modules()
        return {"freeze": (0, len(modules) - 1)} if modules else {}

    def describe(self) -> str:
        lines = [
            "yolov5: YOLOv5 train.py in a subprocess",
            "freeze N = train.py --freeze N: parameters of modules model.0 .. model.N-1 get "
            "requires_grad=False (their BatchNorm running statistics still update).",
            "For yolov5n/s/m/l/x (v6+): 0 trains everything, 10 freezes the backbone "
            "(modules 0-9), 24 freezes all but the Detect head (module 24).",
            "lr_decay and unfreeze_epoch are not available: train.py has no such options.",
        ]
        modules = self._modules()
        if modules:
            lines.append(f"modules of this model ({len(modules)}):")
            lines.append(module_table(modules))
        return "\n".join(lines)

    # -- checks ---------------------------------------------------------------------------

    def check_data(self) -> None:
        s = self.settings
        root = Path(s.yolov5_dir)
        if not (root / "train.py").is_file():
            raise ConfigError("yolov5_dir",
                              f"{root} has no train.py; point it at a YOLOv5 checkout")
        if s.data != "synthetic" and not Path(s.data).is_file():
            raise ConfigError("data", f"no such dataset YAML: {s.data}")
        if s.data != "synthetic":
            problem = data_yaml_problem(Path(s.data))
            if problem:
                raise ConfigError("data", problem)
        if not s.weights:
            if not s.cfg:
                raise ConfigError("weights", "'' (train from scratch) needs a model yaml in cfg")
        elif not Path(s.weights).is_file():
            raise ConfigError(
                "weights",
                f"{s.weights!r} is not a local file and nothing is downloaded here; download it "
                "once (YOLOv5 releases) and give its path, or use weights: '' with a cfg",
            )
        if s.cfg and not Path(s.cfg).is_file():
            raise ConfigError("cfg", f"no such model yaml: {s.cfg}")
        if not (Path(s.python).is_file() or _which(s.python)):
            raise ConfigError("python", f"no such interpreter: {s.python}")

    def prepare(self) -> None:
        """Set up the offline config folders and generate the synthetic set if used."""
        offline_env(self.cache_dir)
        self._data()

    def _data(self) -> str:
        s = self.settings
        if s.data == "synthetic":
            return str(synthetic_data(self.cache_dir, s.synthetic))
        return s.data

    # -- running --------------------------------------------------------------------------

    def build_command(self, hyp_file: Path, freeze: int, trial_dir: Path, data: str) -> list[str]:
        """The exact ``train.py`` command line for one trial."""
        s = self.settings
        cmd = [
            s.python, "train.py",
            "--hyp", str(hyp_file),
            "--freeze", str(freeze),
            "--epochs", str(s.epochs),
            "--data", data,
            "--weights", s.weights,
            "--img", str(s.imgsz),
            "--batch-size", str(s.batch),
            "--device", s.device,
            "--project", str(trial_dir),
            "--name", run_name(trial_dir),
            "--exist-ok",
        ]
        if s.seed is not None:
            cmd += ["--seed", str(s.seed)]
        if s.cfg:
            cmd += ["--cfg", s.cfg]
        if s.workers is not None:
            cmd += ["--workers", str(s.workers)]
        if s.noplots:
            cmd.append("--noplots")
        return cmd + list(s.extra_args)

    def run(self, hyp: Mapping[str, Any], reporter: Reporter, trial_dir: Path) -> TrialResult:
        s = self.settings
        trial_dir = Path(trial_dir).absolute()
        freeze = _freeze_value(hyp)
        for key, neutral in (("lr_decay", 1.0), ("unfreeze_epoch", 0)):
            if hyp.get(key, neutral) != neutral:
                raise TrialError(f"{key}={hyp[key]} cannot be applied: YOLOv5's train.py has "
                                 f"no {key}; remove it from the base hyp")
        env = {**os.environ, **offline_env(self.cache_dir), "PYTHONUNBUFFERED": "1", **s.env}
        hyp_file = trial_dir / "train_hyp.yaml"
        hyp_file.write_text(dump_yaml(yolov5_hyp_file(hyp)))
        run_dir = trial_dir / run_name(trial_dir)
        csv = run_dir / "results.csv"
        csv.unlink(missing_ok=True)  # train.py appends: rows of an earlier attempt would mix in
        cmd = self.build_command(hyp_file, freeze, trial_dir, self._data())
        log = trial_dir / "train.log"
        result = TrialResult(extra={"run_dir": str(run_dir), "log": str(log),
                                    "command": shlex.join(cmd)})
        proc = ProcessRun()

        numbers: list[float] = []  # the rows' own epoch column

        def on_row(row: dict[str, Any]) -> None:
            epoch = result.epochs_run
            number = as_float(row.get("epoch"))
            # On COCO, train.py validates best.pt after training and writes that as one more
            # row, numbered as the last epoch again (before `epochs` after an early stop,
            # --patience): not an epoch, it holds the best checkpoint's metrics.
            if epoch >= s.epochs or (number is not None and numbers and number <= numbers[-1]):
                return
            if number is not None:
                numbers.append(number)
            metrics = normalise_metrics(row)
            result.train_seconds = time.perf_counter() - proc.started
            check_losses(metrics, epoch, also=("fitness",))
            result.add_epoch(metrics)
            reporter.report(epoch, metrics)

        try:
            run_and_follow(cmd, cwd=Path(s.yolov5_dir), env=env, log_path=log, metrics_path=csv,
                           on_row=on_row, grace=s.grace, timeout=s.timeout, kind="csv",
                           run=proc)
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
                f"train.py exited with code {proc.returncode} after {result.epochs_run} epoch(s); "
                f"last lines of {log}:\n{tail(log, _N_LOG_LINES)}",
                result,
            )
        if result.epochs_run == 0:
            raise TrialError(f"train.py wrote no rows to {csv}; last lines of {log}:\n"
                             f"{tail(log, _N_LOG_LINES)}", result)
        return result


def run_name(trial_dir: Path) -> str:
    """The ``--name`` of a trial's run (its folder under ``--project TRIAL_DIR``)."""
    return f"trial_{Path(trial_dir).name}"


def _finish(result: TrialResult, proc: ProcessRun) -> None:
    if proc.seconds:
        result.train_seconds = proc.seconds
    result.peak_memory_mb = proc.peak_rss_mb
    result.extra["returncode"] = proc.returncode


def _freeze_value(hyp: Mapping[str, Any]) -> int:
    value = hyp.get("freeze", 0)
    if isinstance(value, bool) or not float(value).is_integer() or value < 0:
        raise TrialError(f"freeze must be a non-negative integer, got {value!r}")
    return int(value)


def _resolve(value: str, root: Path) -> str:
    """A path relative to the current folder, else to ``root``; as given if neither exists."""
    path = Path(value).expanduser()
    if path.is_absolute():
        return str(path)
    if path.exists():
        return str(path.absolute())
    if (root / path).exists():
        return str((root / path).absolute())
    return value


def _resolve_cfg(value: str, root: Path) -> str:
    resolved = _resolve(value, root)
    if Path(resolved).is_file():
        return resolved
    # train.py also finds a bare model yaml name under models/ (e.g. cfg: yolov5n.yaml).
    models = root / "models"
    matches = sorted(models.rglob(Path(value).name)) if models.is_dir() else []
    return str(matches[0].absolute()) if matches else resolved


def _which(program: str) -> bool:
    import shutil

    return shutil.which(program) is not None
