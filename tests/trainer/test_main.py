"""``python -m trainer.torchvision``: train an exported configuration full length."""

from __future__ import annotations

import torch
import yaml

from tests.trainer.conftest import TINY
from trainer.torchvision.__main__ import main


def test_trains_the_exported_hyp_with_the_studys_settings(tmp_path, capsys):
    # what `tuner search` writes next to a study: the resolved config, and the best hyp file
    config = tmp_path / "config.yaml"
    settings = {**TINY, "synthetic": {**TINY["synthetic"], "n_classes": 3}, "epochs": 1}
    config.write_text(yaml.safe_dump({"study": "s", "trainer": {"adapter": "torchvision",
                                                                **settings}}))
    hyp = tmp_path / "best_hyp.yaml"
    # by hand, as people write learning rates (PyYAML alone reads 2e-2 as a string)
    hyp.write_text("# tuner header\nlr0: 2e-2\nfreeze: 3\nwarmup_epochs: 0.5\n")
    out = tmp_path / "run"
    argv = ["--config", str(config), "--hyp", str(hyp), "--epochs", "2", "--out", str(out),
            "--cache-dir", str(tmp_path / "cache")]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "epoch 1/2" in printed and "epoch 2/2" in printed  # the flag over the config's 1
    saved = torch.load(out / "last.pt", weights_only=True)
    assert len(saved["classes"]) == 3  # the study's synthetic task, not the default one
    assert saved["model_name"] == "resnet18"
    assert saved["hyp"]["lr0"] == 0.02 and saved["hyp"]["freeze"] == 3  # the file's hyps
    assert saved["hyp"]["momentum"] == 0.937  # the rest: the adapter's defaults
    # a `hyp:` section (a resolved config's shape) is read the same way
    wrapped = tmp_path / "wrapped.yaml"
    wrapped.write_text(yaml.safe_dump({"hyp": {"lr0": 0.03}}))
    assert main([*argv[:2], "--hyp", str(wrapped), *argv[4:]]) == 0
    assert torch.load(out / "last.pt", weights_only=True)["hyp"]["lr0"] == 0.03


def test_bad_config_is_exit_2(tmp_path, capsys):
    assert main(["--config", str(tmp_path / "missing.yaml")]) == 2
    assert "config: no such file" in capsys.readouterr().err
    other = tmp_path / "config.yaml"
    other.write_text(yaml.safe_dump({"trainer": {"adapter": "yolov5", "data": "x"}}))
    assert main(["--config", str(other)]) == 2
    assert "study of the 'yolov5' adapter" in capsys.readouterr().err
    broken = tmp_path / "hyp.yaml"
    broken.write_text("lr0: [0.01\n")
    assert main(["--hyp", str(broken)]) == 2
    err = capsys.readouterr().err
    assert f"hyp: {broken}: invalid YAML at line 2" in err, err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
