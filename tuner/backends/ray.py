"""The ``ray`` backend: the same study on Ray Tune (a local instance or an existing cluster).

Ray's ``OptunaSearch`` samples, with the space's own sampler (same registry, defaults and
seed), and it is given the study's storage and name: every Ray trial is asked from and told to
the SAME Optuna study the ``optuna`` backend writes, so trial numbers, the baseline (enqueued
in the study, which ``ask`` pops first, so no ``points_to_evaluate`` is needed), retries of
lost trials, ``status``, ``export`` and ``report`` are shared. Early stopping is Ray's
scheduler, mapped from the space's pruner (:func:`make_scheduler`); it never stops the
baseline, which the searcher marks in the trial's config (``BASELINE_KEY``).

The trial's state is decided here on the driver, which sees every result: a trial whose
trainable finished is COMPLETE (its values computed like :mod:`tuner.objective` does), one
whose trainable caught an error is FAIL with ``fail_reason``, one stopped by the scheduler
before it finished is PRUNED, and one whose worker died is FAIL and its configuration queued
again (once, as for a lost worker of the optuna backend). The study's total stays exact: the
searcher starts a trial only while finished plus running trials are below ``n_trials`` (under
the study's lock), and says FINISHED once the finished ones reach it; failed trials do not
count, so they are replaced.
"""

from __future__ import annotations

import json
import logging
import math
import os
import time
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from tuner import interrupt
from tuner import study as st
from tuner.backends import SearchJob
from tuner.errors import InputError, StudyError
from tuner.objective import TimedReporter, checked_metric

# Read by Ray at import or start-up: no usage reporting (CI has no network anyway), results
# without the metric (a failed trial's summary) are fine, and no TensorBoard/CSV loggers.
RAY_ENV = {
    "RAY_USAGE_STATS_ENABLED": "0",
    "TUNE_DISABLE_STRICT_METRIC_CHECKING": "1",
    "TUNE_DISABLE_AUTO_CALLBACK_LOGGERS": "1",
    "RAY_CHDIR_TO_TRIAL_DIR": "0",
    "RAY_AIR_NEW_OUTPUT": "0",
}
for _key, _value in RAY_ENV.items():
    os.environ.setdefault(_key, _value)

import ray  # noqa: E402 - after RAY_ENV, which Ray reads at import
from ray import tune  # noqa: E402
from ray.tune.schedulers import (  # noqa: E402
    ASHAScheduler,
    FIFOScheduler,
    MedianStoppingRule,
    TrialScheduler,
)
from ray.tune.search import Searcher  # noqa: E402
from ray.tune.search.optuna import OptunaSearch  # noqa: E402

# Keys of the results the trainable reports (besides the epoch's metrics).
EPOCH_KEY = "tuner_epoch"  # 1-based: the schedulers' time attribute
SUMMARY_KEY = "tuner_summary"  # JSON: state, values, attrs, reason; absent from epoch results
TRIAL_KEY = "tuner_trial"  # the Optuna trial number, added to each sampled config
BASELINE_KEY = "tuner_baseline"  # True in the baseline trial's config: never stopped early
METRICS_KEY = "tuner_metrics"  # JSON: an epoch's metrics
# seconds since adapter.run started, per epoch: a trial the scheduler stops has no summary,
# and Ray's time_total_s also counts the worker's set-up (data decoding, weights)
SECONDS_KEY = "tuner_run_seconds"


# -- the trial, in a Ray worker --------------------------------------------------------------


class RayReporter(TimedReporter):
    """The trainer's reporter inside a Ray trial: one ``ray.tune.report`` per epoch.

    Pruning is Ray's scheduler's business: it stops the trial from the driver, so ``report``
    never raises :class:`trainer.base.Pruned` here.
    """

    def __init__(self, metric: str) -> None:
        self.metric = metric
        self.started = time.perf_counter()  # reset right before adapter.run

    def _report(self, epoch: int, metrics: Mapping[str, float]) -> None:
        value = checked_metric(self.metric, epoch, metrics)
        scalars = {k: float(v) for k, v in metrics.items() if isinstance(v, int | float)}
        # the objective metric by name for the scheduler; all metrics as one JSON string,
        # since Ray adds its own keys to a result (time_total_s, ...)
        tune.report({
            self.metric: value,
            EPOCH_KEY: epoch + 1,
            METRICS_KEY: json.dumps(scalars),
            SECONDS_KEY: round(time.perf_counter() - self.started, 4),
        })


