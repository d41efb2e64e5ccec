"""The epoch loop: train with warmup and schedule, evaluate, report, record.

:func:`train` is shared by trials and by source-task pretraining. It seeds torch at the start,
so every trial sees the same data order and head initialisation, and trials with the same
augmentation operations switched on the same augmentation draws (an operation draws only while
its keys are not 0, so switching one on or off moves the later draws): the rest of the
difference between trials comes from their hyps. After each epoch it reports ``val/acc``
(top-1 fraction), ``val/loss``, ``train/loss`` and ``lr`` (the head's) and appends a row to
``results.csv``.

With ``feature_cache`` on, epochs with frozen blocks run the trainable blocks on the frozen
prefix's cached outputs (:mod:`.features`) wherever that is exact: validation always, training
when no augmentation is applied in that epoch (all augmentation hyps 0, or
``frozen_augment=False``, which trains the frozen phase on plain images).
"""

from __future__ import annotations

import csv
import math
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from trainer.base import DivergedError, Pruned, Reporter, TrialError, TrialResult
from trainer.memory import RssSampler
from trainer.torchvision.augment import Augmenter
from trainer.torchvision.blocks import BlockModel
from trainer.torchvision.data import TensorSet
from trainer.torchvision.features import (
    Features,
    FeatureStore,
    prefix_batches,
    prefix_digest,
    stochastic_layers,
    store,
)
from trainer.torchvision.freeze import count_params, freeze, frozen_for_epoch
from trainer.torchvision.optim import Schedule, build_optimizer, head_lr

# ImageNet statistics: what torchvision weights expect, and harmless for the synthetic sets.
MEAN = (0.485, 0.456, 0.406)
STD = (0.229, 0.224, 0.225)

METRICS = ("val/acc", "val/loss", "train/loss", "lr")


@dataclass(frozen=True)
class LoopConfig:
    """How to train (everything that is not a hyp).

    Attributes:
        epochs: Epochs to train (also the length of the lr schedule).
        batch: Training batch size.
        device: Where to train.
        seed: Seeds data order, augmentation and torch at the start of the run.
        bn_frozen: ``"eval"`` or ``"train"`` for BatchNorm in frozen blocks.
        max_batches_per_epoch: Optional cap on iterations per epoch (tests).
        feature_cache: Train and evaluate on cached frozen-prefix outputs where exact.
        frozen_augment: Augment training images in epochs with frozen blocks; False trains
            the frozen phase on plain images (which makes its features cacheable).
        features: The cache; None uses the process-wide store.
    """

    epochs: int
    batch: int
    device: torch.device
    seed: int = 0
    bn_frozen: str = "eval"
    max_batches_per_epoch: int | None = None
    feature_cache: bool = False
    frozen_augment: bool = True
    features: FeatureStore | None = None


