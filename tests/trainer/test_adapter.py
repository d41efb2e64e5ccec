"""The torchvision adapter: contract, settings validation, failures, determinism."""

from __future__ import annotations

import csv

import pytest

from tests.adapter_contract import AdapterContract, RecordingReporter
from trainer.base import ConfigError, DivergedError, TrialError, get_adapter
from trainer.torchvision import data
from trainer.torchvision.adapter import TorchvisionAdapter
from trainer.torchvision.settings import DEFAULT_HYP

FAST_HYP = {**DEFAULT_HYP, "warmup_epochs": 0.5}


class TestTorchvisionContract(AdapterContract):
    n_epochs = 2

    @pytest.fixture
    def adapter(self, make_adapter):
        return make_adapter(epochs=self.n_epochs)

    @pytest.fixture
    def failing_hyp(self, hyp):
        return {**hyp, "lr0": 1e6, "warmup_epochs": 0.0}


def test_registry_and_declarations():
    assert get_adapter("torchvision") is TorchvisionAdapter
    assert TorchvisionAdapter.supported_keys == frozenset(DEFAULT_HYP)
    assert TorchvisionAdapter.metrics == ("val/acc", "val/loss", "train/loss", "lr")
    assert TorchvisionAdapter.default_metric == "val/acc"
    assert TorchvisionAdapter.default_direction == "maximize"
    hyp = TorchvisionAdapter.default_hyp()
    assert hyp["lr0"] == 0.01 and hyp["optimizer"] == "SGD" and hyp["freeze"] == 0
    hyp["lr0"] = 1.0  # a copy: the defaults stay put
    assert TorchvisionAdapter.default_hyp()["lr0"] == 0.01


def test_default_settings(tmp_path):
    settings = TorchvisionAdapter({}, tmp_path).settings_dict()
    assert settings["model"] == "resnet18" and settings["weights"] == "pretrain"
    assert settings["data"] == "synthetic" and settings["epochs"] == 6
    assert settings["synthetic"] == {"n_classes": 6, "n_train": 300, "n_val": 300, "seed": 0}
    assert settings["pretrain"] == {
        "n_classes": 10, "n_train": 3000, "epochs": 8, "lr": 0.05, "batch": 64, "seed": 1000
    }
    assert settings["max_batches_per_epoch"] is None


@pytest.mark.parametrize(
    ("settings", "field", "message"),
    [
        ({"model": "resnet19"}, "model", "unknown model 'resnet19'; choose from resnet18"),
        ({"colour": 1}, "colour", "unknown setting"),
        ({"synthetic": {"n_class": 3}}, "synthetic.n_class", "unknown setting"),
        ({"synthetic": {"n_classes": 99}}, "synthetic.n_classes", "must be in 2.."),
        ({"pretrain": {"lr": "fast"}}, "pretrain.lr", "must be a number"),
        ({"epochs": 0}, "epochs", "at least 1"),
        ({"batch": 2.5}, "batch", "integer"),
        ({"imgsz": True}, "imgsz", "integer"),
        ({"device": "tpu"}, "device", "auto, cpu, cuda or cuda:N"),
        ({"bn_frozen": "frozen"}, "bn_frozen", "choose from eval, train"),
        ({"weights": ""}, "weights", "pretrain or none or a path"),
    ],
)
def test_invalid_settings(tmp_path, settings, field, message):
    with pytest.raises(ConfigError) as info:
        TorchvisionAdapter(settings, tmp_path)
    assert info.value.field == field
    assert message in str(info.value)


def test_adapter_key_is_ignored(tmp_path):
    assert TorchvisionAdapter({"adapter": "torchvision"}, tmp_path).settings.model == "resnet18"


def test_missing_data_directory(make_adapter, tmp_path):
    adapter = make_adapter(data=str(tmp_path / "x"))
    with pytest.raises(ConfigError) as info:
        adapter.check_data()
    assert info.value.field == "data"
    assert str(info.value) == (
        f"data: no such directory: {tmp_path / 'x'} "
        "(expected an ImageFolder root with train/ and val/)"
    )


def test_limits_and_describe(make_adapter):
    adapter = make_adapter(epochs=4)
    assert adapter.limits() == {"freeze": (0, 5), "unfreeze_epoch": (0, 3)}  # 4 never unfreezes
    text = adapter.describe()
    assert "freeze=N freezes blocks 0..N-1" in text
    assert "0: stem" in text and "5: head" in text
    mobile = make_adapter(model="mobilenet_v3_small")
    assert mobile.limits()["freeze"] == (0, 13)


def test_invalid_freeze_hyp(make_adapter, tmp_path):
    with pytest.raises(ConfigError, match="0..5"):
        make_adapter().run({"freeze": 6}, RecordingReporter(), tmp_path)


