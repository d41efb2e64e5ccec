"""The ultralytics adapter: real (tiny) training on CPU, offline, on the synthetic detection set.

Training tests use yolov8n.yaml from scratch at 64 px on 32 + 8 generated images, two epochs
(a few seconds each). Ultralytics is imported through the adapter, so its config folder is a
temporary one and nothing lands in ``$HOME``; every test runs with the network blocked.
"""

from __future__ import annotations

import importlib.util
import json
import math
import os
import resource
import socket
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml

from tests.adapter_contract import AdapterContract, RecordingReporter
from trainer.base import ConfigError, TrialError, TrialResult
from trainer.detection_data import DetectionSpec, generate
from trainer.ultralytics import (
    MIN_VERSION,
    UltralyticsAdapter,
    _TrialState,
    apply_layer_decay,
    installed_version,
    mosaic_closed_at_start,
)
from trainer.yolo_common import FREEZE_DEFAULTS, ULTRALYTICS_HYP
from tuner.cli import main
from tuner.errors import InputError

if importlib.util.find_spec("ultralytics") is None:  # not importorskip: it would import it now
    pytest.skip("ultralytics is not installed (pip install -e '.[yolo]')",
                allow_module_level=True)

ROOT = Path(__file__).resolve().parents[2]
N_MODULES = 23  # yolov8n.yaml: 0-9 backbone, 10-21 neck, 22 Detect


@pytest.fixture(scope="module")
def cache(tmp_path_factory) -> Path:
    from trainer.ultralytics import import_ultralytics

    path = tmp_path_factory.mktemp("yolo-cache")
    import_ultralytics(path)  # first import: config dir under the cache, not $HOME
    return path


@pytest.fixture(scope="module")
def data(tmp_path_factory, cache) -> str:
    spec = DetectionSpec(n_train=32, n_val=8, imgsz=64, seed=1)
    return str(generate(tmp_path_factory.mktemp("detection") / "set", spec))


@pytest.fixture(autouse=True)
def no_network(monkeypatch):
    """Any connection attempt fails and is recorded; the test then fails too."""
    attempts: list[str] = []

    def blocked(*args, **kwargs):
        attempts.append(repr(args[:2]))
        raise OSError("network access is disabled in this test")

    monkeypatch.setattr(socket.socket, "connect", blocked)
    monkeypatch.setattr(socket, "create_connection", blocked)
    monkeypatch.setattr(socket, "getaddrinfo", blocked)
    yield attempts
    assert attempts == [], f"tried to reach the network: {attempts}"


def make(cache, data, **settings) -> UltralyticsAdapter:
    base = {"model": "yolov8n.yaml", "data": data, "epochs": 2, "imgsz": 64, "batch": 16,
            "device": "cpu", "workers": 0, "seed": 0,
            # nbs = batch: an optimizer step after every batch, so two epochs change weights
            "train_args": {"nbs": 16}}
    return UltralyticsAdapter({**base, **settings}, cache)


def trial_dir(tmp_path, name="0003") -> Path:
    path = tmp_path / "trials" / name
    path.mkdir(parents=True)
    return path


@pytest.mark.slow
class TestUltralyticsContract(AdapterContract):
    @pytest.fixture
    def adapter(self, cache, data):
        adapter = make(cache, data)
        adapter.check_data()
        return adapter

    @pytest.fixture
    def failing_hyp(self, hyp):
        return {**hyp, "freeze": N_MODULES}  # everything frozen: Ultralytics refuses to train

    def test_prune_stops_at_once(self, adapter, hyp, tmp_path):
        import torch

        super().test_prune_stops_at_once(adapter, hyp, tmp_path)
        run_dir = tmp_path / f"trial_{tmp_path.name}"
        rows = (run_dir / "results.csv").read_text().splitlines()
        assert len(rows) == 2  # header + epoch 1 only: nothing ran after the prune
        # no final validation / optimizer stripping: the run is not marked finished
        checkpoint = torch.load(run_dir / "weights" / "last.pt", weights_only=False)
        assert checkpoint["epoch"] == 0 and checkpoint["optimizer"] is not None

    def test_failure_is_a_trial_error(self, adapter, failing_hyp, tmp_path):
        super().test_failure_is_a_trial_error(adapter, failing_hyp, tmp_path)
        # the wording differs between Ultralytics versions
        with pytest.raises(TrialError, match="froze the entire model|does not require grad"):
            adapter.run(failing_hyp, RecordingReporter(), tmp_path)


