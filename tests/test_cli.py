"""The command line: exit codes, one-line errors, outputs in the default places."""

from __future__ import annotations

import subprocess
import sys

import pytest
import yaml

from tests.conftest import ROOT
from tuner.cli import main

SPACE = """
trainer: {adapter: curve, epochs: 3}
objective: {metric: val/acc}
base: {lr0: 0.001, momentum: 0.7}
search: {n_trials: 6, seed: 1, pruner: {name: median, args: {n_startup_trials: 2}}}
space:
  freeze: {type: int, low: 0, high: 5}
  lr0: {type: float, low: 1.0e-4, high: 1.0e-1, log: true}
"""


@pytest.fixture
def space(workdir):
    path = workdir / "demo-cli.yaml"
    path.write_text(SPACE)
    return path


def test_search_writes_best_hyp_and_resolved_config(space, workdir, capsys):
    assert main(["search", "--space", str(space)]) == 0
    out, err = capsys.readouterr()
    assert "trial 6/6" in err and "best " in err and "baseline trial" in err
    best = workdir / "studies" / "demo-cli" / "best_hyp.yaml"
    assert best.exists() and (workdir / "studies" / "demo-cli.db").exists()
    resolved = yaml.safe_load((workdir / "studies" / "demo-cli" / "config.yaml").read_text())
    assert resolved["trainer"] == {
        "adapter": "curve",
        "epochs": 3,
        "sleep": 0.0,
        "fail_above_lr0": None,
        "crash_above_lr0": None,
        "oom_above_lr0": None,
        "exit_at_lr0": None,
        "data": None,
        "seed": 0,
        "noise": 0.0,
        "collapse_above_lr0": None,
        "sigint_in_finalizer_at_run": None,
        "sigint_in_finalizer_after_run": None,
    }
    assert resolved["search"]["confirm"] == {
        "top_k": 0, "n_seeds": 2, "epochs": None, "reduce": None
    }
    assert "gain +" in out  # printed with the gain over the baseline
    # a re-run of the finished study only reports
    assert main(["search", "--space", str(space)]) == 0
    assert "nothing to run" in capsys.readouterr().err


def test_flags_override_the_space_file(space, workdir, capsys):
    assert (
        main(
            [
                "search",
                "--space",
                str(space),
                "--n-trials",
                "2",
                "--study",
                "0x1f",  # a name, as typed (YAML would read it as 31)
                "--out",
                "x/best.yaml",
                "--set",
                "trainer.epochs=2",
            ]
        )
        == 0
    )
    assert (workdir / "x" / "best.yaml").exists()
    assert (workdir / "studies" / "0x1f.db").exists()
    capsys.readouterr()
    assert main(["status", "--storage", "sqlite:///studies/0x1f.db"]) == 0
    out = capsys.readouterr().out
    assert "complete" in out and "top 5" in out and "baseline" in out


def test_export_and_status(space, workdir, capsys):
    assert main(["search", "--space", str(space)]) == 0
    capsys.readouterr()
    url = "sqlite:///studies/demo-cli.db"
    assert main(["export", "--storage", url, "--trial", "0", "--out", "t0.yaml"]) == 0
    assert yaml.safe_load((workdir / "t0.yaml").read_text())["lr0"] == 0.001
    # the header's command names the file as written: a bare name fails outside its folder
    assert main(["export", "--storage", url, "--format", "ultralytics",
                 "--out", "sub/u.yaml"]) == 0
    assert "yolo train cfg=sub/u.yaml" in (workdir / "sub" / "u.yaml").read_text()
    assert main(["export", "--storage", url, "--study", "nope", "--out", "t.yaml"]) == 2
    assert "no study 'nope'" in capsys.readouterr().err
    assert main(["export", "--storage", url, "--trial", "99", "--out", "t.yaml"]) == 2
    assert "99" in capsys.readouterr().err and not (workdir / "t.yaml").exists()
    assert main(["status", "--storage", url]) == 0
    out = capsys.readouterr().out
    assert "study demo-cli" in out and "baseline" in out and "top 5" in out


def test_status_names_the_best_trials_values_at_a_bound():
    import optuna

    from tuner.cli import _status_text

    lr0 = optuna.distributions.FloatDistribution(1e-4, 1e-1, log=True)
    study = optuna.create_study(direction="maximize")
    for value, params in ((0.5, {"lr0": 0.01}), (0.7, {"lr0": 0.1})):
        study.add_trial(
            optuna.trial.create_trial(params=params, distributions={"lr0": lr0}, value=value)
        )
    text = _status_text(study, "memory")
    assert "best 0.7 (trial 1)" in text
    assert "  at a bound of their searched range: lr0=0.1 (high end of 0.0001..0.1)" in text
    study.add_trial(optuna.trial.create_trial(params={"lr0": 0.02}, distributions={"lr0": lr0},
                                              value=0.9))
    assert "at a bound" not in _status_text(study, "memory")


def test_validate_prints_resolved_config(space, capsys):
    assert main(["validate", str(space)]) == 0
    resolved = yaml.safe_load(capsys.readouterr().out)
    assert resolved["study"] == "demo-cli" and resolved["search"]["n_trials"] == 6
    # --space as the other commands take it
    assert main(["validate", "--space", str(space)]) == 0
    assert yaml.safe_load(capsys.readouterr().out) == resolved
    for twice_or_never in (["validate"], ["validate", str(space), "--space", str(space)]):
        assert main(twice_or_never) == 2
        assert "--space: name the space file once" in capsys.readouterr().err


