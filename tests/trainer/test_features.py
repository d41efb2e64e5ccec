"""Frozen-feature caching: exact, shared across trials, used only where exact, memory-bounded."""

from __future__ import annotations

import pytest
import torch

from tests.adapter_contract import RecordingReporter
from trainer.base import ConfigError
from trainer.torchvision import features
from trainer.torchvision.augment import AUGMENT_KEYS
from trainer.torchvision.blocks import build_model
from trainer.torchvision.features import FeatureStore, prefix_digest, stochastic_layers
from trainer.torchvision.settings import DEFAULT_HYP

NO_AUG = {**DEFAULT_HYP, **dict.fromkeys(AUGMENT_KEYS, 0.0), "warmup_epochs": 0.5}


@pytest.fixture(autouse=True)
def fresh_store():
    features.store().clear()
    yield
    features.store().clear()


def run(adapter, tmp_path, name, **hyp):
    reporter = RecordingReporter()
    result = adapter.run({**NO_AUG, **hyp}, reporter, tmp_path / name)
    return result


def curves(result):
    return [v for h in result.history for v in (h["val/acc"], h["val/loss"], h["train/loss"])]


@pytest.mark.parametrize(
    "hyp",
    [{"freeze": 5}, {"freeze": 2}, {"freeze": 3, "unfreeze_epoch": 2}],
    ids=["all-but-head", "middle", "staged-unfreeze"],
)
def test_cached_training_gives_the_same_curves_as_running_the_prefix(
    make_adapter, tmp_path, hyp
):
    plain = run(make_adapter(feature_cache="off", epochs=3), tmp_path, "off", **hyp)
    cached = run(make_adapter(epochs=3), tmp_path, "auto", **hyp)
    assert plain.extra["feature_cache"] == "none"
    assert cached.extra["feature_cache"] == "train+val"
    # exact up to float rounding (the prefix runs on other batch shapes when cached)
    assert curves(cached) == pytest.approx(curves(plain), rel=1e-4, abs=1e-5)


def test_a_pruned_trial_says_whether_it_used_the_cache(make_adapter, tmp_path):
    from trainer.base import Pruned

    with pytest.raises(Pruned) as caught:
        make_adapter(epochs=3).run({**NO_AUG, "freeze": 5}, RecordingReporter(prune_after=1),
                                   tmp_path / "p")
    assert caught.value.result.extra["feature_cache"] == "train+val"


def test_features_are_computed_once_and_shared_by_trials(make_adapter, tmp_path):
    adapter = make_adapter()
    store = features.store()
    run(adapter, tmp_path, "a", freeze=4, lr0=0.01)
    assert store.n_computed == 2  # train and val, once each for a whole run
    run(adapter, tmp_path, "b", freeze=4, lr0=0.05)  # same weights and freeze: all hits
    assert store.n_computed == 2 and store.n_hits >= 2
    run(adapter, tmp_path, "c", freeze=2)  # another prefix: another pair of entries
    assert store.n_computed == 4


def test_peak_memory_leaves_out_what_other_trials_cached(make_adapter, tmp_path, monkeypatch):
    """A trial's peak is its own: features earlier trials left in the store, which it did not
    use, are the process's memory, not this trial's."""
    import contextlib

    from trainer.torchvision import loop

    @contextlib.contextmanager
    def fixed_peak(device):
        yield lambda: 1000.0  # the process's peak, as the sampler would measure it

    monkeypatch.setattr(loop, "_peak_memory", fixed_peak)
    adapter = make_adapter()
    store = features.store()
    assert run(adapter, tmp_path, "a", freeze=4).peak_memory_mb == 1000.0
    held = store.memory_bytes() / 2**20
    assert held > 0
    # nothing frozen: the cached features of trial a are not this trial's
    assert run(adapter, tmp_path, "b", freeze=0).peak_memory_mb == round(1000.0 - held, 1)
    # the same prefix again: it uses them (alone it would have computed them), so they count
    assert run(adapter, tmp_path, "c", freeze=4).peak_memory_mb == 1000.0


def test_cache_only_where_exact(make_adapter, tmp_path):
    # augmentation on: the training images differ every epoch, validation ones do not
    assert run(make_adapter(), tmp_path, "aug", freeze=4, fliplr=0.5).extra[
        "feature_cache"
    ] == "val"
    # ...unless the frozen phase trains on plain images
    result = run(make_adapter(frozen_augment=False), tmp_path, "plain", freeze=4, fliplr=0.5)
    assert result.extra["feature_cache"] == "train+val"
    # frozen BatchNorm that keeps updating its statistics is not a fixed function
    result = run(make_adapter(bn_frozen="train"), tmp_path, "bn", freeze=4)
    assert result.extra["feature_cache"] == "none"
    assert run(make_adapter(), tmp_path, "none", freeze=0).extra["feature_cache"] == "none"
    assert run(make_adapter(feature_cache="off"), tmp_path, "off", freeze=4).extra[
        "feature_cache"
    ] == "none"


