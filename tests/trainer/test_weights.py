"""Starting weights: missing files, torchvision names, checkpoints, the pretrain cache."""

from __future__ import annotations

import os

import pytest
import torch

from trainer.base import ConfigError, NullReporter
from trainer.torchvision import adapter as adapter_module
from trainer.torchvision import weights
from trainer.torchvision.blocks import build_model

TINY_PRETRAIN = {"n_classes": 3, "n_train": 32, "epochs": 1, "batch": 16, "lr": 0.05}


def test_missing_checkpoint_path(make_adapter, tmp_path):
    adapter = make_adapter(weights=str(tmp_path / "nope.pt"))
    with pytest.raises(ConfigError) as info:
        adapter.check_data()
    assert info.value.field == "weights"
    assert "no such checkpoint file" in str(info.value)
    with pytest.raises(ConfigError):
        adapter.prepare()


def test_torchvision_name_not_cached(make_adapter, tmp_path, monkeypatch):
    monkeypatch.setattr(torch.hub, "_hub_dir", str(tmp_path / "hub"))
    adapter = make_adapter(weights="IMAGENET1K_V1")
    with pytest.raises(ConfigError) as info:
        adapter.check_data()
    assert info.value.field == "weights"
    message = str(info.value)
    assert str(tmp_path / "hub" / "checkpoints" / "resnet18-f37072fd.pth") in message
    assert "nothing is downloaded" in message


def test_unknown_torchvision_name(make_adapter):
    with pytest.raises(ConfigError, match="IMAGENET1K_V9"):
        make_adapter(weights="IMAGENET1K_V9").check_data()


def test_torchvision_name_in_cache_is_loaded(make_adapter, tmp_path, monkeypatch):
    monkeypatch.setattr(torch.hub, "_hub_dir", str(tmp_path / "hub"))
    path = weights.torchvision_weights_file("resnet18", "DEFAULT")
    path.parent.mkdir(parents=True)
    imagenet_like = build_model("resnet18", 1000).net.state_dict()
    torch.save(imagenet_like, path)
    adapter = make_adapter(weights="DEFAULT")
    adapter.check_data()
    model = adapter.build(4)
    assert torch.equal(model.net.conv1.weight, imagenet_like["conv1.weight"])
    assert model.net.fc.out_features == 4  # the 1000-class head was dropped


def test_checkpoint_round_trip(make_adapter, tmp_path):
    trained = make_adapter(epochs=1)
    path = trained.train_and_save(trained.default_hyp(), NullReporter(), tmp_path / "run")
    saved = torch.load(path, weights_only=True)
    assert saved["classes"] and saved["model_name"] == "resnet18"
    restored = make_adapter(weights=str(path)).build(len(saved["classes"]))
    for key, value in saved["model"].items():
        assert torch.equal(restored.net.state_dict()[key], value), key
    # a different class count keeps the backbone and drops the head
    other = make_adapter(weights=str(path)).build(7)
    assert other.net.fc.out_features == 7
    assert torch.equal(other.net.conv1.weight, saved["model"]["conv1.weight"])


def test_build_copies_one_starting_model_equal_to_a_fresh_build(
    make_adapter, tmp_path, monkeypatch
):
    trained = make_adapter(epochs=1)
    path = trained.train_and_save(trained.default_hyp(), NullReporter(), tmp_path / "run")
    adapter = make_adapter(weights=str(path))
    first = adapter.build(7)
    # the path build() took before it kept a template: seed, build, load (head from the seed)
    torch.manual_seed(adapter.settings.seed)
    fresh = build_model("resnet18", 7)
    weights.load_weights(fresh, weights.read_state_dict(path), drop_head=False)
    for key, value in fresh.net.state_dict().items():
        assert torch.equal(first.net.state_dict()[key], value), key
    assert first.net.conv1.weight.is_contiguous(memory_format=torch.channels_last)
    # a trial's training changes its own copy only
    with torch.no_grad():
        first.net.fc.weight.add_(1.0)
        first.net.conv1.weight.zero_()
    second = adapter.build(7)
    assert torch.equal(second.net.fc.weight, fresh.net.fc.weight)
    assert torch.equal(second.net.conv1.weight, fresh.net.conv1.weight)
    assert second.blocks[0] is not first.blocks[0]
    # the blocks are the copy's own modules, so freezing block 0 freezes the copy's conv1
    assert any(p is second.net.conv1.weight for p in second.blocks[0].parameters())
    assert adapter.build(3).net.fc.out_features == 3  # another class count builds anew
    # a Ray worker makes an adapter per trial: the same settings copy the same kept model
    built = []

    def counted(*args, **kwargs):
        built.append(args)
        return build_model(*args, **kwargs)

    monkeypatch.setattr(adapter_module, "build_model", counted)
    again = make_adapter(weights=str(path)).build(7)
    assert built == [] and torch.equal(again.net.fc.weight, fresh.net.fc.weight)
    # a rewritten weights file is read again, and the model built from it anew
    os.utime(path, (path.stat().st_atime, path.stat().st_mtime + 5))
    make_adapter(weights=str(path)).build(7)
    assert len(built) == 1


