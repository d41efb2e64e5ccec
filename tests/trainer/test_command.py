"""The command adapter with tests/fixtures/jsonl_train.py."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import pytest
import yaml

from tests.adapter_contract import AdapterContract, RecordingReporter
from tests.conftest import process_alive
from trainer.base import ConfigError, Pruned, TrialError
from trainer.command import COMMON_HYP, CommandAdapter

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "tests" / "fixtures" / "jsonl_train.py"
COMMAND = (f"{{python}} {SCRIPT} --hyp {{hyp}} --freeze {{freeze}} --epochs {{epochs}} "
           "--out {metrics_file} --sleep 0.02")


def make(tmp_path, **settings) -> CommandAdapter:
    base = {"command": COMMAND, "metrics_file": "metrics.jsonl", "epochs": 2,
            "metrics": ["val/acc", "loss"], "metric": "val/acc"}
    return CommandAdapter({**base, **settings}, tmp_path / "cache")


class TestCommandContract(AdapterContract):
    @pytest.fixture
    def adapter(self, tmp_path):
        return make(tmp_path)

    @pytest.fixture
    def failing_hyp(self, hyp):
        return {**hyp, "lr0": 2.0}  # the script's loss is NaN


def test_placeholders_are_substituted(tmp_path):
    argv_file = tmp_path / "argv.json"
    command = [sys.executable, str(SCRIPT), "--hyp", "{hyp}", "--freeze", "{freeze}",
               "--epochs", "{epochs}", "--out", "{trial_dir}/metrics.jsonl", "--lr0", "{lr0}",
               "--argv-file", str(argv_file), "--sleep", "0"]
    adapter = make(tmp_path, command=command, epochs=3, device="cpu")
    trial_dir = tmp_path / "t"
    trial_dir.mkdir()
    hyp = {**adapter.default_hyp(), "lr0": 0.025, "freeze": 4}
    reporter = RecordingReporter()
    result = adapter.run(hyp, reporter, trial_dir)
    argv = json.loads(argv_file.read_text())
    assert argv == ["--hyp", str(trial_dir / "train_hyp.yaml"), "--freeze", "4", "--epochs", "3",
                    "--out", f"{trial_dir}/metrics.jsonl", "--lr0", "0.025",
                    "--argv-file", str(argv_file), "--sleep", "0"]
    written = yaml.safe_load((trial_dir / "train_hyp.yaml").read_text())
    assert written["lr0"] == 0.025 and written["freeze"] == 4
    assert list(written)[-3:] == ["freeze", "lr_decay", "unfreeze_epoch"]
    assert result.epochs_run == 3 and len(reporter.calls) == 3


def test_builtin_placeholders_and_environment(tmp_path):
    script = tmp_path / "env_script.py"
    script.write_text(
        "import json, os, sys\n"
        "out = os.environ['TUNER_METRICS_FILE']\n"
        "keys = ['TUNER_HYP', 'TUNER_FREEZE', 'TUNER_EPOCHS', 'TUNER_TRIAL_DIR', 'TUNER_DEVICE',\n"
        "        'TUNER_SEED']\n"
        "info = {k: os.environ[k] for k in keys}\n"
        "info['argv'] = sys.argv[1:]; info['cwd'] = os.getcwd(); info['MY'] = os.environ['MY']\n"
        "path = os.path.join(os.environ['TUNER_TRIAL_DIR'], 'info.json')\n"
        "open(path, 'w').write(json.dumps(info))\n"
        "open(out, 'a').write(json.dumps({'val/acc': 0.5, 'loss': 0.1}) + '\\n')\n"
    )
    adapter = make(tmp_path, command=f"{{python}} {script} {{device}} {{{{literal}}}} {{seed}}",
                   epochs=1, device="cuda:1", seed=7, cwd=str(tmp_path), env={"MY": "value"})
    trial_dir = tmp_path / "t"
    trial_dir.mkdir()
    adapter.run(adapter.default_hyp(), RecordingReporter(), trial_dir)
    info = json.loads((trial_dir / "info.json").read_text())
    assert info["argv"] == ["cuda:1", "{literal}", "7"] and info["TUNER_SEED"] == "7"
    assert info["TUNER_FREEZE"] == "0" and info["TUNER_EPOCHS"] == "1"
    assert info["TUNER_DEVICE"] == "cuda:1" and info["MY"] == "value"
    assert Path(info["cwd"]) == tmp_path


def test_csv_metrics_file(tmp_path):
    adapter = make(tmp_path, command=COMMAND + " --format csv", metrics_file="out/metrics.csv",
                   epochs=3)
    reporter = RecordingReporter()
    result = adapter.run(adapter.default_hyp(), reporter, tmp_path)
    assert [epoch for epoch, _ in reporter.calls] == [0, 1, 2]
    assert set(reporter.calls[0][1]) == {"val/acc", "loss"}  # the epoch column is not a metric
    assert result.metrics["val/acc"] > reporter.calls[0][1]["val/acc"]


def test_yolo_columns_get_simple_names(tmp_path):
    script = tmp_path / "yolo_like.py"
    script.write_text(
        "import sys\n"
        "with open(sys.argv[1], 'a') as f:\n"
        "    f.write('epoch,metrics/mAP50(B),metrics/mAP50-95(B),train/box_loss\\n')\n"
        "    f.write('0,0.5,0.3,1.2\\n')\n"
    )
    adapter = CommandAdapter({"command": ["{python}", str(script), "{metrics_file}"],
                              "metrics_file": "results.csv", "epochs": 1}, tmp_path / "cache")
    assert adapter.default_metric == "fitness"
    reporter = RecordingReporter()
    adapter.run(adapter.default_hyp(), reporter, tmp_path)
    metrics = reporter.calls[0][1]
    assert metrics["mAP50"] == 0.5 and metrics["metrics/mAP50(B)"] == 0.5
    # Ultralytics-named columns score as Ultralytics does (8.3.198 on): mAP50-95 alone
    assert metrics["fitness"] == 0.3


def test_crash_is_a_trial_error_with_the_log_tail(tmp_path):
    adapter = make(tmp_path, command=COMMAND + " --crash-epoch 1", epochs=3)
    with pytest.raises(TrialError) as info:
        adapter.run(adapter.default_hyp(), RecordingReporter(), tmp_path)
    assert "exited with code 3 after 1 epoch" in str(info.value)
    assert "something went wrong in the data pipeline" in str(info.value)
    assert info.value.result.epochs_run == 1


def test_missing_program_is_a_trial_error(tmp_path):
    adapter = make(tmp_path, command="no-such-program-here {hyp}")
    with pytest.raises(TrialError, match="cannot run"):
        adapter.run(adapter.default_hyp(), RecordingReporter(), tmp_path)


def test_prune_stops_the_script(tmp_path):
    adapter = make(tmp_path, command=COMMAND.replace("0.02", "0.3"), epochs=40)
    started = time.perf_counter()
    with pytest.raises(Pruned):
        adapter.run(adapter.default_hyp(), RecordingReporter(prune_after=1), tmp_path)
    assert time.perf_counter() - started < 5
    n_rows = len((tmp_path / "metrics.jsonl").read_text().splitlines())
    time.sleep(0.7)
    assert len((tmp_path / "metrics.jsonl").read_text().splitlines()) == n_rows == 1


def test_settings_validation(tmp_path):
    with pytest.raises(ConfigError) as info:
        make(tmp_path, command="python train.py --x {nope}")
    assert info.value.field == "command" and "{nope}" in info.value.message
    with pytest.raises(ConfigError) as info:
        make(tmp_path, metrics_file="metrics.txt")
    assert info.value.field == "metrics_file"
    with pytest.raises(ConfigError) as info:
        make(tmp_path, keys=["lr0", "dropout"])
    assert info.value.field == "keys"
    with pytest.raises(ConfigError) as info:
        make(tmp_path, colour="blue")
    assert info.value.field == "colour"
    with pytest.raises(ConfigError):
        CommandAdapter({"metrics_file": "m.jsonl"}, tmp_path)


def test_per_instance_declarations(tmp_path):
    adapter = make(tmp_path, keys=["lr0", "dropout", "freeze"], defaults={"dropout": 0.1},
                   command=COMMAND + " --lr0 {lr0} --x {dropout}", direction="maximize")
    assert adapter.supported_keys == {"lr0", "dropout", "freeze"}
    assert adapter.metrics == ("val/acc", "loss")
    assert adapter.default_metric == "val/acc"
    assert adapter.default_hyp()["dropout"] == 0.1
    assert CommandAdapter.default_hyp() == COMMON_HYP  # the class-level defaults
    assert CommandAdapter.supported_keys == frozenset(COMMON_HYP)


def test_the_default_objective_is_a_metric_the_script_reports(tmp_path):
    base = {"command": COMMAND, "metrics_file": "metrics.jsonl"}
    # metrics without metric: the first of them, not a "fitness" the script never writes
    adapter = CommandAdapter({**base, "metrics": ["acc", "loss"]}, tmp_path)
    assert (adapter.default_metric, adapter.metrics) == ("acc", ("acc", "loss"))
    # neither, or YOLO's columns that give it: YOLO's fitness
    assert CommandAdapter(base, tmp_path).metrics == ("fitness",)
    yolo = CommandAdapter({**base, "metrics": ["metrics/mAP50(B)", "metrics/mAP50-95(B)"]},
                          tmp_path)
    assert yolo.default_metric == "fitness"
    # a metric outside metrics is declared as reported too
    adapter = CommandAdapter({**base, "metrics": ["loss"], "metric": "acc"}, tmp_path)
    assert (adapter.default_metric, adapter.metrics) == ("acc", ("acc", "loss"))


def test_space_uses_instance_keys_and_metrics(tmp_path):
    from tuner.errors import InputError
    from tuner.space import load_space

    trainer = {"adapter": "command", "command": COMMAND, "metrics_file": "m.jsonl",
               "metrics": ["val/acc", "loss"], "metric": "val/acc",
               "keys": ["lr0", "dropout"], "defaults": {"dropout": 0.1}}
    space = tmp_path / "space.yaml"
    space.write_text(yaml.safe_dump({
        "trainer": trainer, "objective": {"metric": "val/acc"},
        "space": {"dropout": {"type": "float", "low": 0.0, "high": 0.5}},
    }))
    config = load_space(space, cache_dir=tmp_path)
    assert config.base_hyp(config.make_adapter(tmp_path))["dropout"] == 0.1
    space.write_text(yaml.safe_dump({
        "trainer": trainer, "objective": {"metric": "val/acc"},
        "space": {"momentum": {"type": "float", "low": 0.5, "high": 0.9}},
    }))
    with pytest.raises(InputError, match="space.momentum"):
        load_space(space, cache_dir=tmp_path)


def test_a_trial_past_its_timeout_is_stopped_and_fails(tmp_path):
    """A hung script (one row, then nothing) is stopped at ``timeout``, not waited for."""
    script = tmp_path / "hang.py"
    script.write_text(
        "import json, os, time\n"
        "open(os.environ['TUNER_METRICS_FILE'], 'a').write(json.dumps({'fitness': 0.1}) + '\\n')\n"
        "open('hang.pid', 'w').write(str(os.getpid()))\n"
        "time.sleep(120)\n"
    )
    adapter = CommandAdapter(
        {"command": [sys.executable, str(script)], "metrics_file": "m.jsonl", "epochs": 3,
         "timeout": 1.5, "grace": 1, "cwd": str(tmp_path)},
        tmp_path / "cache",
    )
    (tmp_path / "trial").mkdir()
    started = time.perf_counter()
    with pytest.raises(TrialError, match=r"time limit of 1.5 s \(trainer.timeout\) after 1"):
        adapter.run(adapter.default_hyp(), RecordingReporter(), tmp_path / "trial")
    assert time.perf_counter() - started < 10
    assert not process_alive(int((tmp_path / "hang.pid").read_text()))
    with pytest.raises(ConfigError, match="timeout"):
        CommandAdapter({"command": "x", "metrics_file": "m.csv", "timeout": 0}, tmp_path)
