"""One trial: sample, merge with the base hyp, train through the adapter, record, return.

Failures never escape as anything but a FAIL trial with a stored reason (``fail_reason``), so the
study goes on; a prune signal becomes ``optuna.TrialPruned``. A diverged run (NaN or infinite
loss or metric, :class:`trainer.base.DivergedError`) is a result of its hyps, not a broken
setup: it is recorded as PRUNED at its last finite epoch with ``diverged: true`` and its
``fail_reason``, so it counts towards the study's total, does not count as a failure for
``max_failures`` (:class:`tuner.study.Budget` has a looser limit for it), and the sampler sees
it as a poor trial (Optuna's samplers ignore FAIL trials and would keep drawing from a
divergent region).
"""

from __future__ import annotations

import contextlib
import gc
import math
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import optuna

from trainer.base import Adapter, DivergedError, Pruned, TrialError, TrialResult
from trainer.yaml_io import dump_yaml
from tuner import interrupt
from tuner.samplers import DIVERGED_ATTR
from tuner.space import ParamSpec, StudyConfig, Target
from tuner.study import set_user_attrs

EpochHook = Callable[[int, int, Mapping[str, float]], None]


def suggest(trial: optuna.Trial, spec: ParamSpec) -> Any:
    """Sample one parameter according to its spec."""
    if spec.type == "categorical":
        return trial.suggest_categorical(spec.name, list(spec.choices))
    if spec.type == "int":
        return trial.suggest_int(spec.name, spec.low, spec.high, step=spec.step or 1, log=spec.log)
    return trial.suggest_float(spec.name, spec.low, spec.high, step=spec.step, log=spec.log)


def cost_value(result: TrialResult, metric: str) -> float | None:
    """The cost metrics every adapter measures (accuracy-vs-cost objectives)."""
    if metric == "train_time":
        return result.train_seconds
    if metric == "peak_memory":
        return result.peak_memory_mb
    return None


def checked_metric(metric: str, epoch: int, metrics: Mapping[str, float]) -> float:
    """The objective metric of an epoch's report (shared by every backend's reporter).

    Raises:
        TrialError: It is missing.
        DivergedError: It is not finite (stop that trial at once).
    """
    if metric not in metrics:
        raise TrialError(f"metric {metric!r} was not reported; got {', '.join(sorted(metrics))}")
    value = float(metrics[metric])
    if not math.isfinite(value):
        raise DivergedError(f"{metric} is {value} at epoch {epoch + 1}")
    return value


class TimedReporter:
    """A reporter that keeps the wall time of its own :meth:`report` calls in ``seconds``.

    They run inside the trainer's loop but are the tuner's work (storage, pruning decisions,
    progress), recorded as a trial's ``report_seconds``. Subclasses implement ``_report``.
    """

    seconds: float = 0.0

    def report(self, epoch: int, metrics: Mapping[str, float]) -> None:
        # an interrupt that landed where Python swallows it stops the trial here
        interrupt.check()
        started = time.perf_counter()
        try:
            self._report(epoch, metrics)
        finally:
            self.seconds += time.perf_counter() - started

    def _report(self, epoch: int, metrics: Mapping[str, float]) -> None:
        raise NotImplementedError


class OptunaReporter(TimedReporter):
    """Reports the objective metric per epoch to Optuna and raises :class:`Pruned` on demand.

    ``prune`` is False for multi-objective studies, which Optuna can neither prune nor store
    intermediate values for.

    Args:
        trial: The running trial.
        metric: The objective metric.
        prune: Report intermediate values and ask the pruner.
        on_epoch: Progress hook ``(trial number, epoch, metrics)``.
        n_epochs: The trial's length, when known: its last epoch is never pruned (it trained
            every epoch, so it is complete; pruning it would save nothing and drop it from the
            ranking, while the Ray backend records such a trial as complete).
        exempt: Report but never prune (the baseline, which every comparison needs complete).
    """

    def __init__(
        self,
        trial: optuna.Trial,
        metric: str,
        prune: bool,
        on_epoch: EpochHook | None = None,
        n_epochs: int | None = None,
        exempt: bool = False,
    ) -> None:
        self.trial = trial
        self.metric = metric
        self.prune = prune
        self.on_epoch = on_epoch
        self.n_epochs = n_epochs
        self.exempt = exempt

    def _report(self, epoch: int, metrics: Mapping[str, float]) -> None:
        value = checked_metric(self.metric, epoch, metrics)
        if self.prune:
            # Optuna keeps intermediate values for single-objective studies only; multi-objective
            # trials keep their curves in the `history` user attr instead.
            self.trial.report(value, epoch)
        if self.on_epoch is not None:
            self.on_epoch(self.trial.number, epoch, metrics)
        if not self.prune:
            return
        # asked even where the answer is ignored: successive halving and Hyperband record a
        # trial's rung values inside that call, so the baseline and last epochs still set the
        # bar for the others
        wanted = self.trial.should_prune()
        last = self.n_epochs is not None and epoch + 1 >= self.n_epochs
        if wanted and not self.exempt and not last:
            raise Pruned(epoch)


