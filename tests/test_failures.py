"""Failure isolation: a failing trial becomes FAIL with its reason, the study goes on.

Runs ``tuner search`` in-process on the curve adapter (exception, NaN loss, out of memory) and
on the ``command`` adapter (a training script that exits 1), then reads the reasons back from
the storage and from ``tuner status``.
"""

from __future__ import annotations

import optuna
import pytest

from tuner.cli import main

SPACE = """
study: f
trainer: {{adapter: curve, epochs: 2, {setting}: 0.01}}
objective: {{metric: val/acc}}
base: {{lr0: 0.001, momentum: 0.7}}
search: {{n_trials: 6, seed: 3, max_failures: 50, sampler: {{name: random}}}}
space:
  lr0: {{type: float, low: 1.0e-4, high: 1.0e-1, log: true}}
"""
URL = "sqlite:///studies/f.db"
FAIL = optuna.trial.TrialState.FAIL
FINISHED = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)


def failed_and_status(capsys) -> tuple[list[optuna.trial.FrozenTrial], str]:
    """The study's failed trials and what ``tuner status`` prints; checks the total."""
    study = optuna.load_study(study_name="f", storage=URL)
    assert len(study.get_trials(states=FINISHED)) == 6  # failures do not count; it went on
    capsys.readouterr()
    assert main(["status", "--storage", URL]) == 0
    return study.get_trials(states=(FAIL,)), capsys.readouterr().out


@pytest.mark.parametrize(
    "setting,reason",
    [
        ("crash_above_lr0", "RuntimeError: simulated crash in the training code"),
        ("fail_above_lr0", "non-finite loss at epoch 0"),
        ("oom_above_lr0", "out of memory: OutOfMemoryError: CUDA out of memory"),
    ],
    ids=["exception", "nan-loss", "out-of-memory"],
)
def test_failing_trials_keep_their_reason_and_the_study_goes_on(
    workdir, capsys, setting, reason
):
    (workdir / "f.yaml").write_text(SPACE.format(setting=setting))
    assert main(["search", "--space", "f.yaml"]) == 0
    failed, status = failed_and_status(capsys)
    assert failed, "lr0 above 0.01 is drawn, so some trials must fail"
    for trial in failed:
        assert trial.params["lr0"] > 0.01
        assert trial.user_attrs["fail_reason"].startswith(reason)
    for trial in failed[-5:]:  # status lists the last five
        assert f"{trial.number:>5}  {reason}" in status
    assert "failed:" in status


SCRIPT = """
import json, os, sys
import yaml

hyp = yaml.safe_load(open(os.environ["TUNER_HYP"]))
if hyp["lr0"] > 0.01:
    print("Segmentation fault in the data loader", file=sys.stderr)
    sys.exit(1)
with open(os.environ["TUNER_METRICS_FILE"], "a") as rows:
    for epoch in range(int(os.environ["TUNER_EPOCHS"])):
        rows.write(json.dumps({"val/acc": 1 - hyp["lr0"] * (epoch + 1)}) + "\\n")
"""
COMMAND_SPACE = """
study: f
trainer:
  adapter: command
  command: ["{{python}}", "{script}"]
  metrics_file: metrics.jsonl
  metrics: [val/acc]
  metric: val/acc
  epochs: 2
  keys: [lr0]
base: {{lr0: 0.001}}
search: {{n_trials: 6, seed: 3, max_failures: 50, sampler: {{name: random}}}}
space:
  lr0: {{type: float, low: 1.0e-4, high: 1.0e-1, log: true}}
"""


def test_crashed_training_subprocess_is_a_failed_trial(workdir, capsys):
    script = workdir / "train.py"
    script.write_text(SCRIPT)
    (workdir / "f.yaml").write_text(COMMAND_SPACE.format(script=script))
    assert main(["search", "--space", "f.yaml"]) == 0
    failed, status = failed_and_status(capsys)
    assert failed
    for trial in failed:
        reason = trial.user_attrs["fail_reason"]
        assert reason.startswith("command exited with code 1"), reason
        assert "Segmentation fault in the data loader" in reason  # the log's last lines
    assert "command exited with code 1" in status


def test_max_failures_stops_the_study_with_exit_code_1(workdir, capsys):
    (workdir / "f.yaml").write_text(SPACE.format(setting="crash_above_lr0"))
    # every trial crashes (the baseline too): the setup is broken, not the hyps
    flags = ["--max-failures", "3", "--set", "trainer.crash_above_lr0=0"]
    code = main(["search", "--space", "f.yaml", *flags])
    err = capsys.readouterr().err
    assert code == 1, err
    assert "tuner: error: stopped after 3 failed trials in a row: the setup is broken" in err
    assert "--max-failures N" in err and "Traceback" not in err
    study = optuna.load_study(study_name="f", storage=URL)
    assert [t.state for t in study.trials] == [FAIL] * 3  # stopped at once, nothing more ran
