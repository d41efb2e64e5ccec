"""Frozen-feature caching against running the frozen prefix every epoch (issue section 3).

Two measurements, side by side in one run:

1. **Epoch time** on the demo task with everything but the head frozen and no augmentation
   in the frozen phase (``frozen_augment: false``): the same trial with ``feature_cache: auto``
   and ``off``, interleaved ``--repeats`` times. Reported: the first trial's mean epoch time
   (which includes computing the features once), the steady epoch time (epochs after the
   first, and a second trial, which finds everything cached), and the curves' largest
   difference (the cache is exact, so accuracy must not move).
2. **Study time**: the demo study as shipped plus ``frozen_augment: false`` (so frozen
   trials can use the cache), once with the cache and once without, in this process after
   the data and weights are ready. Reported: wall time of each, its ratio, best metric of each.

Run: ``python -m benchmarks.feature_cache [--repeats 3] [--n-trials 20] [--quick]``.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks.common import (
    Recorder,
    add_common_flags,
    load_task,
    prepared_adapter,
    run_search,
    set_quick,
    table,
    task_overrides,
    write_section,
)


def speedup(slow: float, fast: float) -> float:
    """``slow / fast``, inf when ``fast`` is 0."""
    return slow / fast if fast > 0 else float("inf")


class _TimedRecorder(Recorder):
    """Records metrics plus the wall time of each epoch (train and validation)."""

    def __init__(self) -> None:
        super().__init__()
        self.last = time.perf_counter()

    def report(self, epoch: int, metrics: Any) -> None:
        now = time.perf_counter()
        super().report(epoch, {**metrics, "epoch_seconds": now - self.last})
        self.last = now


def measure_epochs(repeats: int, overrides: list[str]) -> dict[str, Any]:
    """Trials with and without the cache, interleaved; see the module docstring."""
    from trainer.torchvision import features

    config = load_task("demo", overrides)
    adapters = {
        mode: prepared_adapter(
            load_task("demo", [*overrides, f"trainer.feature_cache={mode}"])
        )
        for mode in ("off", "auto")
    }
    head = adapters["off"].n_blocks() - 1
    hyp = {**adapters["off"].default_hyp(), **config.base, "freeze": head}
    first: dict[str, list[float]] = {"off": [], "auto": []}
    steady: dict[str, list[float]] = {"off": [], "auto": []}
    accs: dict[str, list[float]] = {}
    out = Path(tempfile.mkdtemp(prefix="bench-cache-"))
    for repeat in range(repeats):
        for mode, adapter in adapters.items():
            if mode == "auto":
                features.store().clear()  # the first trial pays for computing the features
            for trial in ("first", "second"):
                recorder = _TimedRecorder()
                result = adapter.run(hyp, recorder, out / f"{mode}-{repeat}-{trial}")
                times = [h["epoch_seconds"] for h in recorder.history]
                if trial == "first":
                    first[mode].append(statistics.mean(times))
                    steady[mode].extend(times[1:])
                else:
                    steady[mode].extend(times)
                accs[mode] = [h["val/acc"] for h in result.history]
                print(
                    f"  epochs {mode:>4} repeat {repeat} {trial}: "
                    f"{statistics.mean(times):.3f} s/epoch, cache {result.extra['feature_cache']}",
                    flush=True,
                )
    return {
        "freeze": head,
        "first": {m: statistics.median(v) for m, v in first.items()},
        "steady": {m: statistics.median(v) for m, v in steady.items()},
        "max_acc_diff": max(abs(a - b) for a, b in zip(accs["off"], accs["auto"])),
        "final_acc": accs,
    }


def measure_study(n_trials: int, overrides: list[str]) -> dict[str, dict[str, Any]]:
    """The demo study with and without the cache; wall time after preparation."""
    import optuna

    from trainer.torchvision import features

    out: dict[str, dict[str, Any]] = {}
    work = Path(tempfile.mkdtemp(prefix="bench-cache-study-"))
    for mode in ("off", "auto"):
        features.store().clear()
        url = f"sqlite:///{work / mode}.db"
        sets = [
            *task_overrides("demo"), f"trainer.feature_cache={mode}", *overrides,
            f"search.n_trials={n_trials}", "search.confirm.top_k=0",  # trials only
        ]
        started = time.perf_counter()
        run_search(sets, url, work / f"{mode}.yaml")
        wall = time.perf_counter() - started
        study = optuna.load_study(study_name="demo", storage=url)
        trials = [t for t in study.trials if t.datetime_complete is not None]
        # the study's own span: first trial start to last trial end (preparation excluded)
        span = (
            max(t.datetime_complete for t in trials) - min(t.datetime_start for t in trials)
        ).total_seconds()
        n_cached = sum(t.user_attrs.get("feature_cache", "none") != "none" for t in trials)
        out[mode] = {
            "wall": wall,
            "span": span,
            "best": study.best_value,
            "n_cached": n_cached,
            "n_trials": len(trials),
        }
        print(f"  study {mode:>4}: {span:.1f} s of trials, best {study.best_value:.4f}")
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--n-trials", type=int, default=20)
    add_common_flags(parser)
    args = parser.parse_args(argv)
    set_quick(args.quick)
    overrides = ["trainer.frozen_augment=false"]
    if args.quick:
        args.repeats, args.n_trials = 1, 3
    print("epoch time, all but the head frozen:", flush=True)
    epochs = measure_epochs(args.repeats, overrides)
    print("study time:", flush=True)
    study = measure_study(args.n_trials, overrides)

    first = speedup(epochs["first"]["off"], epochs["first"]["auto"])
    steady = speedup(epochs["steady"]["off"], epochs["steady"]["auto"])
    study_ratio = speedup(study["off"]["span"], study["auto"]["span"])
    rows = [
        ("epoch, first trial (features computed in it)", f"{epochs['first']['off']:.3f} s",
         f"{epochs['first']['auto']:.3f} s", f"{first:.1f}x"),
        ("epoch, steady (features cached)", f"{epochs['steady']['off']:.3f} s",
         f"{epochs['steady']['auto']:.3f} s", f"{steady:.1f}x"),
        (f"study, {study['off']['n_trials']} trials (trial time)", f"{study['off']['span']:.1f} s",
         f"{study['auto']['span']:.1f} s", f"{study_ratio:.2f}x"),
    ]
    body = "\n\n".join(
        [
            "Demo task, `freeze` = all but the head "
            f"({epochs['freeze']}), `frozen_augment: false`; `feature_cache: off` vs `auto`, "
            f"interleaved, {args.repeats} repeats (medians).",
            table(("", "no cache", "cache", "ratio"), rows),
            f"Largest val/acc difference between the cached and uncached trial over all "
            f"epochs: {epochs['max_acc_diff']:.2g} (the cache is exact). Studies: best val/acc "
            f"{study['off']['best']:.4f} without and {study['auto']['best']:.4f} with the "
            f"cache; {study['auto']['n_cached']} of {study['auto']['n_trials']} trials took "
            "features from it (the others froze nothing). The two studies may differ in "
            "their later trials: float rounding in the cached path can tip the sampler.",
            f"Target: >= 5x on the all-but-head epoch: "
            f"{'met' if steady >= 5 else 'NOT met'} ({steady:.1f}x steady, {first:.1f}x "
            "including the one-time feature pass).",
        ]
    )
    write_section("feature_cache", "3. Frozen-feature caching", body)
    print(body.split("\n\n")[1])
    print(
        f"ratios: epoch (steady) {steady:.1f}x, epoch (first trial) {first:.1f}x, "
        f"study {study_ratio:.2f}x; accuracy difference {epochs['max_acc_diff']:.2g}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
