"""Optuna plumbing: storages, sampler and pruner registries, create/resume, the trial budget.

Optuna objects stay here and in :mod:`tuner.objective`; the rest of the package passes plain
data.
"""

from __future__ import annotations

import inspect
import json
import logging
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from tuner.errors import InputError, StudyError
from tuner.space import ComponentConfig, StudyConfig

FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)
STUDIES_DIR = Path("studies")
# A worker that stops sending heartbeats for this long is considered dead; its trial is
# marked FAIL and its configuration retried by the next worker (see RetryFailedTrialCallback).
HEARTBEAT_INTERVAL = 10
HEARTBEAT_GRACE = 30


def default_storage(study: str) -> str:
    """``sqlite:///studies/<study>.db``: one file per study, next to its outputs."""
    return f"sqlite:///{STUDIES_DIR / study}.db"


def open_storage(url: str, *, heartbeat: bool = True) -> optuna.storages.BaseStorage:
    """Open (and for SQLite and journal files, create) a storage.

    Args:
        url: An SQLAlchemy URL (``sqlite:///x.db``, ``postgresql://...``) or
            ``journal:PATH`` for Optuna's journal file storage.
        heartbeat: Record worker heartbeats so trials of crashed workers can be failed.

    Raises:
        InputError: The URL is malformed or the database cannot be reached.
    """
    if url.startswith("journal:"):
        from optuna.storages.journal import JournalFileBackend, JournalStorage

        path = Path(url.removeprefix("journal:"))
        _ensure_parent(path, url)
        return JournalStorage(JournalFileBackend(str(path)))
    if "://" not in url:
        raise InputError(
            "--storage",
            None,
            f"{url!r} is not a storage URL (sqlite:///PATH.db, "
            "postgresql://USER@HOST/DB or journal:PATH)",
        )
    engine_kwargs: dict[str, Any] = {}
    if url.startswith("sqlite:"):
        db = url.split(":///", 1)[-1]
        if db and db != ":memory:":
            _ensure_parent(Path(db), url)
        # Wait instead of failing with "database is locked" when workers write together.
        engine_kwargs["connect_args"] = {"timeout": 60}
    else:
        engine_kwargs["pool_pre_ping"] = True
    kwargs: dict[str, Any] = {}
    if heartbeat:
        kwargs = {
            "heartbeat_interval": HEARTBEAT_INTERVAL,
            "grace_period": HEARTBEAT_GRACE,
            "heartbeat_stale_trial_callback": optuna.storages.RetryHeartbeatStaleTrialCallback(
                max_retry=1
            ),
        }
    try:
        return optuna.storages.RDBStorage(url, engine_kwargs=engine_kwargs, **kwargs)
    except ImportError as exc:
        raise InputError("--storage", None, f"{url}: database driver missing ({exc})") from None
    except Exception as exc:  # SQLAlchemy raises many types for bad URLs / unreachable hosts
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise InputError("--storage", None, f"cannot open {url}: {first}") from None


def _ensure_parent(path: Path, url: str) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise InputError(
            "--storage", None, f"cannot create {path.parent} for {url}: {exc}"
        ) from None


# -- registries ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Component:
    """A registry entry: an Optuna class and the defaults ``tuner`` gives it."""

    cls: type
    defaults: Mapping[str, Any] = field(default_factory=dict)
    multi_objective: bool = False
    description: str = ""


SAMPLERS: dict[str, Component] = {
    # multivariate TPE models interactions such as freeze x lr0, which matter here
    "tpe": Component(
        optuna.samplers.TPESampler,
        {"multivariate": True, "n_startup_trials": 5},
        True,
        "multivariate TPE (default)",
    ),
    "random": Component(optuna.samplers.RandomSampler, multi_objective=True),
    "cmaes": Component(optuna.samplers.CmaEsSampler, description="CMA-ES"),
    "gp": Component(
        optuna.samplers.GPSampler, multi_objective=True, description="Gaussian process"
    ),
    "nsga2": Component(optuna.samplers.NSGAIISampler, multi_objective=True, description="NSGA-II"),
}

PRUNERS: dict[str, Component] = {
    "median": Component(optuna.pruners.MedianPruner, description="median of earlier trials"),
    "successive_halving": Component(
        optuna.pruners.SuccessiveHalvingPruner, description="asynchronous successive halving"
    ),
    "hyperband": Component(optuna.pruners.HyperbandPruner, description="Hyperband over epochs"),
    "none": Component(optuna.pruners.NopPruner, description="never prune"),
}


def _build(
    registry: Mapping[str, Component],
    cfg: ComponentConfig,
    field_name: str,
    source: str,
    **fixed: Any,
) -> Any:
    kind = field_name.rsplit(".", 1)[-1]
    entry = registry.get(cfg.name)
    if entry is None:
        raise InputError(
            source,
            f"{field_name}.name",
            f"unknown {kind} {cfg.name!r}; choose from {', '.join(registry)}",
        )
    params = inspect.signature(entry.cls).parameters
    for key in cfg.args:
        if key not in params or key in fixed:
            allowed = sorted(k for k in params if k not in fixed)
            raise InputError(
                source,
                f"{field_name}.args.{key}",
                f"not an argument of {cfg.name}; expected one of {', '.join(allowed)}",
            )
    try:
        return entry.cls(**fixed, **{**entry.defaults, **cfg.args})
    except (TypeError, ValueError, ImportError) as exc:
        raise InputError(source, f"{field_name}.args", f"{cfg.name}: {exc}") from None


