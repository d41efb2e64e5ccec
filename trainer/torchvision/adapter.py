"""The ``torchvision`` adapter: fine-tunes a torchvision classifier in this process."""

from __future__ import annotations

import copy
import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar

import torch

from trainer.base import Adapter, ConfigError, Reporter, TrialResult
from trainer.torchvision import data, features, loop, weights
from trainer.torchvision.blocks import (
    FREEZE_SEMANTICS,
    BlockModel,
    block_table,
    build_model,
    count_blocks,
    format_block_table,
)
from trainer.torchvision.optim import OPTIMIZERS
from trainer.torchvision.settings import DEFAULT_HYP, Settings, parse_settings

log = logging.getLogger(__name__)


# Starting models on the CPU, copied by every build(), per process (a Ray worker makes an
# adapter per trial): (model, n_classes, seed, drop_head) -> (the state loaded, the model).
# A few: a confirmation alternates trainer seeds, each with its own seeded head.
N_TEMPLATES = 4
_templates: dict[tuple[str, int, int, bool], tuple[dict | None, BlockModel]] = {}


class TorchvisionAdapter(Adapter):
    """Fine-tunes resnet / mobilenet_v3 / efficientnet on an ImageFolder or synthetic data.

    Args:
        settings: The space file's ``trainer`` section without ``adapter``.
        cache_dir: Where the pretrained source-task checkpoint is cached.

    Raises:
        ConfigError: Unknown or invalid settings.
    """

    name: ClassVar[str] = "torchvision"
    supported_keys: ClassVar[frozenset[str]] = frozenset(DEFAULT_HYP)
    metrics: ClassVar[tuple[str, ...]] = loop.METRICS
    default_metric: ClassVar[str] = "val/acc"
    default_direction: ClassVar[str] = "maximize"
    export_format: ClassVar[str] = "generic"
    seed_setting = "seed"
    # the feature cache gives the same outputs as computing them (benchmarks.feature_cache)
    runtime_settings = frozenset({"device", "workers", "feature_cache", "feature_cache_mb"})

    def __init__(self, settings: Mapping[str, Any] | None, cache_dir: Path) -> None:
        super().__init__(settings or {}, cache_dir)
        self.settings: Settings = parse_settings(settings)

    @classmethod
    def default_hyp(cls) -> dict[str, Any]:
        """The YOLOv5-like defaults of every hyp key this adapter reads."""
        return dict(DEFAULT_HYP)

    def settings_dict(self) -> dict[str, Any]:
        """The resolved settings, defaults filled in."""
        return self.settings.to_dict()

    def n_blocks(self) -> int:
        """Blocks of the configured model (the head is the last)."""
        return count_blocks(self.settings.model)

    @classmethod
    def hyp_choices(cls) -> dict[str, tuple[Any, ...]]:
        """The optimizers the built-in trainer has."""
        return {"optimizer": OPTIMIZERS}

    def limits(self) -> dict[str, tuple[float, float]]:
        """``freeze`` up to the block before the head; ``unfreeze_epoch`` up to ``epochs - 1``
        (the last epoch that can still train unfrozen: ``epochs`` itself would never unfreeze,
        the same schedule as 0)."""
        return {
            "freeze": (0, self.n_blocks() - 1),
            "unfreeze_epoch": (0, self.settings.epochs - 1),
        }

    def check_data(self) -> None:
        """Check the data root, the weights source and the device; decodes nothing."""
        s = self.settings
        if s.data != "synthetic":
            problem = data.image_folder_problem(Path(s.data))
            if problem:
                raise ConfigError("data", problem)
        problem = weights.weights_problem(s)
        if problem:
            raise ConfigError("weights", problem)
        if s.device.startswith("cuda") and not torch.cuda.is_available():
            raise ConfigError("device", f"{s.device} requested but CUDA is not available")

    def prepare(self) -> None:
        """Decode the data and pretrain (or load) the starting weights, once per process."""
        self.check_data()
        self._datasets()
        self._initial_state()

    def run(self, hyp: Mapping[str, Any], reporter: Reporter, trial_dir: Path) -> TrialResult:
        """Fine-tune one configuration; see :meth:`Adapter.run`."""
        return self.fit(hyp, reporter, trial_dir)[1]

    def fit(
        self, hyp: Mapping[str, Any], reporter: Reporter, trial_dir: Path
    ) -> tuple[BlockModel, TrialResult]:
        """Like :meth:`run`, and also returns the trained model."""
        s = self.settings
        full = self._full_hyp(hyp)
        if s.workers:
            torch.set_num_threads(s.workers)
        train_set, val_set = self._datasets()
        model = self.build(len(train_set.classes))
        config = loop.LoopConfig(
            epochs=s.epochs,
            batch=s.batch,
            device=self.device(),
            seed=s.seed,
            bn_frozen=s.bn_frozen,
            max_batches_per_epoch=s.max_batches_per_epoch,
            feature_cache=s.feature_cache == "auto",
            frozen_augment=s.frozen_augment,
        )
        features.store().max_bytes = s.feature_cache_mb * 2**20
        trial_dir = Path(trial_dir)
        trial_dir.mkdir(parents=True, exist_ok=True)
        result = loop.train(model, train_set, val_set, full, config, reporter, trial_dir)
        return model, result

    def train_and_save(self, hyp: Mapping[str, Any], reporter: Reporter, out_dir: Path) -> Path:
        """Train to the end and save ``out_dir/last.pt``; returns its path.

        The checkpoint is ``{"model": state_dict (torchvision keys), "classes", "hyp",
        "settings", "metrics"}``; ``weights: <that path>`` starts a later run from it.
        """
        model, result = self.fit(hyp, reporter, out_dir)
        train_set, _ = self._datasets()
        path = Path(out_dir) / "last.pt"
        checkpoint = {
            "model": {k: v.detach().cpu() for k, v in model.net.state_dict().items()},
            "model_name": self.settings.model,
            "classes": list(train_set.classes),
            "hyp": self._full_hyp(hyp),
            "settings": self.settings_dict(),
            "metrics": result.metrics,
        }
        tmp = path.with_name(path.name + ".tmp")
        torch.save(checkpoint, tmp)
        os.replace(tmp, path)
        return path

    def build(self, n_classes: int) -> BlockModel:
        """The model with its starting weights, on the run's device (seeded: same head init
        for every trial).

        The model is built and loaded once per process, on the CPU, and each call returns a
        copy: building a torchvision model initialises every layer (about 0.1 s for resnet18 on
        two CPU cores, against 11 ms for the copy: 4% of a 2-epoch demo trial) only for the
        starting weights to overwrite all but the head. The copy equals a fresh seeded build,
        head included; the kept models cost host memory (:data:`N_TEMPLATES` at most).
        """
        s = self.settings
        state, drop_head = self._initial_state()
        key = (s.model, n_classes, s.seed, drop_head)
        kept = _templates.get(key)
        # the same state object: the same weights file, unchanged (weights keeps one per file)
        if kept is None or kept[0] is not state:
            torch.manual_seed(s.seed)
            model = build_model(s.model, n_classes)
            if state is not None:
                try:
                    weights.load_weights(model, state, drop_head)
                except ValueError as exc:
                    raise ConfigError("weights", str(exc)) from exc
            _templates.pop(key, None)
            while len(_templates) >= N_TEMPLATES:
                _templates.pop(next(iter(_templates)))  # the oldest
            kept = _templates[key] = (state, model)
        return copy.deepcopy(kept[1]).to(self.device())

    def device(self) -> torch.device:
        """The resolved device (``auto``: CUDA when available)."""
        name = self.settings.device
        if name == "auto":
            name = "cuda" if torch.cuda.is_available() else "cpu"
        return torch.device(name)

    def describe(self) -> str:
        """The block table behind ``freeze`` and what freezing N means."""
        model = build_model(self.settings.model, self._n_classes(), device="meta")
        table = format_block_table(block_table(model))
        return f"{self.settings.model} blocks ({FREEZE_SEMANTICS}):\n{table}"

    def _full_hyp(self, hyp: Mapping[str, Any]) -> dict[str, Any]:
        """Defaults overlaid with the known keys of ``hyp`` (other adapters' keys are ignored)."""
        full = {**DEFAULT_HYP, **{k: v for k, v in hyp.items() if k in DEFAULT_HYP}}
        for key in ("freeze", "unfreeze_epoch"):  # 2.0 from a YOLO-style hyp file is 2
            if isinstance(full[key], float) and full[key].is_integer():
                full[key] = int(full[key])
        head = self.n_blocks() - 1
        freeze = full["freeze"]
        if isinstance(freeze, bool) or not isinstance(freeze, int) or not 0 <= freeze <= head:
            raise ConfigError("freeze", f"must be an integer in 0..{head}, got {freeze!r}")
        if str(full["optimizer"]).lower() not in {o.lower() for o in OPTIMIZERS}:
            raise ConfigError(
                "optimizer", f"unknown optimizer {full['optimizer']!r}; choose from {OPTIMIZERS}"
            )
        return full

    def _n_classes(self) -> int:
        if self.settings.data == "synthetic":
            return self.settings.synthetic.n_classes
        root = Path(self.settings.data) / "train"
        return max(2, sum(1 for child in root.iterdir() if child.is_dir())) if root.is_dir() else 2

    def _datasets(self) -> tuple[data.TensorSet, data.TensorSet]:
        s = self.settings
        if s.data == "synthetic":
            syn = s.synthetic
            train = data.load_synthetic("target", syn.n_classes, syn.n_train, s.imgsz, syn.seed)
            # a different seed draws different images of the same classes
            val = data.load_synthetic("target", syn.n_classes, syn.n_val, s.imgsz, syn.seed + 1)
            return train, val
        problem = data.image_folder_problem(Path(s.data))
        if problem:
            raise ConfigError("data", problem)
        try:
            train = data.load_image_folder(Path(s.data), "train", s.imgsz)
            val = data.load_image_folder(Path(s.data), "val", s.imgsz, classes=train.classes)
        except ValueError as exc:
            raise ConfigError("data", str(exc)) from exc
        return train, val

    def _initial_state(self) -> tuple[dict | None, bool]:
        problem = weights.weights_problem(self.settings)
        if problem:
            raise ConfigError("weights", problem)
        try:
            return weights.initial_state(self.settings, self.cache_dir, self.device())
        except ValueError as exc:
            raise ConfigError("weights", str(exc)) from exc
