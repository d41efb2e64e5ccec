"""Shared YOLO pieces: metric names, the file follower, process groups, fonts, synthetic data."""

from __future__ import annotations

import math
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from tests.conftest import process_alive
from trainer import detection_data
from trainer.base import DivergedError, TrialError
from trainer.yolo_common import (
    ULTRALYTICS_FITNESS,
    YOLOV5_FITNESS,
    YOLOV5_HYP,
    MetricsFollower,
    add_aliases,
    check_losses,
    data_yaml_problem,
    fitness,
    fitness_weights,
    normalise_metrics,
    offline_env,
    provide_fonts,
    run_and_follow,
    terminate_process_group,
    yaml_modules,
    yolov5_hyp_file,
)

YOLOV5_HEADER = (
    "               epoch,      train/box_loss,      train/obj_loss,      train/cls_loss,"
    "   metrics/precision,      metrics/recall,     metrics/mAP_0.5,metrics/mAP_0.5:0.95,"
    "        val/box_loss,        val/obj_loss,        val/cls_loss,               x/lr0,"
    "               x/lr1,               x/lr2"
)
YOLOV5_ROW = (
    "                   0,             0.10379,            0.047398,            0.033153,"
    "             0.00135,             0.15625,           0.0023745,          0.00059876,"
    "            0.089064,            0.033018,            0.030478,            0.070336,"
    "           0.0033298,           0.0033298"
)


def test_normalise_yolov5_columns():
    keys = [k.strip() for k in YOLOV5_HEADER.split(",")]
    values = [float(v) for v in YOLOV5_ROW.split(",")]
    metrics = normalise_metrics(dict(zip(keys, values)))
    assert metrics["mAP50"] == 0.0023745 and metrics["mAP50-95"] == 0.00059876
    assert metrics["precision"] == 0.00135 and metrics["recall"] == 0.15625
    assert metrics["fitness"] == pytest.approx(0.1 * 0.0023745 + 0.9 * 0.00059876)
    assert "epoch" not in metrics and not any(k.startswith("x/") for k in metrics)
    assert metrics["val/obj_loss"] == 0.033018


def test_normalise_ultralytics_names():
    metrics = normalise_metrics({
        "metrics/precision(B)": 0.5, "metrics/recall(B)": 0.4, "metrics/mAP50(B)": 0.3,
        "metrics/mAP50-95(B)": 0.2, "val/box_loss": 1.0, "lr/pg0": 0.01, "train/dfl_loss": 2,
    })
    # Ultralytics' columns, Ultralytics' score (8.3.198 and later): mAP50-95 alone
    assert metrics == {"precision": 0.5, "recall": 0.4, "mAP50": 0.3, "mAP50-95": 0.2,
                       "val/box_loss": 1.0, "train/dfl_loss": 2.0, "fitness": 0.2}


def test_fitness_conventions():
    assert fitness(0.3, 0.2) == pytest.approx(0.1 * 0.3 + 0.9 * 0.2)  # YOLOv5's, the default
    assert fitness(0.3, 0.2, ULTRALYTICS_FITNESS) == 0.2
    assert fitness_weights(["metrics/mAP50(B)", "metrics/mAP50-95(B)"]) == ULTRALYTICS_FITNESS
    assert fitness_weights(["metrics/mAP_0.5", "metrics/mAP_0.5:0.95"]) == YOLOV5_FITNESS
    assert fitness_weights(["mAP50", "mAP50-95"]) == YOLOV5_FITNESS
    # plain names keep YOLOv5's weights
    assert add_aliases({"mAP50": 0.3, "mAP50-95": 0.2})["fitness"] == pytest.approx(0.21)


def test_add_aliases_keeps_the_scripts_names():
    out = add_aliases({"epoch": "3", "metrics/mAP_0.5": 0.4, "metrics/mAP_0.5:0.95": 0.2,
                       "fitness": 9.0, "name": "x"})
    assert out["metrics/mAP_0.5"] == 0.4 and out["mAP50"] == 0.4
    assert out["fitness"] == 9.0  # the script's own value wins
    assert "name" not in out


def test_check_losses():
    check_losses({"val/box_loss": 1.0, "mAP50": math.nan}, 0)  # mAP is not a loss
    with pytest.raises(DivergedError, match="non-finite train/box_loss"):
        check_losses({"train/box_loss": math.inf}, 2)
    with pytest.raises(TrialError, match="fitness"):
        check_losses({"fitness": math.nan}, 0, also=("fitness",))