def test_run_ignores_other_adapters_keys_and_writes_csv(make_adapter, tmp_path):
    hyp = {**FAST_HYP, "box": 0.05, "mosaic": 1.0, "freeze": 5}
    result = make_adapter().run(hyp, RecordingReporter(), tmp_path)
    assert result.n_params_trainable == 512 * 4 + 4  # head only
    assert result.n_params_frozen > 10_000_000
    assert result.peak_memory_mb and result.peak_memory_mb > 0
    rows = list(csv.DictReader((tmp_path / "results.csv").open()))
    assert [row["epoch"] for row in rows] == ["0", "1"]
    assert set(rows[0]) >= {"val/acc", "val/loss", "train/loss", "lr", "epoch_seconds"}
    assert 0.0 <= result.metrics["val/acc"] <= 1.0


def test_non_finite_loss_is_a_trial_error_with_result(make_adapter, tmp_path):
    with pytest.raises(DivergedError, match=r"non-finite loss at epoch \d+ batch \d+") as info:
        make_adapter().run({"lr0": 1e6, "warmup_epochs": 0.0}, RecordingReporter(), tmp_path)
    assert info.value.result is not None
    assert info.value.result.n_params_trainable


def test_weights_broken_by_an_epochs_last_step_are_caught_at_validation(make_adapter, tmp_path):
    """One step whose loss was finite leaves infinite weights: the NaN logits would still give
    an accuracy (argmax picks class 0), so the epoch must not be scored."""
    adapter = make_adapter(epochs=1, max_batches_per_epoch=1)
    hyp = {**FAST_HYP, "lr0": 1e38, "warmup_epochs": 0.0}
    with pytest.raises(DivergedError, match=r"^non-finite val/loss at epoch 1 ") as info:
        adapter.run(hyp, RecordingReporter(), tmp_path)
    assert info.value.result is not None and info.value.result.epochs_run == 0


def test_same_hyp_same_result_and_no_second_decode(make_adapter, tmp_path):
    adapter = make_adapter()
    first = adapter.run(FAST_HYP, RecordingReporter(), tmp_path / "a")
    decodes = data.n_decodes()
    second = make_adapter().run(FAST_HYP, RecordingReporter(), tmp_path / "b")
    assert data.n_decodes() == decodes  # the second trial reused the decoded data
    assert first.history == [
        {**h, "lr": h["lr"]} for h in second.history
    ]  # seeded: differences between trials come from their hyps only


def test_hyps_change_the_result(make_adapter, tmp_path):
    adapter = make_adapter()
    base = adapter.run(FAST_HYP, RecordingReporter(), tmp_path / "a")
    other = adapter.run({**FAST_HYP, "lr0": 0.05}, RecordingReporter(), tmp_path / "b")
    assert base.metrics["train/loss"] != other.metrics["train/loss"]


def training_batch_sizes(adapter, tmp_path, monkeypatch):
    """The batch size of every training step of one run (validation runs without grad)."""
    import torch

    from trainer.torchvision import loop

    sizes = []
    plain = loop.F.cross_entropy

    def recording(logits, *args, **kwargs):
        if torch.is_grad_enabled():
            sizes.append(len(logits))
        return plain(logits, *args, **kwargs)

    monkeypatch.setattr(loop.F, "cross_entropy", recording)
    adapter.run(FAST_HYP, RecordingReporter(), tmp_path)
    return sizes


def test_a_step_never_holds_more_than_batch_images(make_adapter, tmp_path, monkeypatch):
    # 48 training images: batch 20 is 3 near-equal steps of 16 (not 2 of 24), per epoch
    assert training_batch_sizes(make_adapter(batch=20), tmp_path, monkeypatch) == [16] * 6
    assert training_batch_sizes(make_adapter(batch=16), tmp_path, monkeypatch) == [16] * 6
    assert training_batch_sizes(make_adapter(batch=64), tmp_path, monkeypatch) == [48] * 2


def test_out_of_memory_is_a_trial_error_naming_the_cure(make_adapter, tmp_path, monkeypatch):
    import torch

    from trainer.torchvision import loop

    def oom(*args, **kwargs):
        raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    monkeypatch.setattr(loop, "_train_epoch", oom)
    with pytest.raises(TrialError, match=r"out of memory on cpu \(batch 16, 16 px\); lower "
                                         r"batch or imgsz") as caught:
        make_adapter().run(FAST_HYP, RecordingReporter(), tmp_path)
    assert caught.value.result is not None and caught.value.result.epochs_run == 0


def test_max_batches_per_epoch(make_adapter, tmp_path, monkeypatch):
    sizes = training_batch_sizes(make_adapter(max_batches_per_epoch=1), tmp_path, monkeypatch)
    assert sizes == [16, 16]  # one step of the 3 per epoch, 2 epochs