def make_sampler(config: StudyConfig) -> optuna.samplers.BaseSampler:
    """The configured sampler, seeded."""
    search = config.search
    entry = SAMPLERS.get(search.sampler.name)
    if entry is not None and config.objective.is_multi and not entry.multi_objective:
        raise InputError(
            config.source,
            "search.sampler.name",
            f"{search.sampler.name} cannot optimise several objectives; use tpe, nsga2 or random",
        )
    return _build(SAMPLERS, search.sampler, "search.sampler", config.source, seed=search.seed)


def make_pruner(config: StudyConfig) -> optuna.pruners.BasePruner:
    """The configured pruner (a no-op pruner for multi-objective studies)."""
    pruner = _build(PRUNERS, config.search.pruner, "search.pruner", config.source)
    if config.objective.is_multi:
        return optuna.pruners.NopPruner()
    return pruner


def pruning_disabled_notice(config: StudyConfig) -> str | None:
    """Why pruning is off although the space asks for it, if it is."""
    if config.objective.is_multi and config.search.pruner.name != "none":
        return (
            f"note: pruner {config.search.pruner.name!r} is disabled: Optuna cannot prune "
            "multi-objective trials, so every trial trains all its epochs"
        )
    return None


# -- studies ---------------------------------------------------------------------------------


def create_or_load(
    config: StudyConfig,
    storage: optuna.storages.BaseStorage,
    resolved: Mapping[str, Any],
    command: str,
) -> optuna.Study:
    """Create the study, or load it when it exists (resume).

    Raises:
        InputError: An existing study with the same name optimises something else.
    """
    directions = [t.direction for t in config.objective.targets]
    existing = {s.study_name: s for s in optuna.get_all_study_summaries(storage)}
    if config.study in existing:
        have = [d.name.lower() for d in existing[config.study].directions]
        if have != directions:
            raise InputError(
                config.source,
                "objective",
                f"study {config.study!r} already exists with directions {have}, not "
                f"{directions}; pick another --study name",
            )
    study = optuna.create_study(
        storage=storage,
        study_name=config.study,
        directions=directions,
        sampler=make_sampler(config),
        pruner=make_pruner(config),
        load_if_exists=True,
    )
    if "config" not in study.user_attrs:
        study.set_user_attr("config", json.loads(json.dumps(resolved, default=str)))
        study.set_user_attr("space_file", config.source)
        study.set_user_attr("command", command)
        study.set_user_attr("metrics", [t.metric for t in config.objective.targets])
    return study


def enqueue_baseline(
    study: optuna.Study, config: StudyConfig, base_hyp: Mapping[str, Any]
) -> bool:
    """Enqueue the base values as the study's first trial, once per study.

    Returns:
        True when a baseline trial was enqueued now.
    """
    if not config.search.baseline:
        return False
    for trial in study.get_trials(deepcopy=False):
        if trial.user_attrs.get("baseline") and trial.state != TrialState.FAIL:
            return False
    params = {key: base_hyp[key] for key in config.space if key in base_hyp}
    study.enqueue_trial(params, user_attrs={"baseline": True}, skip_if_exists=True)
    return True


def counts(study: optuna.Study) -> Counter[str]:
    """Trials by state name (``COMPLETE``, ``PRUNED``, ``FAIL``, ``RUNNING``, ``WAITING``)."""
    return Counter(t.state.name for t in study.get_trials(deepcopy=False))


def n_finished(study: optuna.Study) -> int:
    """Trials that count toward the budget: complete and pruned ones (failed ones do not)."""
    return len(study.get_trials(deepcopy=False, states=FINISHED))


def baseline_trial(study: optuna.Study) -> FrozenTrial | None:
    """The baseline trial, if it finished."""
    for trial in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
        if trial.user_attrs.get("baseline"):
            return trial
    return None


def best_trial(study: optuna.Study) -> FrozenTrial | None:
    """The best complete trial of a single-objective study, or None."""
    try:
        return study.best_trial
    except ValueError:
        return None


class Budget:
    """Stops the study when ``n_trials`` trials finished or too many failed in a row.

    Finished means complete or pruned. The count is read from the storage, so trials of other
    workers on the same study count too.
    """

    def __init__(self, n_trials: int, max_failures: int) -> None:
        self.n_trials = n_trials
        self.max_failures = max_failures
        self.failures_in_a_row = 0
        self.stopped_for_failures = False

    def __call__(self, study: optuna.Study, trial: FrozenTrial) -> None:
        if trial.state == TrialState.FAIL:
            self.failures_in_a_row += 1
            if self.failures_in_a_row >= self.max_failures:
                self.stopped_for_failures = True
                study.stop()
                return
        else:
            self.failures_in_a_row = 0
        if n_finished(study) >= self.n_trials:
            study.stop()


def quiet_optuna() -> None:
    """Optuna's per-trial log lines would duplicate the tuner's progress display."""
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    logging.getLogger("optuna").propagate = False


def run(
    study: optuna.Study,
    objective: Callable[[optuna.Trial], Any],
    config: StudyConfig,
    callbacks: list[Callable[[optuna.Study, FrozenTrial], None]],
) -> Budget:
    """Run trials until the study's total reaches ``n_trials`` (or timeout / failures).

    Raises:
        StudyError: The study stopped because ``max_failures`` trials failed in a row.
    """
    budget = Budget(config.search.n_trials, config.search.max_failures)
    if n_finished(study) >= budget.n_trials:
        return budget
    study.optimize(
        objective,
        n_trials=None,
        timeout=config.search.timeout,
        catch=(Exception,),
        callbacks=[budget, *callbacks],
    )
    if budget.stopped_for_failures:
        raise StudyError(
            f"stopped after {budget.max_failures} failed trials in a row: the setup is broken, "
            "not the hyps; see the reasons with `tuner status`"
        )
    return budget