def test_frozen_augment_false_skips_augmentation_only_while_frozen(
    make_adapter, tmp_path, monkeypatch
):
    from trainer.torchvision.augment import Augmenter

    hyp = {"freeze": 3, "unfreeze_epoch": 1, "fliplr": 0.5, "hsv_v": 0.4}
    epochs_augmented: list[int] = []
    plain_call = Augmenter.__call__

    def recording(self, images, targets):
        epochs_augmented.append(reporter_epochs[0])
        return plain_call(self, images, targets)

    monkeypatch.setattr(Augmenter, "__call__", recording)

    class EpochReporter(RecordingReporter):
        def report(self, epoch, metrics):
            super().report(epoch, metrics)
            reporter_epochs[0] = epoch + 1  # the next epoch's batches follow

    for settings, wanted in (({"frozen_augment": False}, {1}), ({}, {0, 1})):
        reporter_epochs, epochs_augmented[:] = [0], []
        make_adapter(feature_cache="off", **settings).run(
            {**NO_AUG, **hyp}, EpochReporter(), tmp_path / str(wanted)
        )
        # epoch 0 is frozen (freeze 3 until epoch 1): augmented only without frozen_augment off
        assert set(epochs_augmented) == wanted


def test_stochastic_prefix_layers_are_found():
    net = build_model("efficientnet_b0", 2, device="meta")
    assert stochastic_layers(net, 3)  # MBConv blocks carry stochastic depth
    assert not stochastic_layers(build_model("resnet18", 2, device="meta"), 5)


def test_digest_changes_with_any_weight_or_statistic():
    torch.manual_seed(0)
    model = build_model("resnet18", 2)
    before = prefix_digest(model, 2)
    assert prefix_digest(model, 2) == before
    assert prefix_digest(model, 3) != before
    with torch.no_grad():
        model.blocks[1][0].bn1.running_mean[0] += 1e-6
    assert prefix_digest(model, 2) != before
    # trainable blocks are not part of the key
    stem = prefix_digest(model, 1)
    with torch.no_grad():
        model.blocks[-1][-1].weight.add_(1.0)
    assert prefix_digest(model, 1) == stem


def test_store_spills_to_disk_beyond_its_memory_bound():
    store = FeatureStore(max_bytes=5000)
    model = build_model("resnet18", 2)
    sets = [torch.zeros(8, 3, 8, 8, dtype=torch.uint8) + i for i in range(3)]
    values = [torch.randn(8, 40, 2, 2) for _ in sets]  # 5120 bytes each: over the bound
    device = torch.device("cpu")
    got = [
        store.get(model, 1, images, device, lambda v=v: v.split(3), digest="d")
        for images, v in zip(sets, values)
    ]
    assert store.memory_bytes() <= 5000
    on_disk = [f for f in got if f.memory is None]
    assert len(on_disk) >= 2 and all(f.path.exists() for f in on_disk)
    index = torch.tensor([5, 0, 7])
    for feats, value in zip(got, values):
        assert torch.equal(feats.take(index, device), value[index])
        assert len(feats) == 8
    folder = on_disk[0].path.parent
    store.clear()
    assert not folder.exists()


def test_an_entry_over_the_bound_goes_straight_to_disk():
    """An entry larger than the whole bound is written batch by batch into its file: it is
    never in memory whole (on a GPU it would not fit next to the model)."""
    store = FeatureStore(max_bytes=1000)
    model = build_model("resnet18", 2)
    images = torch.zeros(8, 3, 8, 8, dtype=torch.uint8)
    value = torch.randn(8, 40, 2, 2)  # 5120 bytes
    seen = []

    def batches():
        for part in value.split(3):
            # nothing of the entry is held in memory while it is written
            seen.append(store.memory_bytes())
            yield part

    feats = store.get(model, 1, images, torch.device("cpu"), batches, digest="d")
    assert feats.memory is None and feats.path.exists() and seen == [0, 0, 0]
    assert torch.equal(feats.take(torch.arange(8), torch.device("cpu")), value)
    store.clear()


def test_cache_settings_are_validated(make_adapter):
    with pytest.raises(ConfigError, match="feature_cache"):
        make_adapter(feature_cache="always")
    with pytest.raises(ConfigError, match="frozen_augment"):
        make_adapter(frozen_augment="no")
    with pytest.raises(ConfigError, match="feature_cache_mb"):
        make_adapter(feature_cache_mb=-1)
    assert make_adapter().settings_dict()["feature_cache"] == "auto"
    # a bare `off` in YAML arrives as False
    assert make_adapter(feature_cache=False).settings_dict()["feature_cache"] == "off"
