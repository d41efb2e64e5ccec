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


def _freeze_note(hyp: Mapping[str, Any], settings: Mapping[str, Any]) -> list[str]:
    """A freeze index from another kind of model means other layers in a YOLO pipeline."""
    adapter, freeze = settings.get("adapter"), hyp.get("freeze", 0)
    if adapter in ("yolov5", "ultralytics") or not freeze:
        return []
    model = f" of {settings['model']}" if settings.get("model") else ""
    return [f"note: freeze={freeze} counted the {adapter} study's blocks{model}; YOLO counts "
            "model modules (YOLOv5s: 10 = the backbone, 24 = all but Detect): set it for "
            "your model"]


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


def _epochs_note(settings: Mapping[str, Any], what: str, how: str) -> list[str]:
    """Why the file and its command leave the length out: a trial's epochs are the search's
    budget per trial (2, 30), not a training length, and carried over they would train the
    pick that short."""
    epochs = settings.get("epochs")
    trained = f"the trials trained {epochs} epochs each" if epochs else "trials are short"
    return [f"note: no {what}: {trained}, a search budget rather than a training length; "
            f"{how}"]


def _canonical(name: Any, choices: tuple[str, ...]) -> str | None:
    """``name`` spelled as in ``choices`` (Ultralytics takes optimizer names in any case)."""
    return {c.lower(): c for c in choices}.get(str(name).lower())


def _yolov5_optimiser(hyp: Mapping[str, Any]) -> tuple[list[str], list[str]]:
    """train.py flags for the optimiser keys a trial trained with, and notes for the rest.

    ``hyp`` holds any of ``optimizer``, ``nesterov``, ``cos_lr`` and ``label_smoothing`` (the
    built-in trainer's hyp keys, or an Ultralytics study's setting and train arguments).
    """
    flags: list[str] = []
    notes: list[str] = []
    optimizer = hyp.get("optimizer", "SGD")
    name = _canonical(optimizer, YOLOV5_OPTIMIZERS)
    if name is not None:
        if name != "SGD":
            flags += ["--optimizer", name]
    elif str(optimizer).lower() == "auto":
        notes.append("note: the trials trained with Ultralytics' optimizer=auto (SGD, MuSGD or "
                     "AdamW by the run's length, with its own lr0 and momentum), which YOLOv5 "
                     "train.py does not have: it trains SGD")
    else:
        notes.append(f"note: the trial trained with optimizer={optimizer}, which YOLOv5 "
                     f"train.py does not have ({', '.join(YOLOV5_OPTIMIZERS)}): it trains SGD")
    if hyp.get("cos_lr"):
        flags.append("--cos-lr")
    if hyp.get("label_smoothing"):
        flags += ["--label-smoothing", str(hyp["label_smoothing"])]
    if name == "SGD" and hyp.get("nesterov") is False:
        notes.append("note: the trial trained SGD without Nesterov momentum; YOLOv5's SGD "
                     "always uses it")
    return flags, notes


def _ultralytics_study_optimiser(
    hyp: Mapping[str, Any], settings: Mapping[str, Any]
) -> tuple[dict[str, Any], list[str]]:
    """The optimiser an Ultralytics study's trials trained with, and its train_args that have
    no train.py flag (named in a note, not dropped silently).

    The adapter's ``optimizer`` setting, then ``cos_lr`` / ``label_smoothing`` from its
    ``train_args`` or the base hyp (the base wins: the adapter applies it last).
    """
    train_args = dict(settings.get("train_args") or {})
    out: dict[str, Any] = {"optimizer": settings.get("optimizer") or "SGD"}
    for key in ("cos_lr", "label_smoothing"):
        value = hyp.get(key, train_args.pop(key, None))
        train_args.pop(key, None)
        if value is not None:
            out[key] = value
    notes = []
    if train_args:
        names = ", ".join(f"{k}={v}" for k, v in train_args.items())
        notes.append(f"note: the trials' Ultralytics train_args {names} are not carried: "
                     "YOLOv5 train.py has no such flags here")
    return out, notes


def _yolov5_extra_optimiser(extra_args: Any) -> tuple[dict[str, Any], list[str]]:
    """The optimiser keys in a YOLOv5 study's ``extra_args`` (``--optimizer AdamW``,
    ``--cos-lr``, ``--label-smoothing 0.1``, also ``--flag=value``), and the arguments left."""
    args = [str(a) for a in extra_args or ()]
    out: dict[str, Any] = {}
    rest: list[str] = []
    i = 0
    while i < len(args):
        start = i
        flag, eq, value = args[i].partition("=")
        if flag in ("--optimizer", "--label-smoothing"):
            if not eq and i + 1 < len(args):
                value, i = args[i + 1], i + 1
            key = flag.lstrip("-").replace("-", "_")
            try:
                out[key] = float(value) if key == "label_smoothing" else value
            except ValueError:  # train.py would refuse it too; name it with the rest
                rest += args[start:i + 1]
        elif flag == "--cos-lr":
            out["cos_lr"] = True
        else:
            rest.append(args[i])
        i += 1
    return out, rest


