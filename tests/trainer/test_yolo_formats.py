"""The yolov5 and ultralytics export formats."""

from __future__ import annotations

import importlib.util
import shlex
from pathlib import Path

import optuna
import pytest
import yaml

from trainer.formats import FORMATS
from trainer.ultralytics import UltralyticsAdapter
from trainer.yolo_common import ULTRALYTICS_HYP, YOLOV5_HYP
from trainer.yolov5 import YoloV5Adapter

ROOT = Path(__file__).resolve().parents[2]
# The key set of YOLOv5's data/hyps/hyp.scratch-low.yaml (checked against the real file).
SCRATCH_LOW_KEYS = [
    "lr0", "lrf", "momentum", "weight_decay", "warmup_epochs", "warmup_momentum",
    "warmup_bias_lr", "box", "cls", "cls_pw", "obj", "obj_pw", "iou_t", "anchor_t", "fl_gamma",
    "hsv_h", "hsv_s", "hsv_v", "degrees", "translate", "scale", "shear", "perspective", "flipud",
    "fliplr", "mosaic", "mixup", "copy_paste",
]


@pytest.fixture(scope="module")
def ultralytics_cfg(tmp_path_factory):
    """Ultralytics' cfg module, imported through the adapter (config dir not in $HOME)."""
    if importlib.util.find_spec("ultralytics") is None:
        pytest.skip("ultralytics is not installed")
    from trainer.ultralytics import import_ultralytics

    import_ultralytics(tmp_path_factory.mktemp("yolo-cache"))
    import ultralytics.cfg

    return ultralytics.cfg


def yolov5_settings(tmp_path) -> dict:
    adapter = YoloV5Adapter({"yolov5_dir": str(tmp_path / "yolov5"), "data": "/data/VOC.yaml",
                             "weights": "/w/yolov5s.pt", "imgsz": 512, "epochs": 50},
                            tmp_path / "cache")
    return {"adapter": "yolov5", **adapter.settings_dict()}


def test_yolov5_format_holds_every_scratch_low_key(tmp_path):
    assert list(YOLOV5_HYP) == SCRATCH_LOW_KEYS
    hyp = {"lr0": 0.005, "momentum": 0.9, "freeze": 10, "lr_decay": 1.0, "unfreeze_epoch": 0}
    mapping, header = FORMATS["yolov5"].render(hyp, yolov5_settings(tmp_path), "best_hyp.yaml")
    assert list(mapping) == SCRATCH_LOW_KEYS
    assert mapping["lr0"] == 0.005 and mapping["obj"] == 1.0 and mapping["anchor_t"] == 4.0
    # no --epochs: the trials' 50 are the search's budget per trial, not the run to train
    assert header[0].endswith(
        "python train.py --data /data/VOC.yaml --weights /w/yolov5s.pt --img 512 "
        "--hyp best_hyp.yaml --freeze 10 --batch-size 16"
    )
    notes = [line for line in header if line.startswith("note:")]
    assert notes == ["note: no --epochs in the command: the trials trained 50 epochs each, a "
                     "search budget rather than a training length; add --epochs N (train.py "
                     "alone trains its default length)"]


def test_yolov5_format_command_is_the_trials_own(tmp_path):
    """Batch size, model cfg and extra arguments (the optimiser the hyps were tuned for) are
    in the header's command; the trial's output folder, device and seed are not."""
    adapter = YoloV5Adapter(
        {"yolov5_dir": str(tmp_path / "yolov5"), "data": "/d.yaml", "batch": 64, "seed": 3,
         "cfg": "models/yolov5n.yaml", "extra_args": ["--optimizer", "AdamW", "--cos-lr"]},
        tmp_path / "cache",
    )
    settings = {"adapter": "yolov5", **adapter.settings_dict()}
    _, header = FORMATS["yolov5"].render({"freeze": 10}, settings, "fast_hyp.yaml")
    argv = shlex.split(header[0].split(": ", 1)[1])
    assert argv[argv.index("--hyp") + 1] == "fast_hyp.yaml"  # the file as written
    assert argv[argv.index("--batch-size") + 1] == "64"
    assert argv[argv.index("--cfg") + 1] == "models/yolov5n.yaml"
    assert argv[-3:] == ["--optimizer", "AdamW", "--cos-lr"]
    assert not {"--project", "--name", "--device", "--seed"} & set(argv)