def test_follower_reads_padded_csv_as_it_grows(tmp_path):
    path = tmp_path / "results.csv"
    follower = MetricsFollower(path)
    assert follower.poll() == []  # not there yet
    with open(path, "w") as handle:
        handle.write(YOLOV5_HEADER + "\n" + YOLOV5_ROW[:50])  # a row half-written
        handle.flush()
        assert follower.poll() == []
        handle.write(YOLOV5_ROW[50:] + "\n")
    rows = follower.poll()
    assert len(rows) == 1 and rows[0]["metrics/mAP_0.5"] == 0.0023745 and rows[0]["epoch"] == 0
    with open(path, "a") as handle:
        handle.write(YOLOV5_ROW.replace("                   0,", "                   1,") + "\n")
    rows = follower.poll()
    assert [row["epoch"] for row in rows] == [1.0]
    assert follower.poll() == []


def test_follower_reads_json_lines(tmp_path):
    path = tmp_path / "m.jsonl"
    path.write_text('{"acc": 0.5}\n\n{"acc": NaN}\n{"acc"')
    follower = MetricsFollower(path)
    rows = follower.poll()
    assert rows[0] == {"acc": 0.5} and math.isnan(rows[1]["acc"])
    with open(path, "a") as handle:
        handle.write(': 0.7}\n[1, 2]\n')
    with pytest.raises(TrialError, match="JSON object"):
        follower.poll()


def test_a_last_row_without_its_newline_counts_once_the_writer_exits(tmp_path):
    rows = []
    code = ("import json, sys\n"
            f"open({str(tmp_path / 'm.jsonl')!r}, 'w').write("
            "json.dumps({'acc': 0.1}) + '\\n' + json.dumps({'acc': 0.2}))\n")
    run = run_and_follow([sys.executable, "-c", code], cwd=tmp_path, env=os.environ,
                         log_path=tmp_path / "log.txt", metrics_path=tmp_path / "m.jsonl",
                         on_row=rows.append, poll_interval=0.05)
    assert run.returncode == 0 and rows == [{"acc": 0.1}, {"acc": 0.2}]
    follower = MetricsFollower(tmp_path / "m.jsonl")
    assert follower.poll() == [{"acc": 0.1}]  # while the writer may still be writing it
    assert follower.poll(final=True) == [{"acc": 0.2}]


def test_terminate_process_group_kills_children(tmp_path):
    pid_file = tmp_path / "child.pid"
    code = ("import subprocess, sys, time\n"
            "c = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)'])\n"
            f"open({str(pid_file)!r}, 'w').write(str(c.pid)); time.sleep(60)\n")
    proc = subprocess.Popen([sys.executable, "-c", code], start_new_session=True)
    deadline = time.monotonic() + 10
    while not pid_file.exists() or not pid_file.read_text():
        assert time.monotonic() < deadline
        time.sleep(0.02)
    child = int(pid_file.read_text())
    terminate_process_group(proc, grace=2)
    assert proc.returncode is not None
    deadline = time.monotonic() + 5
    while process_alive(child) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not process_alive(child)


def test_yolov5_hyp_file_has_every_key_in_order():
    out = yolov5_hyp_file({"lr0": 0.02, "freeze": 10, "lr_decay": 0.5, "anchors": 3})
    assert list(out)[: len(YOLOV5_HYP)] == list(YOLOV5_HYP)
    assert out["lr0"] == 0.02 and out["obj"] == 1.0 and out["anchors"] == 3
    assert "freeze" not in out and "lr_decay" not in out


def test_fonts_and_offline_env(tmp_path):
    env = offline_env(tmp_path)
    assert env["YOLO_OFFLINE"] == "true"
    for folder in (Path(env["YOLO_CONFIG_DIR"]) / "Ultralytics", Path(env["YOLOV5_CONFIG_DIR"])):
        assert folder.is_relative_to(tmp_path)
        for name in ("Arial.ttf", "Arial.Unicode.ttf"):
            assert (folder / name).stat().st_size > 10_000
    provide_fonts(tmp_path / "again")  # idempotent, creates the folder
    provide_fonts(tmp_path / "again")


