"""Settings of the built-in trainer (the space file's ``trainer:`` section) and hyp defaults.

:func:`parse_settings` turns the raw mapping into a frozen :class:`Settings`, raising
:class:`~trainer.base.ConfigError` with the dotted field name for anything wrong. Checks that
touch the file system (does the data root exist?) live in the adapter's ``check_data``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from trainer.base import ConfigError
from trainer.torchvision import synthetic
from trainer.torchvision.blocks import MODELS
from trainer.torchvision.freeze import BN_MODES

# The single source of hyp defaults (YOLOv5's hyp.scratch-low values plus the freeze keys).
DEFAULT_HYP: dict[str, Any] = {
    "lr0": 0.01,
    "lrf": 0.01,
    "momentum": 0.937,
    "weight_decay": 0.0005,
    "warmup_epochs": 3.0,
    "warmup_momentum": 0.8,
    "warmup_bias_lr": 0.1,
    "optimizer": "SGD",
    "nesterov": True,
    "cos_lr": False,
    "label_smoothing": 0.0,
    "hsv_h": 0.015,
    "hsv_s": 0.7,
    "hsv_v": 0.4,
    "degrees": 0.0,
    "translate": 0.1,
    "scale": 0.5,
    "shear": 0.0,
    "flipud": 0.0,
    "fliplr": 0.5,
    "mixup": 0.0,
    "freeze": 0,
    "lr_decay": 1.0,
    "unfreeze_epoch": 0,
}

# weights values that are not a torchvision weights name or a checkpoint path
SPECIAL_WEIGHTS = ("pretrain", "none")
# auto: cache frozen-prefix outputs wherever that is exact (trainer.torchvision.features)
CACHE_MODES = ("auto", "off")
DEVICE_PATTERN = re.compile(r"auto|cpu|cuda(:\d+)?")
WEIGHTS_NAME = re.compile(r"([A-Za-z0-9]+_Weights\.)?[A-Z][A-Z0-9_]*")


@dataclass(frozen=True)
class SyntheticSettings:
    """The synthetic TARGET task (what a study fine-tunes on when ``data: synthetic``)."""

    n_classes: int = 6
    n_train: int = 300
    n_val: int = 300
    seed: int = 0


@dataclass(frozen=True)
class PretrainSettings:
    """The synthetic SOURCE task behind ``weights: pretrain`` (classes disjoint from target)."""

    n_classes: int = 10
    n_train: int = 3000
    epochs: int = 8
    lr: float = 0.05
    batch: int = 64
    seed: int = 1000


@dataclass(frozen=True)
class Settings:
    """Resolved trainer settings; see the package docstring for the meaning of each."""

    model: str = "resnet18"
    weights: str = "pretrain"
    data: str = "synthetic"
    synthetic: SyntheticSettings = field(default_factory=SyntheticSettings)
    pretrain: PretrainSettings = field(default_factory=PretrainSettings)
    imgsz: int = 32
    batch: int = 32
    epochs: int = 6
    device: str = "auto"
    workers: int = 0
    bn_frozen: str = "eval"
    seed: int = 0
    max_batches_per_epoch: int | None = None
    feature_cache: str = "auto"
    feature_cache_mb: int = 1024
    frozen_augment: bool = True

    def to_dict(self) -> dict[str, Any]:
        """Plain, YAML-friendly mapping."""
        return asdict(self)


def parse_settings(raw: Mapping[str, Any] | None) -> Settings:
    """Validate the ``trainer`` section (without ``adapter``) into :class:`Settings`.

    Raises:
        ConfigError: Unknown key, wrong type or value out of range; ``field`` is dotted
            (``synthetic.n_train``).
    """
    raw = dict(raw or {})
    raw.pop("adapter", None)
    _reject_unknown(raw, Settings, "")
    values: dict[str, Any] = {}
    for key in ("imgsz", "batch", "epochs", "workers", "seed"):
        if key in raw:
            values[key] = _int(raw[key], key, minimum=0 if key in ("workers", "seed") else 1)
    if "imgsz" in values and values["imgsz"] < 8:
        raise ConfigError("imgsz", f"must be at least 8, got {values['imgsz']}")
    if raw.get("max_batches_per_epoch") is not None:
        values["max_batches_per_epoch"] = _int(
            raw["max_batches_per_epoch"], "max_batches_per_epoch", minimum=1
        )
    if "feature_cache" in raw:
        mode = raw["feature_cache"]
        if isinstance(mode, bool):
            # YAML reads a bare `off` as false (and `on` as true)
            mode = "auto" if mode else "off"
        values["feature_cache"] = _choice(mode, "feature_cache", CACHE_MODES)
    if "feature_cache_mb" in raw:
        values["feature_cache_mb"] = _int(raw["feature_cache_mb"], "feature_cache_mb", minimum=0)
    if "frozen_augment" in raw:
        if not isinstance(raw["frozen_augment"], bool):
            raise ConfigError(
                "frozen_augment", f"must be true or false, got {raw['frozen_augment']!r}"
            )
        values["frozen_augment"] = raw["frozen_augment"]
    if "model" in raw:
        values["model"] = _choice(raw["model"], "model", tuple(MODELS))
    if "bn_frozen" in raw:
        values["bn_frozen"] = _choice(raw["bn_frozen"], "bn_frozen", BN_MODES)
    if "device" in raw:
        device = str(raw["device"]).strip().lower()
        if not DEVICE_PATTERN.fullmatch(device):
            raise ConfigError(
                "device", f"must be auto, cpu, cuda or cuda:N, got {raw['device']!r}"
            )
        values["device"] = device
    if "weights" in raw:
        weights = _path_or_word(raw["weights"], "weights", SPECIAL_WEIGHTS)
        # an upper-case word that is no file is a torchvision weights name (DEFAULT, ...)
        if weights not in SPECIAL_WEIGHTS and not (
            WEIGHTS_NAME.fullmatch(weights) and not Path(weights).exists()
        ):
            weights = str(Path(weights).expanduser().absolute())
        values["weights"] = weights
    if "data" in raw:
        data = _path_or_word(raw["data"], "data", ("synthetic",))
        values["data"] = data if data == "synthetic" else str(Path(data).expanduser().absolute())
    if "synthetic" in raw:
        values["synthetic"] = _section(raw["synthetic"], "synthetic", SyntheticSettings, "target")
    if "pretrain" in raw:
        values["pretrain"] = _section(raw["pretrain"], "pretrain", PretrainSettings, "source")
    return Settings(**values)


def _section(raw: Any, name: str, cls: type, task: str) -> Any:
    if not isinstance(raw, Mapping):
        raise ConfigError(name, f"must be a mapping, got {type(raw).__name__}")
    _reject_unknown(raw, cls, f"{name}.")
    values: dict[str, Any] = {}
    for f in fields(cls):
        if f.name not in raw:
            continue
        key = f"{name}.{f.name}"
        if f.name == "lr":
            values[f.name] = _float(raw[f.name], key, positive=True)
        else:
            minimum = 0 if f.name == "seed" else 1
            values[f.name] = _int(raw[f.name], key, minimum=minimum)
    n_classes = values.get("n_classes", cls().n_classes)
    limit = synthetic.max_classes(task)
    if not 2 <= n_classes <= limit:
        raise ConfigError(
            f"{name}.n_classes", f"must be in 2..{limit} (the {task} task has {limit} classes)"
        )
    n_images = [v for k, v in values.items() if k in ("n_train", "n_val")]
    if any(n < 2 for n in n_images):
        raise ConfigError(name, "n_train and n_val must be at least 2")
    return cls(**values)


def _reject_unknown(raw: Mapping[str, Any], cls: type, prefix: str) -> None:
    known = {f.name for f in fields(cls)}
    for key in raw:
        if key not in known:
            raise ConfigError(
                f"{prefix}{key}", f"unknown setting; known: {', '.join(sorted(known))}"
            )


def _int(value: Any, key: str, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(key, f"must be an integer, got {value!r}")
    if value < minimum:
        raise ConfigError(key, f"must be at least {minimum}, got {value}")
    return value


def _float(value: Any, key: str, positive: bool) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ConfigError(key, f"must be a number, got {value!r}")
    if positive and not value > 0:
        raise ConfigError(key, f"must be positive, got {value}")
    return float(value)


def _choice(value: Any, key: str, choices: tuple[str, ...]) -> str:
    if value not in choices:
        raise ConfigError(key, f"unknown {key} {value!r}; choose from {', '.join(choices)}")
    return str(value)


def _path_or_word(value: Any, key: str, words: tuple[str, ...]) -> str:
    """A keyword (case-insensitive), or the value itself (existence is checked later)."""
    if isinstance(value, Path):
        value = str(value)
    if not isinstance(value, str) or not value.strip():
        raise ConfigError(key, f"must be {' or '.join(words)} or a path, got {value!r}")
    value = value.strip()
    if value.lower() in words:
        return value.lower()
    return value