def trainable(params: dict[str, Any], setup: Mapping[str, Any]) -> None:
    """One trial in a Ray worker: train through the adapter, then report a summary.

    Errors are caught and reported (the driver records the reason and marks the trial FAIL);
    they are not raised, so Ray neither retries the trial nor prints its traceback.
    """
    from trainer.base import DivergedError, TrialError, register_adapter
    from trainer.yaml_io import dump_yaml
    from tuner.objective import diverged_attrs, failure_reason, trial_values

    params = dict(params)
    number = params.pop(TRIAL_KEY)
    params.pop(BASELINE_KEY, None)  # the scheduler's mark, no hyp
    for name, target in setup["adapters"].items():
        register_adapter(name, target)
    config = setup["config"]
    hyp = {**setup["base_hyp"], **params}
    trial_dir = Path(setup["out_dir"]) / "trials" / f"{number:04d}"
    trial_dir.mkdir(parents=True, exist_ok=True)
    (trial_dir / "hyp.yaml").write_text(dump_yaml(hyp))
    summary: dict[str, Any]
    result = None
    reporter = None
    started = time.perf_counter()
    try:
        # actors are reused (reuse_actors=True), so the adapter's per-process caches (decoded
        # data, pretrained weights) serve every trial this worker runs
        adapter = config.make_adapter(Path(setup["cache_dir"]))
        adapter.prepare()
        reporter = RayReporter(config.objective.primary.metric)
        reporter.started = time.perf_counter()
        result = adapter.run(hyp, reporter, trial_dir)
        summary = {"state": "COMPLETE", "values": trial_values(config, result)}
    except DivergedError as exc:
        # recorded as PRUNED, as by the optuna backend (tuner.objective)
        result = exc.result
        summary = {"state": "PRUNED", "diverged": diverged_attrs(exc)}
    except TrialError as exc:
        result = exc.result
        summary = {"state": "FAIL", "reason": str(exc)}
    except Exception as exc:  # noqa: BLE001 - any trainer error is this trial's failure
        summary = {"state": "FAIL", "reason": failure_reason(exc)}
    attrs: dict[str, Any] = {
        "wall_seconds": round(time.perf_counter() - started, 4),
        "worker_pid": os.getpid(),
    }
    if reporter is not None:
        attrs["report_seconds"] = round(reporter.seconds, 4)
    if result is not None:
        attrs.update(result.attrs())
        attrs["history"] = result.history
    summary["attrs"] = attrs
    # no epoch key: the schedulers ignore this result; JSON: Ray flattens nested results
    tune.report({SUMMARY_KEY: json.dumps(summary, default=str)})


# -- the driver ------------------------------------------------------------------------------


def is_baseline(trial: Any) -> bool:
    """Whether a Ray trial is the study's baseline (the mark :class:`StudySearch` sets)."""
    return bool(getattr(trial, "config", {}).get(BASELINE_KEY))


def spared(trial: Any, result: Mapping[str, Any], last_epoch: int | None) -> bool:
    """Whether a STOP for this result is turned into CONTINUE: the baseline (the report, the
    confirmation and the export measure against it) and a trial's last epoch (it trained
    them all: stopped there it would end without its summary), as under the optuna backend."""
    at_last = last_epoch is not None and int(result.get(EPOCH_KEY, 0)) >= last_epoch
    return is_baseline(trial) or at_last