def train(
    model: BlockModel,
    train_set: TensorSet,
    val_set: TensorSet | None,
    hyp: Mapping[str, Any],
    config: LoopConfig,
    reporter: Reporter,
    trial_dir: Path | None = None,
) -> TrialResult:
    """Train ``model`` (already on ``config.device``) and report every epoch.

    Args:
        model: The model, with its weights loaded.
        train_set: Training split.
        val_set: Validation split; None skips evaluation (pretraining).
        hyp: Every hyp key (see ``DEFAULT_HYP``); others are ignored.
        config: Loop settings.
        reporter: Receives each epoch's metrics; may raise :class:`Pruned`.
        trial_dir: Where ``results.csv`` goes; None writes nothing.

    Returns:
        The measurements.

    Raises:
        Pruned: From the reporter, with the partial result attached.
        TrialError: Non-finite loss or CUDA out of memory, with the partial result attached.
    """
    torch.manual_seed(config.seed)
    device = config.device
    n_classes = len(train_set.classes)
    n_freeze, unfreeze_epoch = int(hyp["freeze"]), int(hyp["unfreeze_epoch"])
    freeze(model, n_freeze, config.bn_frozen)
    n_trainable, n_frozen_params = count_params(model)
    result = TrialResult(n_params_trainable=n_trainable, n_params_frozen=n_frozen_params)
    result.extra["device"] = str(device)

    optimizer = build_optimizer(model, hyp)
    batches = _batch_count(len(train_set), config)
    schedule = Schedule(optimizer, hyp, config.epochs, batches)
    augment = Augmenter(hyp, n_classes, seed=config.seed + 1)
    # Data order has its own generator so it does not shift with the augmentation settings.
    order = torch.Generator().manual_seed(config.seed)
    label_smoothing = float(hyp["label_smoothing"])
    csv_path = trial_dir / "results.csv" if trial_dir is not None else None
    cache = _Cache(model, train_set, val_set, config)

    with _peak_memory(device) as measured:

        def peak() -> float | None:
            mb = measured()
            return None if mb is None else round(max(0.0, mb - cache.foreign_mb()), 1)

        start = time.perf_counter()
        try:
            for epoch in range(config.epochs):
                n_frozen = frozen_for_epoch(n_freeze, unfreeze_epoch, epoch)
                if n_frozen != model.n_frozen:
                    freeze(model, n_frozen, config.bn_frozen)
                epoch_start = time.perf_counter()
                augmenting = n_frozen == 0 or config.frozen_augment
                train_loss = _train_epoch(
                    model,
                    train_set,
                    optimizer,
                    schedule,
                    augment if augmenting else None,
                    order,
                    epoch,
                    batches,
                    config,
                    label_smoothing,
                    result,
                    cache.train(n_frozen, augmenting and not augment.identity),
                )
                metrics = {"train/loss": train_loss, "lr": head_lr(optimizer)}
                if val_set is not None:
                    acc, loss = evaluate(
                        model, val_set, device, config.batch, cache.val(n_frozen)
                    )
                    if not math.isfinite(loss):
                        # the epoch's last steps broke the weights: NaN logits still give an
                        # accuracy (argmax picks class 0), which must not score the trial
                        raise DivergedError(
                            f"non-finite val/loss at epoch {epoch + 1} ({loss})", result
                        )
                    metrics = {"val/acc": acc, "val/loss": loss, **metrics}
                result.train_seconds = time.perf_counter() - start
                result.add_epoch(metrics)
                _append_csv(csv_path, epoch, metrics, time.perf_counter() - epoch_start)
                result.peak_memory_mb = peak()
                reporter.report(epoch, metrics)
        except (Pruned, TrialError) as exc:
            result.train_seconds = time.perf_counter() - start
            result.peak_memory_mb = peak()
            result.extra["feature_cache"] = cache.summary()  # pruned trials used it too
            exc.result = result
            raise
        except torch.cuda.OutOfMemoryError as exc:
            result.peak_memory_mb = peak()
            message = (
                f"out of memory on {device} (batch {config.batch}, "
                f"{train_set.images.shape[-1]} px); lower batch or imgsz"
            )
            raise TrialError(message, result) from exc
        finally:
            if device.type == "cuda":
                torch.cuda.empty_cache()
    result.peak_memory_mb = peak()
    result.extra["feature_cache"] = cache.summary()
    return result


class _Cache:
    """Which epochs of one run use cached frozen features, and the features themselves."""

    def __init__(
        self,
        model: BlockModel,
        train_set: TensorSet,
        val_set: TensorSet | None,
        config: LoopConfig,
    ) -> None:
        self.model = model
        self.train_set = train_set
        self.val_set = val_set
        self.config = config
        self.store = config.features or store()
        self.digests: dict[int, str] = {}
        self.used: set[str] = set()
        # what earlier runs left in the store: part of the process's memory, not this run's
        self.held_before = self.store.resident()
        self.taken: set[int] = set()

    def _usable(self, n_frozen: int) -> bool:
        # frozen BatchNorm in train mode moves its statistics every batch: nothing is fixed
        return self.config.feature_cache and n_frozen > 0 and self.model.freeze_bn

    def _get(self, n_frozen: int, data: TensorSet) -> Features:
        if n_frozen not in self.digests:
            # the prefix does not change while it stays frozen: hash it once per run
            self.digests[n_frozen] = prefix_digest(self.model, n_frozen)
        device, batch = self.config.device, self.config.batch * 2
        features = self.store.get(
            self.model,
            n_frozen,
            data.images,
            device,
            lambda: prefix_batches(
                self.model, data.images, n_frozen, batch, lambda x: to_input(x, device)
            ),
            digest=self.digests[n_frozen],
        )
        self.taken.add(id(features))
        return features

    def foreign_mb(self) -> float:
        """MB of features other runs left in memory that this run did not use.

        They count in the process's RSS (and, on a GPU, in its allocated memory) but are not
        this run's: a ``freeze: 0`` trial after frozen ones would report their features as its
        own peak. A feature set this run reused stays counted: alone it would have computed it.
        """
        return sum(n for key, n in self.held_before.items() if key not in self.taken) / 2**20

    def train(self, n_frozen: int, augmented: bool) -> Features | None:
        """Cached training features for this epoch, or None to run the full model."""
        if augmented or not self._usable(n_frozen) or stochastic_layers(self.model, n_frozen):
            return None
        self.used.add("train")
        return self._get(n_frozen, self.train_set)

    def val(self, n_frozen: int) -> Features | None:
        """Cached validation features (eval mode: always exact while the prefix is frozen)."""
        if self.val_set is None or not self._usable(n_frozen):
            return None
        self.used.add("val")
        return self._get(n_frozen, self.val_set)

    def summary(self) -> str:
        """``train+val``, ``val``, ``train`` or ``none``: what this run took from the cache."""
        return "+".join(part for part in ("train", "val") if part in self.used) or "none"


