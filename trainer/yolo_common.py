"""Pieces shared by the YOLO adapters (``ultralytics``, ``yolov5``) and the ``command`` adapter.

* hyp key sets and defaults (YOLOv5's ``hyp.scratch-low.yaml``, Ultralytics' ``default.yaml``);
* metric names: YOLOv5 / Ultralytics columns normalised to ``mAP50``, ``mAP50-95``, ``fitness``,
  ``precision``, ``recall`` and the losses;
* :class:`MetricsFollower`, which reads rows a training process appends to a CSV or JSON-lines
  file, and :func:`run_and_follow`, which runs such a process in its own process group and kills
  the whole group when a trial is pruned;
* offline set-up: config directories under the adapter cache and a locally copied font, so
  neither YOLOv5 nor Ultralytics downloads ``Arial.ttf`` or writes into ``$HOME``;
* small settings validators that raise :class:`~trainer.base.ConfigError`.
"""

from __future__ import annotations

import importlib.util
import json
import math
import os
import shutil
import signal
import subprocess
import sys
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from trainer.base import ConfigError, DivergedError, TrialError

# -- hyp keys ---------------------------------------------------------------------------------

# YOLOv5 data/hyps/hyp.scratch-low.yaml, in file order: every key train.py reads from --hyp
# (a missing one is a KeyError in train.py or its loss/dataloader). ``anchors`` is optional
# there (commented out) and therefore not listed.
YOLOV5_HYP: dict[str, Any] = {
    "lr0": 0.01,
    "lrf": 0.01,
    "momentum": 0.937,
    "weight_decay": 0.0005,
    "warmup_epochs": 3.0,
    "warmup_momentum": 0.8,
    "warmup_bias_lr": 0.1,
    "box": 0.05,
    "cls": 0.5,
    "cls_pw": 1.0,
    "obj": 1.0,
    "obj_pw": 1.0,
    "iou_t": 0.20,
    "anchor_t": 4.0,
    "fl_gamma": 0.0,
    "hsv_h": 0.015,
    "hsv_s": 0.7,
    "hsv_v": 0.4,
    "degrees": 0.0,
    "translate": 0.1,
    "scale": 0.5,
    "shear": 0.0,
    "perspective": 0.0,
    "flipud": 0.0,
    "fliplr": 0.5,
    "mosaic": 1.0,
    "mixup": 0.0,
    "copy_paste": 0.0,
}

# Ultralytics cfg/default.yaml values of the train arguments a study may search (8.4).
ULTRALYTICS_HYP: dict[str, Any] = {
    "lr0": 0.01,
    "lrf": 0.01,
    "momentum": 0.937,
    "weight_decay": 0.0005,
    "warmup_epochs": 3.0,
    "warmup_momentum": 0.8,
    "warmup_bias_lr": 0.1,
    "box": 7.5,
    "cls": 0.5,
    "dfl": 1.5,
    "hsv_h": 0.015,
    "hsv_s": 0.7,
    "hsv_v": 0.4,
    "degrees": 0.0,
    "translate": 0.1,
    "scale": 0.5,
    "shear": 0.0,
    "perspective": 0.0,
    "flipud": 0.0,
    "fliplr": 0.5,
    "mosaic": 1.0,
    "mixup": 0.0,
    "copy_paste": 0.0,
    "close_mosaic": 10,
}

# The freeze strategy: freeze the first N modules, layer-wise LR decay, staged unfreezing.
FREEZE_DEFAULTS: dict[str, Any] = {"freeze": 0, "lr_decay": 1.0, "unfreeze_epoch": 0}

# -- metrics ----------------------------------------------------------------------------------

# Raw column -> simple name, for YOLOv5 results.csv and Ultralytics trainer metrics.
_METRIC_ALIASES: dict[str, str] = {
    "metrics/precision": "precision",
    "metrics/recall": "recall",
    "metrics/mAP_0.5": "mAP50",
    "metrics/mAP_0.5:0.95": "mAP50-95",
    "metrics/precision(B)": "precision",
    "metrics/recall(B)": "recall",
    "metrics/mAP50(B)": "mAP50",
    "metrics/mAP50-95(B)": "mAP50-95",
}
# Columns that are not measurements of the epoch (the learning rates, the epoch number).
_SKIPPED_PREFIXES = ("x/lr", "lr/pg", "epoch")