class _Sparing:
    """Mixin for a Ray scheduler that never stops the baseline nor a trial at its last epoch
    (:func:`spared`): their results still count in its statistics, and a STOP the scheduler
    answers for them becomes CONTINUE, undone in its bookkeeping by :meth:`_unstop`.

    Args:
        last_epoch: The trials' length in epochs, where every trial trains to it.
    """

    def __init__(self, last_epoch: int | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.last_epoch = last_epoch
        self.n_spared = 0  # STOP answers turned into CONTINUE

    def on_trial_result(self, tune_controller: Any, trial: Any, result: dict) -> str:
        # the scheduler records the result before it answers, so its statistics count it
        decision = super().on_trial_result(tune_controller, trial, result)
        if decision == TrialScheduler.STOP and spared(trial, result, self.last_epoch):
            self._unstop(trial)
            self.n_spared += 1
            return TrialScheduler.CONTINUE
        return decision

    def _unstop(self, trial: Any) -> None:
        """Forget that the scheduler stopped ``trial`` (it runs on)."""
        raise NotImplementedError


class MedianRule(_Sparing, MedianStoppingRule):
    """Ray's median stopping rule, fed only epoch results, that never stops the baseline nor
    a trial at its last epoch (:class:`_Sparing`).

    The baseline's results count for the median like any trial's, but the confirmation and
    the report need the baseline COMPLETE, as under the optuna backend.
    """

    def _unstop(self, trial: Any) -> None:
        # a stopped trial may never report again (Ray asserts that under hard_stop)
        self._stopped_trials.discard(trial)

    def on_trial_complete(self, tune_controller: Any, trial: Any, result: dict) -> None:
        # Ray passes the trial's last result: for a trial that trained to the end that is the
        # trainable's summary, without the epoch or the metric, and as the trial's latest
        # result it would break every later median (Ray reads [-1][time_attr] of each
        # trial); for a stopped trial it is the epoch result on_trial_result kept already
        if self._time_attr not in result or self._metric not in result:
            return
        seen = self._results.get(trial)
        if seen and seen[-1].get(self._time_attr) == result[self._time_attr]:
            return  # one result per epoch, as Optuna's median counts each step once
        super().on_trial_complete(tune_controller, trial, result)

    def _on_insufficient_samples(self, tune_controller: Any, trial: Any, time: float) -> str:
        # Ray would pause the trial to let a pending one run ("yield"); the trainable keeps no
        # checkpoints, so a paused trial would start again from its first epoch. Optuna's
        # median pruner lets it run on until there are enough trials to compare with
        return TrialScheduler.CONTINUE


class AshaRule(_Sparing, ASHAScheduler):
    """Ray's ASHA that never stops the baseline nor a trial at its last epoch
    (:class:`_Sparing`); their results still fill the rungs."""

    def _unstop(self, trial: Any) -> None:
        self._num_stopped -= 1


def make_scheduler(
    config: Any, max_epochs: int | None, last_epoch: int | None = None
) -> Any:
    """Ray's counterpart of the space's pruner (FIFO for multi-objective studies).

    median -> MedianStoppingRule (:class:`MedianRule`); successive_halving and hyperband ->
    ASHA (:class:`AshaRule`: asynchronous, like Optuna's pruners; hyperband gets several
    brackets); none -> FIFO. Time is counted in epochs (from 1: ASHA's first rung at
    ``min_resource`` epochs is one epoch before Optuna's, whose steps count from 0); neither
    stops the baseline trial nor a trial at ``last_epoch`` (:meth:`Adapter.trial_epochs`).
    """
    pruner = config.search.pruner
    args = dict(pruner.args)
    if config.objective.is_multi or pruner.name == "none":
        return FIFOScheduler()
    target = config.objective.primary
    common = {
        "time_attr": EPOCH_KEY,
        "metric": target.metric,
        "mode": "max" if target.direction == "maximize" else "min",
    }
    if pruner.name == "median":
        return MedianRule(
            last_epoch=last_epoch,
            **common,
            # Optuna's warm-up steps are epochs never pruned; Ray's grace is the first epoch
            # (1-based) at which it may stop a trial
            grace_period=int(args.get("n_warmup_steps", 0)) + 1,
            min_samples_required=int(args.get("n_startup_trials", 5)),
        )
    max_t = int(args.get("max_resource") or 0) if args.get("max_resource") != "auto" else 0
    # one past the last epoch: ASHA stops every trial reaching max_t, which would cut off the
    # summary of a trial that trained all its epochs and record it as pruned
    max_t = max_t or (max_epochs + 1 if max_epochs else 100)
    min_t = args.get("min_resource", 1)
    grace = int(min_t) if isinstance(min_t, int | float) else 1
    factor = float(args.get("reduction_factor", 3 if pruner.name == "hyperband" else 4))
    n_brackets = 1
    if pruner.name == "hyperband":
        n_brackets = max(1, int(math.log(max(max_t / grace, 1)) / math.log(factor)) + 1)
    return AshaRule(
        last_epoch=last_epoch, **common, max_t=max_t, grace_period=grace,
        reduction_factor=factor, brackets=n_brackets,
    )


def _history_attrs(history: list[dict[str, float]], result: Mapping[str, Any]) -> dict[str, Any]:
    """The user attrs of a trial that Ray ended before its summary: what the driver saw."""
    return {
        "epochs_run": len(history),
        # the trainer's time up to its last epoch (Ray's own clock only for older results)
        "train_seconds": round(float(result.get(SECONDS_KEY, result.get("time_total_s", 0.0))), 4),
        "history": history,
    }


class StudySearch(OptunaSearch):
    """``OptunaSearch`` on the tuner's study, deciding trial states the tuner's way."""

    def __init__(self, job: SearchJob, max_epochs: int | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.job = job
        self.max_epochs = max_epochs
        self.n_total = job.config.search.n_trials
        self.budget = st.Budget(self.n_total, job.config.search.max_failures)
        self.history: dict[str, list[dict[str, float]]] = {}
        self.beats = st.Heartbeat(job.study)
        # the optuna backend's timeout: start no trial after it, let the running ones finish.
        # Ray's own time_budget_s stops running trials without telling the searcher, which
        # would read as an interrupted run
        timeout = job.config.search.timeout
        self.deadline = None if timeout is None else time.monotonic() + timeout

    def __getstate__(self) -> dict[str, Any]:
        # Ray pickles the searcher with its experiment state, for a restore through Ray; the
        # study (storage, lock) is not picklable, and a resume goes through the study instead
        return {}

    def save(self, checkpoint_path: str) -> None:
        """Nothing to save: the study in the storage is the state."""

    def restore(self, checkpoint_path: str) -> None:
        """Nothing to restore: re-run ``tuner search`` to resume from the study."""

    def suggest(self, trial_id: str) -> dict | str | None:
        if self.budget.stopped_for_failures:
            return Searcher.FINISHED
        if self.deadline is not None and time.monotonic() >= self.deadline:
            return Searcher.FINISHED
        with st.locked(self.job.lock):
            st.fail_stale_trials(self.job.study)
            by_state = st.counts(self.job.study)
            n_done = by_state["COMPLETE"] + by_state["PRUNED"]
            if n_done >= self.n_total:
                return Searcher.FINISHED
            if n_done + by_state["RUNNING"] >= self.n_total:
                return None  # the rest runs; a failure among them is replaced later
            params = super().suggest(trial_id)
            ot_trial = self._ot_trials[trial_id]
            # claimed by this driver: a re-run fails it at once if the driver died
            st.claim(self.job.study, ot_trial._trial_id)
        self.beats.add(ot_trial._trial_id)
        hyp = {**self.job.base_hyp, **params}
        trial_dir = self.job.out_dir.resolve() / "trials" / f"{ot_trial.number:04d}"
        st.set_user_attrs(ot_trial, {"hyp": hyp, "hyp_path": str(trial_dir / "hyp.yaml")})
        self.history[trial_id] = []
        config = {**params, TRIAL_KEY: ot_trial.number}
        if ot_trial.user_attrs.get("baseline"):
            # for the scheduler, which sees Ray trials only: the baseline must finish
            config[BASELINE_KEY] = True
        return config

    def on_trial_result(self, trial_id: str, result: dict) -> None:
        if trial_id in self._completed_trials or EPOCH_KEY not in result:
            return
        epoch = int(result[EPOCH_KEY]) - 1
        if epoch < len(self.history[trial_id]):
            return  # seen already (on_trial_complete passes the last result again)
        metrics = json.loads(result[METRICS_KEY])
        self.history[trial_id].append(metrics)
        ot_trial = self._ot_trials[trial_id]
        if not self.job.config.objective.is_multi:
            # the per-epoch curve, as the optuna backend's trial.report stores it
            ot_trial.report(float(result[self.job.config.objective.primary.metric]), epoch)
        if self.job.on_epoch is not None:
            self.job.on_epoch(ot_trial.number, epoch, metrics)

    def on_trial_complete(
        self, trial_id: str, result: dict | None = None, error: bool = False
    ) -> None:
        if trial_id in self._completed_trials or trial_id not in self._ot_trials:
            return
        if result and EPOCH_KEY in result:
            # a result the scheduler answered with STOP reaches only on_trial_complete
            self.on_trial_result(trial_id, result)
        self._completed_trials.add(trial_id)
        ot_trial = self._ot_trials[trial_id]
        self.beats.discard(ot_trial._trial_id)
        state, values = self._outcome(ot_trial, trial_id, result or {}, error)
        from optuna.trial import TrialState

        self._ot_study.tell(ot_trial, values, state=TrialState[state])
        frozen = self._ot_study.get_trials(deepcopy=False)[ot_trial.number]
        self.budget(self._ot_study, frozen)
        for callback in self.job.on_trial:
            callback(self.job.study, frozen)
        if error:
            # Ray reports an error only when the worker itself died (the trainable catches
            # every training error): like a lost worker under the optuna backend, the trial's
            # configuration runs again, once (a retry that dies too is not retried)
            number = st.retry_stale_trial(self.job.study, frozen)
            if number is not None:
                self.job.say(
                    f"trial #{ot_trial.number} lost its Ray worker: queued again as #{number}"
                )

    def _outcome(
        self, ot_trial: Any, trial_id: str, result: Mapping[str, Any], error: bool
    ) -> tuple[str, list[float] | None]:
        history = self.history.pop(trial_id, [])
        raw = result.get(SUMMARY_KEY)
        summary = json.loads(raw) if isinstance(raw, str) else None
        if summary is None and not error and self._trained_to_the_end(history):
            # the scheduler stopped it at a rung on its last epoch, before the summary: it
            # trained every epoch, so it is complete, scored from its history
            from tuner.objective import reduce_metric

            objective = self.job.config.objective
            value = reduce_metric(
                history, objective.primary.metric, objective.primary.direction, objective.reduce
            )
            # no summary, so no parameter counts or peak memory
            attrs = {**_history_attrs(history, result), "stopped_at_last_epoch": True}
            st.set_user_attrs(ot_trial, attrs)
            return "COMPLETE", value
        if summary is None:
            # no summary: stopped by the scheduler (pruned), or the worker died
            attrs = _history_attrs(history, result)
            state = "FAIL" if error or not history else "PRUNED"
            if state == "FAIL":
                attrs["fail_reason"] = (
                    "Ray trial errored (worker died?); see its error.txt under ray/"
                    if error
                    else "Ray trial ended before its first epoch"
                )
        else:
            attrs = {**summary["attrs"], **summary.get("diverged", {})}
            state = summary["state"]
            if state == "FAIL":
                attrs["fail_reason"] = summary["reason"]
        st.set_user_attrs(ot_trial, attrs)
        if state != "COMPLETE":
            return state, None
        values = summary["values"]
        return state, values if self.job.config.objective.is_multi else values[0]

    def _trained_to_the_end(self, history: list[dict[str, float]]) -> bool:
        # multi-objective studies run under FIFO, which never stops a trial early
        return (
            self.max_epochs is not None
            and len(history) >= self.max_epochs
            and not self.job.config.objective.is_multi
        )

    def fail_unfinished(self, reason: str) -> int:
        """Record the trials Ray never finished (an interrupted run) as FAIL.

        Returns:
            How many there were.
        """
        from optuna.trial import TrialState

        n_failed = 0
        for trial_id, ot_trial in self._ot_trials.items():
            if trial_id in self._completed_trials:
                continue
            self._completed_trials.add(trial_id)
            self.beats.discard(ot_trial._trial_id)
            try:
                ot_trial.set_user_attr("fail_reason", reason)
                self._ot_study.tell(ot_trial, None, state=TrialState.FAIL)
            except Exception:  # noqa: BLE001 - already finished elsewhere
                continue
            n_failed += 1
        return n_failed


def _space_function(config: Any):
    from tuner.objective import suggest

    def space(trial: Any) -> None:
        # define-by-run, like the optuna backend's objective: same names and distributions
        for spec in config.space.values():
            suggest(trial, spec)

    return space


def _init_ray(address: str | None) -> bool:
    """Connect to ``address`` or start a local instance, unless Ray is already up.

    Returns:
        True when this call started (and so must shut down) Ray.
    """
    if ray.is_initialized():
        return False
    try:
        ray.init(
            address=address,
            include_dashboard=False,
            logging_level=logging.ERROR,
            log_to_driver=False,  # the tuner prints one line per trial; workers' logs stay in Ray
            configure_logging=True,
        )
    except (ConnectionError, ValueError) as exc:
        if address is None:
            raise
        # an address that names no reachable cluster is bad input, not a crash
        message = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise InputError("--ray-address", None, f"cannot join {address!r}: {message}") from None
    except BaseException:
        # Ctrl-C while a local instance starts: its processes (dashboard and runtime-env
        # agents) would outlive the tuner
        ray.shutdown()
        raise
    return True


def run(job: SearchJob) -> None:
    """Run the study's missing trials on Ray Tune.

    Raises:
        StudyError: ``max_failures`` trials failed in a row.
        KeyboardInterrupt: Interrupted (running trials recorded as failed).
    """
    # the driver beats for its trials itself (st.Heartbeat), which Optuna cannot know
    warnings.filterwarnings("ignore", message="Heartbeat of storage is supposed to be used")

    config = job.config
    targets = config.objective.targets
    metric: str | list[str] = [t.metric for t in targets]
    mode: str | list[str] = ["max" if t.direction == "maximize" else "min" for t in targets]
    if not config.objective.is_multi:
        metric, mode = metric[0], mode[0]
    with interrupt.kept():  # ray.init makes SIGTERM a plain sys.exit
        started_here = _init_ray(job.options.ray_address)
    try:
        _run_on_ray(job, metric, mode)
    finally:
        if started_here:
            ray.shutdown()


def _run_on_ray(job: SearchJob, metric: str | list[str], mode: str | list[str]) -> None:
    """:func:`run` once Ray is up."""
    from tuner.backends.local import _adapter_targets

    config = job.config
    max_epochs = job.adapter.settings_dict().get("epochs")
    searcher = StudySearch(
        job,
        # a trial Ray stops at its last epoch counts as complete only where the adapter holds
        # every trial to that length
        max_epochs=job.adapter.trial_epochs(),
        space=_space_function(config),
        metric=metric,
        mode=mode,
        sampler=st.make_sampler(config, st.n_started(job.study)),
        study_name=job.study.study_name,
        storage=job.study._storage,
    )
    setup = {
        "config": config,
        "adapters": _adapter_targets(job),
        "base_hyp": job.base_hyp,
        "out_dir": str(job.out_dir.resolve()),
        "cache_dir": str((st.STUDIES_DIR / ".cache").resolve()),
    }
    fn = tune.with_parameters(trainable, setup=setup)
    if job.options.resources:
        fn = tune.with_resources(fn, dict(job.options.resources))
    tuner = tune.Tuner(
        fn,
        tune_config=tune.TuneConfig(
            search_alg=searcher,
            scheduler=make_scheduler(
                config,
                max_epochs if isinstance(max_epochs, int) else None,
                last_epoch=job.adapter.trial_epochs(),
            ),
            num_samples=-1,  # the searcher says FINISHED when the study's total is reached
            max_concurrent_trials=job.options.concurrency,
            # one actor (process) runs trial after trial: data is decoded once per worker
            reuse_actors=True,
        ),
        run_config=tune.RunConfig(
            name="ray",
            storage_path=str(job.out_dir.resolve()),
            verbose=0,
            log_to_file=True,
            failure_config=tune.FailureConfig(max_failures=0),  # a failed trial is replaced
        ),
    )
    job.say(
        f"Ray Tune: {ray.cluster_resources().get('CPU', 0):g} CPUs, results under "
        f"{job.out_dir / 'ray'}"
    )
    interrupted = False
    reason = "interrupted (Ctrl-C)"
    try:
        with interrupt.kept():  # Tune leaves its SIGINT handler installed after fit
            tuner.fit()
    except KeyboardInterrupt:  # SIGTERM, or a second Ctrl-C
        interrupted = True
        # Tune raises a KeyboardInterrupt of its own: the signal is in the tuner's record
        reason = f"interrupted ({interrupt.received() or 'Ctrl-C'})"
    except Exception as exc:
        reason = f"the Ray run failed: {type(exc).__name__}: {exc}"[:2000]
        raise
    finally:
        # Ray handles Ctrl-C itself (it stops its trials and fit returns): trials left
        # unfinished mean an interrupted run (the timeout lets running trials finish)
        interrupted = searcher.fail_unfinished(reason) > 0 or interrupted
        searcher.beats.stop()
    if interrupted:
        raise KeyboardInterrupt
    if searcher.budget.stopped_for_failures:
        raise searcher.budget.failure_error()
    n_done = st.n_finished(job.study)
    if n_done < config.search.n_trials and config.search.timeout is None:
        raise StudyError(
            f"the study has {n_done} of {config.search.n_trials} trials after the Ray run "
            "ended. Run the same command again to resume"
        )
