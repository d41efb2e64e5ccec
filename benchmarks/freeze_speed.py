"""Freeze speed-up against the cost-model bound (issue section 2).

Measured: the per-epoch training time (training batches only, no validation) of the built-in
trainer for freeze = 0, the middle block (``head_index // 2``) and all but the head, through
the adapter's own ``run`` (so the epoch is exactly what a trial trains), with frozen-feature
caching off, so this is what freezing alone buys. Each run trains ``--epochs`` epochs; the
first is a warm-up and is dropped.

Bound: the cost model says a frozen prefix costs its forward pass only, and the trainable rest
costs forward + backward + optimizer step. :func:`epoch_pieces` replays the loop's epoch on
the same batches and times its three parts separately: getting the batch ready (uint8 to
float, augmentation, normalisation: the same work for every freeze), the frozen prefix's
forward pass under ``no_grad`` (frozen BatchNorm in eval mode), and a full training step of
blocks ``freeze..head`` on the prefix's outputs. Then, per freeze ``k``::

    bound time(k)      = data + prefix forward + trainable step
    bound speed-up(k)  = measured epoch(0) / bound time(k)
    measured speed-up  = measured epoch(0) / measured epoch(k)
    of bound           = measured / bound speed-up = bound time(k) / measured epoch(k)

Target: at all but the head, the measured speed-up is >= 90% of the bound. Configurations
are interleaved (and their order alternated between repeats) so machine noise hits them
alike; every figure is a median.

Run: ``python -m benchmarks.freeze_speed [--task demo] [--sizes 32,64] [--repeats 3]
[--epochs 4]``.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from benchmarks.common import (
    add_common_flags,
    cache_dir,
    load_task,
    prepared_adapter,
    set_quick,
    table,
    write_section,
)

TARGET = 0.90


# -- arithmetic (tested without training) ----------------------------------------------------


def bound_speedup(
    full_epoch: float, data: float, prefix_forward: float, rest_step: float
) -> float:
    """The cost model's speed-up: a full epoch over data + prefix forward + trainable step."""
    return full_epoch / (data + prefix_forward + rest_step)


@dataclass(frozen=True)
class Pieces:
    """Seconds per epoch of the three parts of the cost model.

    Attributes:
        data: uint8 -> float, augmentation, normalisation (the same for every freeze).
        prefix_forward: Forward pass of the frozen blocks under ``no_grad``.
        rest_step: Forward, backward and optimizer step of the trainable blocks.
    """

    data: float
    prefix_forward: float
    rest_step: float

    @property
    def total(self) -> float:
        """The cost model's epoch time."""
        return self.data + self.prefix_forward + self.rest_step


def median_pieces(samples: Sequence[Pieces]) -> Pieces:
    """Per-part medians (each part is timed on its own, so each gets its own median)."""
    return Pieces(
        statistics.median(p.data for p in samples),
        statistics.median(p.prefix_forward for p in samples),
        statistics.median(p.rest_step for p in samples),
    )


@dataclass(frozen=True)
class Row:
    """One freeze setting against the bound.

    Attributes:
        freeze: Blocks ``0..freeze-1`` frozen.
        epoch: Measured seconds per training epoch (median).
        pieces: The cost model's parts (medians).
        full_epoch: Measured seconds per epoch at freeze 0 (the numerator of both speed-ups).
    """

    freeze: int
    epoch: float
    pieces: Pieces
    full_epoch: float

    @property
    def speedup(self) -> float:
        """Measured speed-up over freeze 0."""
        return self.full_epoch / self.epoch

    @property
    def bound(self) -> float:
        """The cost model's speed-up over (measured) freeze 0."""
        p = self.pieces
        return bound_speedup(self.full_epoch, p.data, p.prefix_forward, p.rest_step)

    @property
    def of_bound(self) -> float:
        """Measured speed-up as a fraction of the bound (= bound time / measured time)."""
        return self.speedup / self.bound