def test_yolov5_format_names_what_train_py_cannot_take(tmp_path):
    hyp = {**YOLOV5_HYP, "freeze": 3, "lr_decay": 0.7, "anchors": 3.0}
    mapping, header = FORMATS["yolov5"].render(hyp, {"adapter": "command", "data": "x"}, "h.yaml")
    assert "lr_decay" not in mapping and mapping["anchors"] == 3.0  # base extras pass through
    assert any("lr_decay=0.7" in line for line in header)
    assert "--data DATA.yaml --weights yolov5s.pt" in header[0]  # another adapter's settings


def test_yolov5_format_from_a_built_in_trainer_study_maps_its_optimiser():
    hyp = {"lr0": 0.003, "optimizer": "AdamW", "nesterov": True, "cos_lr": True,
           "label_smoothing": 0.1, "freeze": 2}
    mapping, header = FORMATS["yolov5"].render(hyp, {"adapter": "torchvision"}, "h.yaml")
    argv = shlex.split(header[0].split(": ", 1)[1])
    assert argv[argv.index("--optimizer") + 1] == "AdamW" and "--cos-lr" in argv
    assert argv[argv.index("--label-smoothing") + 1] == "0.1"
    assert list(mapping) == SCRATCH_LOW_KEYS  # the flags' keys are not left in the hyp file
    _, header = FORMATS["yolov5"].render({**hyp, "optimizer": "RMSprop"},
                                         {"adapter": "torchvision"}, "h.yaml")
    assert "--optimizer" not in header[0]
    assert any("optimizer=RMSprop" in line for line in header)
    # freeze 2 counted ResNet blocks; in YOLO it would freeze modules 0-1: said, in both formats
    for fmt in ("yolov5", "ultralytics"):
        _, header = FORMATS[fmt].render(hyp, {"adapter": "torchvision", "model": "resnet18"},
                                        "h.yaml")
        assert any(line.startswith("note: freeze=2 counted the torchvision study's blocks of "
                                   "resnet18; YOLO counts model modules") for line in header)
    _, header = FORMATS["yolov5"].render({**ULTRALYTICS_HYP, "freeze": 10},
                                         {"adapter": "ultralytics"}, "h.yaml")
    assert not any("counted the" in line for line in header)  # both count YOLO modules


def test_an_ultralytics_study_keeps_its_optimiser_in_the_yolov5_command():
    """lr0 tuned under AdamW must not land in a train.py command without --optimizer (SGD)."""
    settings = {"adapter": "ultralytics", "optimizer": "AdamW", "epochs": 2,
                "train_args": {"cos_lr": True, "nbs": 16}}
    hyp = {**ULTRALYTICS_HYP, "lr0": 0.002, "label_smoothing": 0.1, "freeze": 10}
    mapping, header = FORMATS["yolov5"].render(hyp, settings, "h.yaml")
    argv = shlex.split(header[0].split(": ", 1)[1])
    assert argv[argv.index("--optimizer") + 1] == "AdamW" and "--cos-lr" in argv
    assert argv[argv.index("--label-smoothing") + 1] == "0.1"
    assert "--epochs" not in argv
    assert list(mapping) == SCRATCH_LOW_KEYS and mapping["lr0"] == 0.002
    # what train.py has no flag for is named, not dropped silently
    assert any(line.startswith("note:") and "train_args nbs=16 are not carried" in line
               for line in header)
    # case as Ultralytics takes it; SGD is train.py's default (no flag)
    _, header = FORMATS["yolov5"].render(hyp, {**settings, "optimizer": "adamw"}, "h.yaml")
    assert "--optimizer AdamW" in header[0]
    _, header = FORMATS["yolov5"].render(hyp, {**settings, "optimizer": "SGD"}, "h.yaml")
    assert "--optimizer" not in header[0]
    for optimizer, named in (("auto", "optimizer=auto"), ("RMSProp", "optimizer=RMSProp")):
        _, header = FORMATS["yolov5"].render(hyp, {**settings, "optimizer": optimizer}, "h.yaml")
        assert "--optimizer" not in header[0]
        assert any(line.startswith("note:") and named in line and "it trains SGD" in line
                   for line in header)