def test_checkpoint_of_another_model_is_a_config_error(make_adapter, tmp_path):
    path = tmp_path / "mobilenet.pt"
    torch.save(build_model("mobilenet_v3_small", 4).net.state_dict(), path)
    with pytest.raises(ConfigError, match="does not fit"):
        make_adapter(weights=str(path)).build(4)


def test_read_state_dict_strips_prefixes(tmp_path):
    state = build_model("resnet18", 2).state_dict()  # BlockModel keys: "net.conv1.weight"
    torch.save({"model": state}, tmp_path / "a.pt")
    assert "conv1.weight" in weights.read_state_dict(tmp_path / "a.pt")


def test_pretrain_runs_once_and_is_reused(make_adapter, tmp_path, monkeypatch):
    adapter = make_adapter(weights="pretrain", pretrain=TINY_PRETRAIN)
    path = weights.pretrain_file(adapter.settings, adapter.cache_dir)
    assert not path.exists()
    adapter.prepare()
    assert path.is_file()
    assert [p.name for p in path.parent.iterdir() if p.suffix == ".tmp"] == []
    meta = torch.load(path, weights_only=True)["meta"]
    assert 0.0 <= meta["source_val_acc"] <= 1.0
    stamp = os.stat(path).st_mtime_ns

    def must_not_pretrain(*_args, **_kwargs):
        raise AssertionError("pretrained again")

    monkeypatch.setattr(weights, "pretrain", must_not_pretrain)
    again = make_adapter(weights="pretrain", pretrain=TINY_PRETRAIN)
    again.prepare()
    model = again.build(4)  # the source head (3 classes) is replaced by a fresh 4-class head
    assert os.stat(path).st_mtime_ns == stamp
    checkpoint = torch.load(path, weights_only=True)["model"]
    assert torch.equal(model.net.layer1[0].conv1.weight, checkpoint["layer1.0.conv1.weight"])
    assert model.net.fc.out_features == 4


def test_pretrain_file_name_depends_on_settings(make_adapter):
    a = make_adapter(weights="pretrain", pretrain=TINY_PRETRAIN)
    b = make_adapter(weights="pretrain", pretrain={**TINY_PRETRAIN, "epochs": 2})
    c = make_adapter(weights="pretrain", pretrain=TINY_PRETRAIN, imgsz=24)
    paths = {weights.pretrain_file(x.settings, x.cache_dir) for x in (a, b, c)}
    assert len(paths) == 3
    assert all(p.name.startswith("pretrain-resnet18-") for p in paths)


def test_code_fingerprint_ignores_comments_and_docstrings_not_code():
    base = weights.code_fingerprint('"""Doc."""\ndef f(x):\n    """Doc."""\n    return x + 1\n')
    same = weights.code_fingerprint("def f(x):  # a comment\n\n    return x + 1\n")
    other = weights.code_fingerprint("def f(x):\n    return x + 2\n")
    assert base == same
    assert base != other


def test_pretrain_file_name_depends_on_the_recipe_code_and_torch(make_adapter, monkeypatch):
    settings = make_adapter(weights="pretrain", pretrain=TINY_PRETRAIN).settings
    path = weights.pretrain_file(settings, "cache")
    monkeypatch.setattr(weights, "recipe_fingerprint", lambda: "edited loop")
    edited = weights.pretrain_file(settings, "cache")
    monkeypatch.setattr(torch, "__version__", "0.0.1")
    other_torch = weights.pretrain_file(settings, "cache")
    assert len({path, edited, other_torch}) == 3


def test_recipe_fingerprint_covers_every_module_that_pretraining_imports():
    # A module of trainer/torchvision that the pretraining code comes to import must join the
    # key; a fresh interpreter shows exactly what importing it loads.
    import subprocess
    import sys

    code = (
        "import sys, trainer.torchvision.weights; "
        "print(' '.join(n.rsplit('.', 1)[1] for n in sys.modules "
        "if n.startswith('trainer.torchvision.')))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    loaded = set(out.stdout.split())
    assert {"loop", "weights", "synthetic"} <= loaded
    assert loaded <= set(weights.RECIPE_MODULES)