YOLOV5_METRICS: tuple[str, ...] = (
    "fitness", "mAP50", "mAP50-95", "precision", "recall",
    "train/box_loss", "train/obj_loss", "train/cls_loss",
    "val/box_loss", "val/obj_loss", "val/cls_loss",
)
ULTRALYTICS_METRICS: tuple[str, ...] = (
    "fitness", "mAP50", "mAP50-95", "precision", "recall",
    "train/box_loss", "train/cls_loss", "train/dfl_loss",
    "val/box_loss", "val/cls_loss", "val/dfl_loss",
)


# The weights of (mAP@0.5, mAP@0.5:0.95) in each pipeline's model-selection score, the one its
# best.pt, early stopping and own genetic search go by. YOLOv5 (utils/metrics.py fitness):
# [P, R, mAP@0.5, mAP@0.5:0.95] weighted [0, 0, 0.1, 0.9]. Ultralytics used the same up to
# 8.3.197; from 8.3.198 its Metric.fitness weighs them [0, 0, 0, 1]: mAP@0.5:0.95 alone.
YOLOV5_FITNESS: tuple[float, float] = (0.1, 0.9)
ULTRALYTICS_FITNESS: tuple[float, float] = (0.0, 1.0)
# Columns only Ultralytics writes (its results.csv and trainer.metrics): their rows score by
# Ultralytics' convention; YOLOv5's columns, and plain mAP50 / mAP50-95, by YOLOv5's.
_ULTRALYTICS_COLUMNS = frozenset(k for k in _METRIC_ALIASES if k.endswith("(B)"))


def fitness(map50: float, map50_95: float,
            weights: tuple[float, float] = YOLOV5_FITNESS) -> float:
    """A YOLO model-selection score: ``weights[0] * mAP@0.5 + weights[1] * mAP@0.5:0.95``.

    Args:
        map50: mAP at IoU 0.5.
        map50_95: mAP averaged over IoU 0.5:0.95.
        weights: :data:`YOLOV5_FITNESS` (0.1, 0.9; the default) or
            :data:`ULTRALYTICS_FITNESS` (0, 1: mAP@0.5:0.95 alone, Ultralytics >= 8.3.198).
    """
    return weights[0] * map50 + weights[1] * map50_95


def fitness_weights(columns: Iterable[str]) -> tuple[float, float]:
    """The fitness convention of a metrics row, from its column names.

    Ultralytics-named columns (``metrics/mAP50-95(B)``...) give :data:`ULTRALYTICS_FITNESS`,
    anything else (YOLOv5's ``metrics/mAP_0.5:0.95``, plain ``mAP50-95``)
    :data:`YOLOV5_FITNESS`.
    """
    names = {str(c).strip() for c in columns}
    return ULTRALYTICS_FITNESS if names & _ULTRALYTICS_COLUMNS else YOLOV5_FITNESS


def normalise_metrics(raw: Mapping[str, Any]) -> dict[str, float]:
    """YOLOv5 / Ultralytics metric names -> ``mAP50``, ``mAP50-95``, ``precision``, ``recall``.

    Losses keep their names (``train/box_loss``, ``val/cls_loss``...), learning-rate columns and
    the epoch column are dropped, and ``fitness`` is added when both mAPs are present, weighted
    as the pipeline that wrote the columns weighs it (:func:`fitness_weights`).
    """
    out: dict[str, float] = {}
    for key, value in raw.items():
        key = str(key).strip()
        if key.startswith(_SKIPPED_PREFIXES):
            continue
        number = as_float(value)
        if number is None:
            continue
        out[_METRIC_ALIASES.get(key, key)] = number
    if "mAP50" in out and "mAP50-95" in out:
        out["fitness"] = fitness(out["mAP50"], out["mAP50-95"], fitness_weights(raw))
    return out