def test_a_yolov5_study_keeps_its_optimiser_in_the_ultralytics_cfg(tmp_path, ultralytics_cfg):
    adapter = YoloV5Adapter(
        {"yolov5_dir": str(tmp_path / "yolov5"), "data": "/d.yaml", "epochs": 30,
         "extra_args": ["--optimizer", "AdamW", "--cos-lr", "--label-smoothing=0.1", "--rect"]},
        tmp_path / "cache",
    )
    settings = {"adapter": "yolov5", **adapter.settings_dict()}
    mapping, header = FORMATS["ultralytics"].render({**YOLOV5_HYP, "freeze": 10}, settings,
                                                    "h.yaml")
    assert mapping["optimizer"] == "AdamW" and mapping["cos_lr"] is True
    notes = [line for line in header if line.startswith("note:")]
    assert any("label_smoothing=0.1" in line and "no argument" in line for line in notes)
    assert any("extra_args --rect are not carried" in line for line in notes)
    cfg = ultralytics_cfg.get_cfg(ultralytics_cfg.DEFAULT_CFG_DICT, mapping)
    assert cfg.optimizer == "AdamW" and cfg.cos_lr is True
    # without the flag, train.py's SGD
    plain = {**settings, "extra_args": []}
    mapping, _ = FORMATS["ultralytics"].render({**YOLOV5_HYP, "freeze": 10}, plain, "h.yaml")
    assert mapping["optimizer"] == "SGD" and "cos_lr" not in mapping


def test_loss_gains_do_not_cross_between_yolo_pipelines(ultralytics_cfg):
    """Ultralytics' box 7.5 is YOLOv5's 0.05 in effect: neither is handed to the other."""
    ultra = {**ULTRALYTICS_HYP, "box": 9.0, "lr0": 0.002, "freeze": 10}
    mapping, header = FORMATS["yolov5"].render(ultra, {"adapter": "ultralytics"}, "h.yaml")
    assert list(mapping) == SCRATCH_LOW_KEYS  # no dfl, no close_mosaic
    assert mapping["box"] == YOLOV5_HYP["box"] and mapping["lr0"] == 0.002
    assert any("box, cls, dfl are Ultralytics's loss gains" in line for line in header)
    v5 = {**YOLOV5_HYP, "box": 0.07, "freeze": 10}
    mapping, header = FORMATS["ultralytics"].render(v5, {"adapter": "yolov5"}, "h.yaml")
    assert not {"box", "cls", "obj", "dfl"} & set(mapping)
    assert any("are YOLOv5's loss gains" in line for line in header)
    cfg = ultralytics_cfg.get_cfg(ultralytics_cfg.DEFAULT_CFG_DICT, mapping)
    assert cfg.box == ULTRALYTICS_HYP["box"]