@pytest.mark.slow
def test_frozen_modules_get_no_gradient_then_unfreeze_with_layer_decay(cache, data, tmp_path):
    """freeze 3 + unfreeze_epoch 1 + lr_decay 0.5, observed from inside the trainer."""
    import torch

    adapter = make(cache, data)
    seen: dict = {}

    def frozen_state(trainer):
        return {k: v.detach().clone() for k, v in trainer.model.state_dict().items()
                if k.startswith(("model.0.", "model.1.", "model.2."))}

    def on_train_start(trainer):
        seen["start"] = frozen_state(trainer)
        seen["head_start"] = trainer.model.model[3].conv.weight.detach().clone()
        seen["with_params"] = {i for i, m in enumerate(trainer.model.model)
                               if any(True for _ in m.parameters())}
        seen["groups"] = [(g["module_index"], g["initial_lr"], g.get("param_group"))
                          for g in trainer.optimizer.param_groups]
        seen["callbacks"] = {fn.__module__ for fns in trainer.callbacks.values() for fn in fns}
        step = trainer.optimizer_step

        def optimizer_step():  # gradients are only there between backward and the step
            frozen = [p for n, p in trainer.model.named_parameters() if n.startswith("model.0.")]
            got = any(p.grad is not None and bool(p.grad.abs().sum() > 0) for p in frozen)
            seen.setdefault(("grads", trainer.epoch), set()).add(got)
            step()

        trainer.optimizer_step = optimizer_step

    def on_train_batch_end(trainer):
        if "first_batch" not in seen:  # warmup's first step: bias groups at their start
            seen["first_batch"] = [(g["module_index"], g["lr"], g.get("param_group"))
                                   for g in trainer.optimizer.param_groups]

    def on_train_epoch_end(trainer):
        frozen = [p for n, p in trainer.model.named_parameters() if n.startswith("model.0.")]
        seen[trainer.epoch] = {
            "requires_grad": {p.requires_grad for p in frozen},
            "unchanged": all(torch.equal(v, frozen_state(trainer)[k])
                             for k, v in seen["start"].items()),
            "module3_changed": not torch.equal(seen["head_start"],
                                               trainer.model.model[3].conv.weight),
        }

    def on_fit_epoch_end(trainer):  # after the adapter's: what Ultralytics scores the epoch
        seen.setdefault("fitness", []).append(float(trainer.fitness))

    adapter.extra_callbacks["on_train_start"].append(on_train_start)
    adapter.extra_callbacks["on_train_epoch_end"].append(on_train_epoch_end)
    adapter.extra_callbacks["on_train_batch_end"].append(on_train_batch_end)
    adapter.extra_callbacks["on_fit_epoch_end"].append(on_fit_epoch_end)
    hyp = {**adapter.default_hyp(), "freeze": 3, "unfreeze_epoch": 1, "lr_decay": 0.5}
    reporter = RecordingReporter()
    # a spike before the trial: the process's lifetime peak RSS is now far above the trial's
    spike = b"\x01" * (1536 * 2**20)
    del spike
    lifetime_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    result = adapter.run(hyp, reporter, trial_dir(tmp_path))

    # epoch 0: modules 0-2 frozen: no gradient, weights and BatchNorm statistics unchanged
    assert seen[0]["requires_grad"] == {False} and seen["grads", 0] == {False}
    assert seen[0]["unchanged"] and seen[0]["module3_changed"]
    # epoch 1: unfrozen, trained
    assert seen[1]["requires_grad"] == {True} and seen["grads", 1] == {True}
    assert not seen[1]["unchanged"]
    # lr_decay: one group per (kind, module), module i at lr0 * 0.5 ** (22 - i)
    lr0 = hyp["lr0"]
    indices = {index for index, _, _ in seen["groups"]}
    assert indices == seen["with_params"]  # every module with parameters (not Upsample, Concat)
    assert len(indices) == N_MODULES - 6
    for index, initial_lr, _ in seen["groups"]:
        assert initial_lr == pytest.approx(lr0 * 0.5 ** (N_MODULES - 1 - index))
    # warmup starts a bias group at warmup_bias_lr decayed like its layer (not at 0.1 for all)
    biases = [(index, lr) for index, lr, kind in seen["first_batch"] if kind == "bias"]
    for index, lr in biases:
        assert lr == pytest.approx(hyp["warmup_bias_lr"] * 0.5 ** (N_MODULES - 1 - index))
    kinds = {kind for _, _, kind in seen["groups"]}
    assert kinds == {"weight", "bn", "bias"}  # tagged from 8.4.3, the floor (warmup reads it)
    # integrations (Ray Tune, platform, events...) were removed from the trainer
    assert not {m for m in seen["callbacks"] if ".callbacks." in m and not m.endswith(".base")}
    assert "ultralytics.utils.events" not in seen["callbacks"]
    # the result
    assert [epoch for epoch, _ in reporter.calls] == [0, 1]
    assert set(reporter.calls[0][1]) == set(adapter.metrics)
    # fitness is Ultralytics' own trainer.fitness, the score its best.pt goes by (mAP50-95
    # alone in 8.3.198 and later), not 0.1 mAP50 + 0.9 mAP50-95
    assert [m["fitness"] for _, m in reporter.calls] == seen["fitness"][:2]
    assert [m["fitness"] for _, m in reporter.calls] == [m["mAP50-95"] for _, m in
                                                         reporter.calls]
    assert result.n_params_frozen > 0 and result.n_params_trainable > result.n_params_frozen
    assert 0 < result.peak_memory_mb < lifetime_mb - 512  # this trial's peak, not the process's