def add_aliases(raw: Mapping[str, Any]) -> dict[str, float]:
    """The numeric values of ``raw`` under their own names, plus the simple YOLO names.

    Used for files written by users' scripts: their columns stay as they are, and YOLO-named
    columns are also available as ``mAP50``, ``mAP50-95``, ``fitness``... (a ``fitness`` the
    script writes itself wins).
    """
    out = {str(k).strip(): v for k, v in raw.items()}
    out = {k: n for k, v in out.items() if (n := as_float(v)) is not None}
    for key, value in normalise_metrics(out).items():
        out.setdefault(key, value)
    return out


def yolov5_hyp_file(hyp: Mapping[str, Any]) -> dict[str, Any]:
    """The mapping YOLOv5's ``train.py --hyp`` reads: every scratch-low key, in file order.

    Keys the trial did not set take their scratch-low value; further plain keys (``anchors``
    from a base hyp file, say) follow; the freeze-strategy keys are left out, since the freeze
    goes on the command line (``--freeze N``) and train.py has no layer-wise LR decay.
    """
    out = {key: _plain(hyp.get(key, default)) for key, default in YOLOV5_HYP.items()}
    for key, value in hyp.items():
        if key not in out and key not in FREEZE_DEFAULTS:
            out[key] = _plain(value)
    return out


def _plain(value: Any) -> Any:
    # numpy scalars would be written as python/object tags that yaml.safe_load rejects
    if hasattr(value, "item") and callable(value.item):
        return value.item()
    return value


def check_losses(metrics: Mapping[str, float], epoch: int, also: Iterable[str] = ()) -> None:
    """Raise :class:`TrialError` when a loss (or one of ``also``) is NaN or infinite."""
    names = set(also)
    for key, value in metrics.items():
        if ("loss" in key or key in names) and not math.isfinite(value):
            raise DivergedError(
                f"non-finite {key} ({value}) at epoch {epoch + 1}: training diverged"
            )


def data_yaml_problem(path: Path) -> str | None:
    """Why the dataset YAML ``path`` names no usable ``train`` / ``val`` images, or None.

    Cheap: reads the YAML and looks for the paths it names, decodes nothing. Split paths
    resolve against the YAML's ``path`` (or the YAML's folder without one); a relative
    ``path`` is left unchecked, since YOLOv5 resolves it against its checkout and Ultralytics
    against its datasets folder.
    """
    import yaml

    try:
        data = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as exc:
        return f"{path}: not a readable YAML file ({type(exc).__name__})"
    if not isinstance(data, dict):
        return f"{path}: must be a mapping with train and val"
    missing = [key for key in ("train", "val") if not data.get(key)]
    if missing:
        return f"{path}: names no {' or '.join(missing)} images"
    root = data.get("path")
    if root is None:
        root = path.parent
    elif not Path(str(root)).is_absolute():
        return None
    for key in ("train", "val"):
        entries = data[key] if isinstance(data[key], list) else [data[key]]
        for entry in entries:
            where = Path(str(entry)) if Path(str(entry)).is_absolute() else Path(root) / entry
            if not where.exists():
                return f"{path}: {key} images not found: {where}"
    return None


def early_stop_problem(patience: Any, epochs: int) -> str | None:
    """Why an early-stop ``patience`` would cut some runs of ``epochs`` short (None if none).

    YOLOv5 and Ultralytics stop once ``patience`` epochs passed without a better fitness (0 or
    unset: never). At or above ``epochs`` no trial is cut; below it trials would train
    different lengths, ranked on where they stopped as much as on their hyps.
    """
    value = as_float(patience)
    if value is None or value <= 0 or value >= epochs:
        return None  # a value that is no number is the trainer's own error to name
    return (f"{value:g} would stop trials that stop improving before their {epochs} epochs, "
            "so trials would train different lengths (the pruner's epochs would not "
            f"compare): leave it unset or at least the runs' length ({epochs})")


