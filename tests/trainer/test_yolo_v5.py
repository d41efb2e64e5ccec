"""The yolov5 adapter against the stand-in train.py (tests/fixtures/fake_yolov5)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from tests.adapter_contract import AdapterContract, RecordingReporter
from tests.conftest import process_alive
from trainer.base import ConfigError, Pruned, TrialError
from trainer.yolo_common import YOLOV5_HYP
from trainer.yolov5 import YoloV5Adapter

ROOT = Path(__file__).resolve().parents[2]
FAKE = ROOT / "tests" / "fixtures" / "fake_yolov5"


@pytest.fixture
def files(tmp_path):
    """A data YAML, a weights file and a cfg, as a user's paths."""
    data = tmp_path / "data.yaml"
    data.write_text("path: .\ntrain: images\nval: images\nnames: {0: a}\n")
    weights = tmp_path / "yolov5n.pt"
    weights.write_bytes(b"not really weights")
    cfg = tmp_path / "yolov5n.yaml"
    cfg.write_text(yaml.safe_dump({
        "nc": 1,
        "backbone": [[-1, 1, "Conv", [16, 3, 2]], [-1, 1, "Conv", [32, 3, 2]]],
        "head": [[-1, 1, "Conv", [32, 1, 1]], [[2], 1, "Detect", ["nc", "anchors"]]],
    }))
    return {"data": str(data), "weights": str(weights), "cfg": str(cfg)}


def make(tmp_path, files, **settings) -> YoloV5Adapter:
    base = {"yolov5_dir": str(FAKE), "epochs": 2, "imgsz": 64, "batch": 4, "device": "cpu",
            "env": {"FAKE_YOLOV5_SLEEP": "0.05"}, "grace": 2.0, **files}
    return YoloV5Adapter({**base, **settings}, tmp_path / "cache")


def trial_dir(tmp_path, name="0007") -> Path:
    path = tmp_path / "trials" / name
    path.mkdir(parents=True)
    return path


class TestYoloV5Contract(AdapterContract):
    @pytest.fixture
    def adapter(self, tmp_path, files):
        adapter = make(tmp_path, files)
        adapter.check_data()
        return adapter

    @pytest.fixture
    def failing_hyp(self, hyp):
        return {**hyp, "lr0": 1.0}  # the stand-in's losses are NaN: a diverged run


def test_command_line_is_exactly_as_documented(tmp_path, files):
    adapter = make(tmp_path, files, workers=0, seed=3, extra_args=["--cos-lr"])
    directory = trial_dir(tmp_path)
    cmd = adapter.build_command(directory / "train_hyp.yaml", 10, directory, files["data"])
    assert cmd == [
        sys.executable, "train.py",
        "--hyp", str(directory / "train_hyp.yaml"),
        "--freeze", "10",
        "--epochs", "2",
        "--data", files["data"],
        "--weights", files["weights"],
        "--img", "64",
        "--batch-size", "4",
        "--device", "cpu",
        "--project", str(directory),
        "--name", "trial_0007",
        "--exist-ok",
        "--seed", "3",
        "--cfg", files["cfg"],
        "--workers", "0",
        "--noplots",
        "--cos-lr",
    ]
    # no seed setting, no --seed flag: train.py before YOLOv5 v7.0 does not know it
    plain = make(tmp_path, files).build_command(directory / "h.yaml", 0, directory, files["data"])
    assert "--seed" not in plain


def test_reports_parsed_from_padded_csv(tmp_path, files):
    adapter = make(tmp_path, files, epochs=3)
    directory = trial_dir(tmp_path)
    reporter = RecordingReporter()
    result = adapter.run({**adapter.default_hyp(), "freeze": 10, "lr0": 0.01}, reporter, directory)
    run_dir = directory / "trial_0007"
    header = (run_dir / "results.csv").read_text().splitlines()[0]
    assert header.startswith("               epoch,      train/box_loss,")  # YOLOv5's padding
    assert [epoch for epoch, _ in reporter.calls] == [0, 1, 2]
    for _, metrics in reporter.calls:
        assert {"mAP50", "mAP50-95", "fitness", "precision", "recall",
                "val/box_loss"} <= set(metrics)
        expected = 0.1 * metrics["mAP50"] + 0.9 * metrics["mAP50-95"]
        assert metrics["fitness"] == pytest.approx(expected)
        assert not any(key.startswith(("x/", "metrics/")) for key in metrics)
    assert set(reporter.calls[0][1]) <= set(adapter.metrics)
    assert reporter.calls[-1][1]["mAP50"] > reporter.calls[0][1]["mAP50"]
    # the trial's hyp file holds every key train.py reads, and no freeze-strategy keys
    written = yaml.safe_load((directory / "train_hyp.yaml").read_text())
    assert list(written) == list(YOLOV5_HYP)
    assert "freeze=[10]" in (directory / "train.log").read_text()  # train.py got --freeze 10
    assert result.extra["run_dir"] == str(run_dir)
    assert result.extra["command"].split()[1] == "train.py"
    assert result.peak_memory_mb and result.peak_memory_mb > 0