def summarize(
    measured: Mapping[int, Sequence[float]], pieces: Mapping[int, Sequence[Pieces]]
) -> list[Row]:
    """One :class:`Row` per freeze (ascending), from every measured epoch and piece sample.

    Args:
        measured: Freeze -> measured epoch times (one per repeat, or every epoch).
        pieces: Freeze -> cost-model samples; must have the same freezes, 0 included.

    Raises:
        ValueError: Freeze 0 (the reference) is missing, or the two mappings differ.
    """
    if 0 not in measured:
        raise ValueError("freeze 0 is the reference and must be measured")
    if set(measured) != set(pieces):
        raise ValueError("measured and pieces must cover the same freezes")
    full = statistics.median(measured[0])
    return [
        Row(k, statistics.median(measured[k]), median_pieces(pieces[k]), full)
        for k in sorted(measured)
    ]


def verdict(row: Row, label: str, target: float = TARGET) -> str:
    """The one-line result for the all-but-head row."""
    ok = "met" if row.of_bound >= target else "NOT met"
    return (
        f"{label}, all but head (freeze {row.freeze}): measured {row.speedup:.2f}x, bound "
        f"{row.bound:.2f}x: {row.of_bound:.0%} of the bound (>= {target:.0%} wanted: {ok})"
    )


def interleaved(freezes: Sequence[int], repeat: int) -> list[int]:
    """The order of one repeat: as given on even repeats, reversed on odd ones, so that a
    slow drift of the machine does not always hit the same configuration first."""
    return list(freezes) if repeat % 2 == 0 else list(reversed(freezes))


# -- measurement -----------------------------------------------------------------------------


def cache_off() -> list[str]:
    """``trainer.feature_cache=off`` where the trainer has that setting (else nothing to turn
    off): the bound is about freezing, so no epoch may run on cached features."""
    from trainer.torchvision.settings import Settings

    known = {f.name for f in fields(Settings)}
    return ["trainer.feature_cache=off"] if "feature_cache" in known else []


class _EpochClock:
    """A reporter that keeps the wall time between consecutive epoch reports."""

    def __init__(self) -> None:
        self.times: list[float] = []
        self.last = time.perf_counter()

    def report(self, epoch: int, metrics: Mapping[str, float]) -> None:
        now = time.perf_counter()
        self.times.append(now - self.last)
        self.last = now


@contextmanager
def _without_validation(adapter: Any) -> Iterator[None]:
    """Make the adapter's runs skip validation (the loop's ``val_set=None``), so the time
    between two epoch reports is the training epoch alone."""
    train_set, _ = adapter._datasets()
    adapter._datasets = lambda: (train_set, None)  # shadows the method on this instance only
    try:
        yield
    finally:
        del adapter._datasets


def measured_epochs(adapter: Any, hyp: Mapping[str, Any], freeze: int, work: Path) -> list[float]:
    """Training-epoch times of one ``adapter.run`` at ``freeze``, the warm-up epoch dropped.

    The first interval also holds the model build and the optimizer set-up: dropping it
    leaves steady-state epochs, each including the loop's per-epoch bookkeeping (schedule,
    metrics, ``results.csv``) as users get it.
    """
    clock = _EpochClock()
    with _without_validation(adapter):
        clock.last = time.perf_counter()
        adapter.run({**hyp, "freeze": freeze}, clock, work / f"freeze{freeze}")
    return clock.times[1:]


def _sync(device: Any) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


