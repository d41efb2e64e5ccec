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
from trainer.yolo_common import FREEZE_DEFAULTS, ULTRALYTICS_HYP, YOLOV5_HYP, yolov5_hyp_file

Rendered = tuple[dict[str, Any], list[str]]


@dataclass(frozen=True)
class ExportFormat:
    """A named hyp file layout.

    Attributes:
        name: Registry name (``tuner export --format NAME``).
        description: One line for ``--help``.
        render: ``(hyp, settings, filename) -> (mapping to write, header lines)``; ``filename``
            is the name the file is written under, for the command lines in the header.
    """

    name: str
    description: str
    render: Callable[[Mapping[str, Any], Mapping[str, Any], str], Rendered]


# Loss gains are each pipeline's own scale (Ultralytics' box 7.5 plays the part of YOLOv5's
# 0.05), so a study of one YOLO pipeline does not hand them to the other.
LOSS_GAINS = frozenset({"box", "cls", "cls_pw", "obj", "obj_pw", "dfl", "fl_gamma"})
# The optimiser keys of the built-in trainer's hyps; YOLO pipelines take them as arguments.
OPTIMISER_KEYS = ("optimizer", "nesterov", "cos_lr", "label_smoothing")
YOLOV5_OPTIMIZERS = ("SGD", "Adam", "AdamW")
ULTRALYTICS_OPTIMIZERS = ("SGD", "Adam", "Adamax", "AdamW", "NAdam", "RAdam", "RMSProp")


def _generic(hyp: Mapping[str, Any], settings: Mapping[str, Any], filename: str) -> Rendered:
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


def _gain_notes(hyp: Mapping[str, Any], study_pipeline: str, pipeline: str) -> list[str]:
    gains = sorted(k for k in hyp if k in LOSS_GAINS)
    if not gains:
        return []
    return [f"note: {', '.join(gains)} are {study_pipeline}'s loss gains, on another scale "
            f"than {pipeline}'s, so this file keeps {pipeline}'s defaults for them"]


def _synthetic_note(data: str) -> list[str]:
    if data != "synthetic":
        return []
    return ["note: data 'synthetic' is the tuner's generated set; write it with "
            "`python -m trainer.detection_data DIR --imgsz N` and use DIR/data.yaml"]


def _yolov5_optimiser(hyp: Mapping[str, Any]) -> tuple[list[str], list[str]]:
    """train.py flags for the built-in trainer's optimiser keys, and notes for the rest."""
    flags: list[str] = []
    notes: list[str] = []
    optimizer = hyp.get("optimizer", "SGD")
    if optimizer in YOLOV5_OPTIMIZERS:
        if optimizer != "SGD":
            flags += ["--optimizer", str(optimizer)]
    else:
        notes.append(f"note: the trial trained with optimizer={optimizer}, which YOLOv5 "
                     f"train.py does not have ({', '.join(YOLOV5_OPTIMIZERS)})")
    if hyp.get("cos_lr"):
        flags.append("--cos-lr")
    if hyp.get("label_smoothing"):
        flags += ["--label-smoothing", str(hyp["label_smoothing"])]
    if optimizer == "SGD" and hyp.get("nesterov") is False:
        notes.append("note: the trial trained SGD without Nesterov momentum; YOLOv5's SGD "
                     "always uses it")
    return flags, notes