def failure_reason(exc: BaseException) -> str:
    """The ``fail_reason`` of a trial that raised ``exc``: type and message, OOM named as such."""
    message = str(exc).strip()
    reason = f"{type(exc).__name__}: {message}" if message else type(exc).__name__
    # torch.cuda.OutOfMemoryError, MemoryError (host RAM), or a RuntimeError saying so: the
    # usual cure is a smaller batch or more frozen layers, so say it plainly
    oom = isinstance(exc, MemoryError) or "OutOfMemory" in type(exc).__name__
    if oom or "out of memory" in message.lower():
        reason = f"out of memory: {reason}"
    return reason[:2000]


def diverged_attrs(exc: DivergedError) -> dict[str, Any]:
    """The user attrs of a diverged trial (shared by every backend)."""
    return {DIVERGED_ATTR: True, "fail_reason": f"diverged: {exc}"}


def reduce_metric(history: list[dict[str, float]], metric: str, direction: str, how: str) -> float:
    """The trial's value for ``metric``: the best epoch or the last one."""
    values = metric_curve(history, metric)
    if not values:
        raise TrialError(f"metric {metric!r} was never reported")
    return reduce_values(values, direction, how)


def metric_curve(history: list[dict[str, float]], metric: str) -> tuple[float, ...]:
    """``metric`` at each epoch that reported it."""
    return tuple(float(h[metric]) for h in history if metric in h)


def reduce_values(values: Sequence[float], direction: str, how: str) -> float:
    """The best of a metric's per-epoch ``values`` or the last one (``how``)."""
    if how == "last":
        return values[-1]
    return max(values) if direction == "maximize" else min(values)


def trial_values(config: StudyConfig, result: TrialResult) -> list[float]:
    """A finished trial's objective values, one per target (shared by every backend).

    Raises:
        TrialError: A target metric was never reported.
    """
    return [target_value(result, t, config.objective.reduce) for t in config.objective.targets]


def target_value(result: TrialResult, target: Target, how: str) -> float:
    """One target's value: a cost metric as measured, else the epochs reduced by ``how``.

    Raises:
        TrialError: The metric was never reported.
    """
    cost = cost_value(result, target.metric)
    if cost is not None:
        return float(cost)
    return reduce_metric(result.history, target.metric, target.direction, how)


@contextlib.contextmanager
def frozen_heap() -> Iterator[None]:
    """Run trials with everything alive now (modules, decoded data, weights) out of the
    collector's sight (``gc.freeze``), given back at the end.

    :class:`Objective` collects garbage after each trial; a full collection of a process with
    torch loaded scans some 340,000 objects (80-190 ms a trial on 2 CPU cores), a frozen one
    only what the trial created. Enter it once the adapter is prepared.
    """
    gc.freeze()
    try:
        yield
    finally:
        gc.unfreeze()  # a caller that goes on in this process (tests, notebooks) gets it back


