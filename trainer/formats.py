"""Hyp file formats that training pipelines take as they are.

A format turns a trial's full hyp mapping (and the adapter settings it trained with) into the
mapping to write and a few header lines (for example the exact command that uses the file).
The search side adds its own header (study, trial, metric) and writes the file atomically.
"""

from __future__ import annotations

import shlex
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from trainer.base import FREEZE_KEYS
from trainer.yolo_common import FREEZE_DEFAULTS, ULTRALYTICS_HYP, yolov5_hyp_file

Rendered = tuple[dict[str, Any], list[str]]


@dataclass(frozen=True)
class ExportFormat:
    """A named hyp file layout.

    Attributes:
        name: Registry name (``tuner export --format NAME``).
        description: One line for ``--help``.
        render: ``(hyp, settings) -> (mapping to write, header lines)``.
    """

    name: str
    description: str
    render: Callable[[Mapping[str, Any], Mapping[str, Any]], Rendered]


def _generic(hyp: Mapping[str, Any], settings: Mapping[str, Any]) -> Rendered:
    # Plain hyp keys first, then the freeze strategy, so the file reads like a YOLO hyp file.
    plain = {k: v for k, v in hyp.items() if k not in FREEZE_KEYS}
    strategy = {k: hyp[k] for k in FREEZE_KEYS if k in hyp}
    return {**plain, **strategy}, []


def _strategy_notes(hyp: Mapping[str, Any], pipeline: str) -> list[str]:
    # Freeze-strategy keys a pipeline cannot take are named, so nothing is dropped silently.
    notes = []
    for key in ("lr_decay", "unfreeze_epoch"):
        if key in hyp and hyp[key] != FREEZE_DEFAULTS[key]:
            notes.append(f"note: the trial trained with {key}={hyp[key]}, but {pipeline} has "
                         "no such option, so it is not in this file")
    return notes


def _synthetic_note(data: str) -> list[str]:
    if data != "synthetic":
        return []
    return ["note: data 'synthetic' is the tuner's generated set; write it with "
            "`python -m trainer.detection_data DIR --imgsz N` and use DIR/data.yaml"]


def _yolov5(hyp: Mapping[str, Any], settings: Mapping[str, Any]) -> Rendered:
    """Every key YOLOv5's train.py reads, plus the exact command line in the header."""
    own = settings.get("adapter") == "yolov5"  # other adapters' settings mean other things
    data = str(settings.get("data") or "DATA.yaml") if own else "DATA.yaml"
    weights = str(settings.get("weights", "yolov5s.pt")) if own else "yolov5s.pt"
    cmd = [
        "python", "train.py", "--data", data, "--weights", weights,
        "--img", str(settings.get("imgsz", 640) if own else 640),
        "--hyp", "best_hyp.yaml", "--freeze", str(int(hyp.get("freeze", 0))),
        "--epochs", str(settings.get("epochs", 300) if own else 300),
    ]
    if own and settings.get("cfg"):
        cmd += ["--cfg", str(settings["cfg"])]
    header = [f"use with (from your YOLOv5 checkout): {shlex.join(cmd)}"]
    header += _strategy_notes(hyp, "YOLOv5 train.py") + _synthetic_note(data)
    return yolov5_hyp_file(hyp), header


def _ultralytics(hyp: Mapping[str, Any], settings: Mapping[str, Any]) -> Rendered:
    """A cfg YAML for ``yolo train cfg=best_hyp.yaml``: model, data, sizes, freeze, hyp keys."""
    own = settings.get("adapter") == "ultralytics"
    out: dict[str, Any] = {
        "model": str(settings.get("model") or "yolov8n.yaml") if own else "yolov8n.yaml",
        "data": str(settings.get("data") or "DATA.yaml") if own else "DATA.yaml",
    }
    if own:
        for key in ("epochs", "imgsz", "batch", "optimizer"):
            if settings.get(key) is not None:
                out[key] = settings[key]
    else:
        out["optimizer"] = "SGD"  # 'auto' would ignore lr0 and momentum
    out["freeze"] = int(hyp.get("freeze", 0))
    for key, value in hyp.items():
        # Another adapter's keys (YOLOv5's obj, anchor_t...) are no Ultralytics arguments.
        if key not in FREEZE_KEYS and (own or key in ULTRALYTICS_HYP):
            out[key] = value
    if own:
        out.update(settings.get("train_args") or {})
    header = ["use with: yolo train cfg=best_hyp.yaml  "
              "(or YOLO(model).train(cfg='best_hyp.yaml'))"]
    header += _strategy_notes(hyp, "`yolo train`") + _synthetic_note(out["data"])
    return out, header


FORMATS: dict[str, ExportFormat] = {
    "generic": ExportFormat("generic", "flat hyp keys plus the freeze-strategy keys", _generic),
    "yolov5": ExportFormat(
        "yolov5", "YOLOv5 train.py --hyp file (every key it reads) + the --freeze command",
        _yolov5,
    ),
    "ultralytics": ExportFormat(
        "ultralytics", "Ultralytics cfg YAML for `yolo train cfg=...` (includes freeze)",
        _ultralytics,
    ),
}


def register_format(fmt: ExportFormat) -> None:
    """Add a format to the registry."""
    FORMATS[fmt.name] = fmt