def _yolov5(hyp: Mapping[str, Any], settings: Mapping[str, Any], filename: str) -> Rendered:
    """Every key YOLOv5's train.py reads, plus the command line in the header.

    From a YOLOv5 study the command is the trials' own (data, weights, image size, batch size,
    model cfg, extra arguments such as ``--optimizer AdamW``), less the trial's output folder,
    device and seed; from another adapter's study it has placeholders for what only that
    study's user knows, and the built-in trainer's optimiser keys become flags.
    """
    adapter = settings.get("adapter")
    own = adapter == "yolov5"  # other adapters' settings mean other things
    data = str(settings.get("data") or "DATA.yaml") if own else "DATA.yaml"
    weights = str(settings.get("weights", "yolov5s.pt")) if own else "yolov5s.pt"
    notes: list[str] = []
    if adapter == "ultralytics":
        notes += _gain_notes(hyp, "Ultralytics", "YOLOv5")
        # Ultralytics-only keys (dfl, close_mosaic, its own train arguments) and its gains
        hyp = {k: v for k, v in hyp.items()
               if (k in YOLOV5_HYP and k not in LOSS_GAINS) or k in FREEZE_KEYS}
    cmd = [
        "python", "train.py", "--data", data, "--weights", weights,
        "--img", str(settings.get("imgsz", 640) if own else 640),
        "--hyp", filename, "--freeze", str(int(hyp.get("freeze", 0))),
        "--epochs", str(settings.get("epochs", 300) if own else 300),
    ]
    if own:
        if settings.get("batch") is not None:
            cmd += ["--batch-size", str(settings["batch"])]
        if settings.get("cfg"):
            cmd += ["--cfg", str(settings["cfg"])]
        cmd += [str(arg) for arg in settings.get("extra_args") or ()]
    elif any(key in hyp for key in OPTIMISER_KEYS):
        flags, optimiser_notes = _yolov5_optimiser(hyp)
        cmd += flags
        notes += optimiser_notes
        hyp = {k: v for k, v in hyp.items() if k not in OPTIMISER_KEYS}
    header = [f"use with (from your YOLOv5 checkout): {shlex.join(cmd)}"]
    header += _strategy_notes(hyp, "YOLOv5 train.py") + notes + _synthetic_note(data)
    return yolov5_hyp_file(hyp), header


def _ultralytics(hyp: Mapping[str, Any], settings: Mapping[str, Any], filename: str) -> Rendered:
    """A cfg YAML for ``yolo train cfg=FILE``: model, data, sizes, freeze, hyp keys."""
    adapter = settings.get("adapter")
    own = adapter == "ultralytics"
    out: dict[str, Any] = {
        "model": str(settings.get("model") or "yolov8n.yaml") if own else "yolov8n.yaml",
        "data": str(settings.get("data") or "DATA.yaml") if own else "DATA.yaml",
    }
    notes: list[str] = []
    if own:
        for key in ("epochs", "imgsz", "batch", "optimizer"):
            if settings.get(key) is not None:
                out[key] = settings[key]
    else:
        # the trial's optimiser when Ultralytics has it; 'auto' would ignore lr0 and momentum
        optimizer = hyp.get("optimizer", "SGD")
        if optimizer not in ULTRALYTICS_OPTIMIZERS:
            notes.append(f"note: the trial trained with optimizer={optimizer}, which "
                         "Ultralytics does not have; SGD here")
            optimizer = "SGD"
        out["optimizer"] = optimizer
        if hyp.get("cos_lr"):
            out["cos_lr"] = True
        if hyp.get("label_smoothing"):
            notes.append(f"note: the trial trained with label_smoothing="
                         f"{hyp['label_smoothing']}, which `yolo train` has no argument for")
    out["freeze"] = int(hyp.get("freeze", 0))
    foreign_gains = adapter == "yolov5"
    if foreign_gains:
        notes += _gain_notes(hyp, "YOLOv5", "Ultralytics")
    for key, value in hyp.items():
        # Another adapter's keys (YOLOv5's obj, anchor_t...) are no Ultralytics arguments.
        if key in FREEZE_KEYS or (foreign_gains and key in LOSS_GAINS):
            continue
        if own or key in ULTRALYTICS_HYP:
            out[key] = value
    if own:
        out.update(settings.get("train_args") or {})
    header = [f"use with: yolo train cfg={filename}  (or YOLO(model).train(cfg='{filename}'))"]
    header += _strategy_notes(hyp, "`yolo train`") + notes + _synthetic_note(out["data"])
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