def test_prune_kills_the_process_group(tmp_path, files):
    adapter = make(tmp_path, files, epochs=50, env={"FAKE_YOLOV5_SLEEP": "0.3",
                                                     "FAKE_YOLOV5_CHILD": "1"})
    directory = trial_dir(tmp_path)
    reporter = RecordingReporter(prune_after=2)
    started = time.perf_counter()
    with pytest.raises(Pruned) as info:
        adapter.run(adapter.default_hyp(), reporter, directory)
    assert time.perf_counter() - started < 10  # not the 15 s the 50 epochs would take
    assert info.value.result.epochs_run == 2
    assert info.value.result.extra["returncode"] == -15  # ended by SIGTERM
    pids = [int(p) for p in (directory / "trial_0007" / "pids.txt").read_text().split()]
    assert len(pids) == 2  # train.py and its "dataloader worker"
    deadline = time.monotonic() + 5
    while any(process_alive(pid) for pid in pids) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not any(process_alive(pid) for pid in pids)
    csv = directory / "trial_0007" / "results.csv"
    n_lines = len(csv.read_text().splitlines())
    time.sleep(0.8)  # more than two epochs of the stand-in
    assert len(csv.read_text().splitlines()) == n_lines == 3  # header + 2 rows, no more


def test_crash_is_a_trial_error_with_the_log_tail(tmp_path, files):
    adapter = make(tmp_path, files, epochs=4, env={"FAKE_YOLOV5_SLEEP": "0.05",
                                                    "FAKE_YOLOV5_CRASH": "1"})
    with pytest.raises(TrialError) as info:
        adapter.run(adapter.default_hyp(), RecordingReporter(), trial_dir(tmp_path))
    message = str(info.value)
    assert "exited with code 1 after 1 epoch" in message
    assert "RuntimeError: simulated crash in epoch 1" in message
    assert info.value.result.epochs_run == 1


@pytest.mark.parametrize("stop_after", [None, 2], ids=["last-epoch", "early-stop"])
def test_the_best_checkpoint_row_after_the_last_epoch_is_no_epoch(tmp_path, files, stop_after):
    env = {"FAKE_YOLOV5_SLEEP": "0.05", "FAKE_YOLOV5_COCO": "1"}
    if stop_after:  # --patience ended training early: the extra row comes before `epochs`
        env["FAKE_YOLOV5_STOP_AFTER"] = str(stop_after)
    adapter = make(tmp_path, files, epochs=3, env=env)
    reporter = RecordingReporter()
    result = adapter.run(adapter.default_hyp(), reporter, trial_dir(tmp_path))
    n_epochs = stop_after or 3
    assert [epoch for epoch, _ in reporter.calls] == list(range(n_epochs))
    assert result.epochs_run == n_epochs and result.history[-1]["mAP50"] < 0.99


def test_nan_loss_stops_the_run(tmp_path, files):
    adapter = make(tmp_path, files, epochs=30)
    started = time.perf_counter()
    with pytest.raises(TrialError, match="non-finite train/box_loss"):
        adapter.run({**adapter.default_hyp(), "lr0": 2.0}, RecordingReporter(),
                    trial_dir(tmp_path))
    assert time.perf_counter() - started < 5


def test_stand_in_fails_like_train_py_on_a_missing_hyp_key(tmp_path, files):
    hyp = dict(YOLOV5_HYP)
    del hyp["obj"]
    path = tmp_path / "hyp.yaml"
    path.write_text(yaml.safe_dump(hyp))
    proc = subprocess.run(
        [sys.executable, "train.py", "--hyp", str(path), "--data", files["data"], "--weights", "",
         "--cfg", files["cfg"], "--epochs", "1", "--project", str(tmp_path), "--name", "x"],
        cwd=FAKE, capture_output=True, text=True, env={**os.environ, "FAKE_YOLOV5_SLEEP": "0"},
    )
    assert proc.returncode != 0 and "KeyError: 'obj'" in proc.stderr