@pytest.mark.slow
def test_offline_and_home_untouched(tmp_path):
    """A fresh process with an empty $HOME, no config env and no network: nothing lands in HOME."""
    home, work = tmp_path / "home", tmp_path / "work"
    home.mkdir()
    work.mkdir()
    script = """
import json, socket, sys
from pathlib import Path
attempts = []
def blocked(*args, **kwargs):
    attempts.append(repr(args[:2]))
    raise OSError("network disabled")
socket.socket.connect = blocked
socket.create_connection = blocked
socket.getaddrinfo = blocked
from trainer.base import NullReporter
from trainer.ultralytics import UltralyticsAdapter
adapter = UltralyticsAdapter({"model": "yolov8n.yaml", "data": "synthetic", "epochs": 1,
                              "imgsz": 64, "batch": 8, "device": "cpu",
                              "synthetic": {"n_train": 16, "n_val": 8}}, Path("cache"))
adapter.check_data()
adapter.prepare()
trial = Path("trial"); trial.mkdir()
result = adapter.run(adapter.default_hyp(), NullReporter(), trial)
print(json.dumps({"attempts": attempts, "epochs": result.epochs_run}))
"""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("YOLO", "MPL", "XDG_")) and k != "HOME"}
    env.update(HOME=str(home), PYTHONPATH=str(ROOT))
    proc = subprocess.run([sys.executable, "-c", script], cwd=work, env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    assert report == {"attempts": [], "epochs": 1}
    assert sorted(str(p.relative_to(home)) for p in home.rglob("*")) == []
    assert sorted(p.name for p in work.iterdir()) == ["cache", "trial"]  # no runs/, weights/
    assert (work / "cache" / "yolo" / "ultralytics" / "Ultralytics" / "Arial.ttf").is_file()


def test_defaults_are_ultralytics_defaults(cache):
    from ultralytics.cfg import DEFAULT_CFG_DICT

    for key, value in ULTRALYTICS_HYP.items():
        assert DEFAULT_CFG_DICT[key] == value, key
    assert UltralyticsAdapter.default_hyp() == {**ULTRALYTICS_HYP, **FREEZE_DEFAULTS}


def test_declarations_and_limits(cache, data):
    adapter = make(cache, data)
    assert adapter.supported_keys == set(ULTRALYTICS_HYP) | {"freeze", "lr_decay",
                                                             "unfreeze_epoch"}
    assert adapter.limits() == {"freeze": (0, N_MODULES - 1), "unfreeze_epoch": (0, 1)}
    assert adapter.export_format == "ultralytics"
    assert "Detect" in adapter.describe()


def test_train_args(cache, data, tmp_path):
    adapter = make(cache, data)
    directory = trial_dir(tmp_path)
    args = adapter.train_args({**adapter.default_hyp(), "freeze": 10.0, "lr0": 0.02}, directory)
    assert args["freeze"] == 10 and isinstance(args["freeze"], int)
    assert args["lr0"] == 0.02 and args["close_mosaic"] == 10
    assert args["project"] == str(directory) and args["name"] == "trial_0003"
    assert args["exist_ok"] is True and args["plots"] is False and args["amp"] is False
    assert "lr_decay" not in args and "unfreeze_epoch" not in args
    with pytest.raises(TrialError, match="obj"):
        adapter.train_args({**adapter.default_hyp(), "obj": 1.0}, directory)


def test_settings_validation(cache, data):
    for settings, field in (({"epochs": 0}, "epochs"), ({"device": "gpu"}, "device"),
                            ({"device": "0,1"}, "device"),
                            ({"optimizer": "lion"}, "optimizer"), ({"colour": 1}, "colour"),
                            ({"train_args": {"lr0": 0.1}}, "train_args.lr0"),
                            ({"synthetic": {"n_train": 0}}, "synthetic.n_train"),
                            # no per-epoch validation: stale metrics, pruned on them
                            ({"train_args": {"val": False}}, "train_args.val"),
                            # a time limit rewrites epochs: trials of unequal length
                            ({"train_args": {"time": 0.5}}, "train_args.time"),
                            # an early stop inside the trials: trials of unequal length
                            ({"epochs": 5, "train_args": {"patience": 3}},
                             "train_args.patience")):
        with pytest.raises(ConfigError) as info:
            make(cache, data, **settings)
        assert info.value.field == field
    assert make(cache, data, train_args={"val": True, "time": None}).settings.train_args == {
        "val": True, "time": None}
    # at or above the trials' length, or 0 (Ultralytics: never), no trial stops early
    for patience in (0, 5, 100):
        make(cache, data, epochs=5, train_args={"patience": patience})


def test_val_time_and_patience_in_a_base_hyp_are_rejected_too(cache, data, tmp_path):
    adapter = make(cache, data)
    with pytest.raises(TrialError, match="val"):
        adapter.train_args({**adapter.default_hyp(), "val": False}, trial_dir(tmp_path))
    from tuner.space import load_space

    space = tmp_path / "s.yaml"
    for key, value, says in (("val", "false", "must"), ("time", "0.1", "must"),
                             ("patience", "1", "1 would stop trials")):
        space.write_text(
            f"trainer: {{adapter: ultralytics, data: {data}, epochs: 2, imgsz: 64}}\n"
            f"base: {{{key}: {value}}}\n"
            "space: {lr0: {type: float, low: 0.001, high: 0.1}}\n"
        )
        with pytest.raises(InputError, match=f"s.yaml: base.{key}: {says}"):
            load_space(space, cache_dir=cache)
    with pytest.raises(TrialError, match="patience"):
        adapter.train_args({**adapter.default_hyp(), "patience": 1}, trial_dir(tmp_path, "0004"))


def test_check_data_refuses_an_ultralytics_older_than_the_floor(cache, data, monkeypatch):
    assert installed_version() >= MIN_VERSION == (8, 4, 3)
    monkeypatch.setattr("trainer.ultralytics.installed_version", lambda: (8, 4, 2))
    with pytest.raises(ConfigError, match=r"ultralytics 8\.4\.2 is older than 8\.4\.3") as info:
        make(cache, data).check_data()
    assert info.value.field == "adapter"


def test_fitness_is_ultralytics_own_trainer_fitness():
    """Whatever the trainer scored the epoch (segmentation adds the masks' score), not a
    formula over the columns."""
    reporter = RecordingReporter()
    state = _TrialState(reporter, TrialResult(), 0)
    state.pending = True
    trainer = SimpleNamespace(
        epoch=0, tloss=None, fitness=0.4321,
        metrics={"metrics/precision(B)": 0.5, "metrics/recall(B)": 0.4,
                 "metrics/mAP50(B)": 0.3, "metrics/mAP50-95(B)": 0.2, "val/box_loss": 1.0},
    )
    state.on_fit_epoch_end(trainer)
    assert reporter.calls[0][1]["fitness"] == 0.4321
    assert reporter.calls[0][1]["mAP50"] == 0.3
    # no trainer.fitness (no validation): the columns' own convention, mAP50-95 alone
    state.pending = True
    state.on_fit_epoch_end(SimpleNamespace(**{**vars(trainer), "fitness": None, "epoch": 1}))
    assert reporter.calls[1][1]["fitness"] == 0.2


DEMO = ROOT / "spaces" / "yolo-demo.yaml"


def demo_space(tmp_path, base: str = "", space: str = "") -> Path:
    """spaces/yolo-demo.yaml (2-epoch trials searching mosaic) with its base close_mosaic
    replaced by ``base`` and ``space`` lines added to its space."""
    text = DEMO.read_text().replace("  close_mosaic: 0\n", base)
    assert "close_mosaic: 0" not in text
    path = tmp_path / "s.yaml"
    path.write_text(text + space)
    return path


def test_mosaic_searched_in_trials_close_mosaic_empties_is_an_input_error(
    workdir, capsys, cache
):
    """Ultralytics switches mosaic off for the last close_mosaic epochs (default 10): in
    2-epoch trials from the first, so a searched mosaic would tune noise."""
    from tuner.space import load_space

    load_space(DEMO, cache_dir=cache)  # as shipped: base close_mosaic 0
    path = demo_space(workdir)
    code = main(["validate", str(path)])
    err = capsys.readouterr().err
    assert code == 2 and len(err.strip().splitlines()) == 1, err
    assert ("s.yaml: space.mosaic: Ultralytics turns mosaic, mixup, copy_paste and cutmix "
            "off for the last close_mosaic epochs") in err
    assert "close_mosaic 10 (the default) >= trainer.epochs (2)" in err
    assert "set base close_mosaic below trainer.epochs (2); 0 keeps" in err
    with pytest.raises(InputError, match=r"space\.mosaic: .*close_mosaic 2 \(base\)"):
        load_space(demo_space(workdir, "  close_mosaic: 2\n"), cache_dir=cache)
    load_space(demo_space(workdir, "  close_mosaic: 1\n"), cache_dir=cache)  # epoch 0 has it
    # a searched close_mosaic that can reach the trials' length
    with pytest.raises(InputError, match=r"space\.close_mosaic: close_mosaic 3 switches the "
                                         r"searched mosaic off"):
        load_space(demo_space(workdir, space="  close_mosaic: {type: int, low: 0, high: 3}\n"),
                   cache_dir=cache)
    load_space(demo_space(workdir, space="  close_mosaic: {type: int, low: 0, high: 1}\n"),
               cache_dir=cache)
    # a confirmation no longer than close_mosaic would confirm trials without mosaic
    text = demo_space(workdir, "  close_mosaic: 1\n").read_text().replace(
        "  baseline: true\n", "  baseline: true\n  confirm: {top_k: 1, n_seeds: 1, epochs: 1}\n")
    (workdir / "c.yaml").write_text(text)
    # (its message names the confirmation's length, not trainer.epochs)
    wanted = r"search\.confirm\.epochs: runs of 1 epochs: space\.mosaic: .*confirm\.epochs \(1\)"
    with pytest.raises(InputError, match=wanted):
        load_space(workdir / "c.yaml", cache_dir=cache)


def test_close_mosaic_rule_follows_the_installed_release(workdir, cache, monkeypatch):
    """Before 8.4.157 Ultralytics closed mosaic at `epoch == epochs - close_mosaic` only: a
    close_mosaic above the trials' length never closes it, one equal to it does at once."""
    from tuner.space import load_space

    assert mosaic_closed_at_start(10, 2) and mosaic_closed_at_start(2, 2)
    assert not mosaic_closed_at_start(1, 2) and not mosaic_closed_at_start(0, 2)
    assert not mosaic_closed_at_start(10, 2, at_or_after=False)
    assert mosaic_closed_at_start(2, 2, at_or_after=False)
    monkeypatch.setattr("trainer.ultralytics.installed_version", lambda: (8, 4, 156))
    load_space(demo_space(workdir), cache_dir=cache)  # default 10 > 2: never closed there
    with pytest.raises(InputError, match=r"close_mosaic 2 \(base\) = trainer\.epochs \(2\)"):
        load_space(demo_space(workdir, "  close_mosaic: 2\n"), cache_dir=cache)
    with pytest.raises(InputError, match=r"space\.close_mosaic: close_mosaic 2 switches"):
        load_space(demo_space(workdir, space="  close_mosaic: {type: int, low: 1, high: 5}\n"),
                   cache_dir=cache)


def test_check_data(cache, data, tmp_path):
    with pytest.raises(ConfigError, match="not a local file and nothing is downloaded"):
        make(cache, data, model="yolov8n.pt").check_data()
    with pytest.raises(ConfigError, match="no such dataset"):
        make(cache, str(tmp_path / "missing.yaml")).check_data()
    with pytest.raises(ConfigError, match="not an Ultralytics train argument"):
        make(cache, data, train_args={"no_such_arg": 1}).check_data()
    make(cache, "synthetic").check_data()


def test_layer_decay_changes_group_lrs(cache):
    import torch
    from ultralytics.nn.tasks import DetectionModel

    model = DetectionModel("yolov8n.yaml", nc=3, verbose=False)
    params = [p for n, p in model.named_parameters() if n.endswith(".weight")]
    biases = [p for n, p in model.named_parameters() if n.endswith(".bias")]
    optimizer = torch.optim.SGD([{"params": params, "param_group": "weight"},
                                 {"params": biases, "param_group": "bias"}], lr=0.01)
    apply_layer_decay(optimizer, model, 0.9)
    n_params = sum(len(g["params"]) for g in optimizer.param_groups)
    assert n_params == len(params) + len(biases)
    lrs = {(g["module_index"], g["param_group"]): g["lr"] for g in optimizer.param_groups}
    assert lrs[(N_MODULES - 1, "weight")] == pytest.approx(0.01)
    assert lrs[(0, "weight")] == pytest.approx(0.01 * 0.9 ** (N_MODULES - 1))
    assert lrs[(0, "bias")] == lrs[(0, "weight")]


def test_nan_training_loss_is_a_trial_error():
    import torch

    state = _TrialState(RecordingReporter(), TrialResult(), 0)
    trainer = SimpleNamespace(
        epoch=0, tloss={"box_loss": torch.tensor(math.nan)},
        label_loss_items=lambda loss, prefix: {f"{prefix}/{k}": v for k, v in loss.items()},
    )
    with pytest.raises(TrialError, match="non-finite train/box_loss"):
        state.on_train_epoch_end(trainer)


def test_demo_space_loads(tmp_path, cache):
    from tuner.space import load_space

    config = load_space(ROOT / "spaces" / "yolo-demo.yaml", cache_dir=tmp_path)
    assert config.trainer.adapter == "ultralytics"
    assert set(config.space) >= {"freeze", "lr_decay", "unfreeze_epoch"}
    adapter = config.make_adapter(tmp_path)
    adapter.check_data()
    assert yaml.safe_load(Path(adapter._data()).read_text())["nc"] == 3