def _yolov5(hyp: Mapping[str, Any], settings: Mapping[str, Any], filename: str) -> Rendered:
    """Every key YOLOv5's train.py reads, plus the command line in the header.

    From a YOLOv5 study the command is the trials' own (data, weights, image size, batch size,
    model cfg, extra arguments such as ``--optimizer AdamW``), less the trial's output folder,
    device, seed and length; from another adapter's study it has placeholders for what only
    that study's user knows, and the optimiser the trials trained with (the built-in trainer's
    hyp keys, an Ultralytics study's ``optimizer`` setting, ``cos_lr`` and
    ``label_smoothing``) becomes flags where train.py has them, a ``note:`` line where not.
    ``--epochs`` is left out (a note says why): the trials' length is the search's budget.
    """
    adapter = settings.get("adapter")
    own = adapter == "yolov5"  # other adapters' settings mean other things
    data = str(settings.get("data") or "DATA.yaml") if own else "DATA.yaml"
    weights = str(settings.get("weights", "yolov5s.pt")) if own else "yolov5s.pt"
    notes: list[str] = []
    optimiser: dict[str, Any] = {}
    if adapter == "ultralytics":
        notes += _gain_notes(hyp, "Ultralytics", "YOLOv5")
        optimiser, arg_notes = _ultralytics_study_optimiser(hyp, settings)
        notes += arg_notes
        # Ultralytics-only keys (dfl, close_mosaic, its own train arguments) and its gains
        hyp = {k: v for k, v in hyp.items()
               if (k in YOLOV5_HYP and k not in LOSS_GAINS) or k in FREEZE_KEYS}
    elif not own:
        optimiser = {k: hyp[k] for k in OPTIMISER_KEYS if k in hyp}
        hyp = {k: v for k, v in hyp.items() if k not in OPTIMISER_KEYS}
    cmd = [
        "python", "train.py", "--data", data, "--weights", weights,
        "--img", str(settings.get("imgsz", 640) if own else 640),
        "--hyp", filename, "--freeze", str(int(hyp.get("freeze", 0))),
    ]
    if own:
        if settings.get("batch") is not None:
            cmd += ["--batch-size", str(settings["batch"])]
        if settings.get("cfg"):
            cmd += ["--cfg", str(settings["cfg"])]
        cmd += [str(arg) for arg in settings.get("extra_args") or ()]
    elif optimiser:
        flags, optimiser_notes = _yolov5_optimiser(optimiser)
        cmd += flags
        notes += optimiser_notes
    header = [f"use with (from your YOLOv5 checkout): {shlex.join(cmd)}"]
    header += _epochs_note(settings, "--epochs in the command",
                           "add --epochs N (train.py alone trains its default length)")
    header += _strategy_notes(hyp, "YOLOv5 train.py") + _freeze_note(hyp, settings) + notes
    header += _synthetic_note(data)
    return yolov5_hyp_file(hyp), header


def _ultralytics(hyp: Mapping[str, Any], settings: Mapping[str, Any], filename: str) -> Rendered:
    """A cfg YAML for ``yolo train cfg=FILE``: model, data, image and batch size, optimiser,
    freeze, hyp keys.

    ``epochs`` is left out (a note says why): the trials' length is the search's budget, and
    ``yolo train`` would train the pick that short. The optimiser the trials trained with
    comes from an Ultralytics study's settings, a YOLOv5 study's ``extra_args``
    (``--optimizer``, ``--cos-lr``; ``--label-smoothing`` has no Ultralytics argument and is
    named in a note) or the built-in trainer's hyp keys.
    """
    adapter = settings.get("adapter")
    own = adapter == "ultralytics"
    out: dict[str, Any] = {
        "model": str(settings.get("model") or "yolov8n.yaml") if own else "yolov8n.yaml",
        "data": str(settings.get("data") or "DATA.yaml") if own else "DATA.yaml",
    }
    notes: list[str] = []
    if own:
        for key in ("imgsz", "batch", "optimizer"):
            if settings.get(key) is not None:
                out[key] = settings[key]
    else:
        trained = dict(hyp)
        if adapter == "yolov5":
            trained, rest = _yolov5_extra_optimiser(settings.get("extra_args"))
            if rest:
                notes.append(f"note: the trials' extra_args {shlex.join(rest)} are not "
                             "carried: `yolo train` has no such arguments here")
        # the trial's optimiser when Ultralytics has it; 'auto' would ignore lr0 and momentum
        optimizer = trained.get("optimizer", "SGD")
        name = _canonical(optimizer, ULTRALYTICS_OPTIMIZERS)
        if name is None:
            notes.append(f"note: the trial trained with optimizer={optimizer}, which "
                         "Ultralytics does not have; SGD here")
            name = "SGD"
        out["optimizer"] = name
        if trained.get("cos_lr"):
            out["cos_lr"] = True
        if trained.get("label_smoothing"):
            notes.append(f"note: the trial trained with label_smoothing="
                         f"{trained['label_smoothing']}, which `yolo train` has no argument for")
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
    close_mosaic, default = out.get("close_mosaic"), ULTRALYTICS_HYP["close_mosaic"]
    if close_mosaic is not None and close_mosaic != default:
        # often set for the trials' length (close_mosaic >= epochs would switch a searched
        # mosaic off from their first epoch), not for the full run's
        notes.append(f"note: close_mosaic={close_mosaic} is kept as the trials trained; for "
                     f"the full length Ultralytics' default is {default} (mosaic, mixup, "
                     f"copy_paste and cutmix off for the last {default} epochs): drop the key "
                     f"or add close_mosaic={default} to the command to have it")
    header = [f"use with: yolo train cfg={filename}  (or YOLO(model).train(cfg='{filename}'))"]
    header += _epochs_note(settings, "epochs in this file",
                           "add epochs=N to the command (`yolo train` alone trains its "
                           "default, 100)")
    header += _strategy_notes(hyp, "`yolo train`") + _freeze_note(hyp, settings) + notes
    header += _synthetic_note(out["data"])
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