def test_ultralytics_format_passes_ultralytics_cfg_check(tmp_path, ultralytics_cfg):
    defaults, get_cfg = ultralytics_cfg.DEFAULT_CFG_DICT, ultralytics_cfg.get_cfg

    adapter = UltralyticsAdapter({"data": str(tmp_path / "d.yaml"), "epochs": 7, "imgsz": 96,
                                  "train_args": {"cos_lr": True}}, tmp_path / "cache")
    settings = {"adapter": "ultralytics", **adapter.settings_dict()}
    hyp = {**adapter.default_hyp(), "freeze": 10, "lr0": 0.003, "close_mosaic": 0,
           "lr_decay": 0.8, "unfreeze_epoch": 0}
    mapping, header = FORMATS["ultralytics"].render(hyp, settings, "best_hyp.yaml")
    text = yaml.safe_dump(mapping, sort_keys=False)
    path = tmp_path / "best_hyp.yaml"
    path.write_text(text)
    loaded = yaml.safe_load(path.read_text())
    # what `yolo train cfg=best_hyp.yaml` does: defaults overridden by the file, keys checked
    cfg = get_cfg(defaults, loaded)
    assert cfg.freeze == 10 and cfg.lr0 == 0.003 and cfg.imgsz == 96
    assert cfg.model == "yolov8n.yaml" and cfg.optimizer == "SGD" and cfg.cos_lr is True
    assert "lr_decay" not in loaded and "unfreeze_epoch" not in loaded
    assert any("lr_decay=0.8" in line for line in header)
    assert "yolo train cfg=best_hyp.yaml" in header[0]
    # not the trials' 7 epochs: `yolo train cfg=best_hyp.yaml` trains its default length,
    # and the header says so and how to set one
    assert "epochs" not in loaded and cfg.epochs == defaults["epochs"]
    assert ("note: no epochs in this file: the trials trained 7 epochs each, a search budget "
            "rather than a training length; add epochs=N to the command") in "\n".join(header)
    # a close_mosaic set for the trials' length is named: the full run may want the default
    assert cfg.close_mosaic == 0
    note = "note: close_mosaic=0 is kept as the trials trained"
    assert any(line.startswith(note) for line in header)


def test_ultralytics_format_from_another_adapter_keeps_valid_keys_only(ultralytics_cfg):
    """A command-adapter study (keys of YOLOv5's scratch-low) gives a cfg Ultralytics takes."""
    defaults, get_cfg = ultralytics_cfg.DEFAULT_CFG_DICT, ultralytics_cfg.get_cfg

    hyp = {**YOLOV5_HYP, "freeze": 10}
    mapping, _ = FORMATS["ultralytics"].render(hyp, {"adapter": "command", "data": "x.yaml"},
                                               "h.yaml")
    assert "obj" not in mapping and "anchor_t" not in mapping
    assert set(mapping) - {"model", "data", "optimizer", "freeze"} <= set(ULTRALYTICS_HYP)
    get_cfg(defaults, mapping)


def test_export_through_the_tuner(tmp_path):
    """A study's best trial written by `tuner export` in the yolov5 format loads as a hyp file."""
    from tuner.export import Pick, render

    settings = yolov5_settings(tmp_path)
    study = optuna.create_study(direction="maximize")
    study.set_user_attr("config", {"trainer": settings, "base": {}})
    study.set_user_attr("metrics", ["fitness"])
    hyp = {**YOLOV5_HYP, "lr0": 0.002, "freeze": 24}
    study.add_trial(optuna.trial.create_trial(
        params={"freeze": 24}, distributions={"freeze": optuna.distributions.
                                               CategoricalDistribution([0, 10, 24])},
        value=0.42, user_attrs={"hyp": hyp},
    ))
    text = render(study, Pick(study.best_trial, "best value"), filename="voc_hyp.yaml")
    loaded = yaml.safe_load(text)
    assert list(loaded) == SCRATCH_LOW_KEYS and loaded["lr0"] == 0.002
    command = next(line for line in text.splitlines() if "python train.py" in line)
    argv = shlex.split(command.split(": ", 1)[1])
    assert argv[argv.index("--freeze") + 1] == "24"
    assert argv[argv.index("--hyp") + 1] == "voc_hyp.yaml"
