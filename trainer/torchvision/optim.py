"""Optimizer with layer-wise learning-rate decay, and the YOLOv5 warmup + lrf schedule.

Parameters are grouped per block and per kind, as YOLOv5 splits them:

* ``weight``: conv/linear weights, with ``weight_decay``;
* ``norm``: normalisation-layer weights, no decay;
* ``bias``: every bias, no decay.

Block ``i`` gets ``lr0 * lr_decay ** (head_index - i)`` (the head has distance 0), so
``lr_decay < 1`` trains the input side more gently. Every block is in the optimizer from the
start: frozen parameters have no gradient, so SGD and AdamW skip them, and a staged unfreeze
needs no new groups.

The schedule functions are pure so that their values can be checked directly.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from trainer.torchvision.blocks import BlockModel

OPTIMIZERS = ("SGD", "AdamW")
KINDS = ("weight", "norm", "bias")


def param_groups(
    model: BlockModel, lr0: float, lr_decay: float, weight_decay: float, warmup_bias_lr: float
) -> list[dict[str, Any]]:
    """Parameter groups per block and kind; empty groups are left out.

    Each group carries ``block``, ``kind``, ``initial_lr`` (its lr before the lrf schedule) and
    ``warmup_start`` (its lr at the first warmup iteration: bias groups fall from
    ``warmup_bias_lr``, scaled by the same layer decay so that the ratios between blocks hold,
    the others rise from 0).
    """
    norm_types = tuple(t for name, t in vars(nn).items() if "Norm" in name and isinstance(t, type))
    groups: list[dict[str, Any]] = []
    for index, block in enumerate(model.blocks):
        scale = lr_decay ** (model.head_index - index)
        by_kind: dict[str, list[nn.Parameter]] = {kind: [] for kind in KINDS}
        for module in block.modules():
            for name, param in module.named_parameters(recurse=False):
                if name == "bias":
                    by_kind["bias"].append(param)
                elif isinstance(module, norm_types):
                    by_kind["norm"].append(param)
                else:
                    by_kind["weight"].append(param)
        for kind, params in by_kind.items():
            if not params:
                continue
            lr = lr0 * scale
            groups.append(
                {
                    "params": params,
                    "lr": lr,
                    "initial_lr": lr,
                    "weight_decay": weight_decay if kind == "weight" else 0.0,
                    "warmup_start": warmup_bias_lr * scale if kind == "bias" else 0.0,
                    "block": index,
                    "kind": kind,
                }
            )
    return groups


def build_optimizer(model: BlockModel, hyp: Mapping[str, Any]) -> torch.optim.Optimizer:
    """SGD (momentum, nesterov) or AdamW (``betas=(momentum, 0.999)``) over :func:`param_groups`.

    Raises:
        ValueError: Unknown ``optimizer``.
    """
    groups = param_groups(
        model,
        lr0=float(hyp["lr0"]),
        lr_decay=float(hyp["lr_decay"]),
        weight_decay=float(hyp["weight_decay"]),
        warmup_bias_lr=float(hyp["warmup_bias_lr"]),
    )
    name = str(hyp["optimizer"])
    momentum = float(hyp["momentum"])
    if name.lower() == "sgd":
        # torch refuses nesterov without momentum; plain SGD is the meaning then
        nesterov = bool(hyp["nesterov"]) and momentum > 0
        return torch.optim.SGD(groups, lr=float(hyp["lr0"]), momentum=momentum, nesterov=nesterov)
    if name.lower() == "adamw":
        return torch.optim.AdamW(groups, lr=float(hyp["lr0"]), betas=(momentum, 0.999))
    raise ValueError(f"unknown optimizer {name!r}; choose from {', '.join(OPTIMIZERS)}")


def lr_factor(epoch: int, epochs: int, lrf: float, cos_lr: bool) -> float:
    """The lrf schedule of YOLOv5: 1 at epoch 0, falling towards ``lrf`` at ``epochs``.

    Linear ``(1 - e/epochs) * (1 - lrf) + lrf`` or, with ``cos_lr``, the one-cycle cosine
    ``((1 - cos(e*pi/epochs)) / 2) * (lrf - 1) + 1``.
    """
    if cos_lr:
        return ((1 - math.cos(epoch * math.pi / epochs)) / 2) * (lrf - 1) + 1
    return (1 - epoch / epochs) * (1.0 - lrf) + lrf


def n_warmup_iters(warmup_epochs: float, n_batches_per_epoch: int) -> int:
    """Warmup length in iterations.

    YOLOv5 warms up for at least 100 iterations; trials here are a few dozen iterations long,
    so that floor would turn every trial into pure warmup and is left out on purpose.
    """
    return max(0, round(warmup_epochs * n_batches_per_epoch))


def warmup_interp(iteration: int, n_warmup: int, start: float, end: float) -> float:
    """Linear interpolation from ``start`` (iteration 0) to ``end`` (iteration ``n_warmup``).

    Clamped like ``np.interp``: ``end`` from ``n_warmup`` on, and at once when there is no
    warmup.
    """
    if n_warmup <= 0 or iteration >= n_warmup:
        return end
    return start + (end - start) * max(iteration, 0) / n_warmup


class Schedule:
    """Sets lr (and SGD momentum) of every group before each iteration.

    Args:
        optimizer: Built by :func:`build_optimizer`.
        hyp: Reads ``lrf``, ``cos_lr``, ``warmup_epochs``, ``warmup_momentum``, ``momentum``.
        epochs: Length of the schedule (the run's epoch count).
        n_batches_per_epoch: Iterations per epoch.
    """

    def __init__(
        self,
        optimizer: torch.optim.Optimizer,
        hyp: Mapping[str, Any],
        epochs: int,
        n_batches_per_epoch: int,
    ) -> None:
        self.optimizer = optimizer
        self.epochs = epochs
        self.n_batches = n_batches_per_epoch
        self.lrf = float(hyp["lrf"])
        self.cos_lr = bool(hyp["cos_lr"])
        self.n_warmup = n_warmup_iters(float(hyp["warmup_epochs"]), n_batches_per_epoch)
        self.warmup_momentum = float(hyp["warmup_momentum"])
        self.momentum = float(hyp["momentum"])

    def step(self, epoch: int, batch: int) -> None:
        """Apply the values for ``batch`` of ``epoch`` (both 0-based)."""
        factor = lr_factor(epoch, self.epochs, self.lrf, self.cos_lr)
        iteration = epoch * self.n_batches + batch
        for group in self.optimizer.param_groups:
            target = group["initial_lr"] * factor
            group["lr"] = warmup_interp(iteration, self.n_warmup, group["warmup_start"], target)
            if "momentum" in group:
                group["momentum"] = warmup_interp(
                    iteration, self.n_warmup, self.warmup_momentum, self.momentum
                )


def head_lr(optimizer: torch.optim.Optimizer) -> float:
    """Current lr of the head's weights (the ``lr`` metric)."""
    head = max(group["block"] for group in optimizer.param_groups)
    for group in optimizer.param_groups:
        if group["block"] == head and group["kind"] == "weight":
            return float(group["lr"])
    return float(optimizer.param_groups[-1]["lr"])