@pytest.mark.parametrize(
    "args,expected",
    [
        (["validate", "missing.yaml"], "missing.yaml: no such file"),
        (["search", "--space", "SPACE", "--n-trials", "0"], "--n-trials: must be > 0"),
        (
            ["search", "--space", "SPACE", "--storage", "nope"],
            "--storage: 'nope' is not a storage",
        ),
        (
            ["search", "--space", "SPACE", "--set", "trainer.data=/no/such"],
            "trainer.data: no such directory",
        ),
        (["status", "--storage", "sqlite:////proc/no/such.db"], "--storage"),
    ],
)
def test_input_errors_exit_2_with_one_line(space, capsys, args, expected):
    args = [str(space) if a == "SPACE" else a for a in args]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert expected in err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err


def test_unwritable_output_fails_before_training(space, workdir, capsys):
    # a path below a regular file cannot be created, even by root (CI runs as root)
    (workdir / "afile").write_text("")
    code = main(["search", "--space", str(space), "--out", "afile/sub/best.yaml"])
    assert code == 2 and "--out: cannot write afile/sub/best.yaml" in capsys.readouterr().err
    assert not (workdir / "studies" / "demo-cli.db").exists()
    # a folder nothing can be written to (root included): the check writes, it does not guess
    code = main(["search", "--space", str(space), "--out", "/proc/tuner/best.yaml"])
    assert code == 2 and "--out: cannot write /proc/tuner/best.yaml: " in capsys.readouterr().err
    # an error of the path's very stat (root included): one line, not an internal error
    long = "a" * 300 + "/best.yaml"
    assert main(["search", "--space", str(space), "--out", long]) == 2
    assert f"--out: cannot write {long}: File name too long" in capsys.readouterr().err
    assert not (workdir / "studies").exists()  # no study folder made before the checks


def test_console_entry_points_and_debug(space, workdir):
    env_cmd = [sys.executable, "-m", "tuner"]
    done = subprocess.run([*env_cmd, "--help"], capture_output=True, text=True, cwd=ROOT)
    assert done.returncode == 0 and "search" in done.stdout
    for sub in ("search", "export", "status", "validate", "blocks"):
        done = subprocess.run([*env_cmd, sub, "--help"], capture_output=True, text=True, cwd=ROOT)
        assert done.returncode == 0, sub
    bad = workdir / "bad.yaml"
    bad.write_text(
        "trainer: {adapter: torchvision}\nspace: {lr0: {type: float, low: 1, high: 0}}\n"
    )
    done = subprocess.run(
        [*env_cmd, "validate", str(bad)], capture_output=True, text=True, cwd=ROOT
    )
    assert done.returncode == 2
    assert done.stderr.strip() == f"tuner: error: {bad}: space.lr0: low (1) must be < high (0)"
    done = subprocess.run(
        [*env_cmd, "validate", str(bad), "--debug"], capture_output=True, text=True, cwd=ROOT
    )
    # the traceback, then the same line and exit code
    assert done.returncode == 2 and "Traceback" in done.stderr
    assert done.stderr.strip().splitlines()[-1] == (
        f"tuner: error: {bad}: space.lr0: low (1) must be < high (0)"
    )
    done = subprocess.run([*env_cmd, "search"], capture_output=True, text=True, cwd=ROOT)
    assert done.returncode == 2  # usage error


def test_resume_keeps_the_trainer_settings_and_base_its_trials_ran_with(space, workdir, capsys):
    """Another epoch count or base hyp would mix values that do not compare; the budget, the
    adapter's runtime settings (here the curve's sleep) and the space's ranges may change."""
    import optuna

    assert main(["search", "--space", str(space), "--n-trials", "3"]) == 0
    config_file = workdir / "studies" / "demo-cli" / "config.yaml"
    before = config_file.read_text()
    capsys.readouterr()
    for override, field, had, has in (
        ("trainer.epochs=4", "trainer.epochs", "3", "4"),
        ("base.momentum=0.9", "base.momentum", "0.7", "0.9"),
        ("base.fliplr=0.0", "base.fliplr", "0.5", "0.0"),  # an adapter default, resolved
    ):
        code = main(["search", "--space", str(space), "--n-trials", "4", "--set", override])
        err = capsys.readouterr().err
        assert code == 2, err
        assert err.strip() == (
            f"tuner: error: --set: {field}: study 'demo-cli' ran its trials with {had}, not "
            f"{has}; their values would not compare: keep the setting or pick another --study "
            "name"
        )
    assert config_file.read_text() == before  # a refused resume rewrites nothing
    study = optuna.load_study(study_name="demo-cli", storage="sqlite:///studies/demo-cli.db")
    assert len(study.trials) == 3
    # lr0 is searched: its base value only set the baseline, which has run
    args = ["search", "--space", str(space), "--n-trials", "5", "--set", "trainer.sleep=0.001",
            "--set", "space.lr0.high=0.05", "--set", "base.lr0=0.002"]
    assert main(args) == 0
    assert len(study.trials) == 5


def test_a_search_stopped_by_its_timeout_says_so(space, capsys):
    args = ["search", "--space", str(space), "--n-trials", "50", "--timeout", "1",
            "--set", "trainer.sleep=0.2"]
    assert main(args) == 0
    err = capsys.readouterr().err
    line = next(x for x in err.splitlines() if x.startswith("stopped by the timeout"))
    n_done = int(line.split(": ")[1].split()[0])
    assert 0 < n_done < 50
    assert line == (
        f"stopped by the timeout (1 s): {n_done} of 50 trials finished; a re-run resumes"
    )
    assert "best configuration written to" in err  # the best so far is still exported
