"""A deterministic adapter for testing the search side without training a network.

Its "accuracy" is a smooth function of lr0, freeze and momentum that rises over epochs, so a
sampler can find a better configuration than the baseline and a pruner sees real curves.
"""

from __future__ import annotations

import hashlib
import math
import os
import signal
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from trainer.base import Adapter, ConfigError, DivergedError, Pruned, Reporter, TrialResult


@dataclass(frozen=True)
class CurveSettings:
    epochs: int = 4
    sleep: float = 0.0
    fail_above_lr0: float | None = None  # lr0 above this raises DivergedError (NaN loss)
    crash_above_lr0: float | None = None  # lr0 above this raises RuntimeError (a bug)
    oom_above_lr0: float | None = None  # lr0 above this raises torch.cuda.OutOfMemoryError
    # a trial with exactly this lr0 ends its process at once (a segfault, the OOM killer): only
    # for a Ray worker, the optuna backend would lose the test process itself
    exit_at_lr0: float | None = None
    data: str | None = None
    seed: int = 0
    noise: float = 0.0  # a seed-dependent offset in [-noise, noise], fixed per (seed, hyp)
    # lr0 above this peaks at its third epoch and then halves each epoch (like YOLO's lrf 1
    # with momentum 0.98): the best epoch looks good, the last one does not
    collapse_above_lr0: float | None = None
    # the Nth run of this process sends itself SIGINT from inside a __del__, where Python
    # prints and ignores the KeyboardInterrupt (as in a garbage-collection callback): only the
    # tuner's own record of the signal can stop the search then; at the run's first epoch, or
    # after its last report (the next trial's start must notice it)
    sigint_in_finalizer_at_run: int | None = None
    sigint_in_finalizer_after_run: int | None = None


class CurveAdapter(Adapter):
    name = "curve"
    supported_keys = frozenset({"lr0", "momentum", "freeze", "lr_decay", "fliplr", "optimizer"})
    metrics = ("val/acc", "val/loss")
    default_metric = "val/acc"
    seed_setting = "seed"
    runtime_settings = frozenset({"sleep"})  # how long an epoch takes, not what it measures

    def __init__(self, settings: Mapping[str, Any], cache_dir: Path) -> None:
        super().__init__(settings, cache_dir)
        known = set(CurveSettings.__dataclass_fields__)
        for key in settings:
            if key not in known:
                raise ConfigError(key, "unknown setting")
        if not isinstance(settings.get("epochs", 4), int) or settings.get("epochs", 4) < 1:
            raise ConfigError("epochs", "must be a positive integer")
        self.settings = CurveSettings(**settings)
        self.n_prepared = 0
        self.n_runs = 0

    @classmethod
    def default_hyp(cls) -> dict[str, Any]:
        return {
            "lr0": 0.01,
            "lrf": 0.01,
            "momentum": 0.937,
            "freeze": 0,
            "lr_decay": 1.0,
            "fliplr": 0.5,
            "optimizer": "SGD",
        }

    def settings_dict(self) -> dict[str, Any]:
        return asdict(self.settings)

    def limits(self) -> dict[str, tuple[float, float]]:
        return {"freeze": (0, 5)}

    def check_data(self) -> None:
        if self.settings.data is not None and not Path(self.settings.data).exists():
            raise ConfigError("data", f"no such directory: {self.settings.data}")

    def prepare(self) -> None:
        self.n_prepared += 1

    def quality(self, hyp: Mapping[str, Any]) -> float:
        # best near lr0=0.03, freeze=3, momentum=0.9
        lr_term = math.exp(-((math.log10(hyp["lr0"]) - math.log10(0.03)) ** 2))
        freeze_term = 1.0 - 0.05 * abs(int(hyp["freeze"]) - 3)
        mom_term = 1.0 - abs(hyp["momentum"] - 0.9)
        return 0.9 * lr_term * freeze_term * mom_term

    def seed_noise(self, hyp: Mapping[str, Any]) -> float:
        """The run-to-run noise of a real trainer: same hyp and seed, same offset."""
        if not self.settings.noise:
            return 0.0
        digest = hashlib.blake2b(
            repr((self.settings.seed, sorted(hyp.items()))).encode(), digest_size=8
        ).digest()
        unit = int.from_bytes(digest, "big") / 2**64  # uniform in [0, 1)
        return self.settings.noise * (2 * unit - 1)

    def run(self, hyp: Mapping[str, Any], reporter: Reporter, trial_dir: Path) -> TrialResult:
        result = TrialResult(
            n_params_trainable=100 - 10 * int(hyp["freeze"]),
            n_params_frozen=10 * int(hyp["freeze"]),
            peak_memory_mb=1.0,
            # the CPU threads a torch trainer would get in this process
            extra={"omp_num_threads": os.environ.get("OMP_NUM_THREADS")},
        )
        s = self.settings
        self.n_runs += 1
        if s.exit_at_lr0 is not None and hyp["lr0"] == s.exit_at_lr0:
            os._exit(3)
        if s.crash_above_lr0 is not None and hyp["lr0"] > s.crash_above_lr0:
            raise RuntimeError("simulated crash in the training code")
        if s.oom_above_lr0 is not None and hyp["lr0"] > s.oom_above_lr0:
            import torch  # only here: the fake stays light for every other test

            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        q = self.quality(hyp) + self.seed_noise(hyp)
        started = time.perf_counter()
        for epoch in range(s.epochs):
            if s.sleep:
                time.sleep(s.sleep)
            if epoch == 0 and self.n_runs == s.sigint_in_finalizer_at_run:
                _SignalsWhenCollected()
            if s.fail_above_lr0 is not None and hyp["lr0"] > s.fail_above_lr0:
                raise DivergedError(f"non-finite loss at epoch {epoch + 1}", result)
            acc = q * (1 - math.exp(-(epoch + 1)))
            if s.collapse_above_lr0 is not None and hyp["lr0"] > s.collapse_above_lr0:
                acc *= 0.5 ** max(0, epoch - 2)
            metrics = {"val/acc": acc, "val/loss": 1 - acc}
            result.add_epoch(metrics)
            # cost falls with freeze: a frozen prefix runs forward only
            result.train_seconds = (time.perf_counter() - started) + 0.1 * (epoch + 1) * (
                6 - int(hyp["freeze"])
            )
            try:
                reporter.report(epoch, metrics)
            except Pruned as exc:
                exc.result = result
                raise
        if self.n_runs == s.sigint_in_finalizer_after_run:
            _SignalsWhenCollected()
        return result


class _SignalsWhenCollected:
    """Sends SIGINT to this process from ``__del__`` (run when the last reference goes)."""

    def __del__(self) -> None:
        signal.raise_signal(signal.SIGINT)  # its Python handler runs before this returns


class NoSeedCurveAdapter(CurveAdapter):
    """The curve adapter without a seed setting (like a pipeline that cannot be reseeded)."""

    name = "curve-noseed"
    seed_setting = None


class NoEpochsCurveAdapter(CurveAdapter):
    """The curve adapter with no length setting (like a script whose epochs are fixed)."""

    name = "curve-noepochs"

    def settings_dict(self) -> dict[str, Any]:
        settings = asdict(self.settings)
        del settings["epochs"]
        return settings