def as_float(value: Any) -> float | None:
    """A float from a number, numpy or torch scalar or numeric string; None for anything else
    (booleans included)."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return float(value)
    if hasattr(value, "item") and callable(value.item):  # numpy / torch scalars
        try:
            return float(value.item())
        except (TypeError, ValueError):
            return None
    if isinstance(value, str):
        try:
            return float(value.strip())
        except ValueError:
            return None
    return None


# -- following a metrics file -----------------------------------------------------------------


class MetricsFollower:
    """Reads the rows a running process appends to a CSV or JSON-lines file.

    Only complete lines (ending in a newline) are consumed, so a row being written is read on
    the next poll. CSV cells are stripped of padding (YOLOv5 right-aligns every column to 20
    characters); JSON-lines rows must be objects.

    Args:
        path: The file; it need not exist yet.
        kind: ``"csv"`` or ``"jsonl"``; by default taken from the suffix (``.csv``, else JSON).
    """

    def __init__(self, path: Path, kind: str | None = None) -> None:
        self.path = Path(path)
        self.kind = kind or ("csv" if self.path.suffix.lower() == ".csv" else "jsonl")
        self._offset = 0
        self._pending = b""
        self._header: list[str] | None = None

    def poll(self, final: bool = False) -> list[dict[str, Any]]:
        """Rows completed since the last call (values as parsed: floats, or strings in CSV).

        Args:
            final: The writer has exited, so a last line without its newline is complete too.
        """
        try:
            with open(self.path, "rb") as handle:
                handle.seek(self._offset)
                chunk = handle.read()
        except FileNotFoundError:
            return []
        self._offset += len(chunk)
        data = self._pending + chunk
        *lines, self._pending = data.split(b"\n")
        if final and self._pending.strip():
            lines.append(self._pending)
            self._pending = b""
        rows = []
        for raw in lines:
            line = raw.decode("utf-8", errors="replace").strip()
            if not line:
                continue
            row = self._parse(line)
            if row is not None:
                rows.append(row)
        return rows

    def _parse(self, line: str) -> dict[str, Any] | None:
        if self.kind == "csv":
            cells = [cell.strip() for cell in line.split(",")]
            if self._header is None:
                self._header = cells
                return None
            return {key: _csv_value(cell) for key, cell in zip(self._header, cells)}
        try:
            row = json.loads(line)
        except ValueError as exc:
            raise TrialError(f"{self.path}: not a JSON line: {line[:200]!r} ({exc})") from None
        if not isinstance(row, dict):
            raise TrialError(f"{self.path}: each line must be a JSON object, got {line[:200]!r}")
        return row


def _csv_value(cell: str) -> float | str:
    try:
        return float(cell)
    except ValueError:
        return cell


# -- subprocesses -----------------------------------------------------------------------------


def terminate_process_group(
    proc: subprocess.Popen, grace: float = 10.0, run: ProcessRun | None = None
) -> None:
    """Stop ``proc`` and everything in its process group: SIGTERM, then SIGKILL after ``grace``.

    The process must have been started with ``start_new_session=True`` (its own group), so
    dataloader workers and other children go too. Safe to call on a finished process.

    Args:
        proc: The group leader.
        grace: Seconds between SIGTERM and SIGKILL.
        run: When given, the exit code and peak memory are recorded in it.
    """
    if os.name != "posix":  # pragma: no cover - no process groups; stop the process itself
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(grace)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        return
    pgid = proc.pid  # a session leader's group id is its pid
    _signal_group(pgid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    try:
        while not _exited(proc, run) and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        # SIGKILL even when the leader is gone (children that ignored SIGTERM would linger),
        # and when an interrupt cuts the grace short
        _signal_group(pgid, signal.SIGKILL)
    while not _exited(proc, run):
        time.sleep(0.01)


def _exited(proc: subprocess.Popen, run: ProcessRun | None) -> bool:
    if run is not None:
        return _reap(proc, run)
    return proc.poll() is not None


def _signal_group(pgid: int, sig: int) -> None:
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def tail(path: Path, n_lines: int = 20) -> str:
    """The last ``n_lines`` lines of a text file ('' when it cannot be read)."""
    try:
        with open(path, errors="replace") as handle:
            return "".join(deque(handle, maxlen=n_lines)).rstrip()
    except OSError:
        return ""


class ProcessRun:
    """What :func:`run_and_follow` observed: exit code, wall time, peak memory, rows."""

    def __init__(self) -> None:
        self.returncode: int | None = None
        self.started = time.perf_counter()
        self.seconds = 0.0
        self.peak_rss_mb: float | None = None
        self.n_rows = 0


def run_and_follow(
    cmd: Sequence[str],
    *,
    cwd: Path | None,
    env: Mapping[str, str],
    log_path: Path,
    metrics_path: Path,
    on_row: Callable[[dict[str, Any]], None],
    poll_interval: float = 0.2,
    grace: float = 10.0,
    kind: str | None = None,
    run: ProcessRun | None = None,
    timeout: float | None = None,
) -> ProcessRun:
    """Run ``cmd`` in its own process group, passing each new metrics row to ``on_row``.

    stdout and stderr go to ``log_path``. If ``on_row`` raises (a prune, a NaN loss) or this
    thread is interrupted, the whole process group is terminated before the exception goes on.

    Args:
        timeout: Seconds the process may run; past them its group is stopped and
            :class:`TrialError` raised (a hung training would block the study for ever).
        run: Filled in as the process runs; pass one to still have it when an exception
            (a prune) leaves this function.

    Returns:
        The run's exit code, wall seconds and peak RSS (of the training process, where the
        platform reports it).
    """
    run = run if run is not None else ProcessRun()
    follower = MetricsFollower(metrics_path, kind)
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "ab") as log:
        started = run.started = time.perf_counter()
        proc = subprocess.Popen(
            list(cmd),
            cwd=cwd,
            env=dict(env),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=os.name == "posix",
            preexec_fn=_die_with_parent if sys.platform.startswith("linux") else None,
        )
        try:
            while True:
                finished = _reap(proc, run)
                # Read after the exit check, so rows written just before exiting are not lost.
                for row in follower.poll(final=finished):
                    run.n_rows += 1
                    on_row(row)
                if finished:
                    break
                if timeout is not None and time.perf_counter() - started > timeout:
                    raise TrialError(
                        f"ran past its time limit of {timeout:g} s (trainer.timeout) after "
                        f"{run.n_rows} epoch(s); stopped"
                    )
                time.sleep(poll_interval)
        except BaseException:
            terminate_process_group(proc, grace, run)
            raise
        finally:
            run.seconds = time.perf_counter() - started
        # Leftover children (e.g. dataloader workers of a crashed run) go with the group.
        if os.name == "posix":
            _signal_group(proc.pid, signal.SIGKILL)
    return run


def _die_with_parent() -> None:
    """In the child, before exec: SIGTERM it when the tuner's process dies, even by SIGKILL.

    Its own session keeps it out of the terminal's Ctrl-C (the tuner stops it itself), so
    without this a killed tuner would leave a training process running on the GPU. The
    spawning thread waits for the child, so the thread's end cannot trigger it early.
    """
    import ctypes

    pr_set_pdeathsig = 1
    ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, int(signal.SIGTERM))


def _reap(proc: subprocess.Popen, run: ProcessRun) -> bool:
    """Whether ``proc`` has exited; records exit code and peak RSS (from ``wait4``)."""
    if hasattr(os, "wait4"):
        if proc.returncode is not None:  # already reaped (by Popen.wait)
            run.returncode = proc.returncode
            return True
        try:
            pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
        except ChildProcessError:  # reaped elsewhere; the exit code is lost
            return True
        if pid == 0:
            return False
        proc.returncode = os.waitstatus_to_exitcode(status)
        run.returncode = proc.returncode
        # ru_maxrss is KiB on Linux, bytes on macOS.
        scale = 1 / 1024 if sys.platform != "darwin" else 1 / 2**20
        run.peak_rss_mb = round(usage.ru_maxrss * scale, 1)
        return True
    code = proc.poll()  # pragma: no cover - platforms without wait4
    run.returncode = code
    return code is not None


# -- offline set-up ---------------------------------------------------------------------------

FONT_NAMES = ("Arial.ttf", "Arial.Unicode.ttf")


def local_font() -> Path | None:
    """A TrueType font that exists on this machine (matplotlib's DejaVuSans, or a system one)."""
    spec = importlib.util.find_spec("matplotlib")
    candidates = []
    if spec is not None and spec.submodule_search_locations:
        for location in spec.submodule_search_locations:
            candidates.append(Path(location) / "mpl-data" / "fonts" / "ttf" / "DejaVuSans.ttf")
    candidates += [
        Path("/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf"),
        Path("/usr/share/fonts/dejavu/DejaVuSans.ttf"),
        Path("/Library/Fonts/Arial.ttf"),
        Path("C:/Windows/Fonts/arial.ttf"),
    ]
    for path in candidates:
        if path.is_file():
            return path
    return None


def provide_fonts(folder: Path) -> None:
    """Put ``Arial.ttf`` and ``Arial.Unicode.ttf`` into ``folder`` unless they are there.

    YOLOv5 and Ultralytics look for these in their config directory and download them when
    missing; any TrueType font under those names satisfies the check (it is only used to draw
    labels on plots).

    Raises:
        TrialError: No local font was found to copy.
    """
    folder.mkdir(parents=True, exist_ok=True)
    missing = [name for name in FONT_NAMES if not (folder / name).is_file()]
    if not missing:
        return
    source = local_font()
    if source is None:
        raise TrialError(
            f"no local TrueType font to copy into {folder} (YOLO would try to download "
            "Arial.ttf); install matplotlib or copy any .ttf there as Arial.ttf"
        )
    for name in missing:
        tmp = folder / f".{name}.{os.getpid()}.tmp"
        shutil.copyfile(source, tmp)
        os.replace(tmp, folder / name)  # atomic: parallel workers may do this at once


def offline_env(cache_dir: Path) -> dict[str, str]:
    """Environment variables that keep YOLOv5 / Ultralytics offline and out of ``$HOME``.

    Config directories go under ``cache_dir/yolo``; each already holds the fonts.
    """
    root = Path(cache_dir).absolute() / "yolo"
    env = {
        "YOLO_OFFLINE": "true",
        "YOLO_CONFIG_DIR": str(root / "ultralytics"),  # Ultralytics adds /Ultralytics
        "YOLOV5_CONFIG_DIR": str(root / "yolov5"),  # YOLOv5 uses it as it is
        "MPLCONFIGDIR": str(root / "matplotlib"),
    }
    provide_fonts(root / "ultralytics" / "Ultralytics")
    provide_fonts(root / "yolov5")
    (root / "matplotlib").mkdir(parents=True, exist_ok=True)
    return env


# -- model structure --------------------------------------------------------------------------


def yaml_modules(path: Path) -> list[tuple[int, str]] | None:
    """``(index, module type)`` of a YOLO model YAML (backbone then head), or None if unreadable.

    The index is what ``freeze N`` counts: ``freeze N`` freezes modules ``0..N-1``.
    """
    import yaml

    try:
        data = yaml.safe_load(Path(path).read_text())
        layers = list(data["backbone"]) + list(data["head"])
        return [(i, str(layer[2])) for i, layer in enumerate(layers)]
    except (OSError, KeyError, TypeError, IndexError, ValueError, yaml.YAMLError):
        return None


def module_table(modules: Sequence[tuple[int, str]], head_note: str = "") -> str:
    """A short text table of modules for ``describe()``."""
    lines = [f"  {i:>3}  {name}" for i, name in modules]
    if head_note:
        lines.append(head_note)
    return "\n".join(lines)


# -- settings validation ----------------------------------------------------------------------


class SettingsReader:
    """Reads one adapter's settings mapping, raising :class:`ConfigError` on the first problem.

    Args:
        raw: The settings as written.
        known: Every allowed key; anything else is an unknown setting.
    """

    def __init__(self, raw: Mapping[str, Any] | None, known: Iterable[str]) -> None:
        self.raw = dict(raw or {})
        self.raw.pop("adapter", None)
        known = list(known)
        for key in self.raw:
            if key not in known:
                raise ConfigError(str(key), f"unknown setting; expected one of {', '.join(known)}")

    def has(self, key: str) -> bool:
        """Whether the setting was given (and is not null)."""
        return self.raw.get(key) is not None

    def integer(self, key: str, default: int | None, minimum: int | None = None) -> int | None:
        """An integer setting (``minimum`` inclusive)."""
        value = self.raw.get(key, default)
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(key, f"must be an integer, got {value!r}")
        if minimum is not None and value < minimum:
            raise ConfigError(key, f"must be >= {minimum}, got {value}")
        return value

    def number(self, key: str, default: float, minimum: float | None = None) -> float:
        """A float setting."""
        value = self.raw.get(key, default)
        if isinstance(value, bool) or not isinstance(value, int | float) \
                or not math.isfinite(value):
            raise ConfigError(key, f"must be a number, got {value!r}")
        if minimum is not None and value < minimum:
            raise ConfigError(key, f"must be >= {minimum}, got {value}")
        return float(value)

    def seconds(self, key: str) -> float | None:
        """An optional positive number of seconds (None: no limit)."""
        if self.raw.get(key) is None:
            return None
        value = self.number(key, 0.0)
        if value <= 0:
            raise ConfigError(key, f"must be > 0 seconds (or null: no limit), got {value}")
        return value

    def boolean(self, key: str, default: bool) -> bool:
        """A true/false setting."""
        value = self.raw.get(key, default)
        if not isinstance(value, bool):
            raise ConfigError(key, f"must be true or false, got {value!r}")
        return value

    def string(self, key: str, default: str | None, *, allow_empty: bool = False,
               choices: Sequence[str] | None = None) -> str | None:
        """A string setting (numbers are taken as their text, e.g. ``device: 0``)."""
        value = self.raw.get(key, default)
        if value is None:
            return None
        if isinstance(value, int) and not isinstance(value, bool):
            value = str(value)
        if not isinstance(value, str) or (not value and not allow_empty):
            raise ConfigError(key, f"must be a {'' if allow_empty else 'non-empty '}string, "
                                   f"got {value!r}")
        if choices is not None and value not in choices:
            raise ConfigError(key, f"must be one of {', '.join(choices)}, got {value!r}")
        return value

    def path(self, key: str, default: str | None, *, words: Sequence[str] = ()) -> str | None:
        """A path made absolute against the current folder, or one of the special ``words``."""
        value = self.string(key, default, allow_empty=True)
        if value is None or value == "" or value in words:
            return value
        return str(Path(value).expanduser().absolute())

    def string_list(self, key: str, default: Sequence[str] | None) -> list[str] | None:
        """A list of strings."""
        value = self.raw.get(key, default)
        if value is None:
            return None
        if not isinstance(value, list | tuple) or not all(isinstance(v, str) for v in value):
            raise ConfigError(key, f"must be a list of strings, got {value!r}")
        return list(value)

    def mapping(self, key: str) -> dict[str, Any]:
        """A mapping with string keys ({} when absent)."""
        value = self.raw.get(key) or {}
        if not isinstance(value, Mapping) or not all(isinstance(k, str) for k in value):
            raise ConfigError(key, f"must be a mapping with string keys, got {value!r}")
        return dict(value)


def synthetic_spec(reader: SettingsReader, imgsz: int) -> dict[str, int]:
    """The ``synthetic`` settings section (used when ``data: synthetic``), defaults filled in."""
    raw = reader.mapping("synthetic")
    allowed = {"n_train": 64, "n_val": 16, "seed": 0, "n_classes": 3}
    out = {}
    for key, default in allowed.items():
        value = raw.pop(key, default)
        if isinstance(value, bool) or not isinstance(value, int) or value < (0 if key == "seed"
                                                                               else 1):
            raise ConfigError(f"synthetic.{key}", f"must be a positive integer, got {value!r}")
        out[key] = value
    if raw:
        raise ConfigError(f"synthetic.{next(iter(raw))}",
                          f"unknown setting; expected one of {', '.join(allowed)}")
    if out["n_classes"] > 3:
        raise ConfigError("synthetic.n_classes", f"must be 1..3, got {out['n_classes']}")
    out["imgsz"] = imgsz
    return out


def synthetic_data(cache_dir: Path, spec: Mapping[str, int]) -> Path:
    """Generate (once) the synthetic detection set under ``cache_dir`` and return its data YAML."""
    from trainer.detection_data import GENERATOR_VERSION, DetectionSpec, generate

    folder = (
        Path(cache_dir).absolute() / "detection"
        / (f"v{GENERATOR_VERSION}-{spec['n_train']}-{spec['n_val']}-{spec['imgsz']}px"
           f"-c{spec['n_classes']}-s{spec['seed']}")
    )
    return generate(folder, DetectionSpec(n_train=spec["n_train"], n_val=spec["n_val"],
                                          imgsz=max(32, spec["imgsz"]), seed=spec["seed"],
                                          n_classes=spec["n_classes"]))