def test_stand_in_required_keys_are_hyp_scratch_low():
    sys.path.insert(0, str(FAKE))
    try:
        import train as fake  # the stand-in module
    finally:
        sys.path.remove(str(FAKE))
        sys.modules.pop("train", None)
    assert list(fake.REQUIRED_KEYS) == list(YOLOV5_HYP)


def test_settings_validation(tmp_path, files):
    with pytest.raises(ConfigError) as info:
        YoloV5Adapter({"data": files["data"]}, tmp_path)
    assert info.value.field == "yolov5_dir"
    with pytest.raises(ConfigError) as info:
        make(tmp_path, files, epochs=0)
    assert info.value.field == "epochs"
    with pytest.raises(ConfigError) as info:
        make(tmp_path, files, lr_decay=0.5)
    assert info.value.field == "lr_decay"
    with pytest.raises(ConfigError) as info:
        make(tmp_path, files, extra_args=["--freeze", "3"])
    assert info.value.field == "extra_args"
    # an early stop inside the trials would make trials of unequal length
    for args in (["--patience", "3"], ["--cos-lr", "--patience=4"]):
        with pytest.raises(ConfigError, match="--patience .* before their 5 epochs") as info:
            make(tmp_path, files, epochs=5, extra_args=args)
        assert info.value.field == "extra_args"
    for args in (["--patience", "0"], ["--patience", "5"], ["--patience=100"]):
        make(tmp_path, files, epochs=5, extra_args=args)


def test_check_data_messages(tmp_path, files):
    with pytest.raises(ConfigError, match="not a local file and nothing is downloaded"):
        make(tmp_path, files, weights="yolov5s.pt").check_data()
    with pytest.raises(ConfigError, match="needs a model yaml"):
        make(tmp_path, files, weights="", cfg=None).check_data()
    with pytest.raises(ConfigError, match="has no train.py"):
        make(tmp_path, files, yolov5_dir=str(tmp_path)).check_data()
    with pytest.raises(ConfigError, match="no such dataset YAML"):
        make(tmp_path, files, data=str(tmp_path / "missing.yaml")).check_data()
    make(tmp_path, files, weights="", data="synthetic").check_data()


def test_declarations(tmp_path, files):
    adapter = make(tmp_path, files)
    assert "lr_decay" not in adapter.supported_keys
    assert "unfreeze_epoch" not in adapter.supported_keys
    assert adapter.supported_keys == set(YOLOV5_HYP) | {"freeze"}
    assert adapter.export_format == "yolov5"
    assert adapter.limits() == {"freeze": (0, 3)}  # 4 modules in the cfg; Detect stays trainable
    assert "--freeze" in adapter.describe()


def test_lr_decay_in_base_is_refused(tmp_path, files):
    adapter = make(tmp_path, files)
    with pytest.raises(TrialError, match="lr_decay"):
        adapter.run({**adapter.default_hyp(), "lr_decay": 0.5}, RecordingReporter(),
                    trial_dir(tmp_path))


def test_space_rejects_lr_decay(tmp_path, files):
    from tuner.errors import InputError
    from tuner.space import load_space

    space = tmp_path / "space.yaml"
    space.write_text(yaml.safe_dump({
        "trainer": {"adapter": "yolov5", "yolov5_dir": str(FAKE), **files},
        "space": {"lr_decay": {"type": "float", "low": 0.5, "high": 1.0}},
    }))
    with pytest.raises(InputError, match="space.lr_decay"):
        load_space(space, cache_dir=tmp_path / "cache")


def test_voc_space_loads(tmp_path):
    from tuner.space import load_space

    config = load_space(ROOT / "spaces" / "voc.yaml", cache_dir=tmp_path / "cache")
    assert config.trainer.adapter == "yolov5"
    assert config.space["freeze"].choices == (0, 10, 24)
    assert config.objective.primary.metric == "fitness"
    assert config.search.pruner.name == "hyperband"


def test_synthetic_data_is_generated_for_the_subprocess(tmp_path, files):
    adapter = make(tmp_path, {**files, "data": "synthetic"}, synthetic={"n_train": 4, "n_val": 2})
    adapter.prepare()
    directory = trial_dir(tmp_path)
    adapter.run(adapter.default_hyp(), RecordingReporter(), directory)
    log = (directory / "train.log").read_text()
    data = Path(adapter._data())
    assert data.is_file() and data.is_relative_to(tmp_path / "cache")
    assert "2 epochs completed" in log
    fonts = tmp_path / "cache" / "yolo" / "yolov5"
    assert (fonts / "Arial.ttf").is_file() and (fonts / "Arial.Unicode.ttf").is_file()