def evaluate(
    model: BlockModel,
    data: TensorSet,
    device: torch.device,
    batch: int,
    features: Features | None = None,
) -> tuple[float, float]:
    """Top-1 accuracy (fraction) and mean cross-entropy on ``data``, without augmentation.

    Args:
        features: Cached outputs of the model's frozen blocks for ``data``; the rest of the
            model runs on them.
    """
    was_training = model.training
    model.eval()
    n_correct, loss_sum = 0, 0.0
    with torch.no_grad():
        # no gradients here, so twice the training batch fits comfortably
        for index in torch.arange(len(data)).split(batch * 2):
            labels = data.labels[index].to(device)
            if features is not None:
                logits = model.forward_from(features.take(index, device), model.n_frozen)
            else:
                logits = model(to_input(data.images[index], device))
            loss_sum += F.cross_entropy(logits, labels, reduction="sum").item()
            n_correct += int((logits.argmax(1) == labels).sum())
    model.train(was_training)
    return n_correct / len(data), loss_sum / len(data)


def to_input(images: torch.Tensor, device: torch.device) -> torch.Tensor:
    """uint8 batch to normalised float on ``device``."""
    return normalize(images.to(device, non_blocking=True).float().div_(255))


def normalize(images: torch.Tensor) -> torch.Tensor:
    """Subtract the mean and divide by the std, per channel; channels-last memory layout.

    Channels-last is what oneDNN and cuDNN convolutions prefer: about 20% faster on a CPU.
    """
    mean = torch.tensor(MEAN, device=images.device).view(1, 3, 1, 1)
    std = torch.tensor(STD, device=images.device).view(1, 3, 1, 1)
    return ((images - mean) / std).contiguous(memory_format=torch.channels_last)


def _n_chunks(n_images: int, batch: int) -> int:
    """Batches that split ``n_images`` into near-equal chunks of at most ``batch`` images.

    Near-equal (sizes differ by one at most) so no tiny last batch upsets BatchNorm; at most
    ``batch`` so the setting is the most a step holds (memory, lr per image).
    """
    return max(1, math.ceil(n_images / batch))


def _batch_count(n_images: int, config: LoopConfig) -> int:
    """Batches per epoch (:func:`_n_chunks`, capped by ``max_batches_per_epoch``)."""
    n_batches = _n_chunks(n_images, config.batch)
    if config.max_batches_per_epoch is not None:
        n_batches = min(n_batches, config.max_batches_per_epoch)
    return n_batches


def _train_epoch(
    model: BlockModel,
    data: TensorSet,
    optimizer: torch.optim.Optimizer,
    schedule: Schedule,
    augment: Augmenter | None,
    order: torch.Generator,
    epoch: int,
    n_batches: int,
    config: LoopConfig,
    label_smoothing: float,
    result: TrialResult,
    features: Features | None = None,
) -> float:
    """One epoch; returns the mean training loss.

    Args:
        augment: None trains on plain images.
        features: Cached outputs of the frozen blocks for ``data`` (no augmentation): only
            the trainable blocks run.
    """
    model.train()
    device = config.device
    perm = torch.randperm(len(data), generator=order)
    # near-equal chunks of the shuffled data (a cap just drops the later chunks)
    chunks = perm.tensor_split(_n_chunks(len(data), config.batch))[:n_batches]
    loss_sum = 0.0
    for batch, index in enumerate(chunks):
        schedule.step(epoch, batch)
        targets = data.labels[index].to(device)
        if features is not None:
            logits = model.forward_from(features.take(index, device), model.n_frozen)
        else:
            images = data.images[index].to(device, non_blocking=True).float().div_(255)
            if augment is not None:
                images, targets = augment(images, targets)
            logits = model(normalize(images))
        loss = F.cross_entropy(logits, targets, label_smoothing=label_smoothing)
        value = loss.item()
        if not math.isfinite(value):
            raise DivergedError(
                f"non-finite loss at epoch {epoch + 1} batch {batch + 1} ({value})", result
            )
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        loss_sum += value
    return loss_sum / len(chunks)


def _append_csv(
    path: Path | None, epoch: int, metrics: Mapping[str, float], seconds: float
) -> None:
    if path is None:
        return
    row = {"epoch": epoch, **metrics, "epoch_seconds": round(seconds, 4)}
    new = epoch == 0 or not path.exists()
    with path.open("w" if new else "a", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(row))
        if new:
            writer.writeheader()
        writer.writerow(row)


@contextmanager
def _peak_memory(device: torch.device) -> Iterator[Any]:
    """Yields a function returning the peak memory (MB) since entering.

    CUDA: ``max_memory_allocated`` after a reset. CPU: the process RSS, sampled by a daemon
    thread from ``/proc/self/status`` (no-op where that file does not exist).
    """
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        yield lambda: torch.cuda.max_memory_allocated(device) / 2**20
        return
    sampler = RssSampler()
    sampler.start()
    try:
        yield sampler.peak_mb
    finally:
        sampler.stop()
    return None
