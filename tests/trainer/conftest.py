"""Fixtures for the built-in trainer's tests: tiny, fast settings on synthetic data."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch

from trainer.torchvision.adapter import TorchvisionAdapter

# Small enough that a resnet18 epoch takes a fraction of a second on two CPU cores.
TINY: dict[str, Any] = {
    "model": "resnet18",
    "weights": "none",
    "imgsz": 16,
    "batch": 16,
    "epochs": 2,
    "device": "cpu",
    "synthetic": {"n_classes": 4, "n_train": 48, "n_val": 32},
}


@pytest.fixture
def make_adapter(tmp_path: Path) -> Callable[..., TorchvisionAdapter]:
    """Build an adapter on :data:`TINY` settings, overridden by keyword arguments."""

    def make(**overrides: Any) -> TorchvisionAdapter:
        return TorchvisionAdapter({**TINY, **overrides}, tmp_path / "cache")

    return make


@pytest.fixture
def images() -> torch.Tensor:
    """A float batch in [0, 1]: 4 random 3x8x8 images."""
    return torch.rand(4, 3, 8, 8, generator=torch.Generator().manual_seed(0))