class Objective:
    """Callable for ``study.optimize``; run it inside :func:`frozen_heap`.

    Args:
        config: The validated space.
        adapter: A prepared adapter (data decoded once, shared by every trial of this process).
        base_hyp: Every hyp key with its base value.
        out_dir: The study's output folder; trials go to ``out_dir/trials/<number>``.
        on_epoch: Progress hook ``(trial number, epoch, metrics)``.
    """

    def __init__(
        self,
        config: StudyConfig,
        adapter: Adapter,
        base_hyp: Mapping[str, Any],
        out_dir: Path,
        on_epoch: EpochHook | None = None,
    ) -> None:
        self.config = config
        self.adapter = adapter
        self.base_hyp = dict(base_hyp)
        self.out_dir = out_dir
        self.on_epoch = on_epoch
        self.n_epochs = adapter.trial_epochs()

    def __call__(self, trial: optuna.Trial) -> float | list[float]:
        try:
            interrupt.check()  # one that arrived between trials, where Python swallowed it
            return self._trial(trial)
        except optuna.TrialPruned:
            raise
        except KeyboardInterrupt as exc:
            # a bare KeyboardInterrupt is Ctrl-C; the CLI raises one saying "SIGTERM"
            trial.set_user_attr("fail_reason", f"interrupted ({str(exc) or 'Ctrl-C'})")
            raise
        except TrialError as exc:
            trial.set_user_attr("fail_reason", str(exc))
            raise
        except Exception as exc:
            # sampling, the trial folder and the values fail outside the trainer too
            trial.set_user_attr("fail_reason", failure_reason(exc))
            raise

    def _trial(self, trial: optuna.Trial) -> float | list[float]:
        params = {name: suggest(trial, spec) for name, spec in self.config.space.items()}
        hyp = {**self.base_hyp, **params}
        trial_dir = self.out_dir / "trials" / f"{trial.number:04d}"
        trial_dir.mkdir(parents=True, exist_ok=True)
        hyp_path = trial_dir / "hyp.yaml"
        hyp_path.write_text(dump_yaml(hyp))
        # stored before training, so a trial that crashes still says what it ran
        set_user_attrs(trial, {"hyp": hyp, "hyp_path": str(hyp_path)})
        objective = self.config.objective
        reporter = OptunaReporter(
            trial,
            objective.primary.metric,
            prune=not objective.is_multi,
            on_epoch=self.on_epoch,
            n_epochs=self.n_epochs,
            # the baseline is the yardstick of the report, the confirmation and the export:
            # pruned, it would be lost (a pruned trial is not re-queued), and under several
            # workers it is the slowest trial (nothing frozen), easily cut by faster ones
            exempt=bool(trial.user_attrs.get("baseline")),
        )
        started = time.perf_counter()
        try:
            result = self.adapter.run(hyp, reporter, trial_dir)
            # the trainer's time ends here; the collection below is the tuner's cost
            seconds = time.perf_counter() - started
        except Pruned as exc:
            self._record(trial, exc.result, time.perf_counter() - started, reporter)
            raise optuna.TrialPruned(str(exc)) from None
        except DivergedError as exc:
            attrs = diverged_attrs(exc)
            self._record(trial, exc.result, time.perf_counter() - started, reporter, attrs)
            raise optuna.TrialPruned(attrs["fail_reason"]) from None
        except TrialError as exc:
            self._record(trial, exc.result, time.perf_counter() - started, reporter)
            raise
        finally:
            # Free what a large trial left behind before the next one allocates.
            gc.collect()
            _empty_cuda_cache()
        self._record(trial, result, seconds, reporter)
        values = trial_values(self.config, result)
        return values if objective.is_multi else values[0]

    def _record(
        self,
        trial: optuna.Trial,
        result: TrialResult | None,
        seconds: float,
        reporter: OptunaReporter,
        extra: Mapping[str, Any] | None = None,
    ) -> None:
        """Store the trial's measurements in one write.

        ``wall_seconds`` is the wall time of ``adapter.run``; ``report_seconds`` the part of it
        spent in the tuner's reporter (so the trainer's own time is the difference).
        """
        attrs: dict[str, Any] = {
            "wall_seconds": round(seconds, 4),
            "report_seconds": round(reporter.seconds, 4),
        }
        if result is not None:
            attrs.update(result.attrs())
            attrs["history"] = result.history
        set_user_attrs(trial, {**attrs, **(extra or {})})


def _empty_cuda_cache() -> None:
    import sys

    torch = sys.modules.get("torch")  # never import torch just to clean up after a trial
    if torch is not None and torch.cuda.is_available():
        torch.cuda.empty_cache()