def test_yaml_modules(tmp_path):
    path = tmp_path / "m.yaml"
    path.write_text(yaml.safe_dump({"backbone": [[-1, 1, "Conv", [16]]],
                                    "head": [[-1, 1, "nn.Upsample", []], [[0], 1, "Detect", []]]}))
    assert yaml_modules(path) == [(0, "Conv"), (1, "nn.Upsample"), (2, "Detect")]
    assert yaml_modules(tmp_path / "missing.yaml") is None


def test_detection_data_is_deterministic_and_yolo_shaped(tmp_path):
    spec = detection_data.DetectionSpec(n_train=6, n_val=3, imgsz=48, seed=3)
    a = detection_data.generate(tmp_path / "a", spec)
    b = detection_data.generate(tmp_path / "b", spec)
    for split, n in (("train", 6), ("val", 3)):
        images = sorted((tmp_path / "a" / "images" / split).iterdir())
        assert len(images) == n
        for image in images:
            twin = tmp_path / "b" / "images" / split / image.name
            assert image.read_bytes() == twin.read_bytes()
            label = tmp_path / "a" / "labels" / split / f"{image.stem}.txt"
            for line in label.read_text().splitlines():
                cls, *box = line.split()
                assert int(cls) in (0, 1, 2)
                assert all(0.0 <= float(v) <= 1.0 for v in box)
    data = yaml.safe_load(a.read_text())
    assert data["path"] == str((tmp_path / "a").resolve()) and data["nc"] == 3
    assert data["names"] == {0: "rectangle", 1: "ellipse", 2: "triangle"}
    assert yaml.safe_load(b.read_text())["path"] == str((tmp_path / "b").resolve())
    # reused as it is when complete, redrawn when the spec differs
    stamp = (tmp_path / "a" / "images" / "train" / "0000.png").stat().st_mtime_ns
    detection_data.generate(tmp_path / "a", spec)
    assert (tmp_path / "a" / "images" / "train" / "0000.png").stat().st_mtime_ns == stamp
    detection_data.generate(tmp_path / "a", detection_data.DetectionSpec(n_train=2, n_val=1))
    assert len(list((tmp_path / "a" / "images" / "train").iterdir())) == 2
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temp folders left


def test_detection_data_cli(tmp_path):
    out = tmp_path / "set"
    proc = subprocess.run(
        [sys.executable, "-m", "trainer.detection_data", str(out), "--n-train", "3", "--n-val",
         "2", "--imgsz", "64"],
        capture_output=True, text=True, cwd=Path(__file__).resolve().parents[2],
        env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])},
    )
    assert proc.returncode == 0, proc.stderr
    assert Path(proc.stdout.strip()) == out / "data.yaml"
    assert len(list((out / "labels" / "train").iterdir())) == 3
    bad = subprocess.run([sys.executable, "-m", "trainer.detection_data", str(out),
                          "--imgsz", "8"],
                         capture_output=True, text=True,
                         cwd=Path(__file__).resolve().parents[2])
    assert bad.returncode == 2 and "imgsz" in bad.stderr


def test_data_yaml_problem_finds_missing_splits_without_decoding(tmp_path):
    (tmp_path / "ds" / "images" / "train").mkdir(parents=True)
    data = tmp_path / "data.yaml"
    data.write_text(f"path: {tmp_path / 'ds'}\ntrain: images/train\nval: images/val\n")
    assert data_yaml_problem(data) == (
        f"{data}: val images not found: {tmp_path / 'ds' / 'images' / 'val'}"
    )
    (tmp_path / "ds" / "images" / "val").mkdir()
    assert data_yaml_problem(data) is None
    # no path: the splits are the YAML's folder's; a list of folders is each checked
    data.write_text("train: [ds/images/train, ds/images/extra]\nval: ds/images/val\n")
    assert "train images not found" in data_yaml_problem(data)
    # a relative path is the pipeline's to resolve (YOLOv5: its checkout; Ultralytics: its
    # datasets folder)
    data.write_text("path: ../datasets/coco128\ntrain: images/train2017\nval: images/val\n")
    assert data_yaml_problem(data) is None
    data.write_text("names: [a]\n")
    assert data_yaml_problem(data) == f"{data}: names no train or val images"
    data.write_text("[1, 2\n")
    assert "not a readable YAML file" in data_yaml_problem(data)