def epoch_pieces(adapter: Any, hyp: Mapping[str, Any], freeze: int, epochs: int) -> list[Pieces]:
    """The cost model's parts of each epoch but the first (warm-up), on the loop's batches.

    The replay follows :func:`trainer.torchvision.loop.train` batch for batch: the same seeds,
    data order, augmentation draws, optimizer and schedule; only the timers are new. The
    prefix runs under ``no_grad`` with frozen BatchNorm in eval mode, as in
    :class:`~trainer.torchvision.blocks.BlockModel`; the trainable blocks run from its output.
    """
    import torch
    import torch.nn.functional as F

    from trainer.torchvision import loop
    from trainer.torchvision.augment import Augmenter
    from trainer.torchvision.freeze import freeze as apply_freeze
    from trainer.torchvision.optim import Schedule, build_optimizer

    s = adapter.settings
    device = adapter.device()
    train_set, _ = adapter._datasets()
    full = {**adapter.default_hyp(), **hyp, "freeze": freeze}
    model = adapter.build(len(train_set.classes))
    torch.manual_seed(s.seed)
    apply_freeze(model, freeze, s.bn_frozen)
    model.train()
    optimizer = build_optimizer(model, full)
    n_batches = max(1, len(train_set) // s.batch)
    if s.max_batches_per_epoch is not None:
        n_batches = min(n_batches, s.max_batches_per_epoch)
    schedule = Schedule(optimizer, full, epochs, n_batches)
    augment = Augmenter(full, len(train_set.classes), seed=s.seed + 1)
    order = torch.Generator().manual_seed(s.seed)
    smoothing = float(full["label_smoothing"])
    out: list[Pieces] = []
    for epoch in range(epochs):
        perm = torch.randperm(len(train_set), generator=order)
        chunks = perm.tensor_split(max(1, len(train_set) // s.batch))[:n_batches]
        data = prefix = rest = 0.0
        for batch, index in enumerate(chunks):
            _sync(device)
            t0 = time.perf_counter()
            targets = train_set.labels[index].to(device)
            images = train_set.images[index].to(device, non_blocking=True).float().div_(255)
            images, targets = augment(images, targets)
            x = loop.normalize(images)
            _sync(device)
            t1 = time.perf_counter()
            with torch.no_grad():
                for block in model.blocks[:freeze]:
                    x = block(x)
            _sync(device)
            t2 = time.perf_counter()
            schedule.step(epoch, batch)
            logits = model.forward_from(x, freeze)
            loss = F.cross_entropy(logits, targets, label_smoothing=smoothing)
            loss.item()  # the loop checks every loss for NaN here: the same wait
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            _sync(device)
            t3 = time.perf_counter()
            data, prefix, rest = data + t1 - t0, prefix + t2 - t1, rest + t3 - t2
        out.append(Pieces(data, prefix, rest))
    return out[1:]


def measure_size(
    task: str, overrides: Sequence[str], repeats: int, epochs: int, work: Path, label: str
) -> tuple[list[Row], Any]:
    """Interleaved measurements of freeze 0 / middle / all but head for one image size."""
    config = load_task(task, [*overrides, *cache_off(), f"trainer.epochs={epochs}"])
    adapter = prepared_adapter(config)
    hyp = config.base_hyp(adapter)
    head = adapter.n_blocks() - 1
    freezes = sorted({0, head // 2, head})
    measured: dict[int, list[float]] = {k: [] for k in freezes}
    pieces: dict[int, list[Pieces]] = {k: [] for k in freezes}
    for repeat in range(repeats):
        for k in interleaved(freezes, repeat):
            times = measured_epochs(adapter, hyp, k, work)
            parts = epoch_pieces(adapter, hyp, k, epochs)
            # one sample per repeat (the median of its epochs), so each repeat weighs the same
            measured[k].append(statistics.median(times))
            pieces[k].append(median_pieces(parts))
            p = pieces[k][-1]
            print(
                f"  {label} repeat {repeat + 1}/{repeats} freeze {k}: measured "
                f"{measured[k][-1]:.3f} s/epoch; bound {p.total:.3f} s (data {p.data:.3f} + "
                f"prefix fwd {p.prefix_forward:.3f} + trainable step {p.rest_step:.3f})",
                flush=True,
            )
    return summarize(measured, pieces), adapter


def _rows_table(rows: Sequence[Row], names: Sequence[str]) -> str:
    header = (
        "freeze", "epoch (measured)", "bound time: data + prefix fwd + trainable step",
        "speed-up", "bound", "of bound",
    )
    cells = []
    for row in rows:
        p = row.pieces
        frozen = f"{row.freeze} ({', '.join(names[: row.freeze])})" if row.freeze else "0 (none)"
        cells.append(
            (
                frozen,
                f"{row.epoch:.3f} s",
                f"{p.total:.3f} s = {p.data:.3f} + {p.prefix_forward:.3f} + {p.rest_step:.3f}",
                f"{row.speedup:.2f}x",
                f"{row.bound:.2f}x",
                f"{row.of_bound:.0%}",
            )
        )
    return table(header, cells)


def main(argv: list[str] | None = None) -> int:
    from trainer.torchvision.blocks import build_model

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--task", default="demo")
    parser.add_argument(
        "--sizes", default="32,64",
        help="image sizes (px); the task's own size uses its weights, others random init",
    )
    parser.add_argument("--epochs", type=int, default=4, help="epochs per run (first dropped)")
    parser.add_argument("--repeats", type=int, default=3)
    add_common_flags(parser)
    args = parser.parse_args(argv)
    set_quick(args.quick)
    if args.epochs < 2:
        parser.error("--epochs must be at least 2 (the first is a warm-up)")
    # the task's own size, without preparing anything (no pretraining just to read a setting)
    task_size = load_task(args.task).make_adapter(cache_dir()).settings.imgsz
    sizes = [int(s) for s in args.sizes.split(",") if s.strip()]
    if not sizes:
        parser.error("--sizes needs at least one size")
    if args.quick:
        args.epochs, args.repeats, sizes = 2, 1, [task_size]
    tables, verdicts, notes = [], [], []
    with tempfile.TemporaryDirectory(prefix="bench-freeze-") as tmp:
        for size in sizes:
            # the task's weights were pretrained at its own size; another size would pretrain
            # again (minutes) although timing does not depend on the weights' values
            extra = [] if size == task_size else [f"trainer.imgsz={size}", "trainer.weights=none"]
            label = f"{size} px"
            rows, adapter = measure_size(
                args.task, extra, args.repeats, args.epochs, Path(tmp), label
            )
            names = build_model(adapter.settings.model, 2, device="meta").names
            s = adapter.settings
            weights = "task weights" if not extra else "random init"
            tables.append(f"**{label}** ({s.model}, batch {s.batch}, {weights})\n\n"
                          + _rows_table(rows, names))
            verdicts.append(verdict(rows[-1], label))
            middle = rows[1] if len(rows) > 2 else None
            if middle is not None:
                notes.append(
                    f"{label}, middle (freeze {middle.freeze}): measured {middle.speedup:.2f}x, "
                    f"bound {middle.bound:.2f}x ({middle.of_bound:.0%})"
                )
    s = adapter.settings
    body = "\n\n".join(
        [
            f"Task {args.task}: {s.model}, batch {s.batch}, base hyps (augmentation on, as "
            f"users train), feature cache off; {args.repeats} interleaved repeats of "
            f"{args.epochs}-epoch runs through `adapter.run` without validation, the first "
            "epoch of each run dropped; medians.",
            "Bound time = the same epoch replayed batch by batch with three timers: data "
            "(uint8 to float, augmentation, normalisation), the frozen prefix's forward under "
            "`no_grad` (BatchNorm in eval), and forward + backward + optimizer step of the "
            "trainable blocks on the prefix's output. Augmentation stays on for every freeze: "
            "it costs the same at each, and it is measured and counted in the bound (the data "
            "part), so the bound is what the cost model allows for the same work. "
            "Bound = measured freeze-0 epoch / bound time; of bound = bound time / measured "
            "epoch. The freeze-0 row measures the loop's own cost beyond the cost model "
            "(lr schedule, metrics, `results.csv`, the memory sampler).",
            *tables,
            "\n".join(f"- {line}" for line in [*verdicts, *notes]),
        ]
    )
    write_section("freeze_speed", "2. Freeze speed-up against the bound", body)
    print("\n\n".join(tables))
    print("ratios:")
    for line in [*notes, *verdicts]:
        print(" ", line)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
