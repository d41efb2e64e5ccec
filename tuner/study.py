"""Optuna plumbing: storages, sampler and pruner registries, create/resume, the trial budget.

Optuna objects stay here and in :mod:`tuner.objective`; the rest of the package passes plain
data.
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import inspect
import json
import logging
import os
import socket
import threading
import time
import warnings
from collections import Counter
from collections.abc import Callable, Container, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import optuna
from optuna.storages._cached_storage import _CachedStorage
from optuna.storages.journal import JournalFileBackend, JournalStorage
from optuna.trial import FrozenTrial, TrialState

from trainer.base import get_adapter
from tuner.errors import InputError, StudyError
from tuner.samplers import PrunedGPSampler
from tuner.space import ComponentConfig, StudyConfig

FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)
STUDIES_DIR = Path("studies")
# A worker that stops sending heartbeats for this long is considered dead; its trial is
# marked FAIL and its configuration retried by the next worker (see fail_stale_trials). The
# grace outlasts the interval plus the SQLite busy timeout (a heartbeat write may wait that
# long for the lock), because failing a live trial would run its configuration twice. A worker
# killed on this machine is detected at once by its process id, without waiting for the grace.
HEARTBEAT_INTERVAL = 10
HEARTBEAT_GRACE = 120
SQLITE_BUSY_TIMEOUT = 60
# A killed configuration is retried this many times: once may be bad luck (preemption, OOM
# killer), twice means the configuration itself kills the worker.
MAX_RETRIES = 1
# How often a worker whose budget is fully reserved by running trials looks again.
POLL_SECONDS = 1.0
WORKER_ATTR = "tuner:worker"
HEARTBEAT_ATTR = "tuner:heartbeat"


def default_storage(study: str) -> str:
    """``sqlite:///studies/<study>.db``: one file per study, next to its outputs."""
    return f"sqlite:///{STUDIES_DIR / study}.db"


def _check_exists(path: Path, create: bool) -> None:
    if not create and not path.is_file():
        raise InputError("--storage", None, f"no such study file: {path}")


def open_storage(
    url: str,
    *,
    heartbeat: bool = True,
    create: bool = True,
    heartbeat_interval: int = HEARTBEAT_INTERVAL,
    grace_period: int = HEARTBEAT_GRACE,
) -> optuna.storages.BaseStorage:
    """Open (and for SQLite and journal files, create) a storage.

    Args:
        url: An SQLAlchemy URL (``sqlite:///x.db``, ``postgresql://...``) or
            ``journal:PATH`` for Optuna's journal file storage.
        heartbeat: Record worker heartbeats so trials of crashed workers can be failed.
        create: Create a missing SQLite or journal file (False for the commands that only
            read a study: a mistyped path is an error, not a new empty database).
        heartbeat_interval: Seconds between two heartbeats of a running trial.
        grace_period: Seconds without a heartbeat after which a running trial is failed.

    Raises:
        InputError: The URL is malformed or the database cannot be reached.
    """
    if url.startswith("journal:"):
        path = Path(url.removeprefix("journal:"))
        if not path.name:
            raise InputError("--storage", None, f"{url!r} names no file (journal:PATH)")
        _check_exists(path, create)
        _ensure_parent(path, url)
        try:
            _check_journal(path)
            backend = JournalFileBackend(str(path))
            # the storage replays the whole log here, so a damaged journal fails now
            return TunerJournalStorage(backend, heartbeat_interval, grace_period)
        except OSError as exc:
            raise InputError("--storage", None, f"cannot open {path}: {exc}") from None
        except (ValueError, KeyError, TypeError) as exc:  # JSONDecodeError is a ValueError
            raise InputError(
                "--storage", None, f"{path} is not an Optuna journal file ({exc})"
            ) from None
    if "://" not in url:
        raise InputError(
            "--storage",
            None,
            f"{url!r} is not a storage URL (sqlite:///PATH.db, "
            "postgresql://USER@HOST/DB or journal:PATH)",
        )
    engine_kwargs: dict[str, Any] = {}
    if url.startswith("sqlite:"):
        db = url.split(":///", 1)[-1] if ":///" in url else ""
        if not db or db.startswith(":memory:"):
            # an in-memory database is one per connection: the heartbeat thread would not see
            # the study's tables, and every result would vanish with the process anyway
            raise InputError(
                "--storage", None, f"{url!r} names no database file (sqlite:///PATH.db)"
            )
        _check_exists(Path(db), create)
        _ensure_parent(Path(db), url)
        # Wait instead of failing with "database is locked" when workers write together.
        engine_kwargs["connect_args"] = {"timeout": SQLITE_BUSY_TIMEOUT}
    else:
        engine_kwargs["pool_pre_ping"] = True
    kwargs: dict[str, Any] = {}
    if heartbeat:
        kwargs = {
            "heartbeat_interval": heartbeat_interval,
            "grace_period": grace_period,
            "heartbeat_stale_trial_callback": retry_stale_trial,
        }
    try:
        storage = _rdb_storage(url, engine_kwargs, kwargs)
        if url.startswith("sqlite:"):
            _use_wal(storage)
        return storage
    except ImportError as exc:
        raise InputError("--storage", None, f"{url}: database driver missing ({exc})") from None
    except Exception as exc:  # SQLAlchemy raises many types for bad URLs / unreachable hosts
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise InputError("--storage", None, f"cannot open {url}: {first}") from None


def _check_journal(path: Path) -> None:
    """A journal's first line is one JSON log record.

    Optuna skips an undecodable *last* line as a write cut short, so a one-line file of another
    kind would read as an empty journal, and the study's records appended to it would make it
    unreadable; checking the first line keeps such a file as it is.

    Raises:
        ValueError: The file is not empty and its first line is no JSON record.
    """
    if not path.is_file() or path.stat().st_size == 0:
        return
    with path.open("rb") as handle:
        first = handle.readline(1 << 20)
    try:
        record = json.loads(first)
    except json.JSONDecodeError:
        record = None
    if not isinstance(record, dict) or "op_code" not in record:
        raise ValueError(f"its first line is not a journal record: {first[:60]!r}")


def _rdb_storage(
    url: str, engine_kwargs: dict[str, Any], kwargs: dict[str, Any], attempts: int = 5
) -> optuna.storages.RDBStorage:
    """``RDBStorage``, retried while another worker creates the same fresh schema.

    Workers started together on an empty PostgreSQL database race in ``CREATE TABLE``: the
    loser gets a unique violation on the catalogue (``pg_type_typname_nsp_index``); on a new
    SQLite file (a search starting while ``tuner status`` or the dashboard opens it) "table
    studies already exists". Once the winner has committed, the schema exists and a retry
    just opens it.
    """
    import sqlalchemy.exc

    racing_errors = (
        sqlalchemy.exc.IntegrityError,
        sqlalchemy.exc.ProgrammingError,
        sqlalchemy.exc.OperationalError,
    )
    for attempt in range(attempts):
        try:
            return optuna.storages.RDBStorage(url, engine_kwargs=engine_kwargs, **kwargs)
        except racing_errors as exc:
            text = str(exc).lower()
            # PostgreSQL: "duplicate key"; SQLite: "already exists" (a table), "unique
            # constraint failed" (Optuna's alembic_version row)
            racing = any(
                words in text
                for words in ("duplicate key", "already exists", "unique constraint failed")
            )
            if not racing or attempt == attempts - 1:
                raise
            time.sleep(0.2 * (attempt + 1))
    raise AssertionError("unreachable")


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.close()


def _use_wal(storage: optuna.storages.RDBStorage) -> None:
    """SQLite in write-ahead-log mode with ``synchronous=NORMAL`` on every connection.

    Optuna commits every parameter, report and user attr on its own, about 40 commits per
    trial; in SQLite's default rollback-journal mode each one waits for two fsyncs (about
    10 ms), which made the storage the largest part of the tuner's per-trial cost. In WAL mode
    a commit appends to the log and, with ``synchronous=NORMAL``, fsyncs only at checkpoints.
    A committed trial survives a crash or ``kill -9`` of any process; only an OS crash or
    power cut can roll back the last commits (never corrupt the file). Readers and one writer
    from several local processes work as before (not on network file systems, where SQLite's
    locks are unreliable anyway).
    """
    from sqlalchemy import event

    event.listen(storage.engine, "connect", _sqlite_pragmas)
    # connections opened while the storage set itself up predate the listener
    storage.engine.dispose()


class TunerJournalStorage(JournalStorage):
    """Optuna's journal storage plus the heartbeat settings it lacks.

    Optuna implements heartbeats for RDB storages only; for journal files ``tuner`` records
    them itself (:class:`Heartbeat`) and these attributes say how often and how long to wait.
    """

    def __init__(
        self, backend: JournalFileBackend, heartbeat_interval: int, grace_period: int
    ) -> None:
        super().__init__(backend)
        self.tuner_heartbeat_interval = heartbeat_interval
        self.tuner_grace_period = grace_period


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
    # multivariate TPE models interactions such as freeze x lr0, which matter here; the
    # constant liar keeps parallel workers from sampling next to each other's running trials
    "tpe": Component(
        optuna.samplers.TPESampler,
        {"multivariate": True, "n_startup_trials": 5, "constant_liar": True},
        True,
        "multivariate TPE (the default for multi-objective studies)",
    ),
    "random": Component(optuna.samplers.RandomSampler, multi_objective=True),
    "cmaes": Component(optuna.samplers.CmaEsSampler, description="CMA-ES"),
    # pruned trials count at their best epoch: under Hyperband most trials are pruned, and a
    # GP fitted to the complete ones alone is still sampling at random a quarter through
    "gp": Component(
        PrunedGPSampler,
        {"n_startup_trials": 5},
        True,
        "Gaussian process that learns from pruned trials (the default)",
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
    config: StudyConfig,
    **fixed: Any,
) -> Any:
    kind = field_name.rsplit(".", 1)[-1]
    entry = registry.get(cfg.name)
    if entry is None:
        raise config.error(
            f"{field_name}.name",
            f"unknown {kind} {cfg.name!r}; choose from {', '.join(registry)}",
        )
    params = inspect.signature(entry.cls).parameters
    for key, value in cfg.args.items():
        if key not in params or key in fixed:
            allowed = sorted(k for k in params if k not in fixed)
            raise config.error(
                f"{field_name}.args.{key}",
                f"not an argument of {cfg.name}; expected one of {', '.join(allowed)}",
            )
        wanted = _wanted_type(params[key].default)
        if wanted is not None and not _is_of(value, wanted):
            raise config.error(
                f"{field_name}.args.{key}",
                f"must be {_TYPE_WORDS[wanted]} ({cfg.name}'s default is "
                f"{params[key].default!r}), got {value!r}",
            )
    try:
        return entry.cls(**fixed, **{**entry.defaults, **cfg.args})
    except (TypeError, ValueError, ImportError) as exc:
        raise config.error(f"{field_name}.args", f"{cfg.name}: {exc}") from None


_TYPE_WORDS = {bool: "true or false", int: "an integer", float: "a number"}


def _wanted_type(default: Any) -> type | None:
    """The type an argument with this default takes (None: a default that says nothing, such
    as None or ``"auto"`` where a number is taken too)."""
    for kind in (bool, int, float):
        if isinstance(default, kind):
            return kind
    return None


def _is_of(value: Any, wanted: type) -> bool:
    if wanted is bool:
        return isinstance(value, bool)
    if isinstance(value, bool):
        return False
    return isinstance(value, int) if wanted is int else isinstance(value, int | float)


def make_sampler(config: StudyConfig, n_started: int = 0) -> optuna.samplers.BaseSampler:
    """The configured sampler, seeded.

    Args:
        config: The space.
        n_started: Trials the study has started before this process joins it (a resume, a
            late worker): the sampler's seed is then :func:`resume_seed`'s.
    """
    search = config.search
    entry = SAMPLERS.get(search.sampler.name)
    if entry is not None and config.objective.is_multi and not entry.multi_objective:
        raise config.error(
            "search.sampler.name",
            f"{search.sampler.name} cannot optimise several objectives; use tpe, nsga2 or random",
        )
    seed = resume_seed(search.seed, n_started)
    return _build(SAMPLERS, search.sampler, "search.sampler", config, seed=seed)


def resume_seed(seed: int | None, n_started: int) -> int | None:
    """The sampler seed of a process that joins a study which has started ``n_started`` trials.

    The study's seed alone made a resumed search draw its start-up points again, so that it
    re-trained configurations the study already had; mixed with the count, a new study keeps
    its seed (its draws reproduce exactly) and a resume goes on with other draws.
    """
    if seed is None or n_started == 0:
        return seed
    digest = hashlib.blake2b(f"{seed}:{n_started}".encode(), digest_size=4).digest()
    return int.from_bytes(digest, "big")


def n_started(study: optuna.Study) -> int:
    """Trials the study has started: every state but WAITING (an enqueued baseline)."""
    return sum(t.state != TrialState.WAITING for t in study.get_trials(deepcopy=False))


def make_pruner(config: StudyConfig) -> optuna.pruners.BasePruner:
    """The configured pruner (a no-op pruner for multi-objective studies)."""
    pruner = _build(PRUNERS, config.search.pruner, "search.pruner", config)
    if config.objective.is_multi:
        return optuna.pruners.NopPruner()
    _check_decides(pruner, config)
    return pruner


def _check_decides(pruner: optuna.pruners.BasePruner, config: StudyConfig) -> None:
    """Let a copy of ``pruner`` decide on a few made-up trials of a throwaway study.

    Some argument values fail only when the pruner first decides (Hyperband's
    ``min_resource: 0`` divides by zero), which would fail every trial of the study. A copy,
    because pruners keep state from the trials they see (Hyperband's ``max_resource: auto``
    takes the first finished trial's length).

    Raises:
        InputError: The pruner fails with these arguments.
    """
    verbosity = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.WARNING)  # no "new study created" line
    try:
        study = optuna.create_study(pruner=copy.deepcopy(pruner))
        for number in range(4):
            trial = study.ask()
            for step in range(1, 4):
                trial.report(float(number + step), step)
                if trial.should_prune():
                    break
            study.tell(trial, float(number))
    except Exception as exc:  # any: this pruner would fail every trial the same way
        raise config.error(
            "search.pruner.args",
            f"{config.search.pruner.name} fails with these arguments: "
            f"{type(exc).__name__}: {exc}",
        ) from None
    finally:
        optuna.logging.set_verbosity(verbosity)


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
        InputError: An existing study with the same name optimises something else or trained
            its trials with other trainer settings or base hyps.
    """
    directions = [t.direction for t in config.objective.targets]
    retake = False
    exists = config.study in {s.study_name for s in optuna.get_all_study_summaries(storage)}
    if exists:
        stored = optuna.load_study(study_name=config.study, storage=storage)
        check_objective(stored, config)
        try:
            check_settings(stored, config, resolved)
        except InputError:
            if stored.get_trials(deepcopy=False, states=(*FINISHED, TrialState.RUNNING)):
                raise
            # nothing trained yet (a setup that failed every trial, fixed since): the study
            # takes this run's settings, and what was queued under the old ones is dropped
            retake = True
            _drop_queued(stored, "queued under earlier settings")
    study = optuna.create_study(
        storage=storage,
        study_name=config.study,
        directions=directions,
        sampler=make_sampler(config, n_started(stored) if exists else 0),
        pruner=make_pruner(config),
        load_if_exists=True,
    )
    if "config" not in study.user_attrs or retake:
        study.set_user_attr("config", json.loads(json.dumps(resolved, default=str)))
        study.set_user_attr("space_file", config.source)
        study.set_user_attr("command", command)
        study.set_user_attr("metrics", [t.metric for t in config.objective.targets])
    return study


def _drop_queued(study: optuna.Study, reason: str) -> None:
    """Fail the study's WAITING trials (an enqueued baseline of other base values)."""
    for trial in study.get_trials(deepcopy=False, states=(TrialState.WAITING,)):
        study._storage.set_trial_user_attr(trial._trial_id, "fail_reason", reason)
        study._storage.set_trial_state_values(trial._trial_id, TrialState.FAIL)


def check_settings(
    study: optuna.Study,
    config: StudyConfig,
    resolved: Mapping[str, Any],
    hint: str = "keep the setting or pick another --study name",
    may_differ: frozenset[str] = frozenset(),
) -> None:
    """A resumed study must train as its trials did: same trainer settings and base hyps.

    Another epoch count, data set, weights or seed would mix values that do not compare (a
    2-epoch trial "best" among 1-epoch ones). What may change: the adapter's
    ``runtime_settings`` (device, loader workers, timeouts), the search budget, sampler,
    pruner and the ranges of the space, the base value of a searched key (only the baseline,
    which has run, trains with it), and the folder of a path setting (adapters store paths
    resolved, so the same ``data: data/coco.yaml`` from another checkout or machine is
    another absolute path: paths compare by file name). Settings that one side does not have
    (a study of an older version) are not compared; nested ones key by key.

    Args:
        study: The stored study, with the resolved config of its first run.
        config: The space of this run.
        resolved: Its resolved config (:meth:`StudyConfig.to_dict`).
        hint: What the message tells the user to do.
        may_differ: Trainer settings this caller may change besides the runtime ones (a
            confirmation's length).

    Raises:
        InputError: A trainer setting or base hyp differs, naming the first one.
    """
    stored = study.user_attrs.get("config")
    if not isinstance(stored, Mapping):
        return
    now = json.loads(json.dumps(dict(resolved), default=str))  # as the attr stored it
    runtime = get_adapter(config.trainer.adapter).runtime_settings | may_differ
    for section, skip in (("trainer", runtime), ("base", frozenset(config.space))):
        had, has = stored.get(section), now.get(section)
        if not isinstance(had, Mapping) or not isinstance(has, Mapping):
            continue
        first = next(_differences(had, has, skip), None)
        if first is not None:
            key, old, new = first
            raise config.error(
                f"{section}.{key}",
                f"study {study.study_name!r} ran its trials with {old!r}, not {new!r}; "
                f"their values would not compare: {hint}",
            )


def _differences(
    had: Mapping[str, Any], has: Mapping[str, Any], skip: Container[str], prefix: str = ""
) -> Iterator[tuple[str, Any, Any]]:
    """``(dotted key, old, new)`` of the settings both mappings have that differ, in key order;
    keys in ``skip`` (dotted, from the top) are left out, mappings compared key by key."""
    for key in sorted(had.keys() & has.keys()):
        dotted = prefix + key
        old, new = had[key], has[key]
        if dotted in skip or old == new or _same_file(old, new):
            continue
        if isinstance(old, Mapping) and isinstance(new, Mapping):
            yield from _differences(old, new, skip, dotted + ".")
        else:
            yield dotted, old, new


def _same_file(old: Any, new: Any) -> bool:
    """Two absolute paths with one file name: the same file in another folder (a checkout or
    data set elsewhere, another machine), which a resume may use."""
    return (
        isinstance(old, str) and isinstance(new, str) and os.path.isabs(old)
        and os.path.isabs(new) and Path(old).name == Path(new).name
    )


def check_objective(
    study: optuna.Study, config: StudyConfig, hint: str = "pick another --study name"
) -> None:
    """An existing study must optimise what the space says (its values would mix otherwise).

    Args:
        study: The stored study.
        config: The space.
        hint: What the message tells the user to do.

    Raises:
        InputError: Other directions, metrics or ``reduce``.
    """
    directions = [t.direction for t in config.objective.targets]
    have = [d.name.lower() for d in study.directions]
    if have != directions:
        raise config.error(
            "objective",
            f"study {study.study_name!r} already exists with directions {have}, not "
            f"{directions}; {hint}",
        )
    metrics = [t.metric for t in config.objective.targets]
    stored = study.user_attrs.get("config", {}).get("objective")
    reduce = stored.get("reduce") if isinstance(stored, dict) else None
    have_metrics = study.user_attrs.get("metrics", metrics)
    if have_metrics != metrics or (reduce is not None and reduce != config.objective.reduce):
        want = f"{', '.join(metrics)} (reduce: {config.objective.reduce})"
        had = ", ".join(have_metrics) + (f" (reduce: {reduce})" if reduce else "")
        raise config.error(
            "objective",
            f"study {study.study_name!r} already exists optimising {had}, not {want}; "
            f"its values would mix: {hint}",
        )


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
    # no skip_if_exists: Optuna's would match the FAILED baseline (a Ctrl-C, a lost worker)
    # and queue nothing; callers hold the study's slot lock, so workers cannot race here
    study.enqueue_trial(params, user_attrs={"baseline": True})
    return True


def counts(study: optuna.Study) -> Counter[str]:
    """Trials by state name (``COMPLETE``, ``PRUNED``, ``FAIL``, ``RUNNING``, ``WAITING``)."""
    return Counter(t.state.name for t in study.get_trials(deepcopy=False))


def n_finished(study: optuna.Study) -> int:
    """Trials that count toward the budget: complete and pruned ones (failed ones do not)."""
    return len(study.get_trials(deepcopy=False, states=FINISHED))


def gain(value: float, base: float, direction: str) -> float:
    """What ``value`` gained over the baseline's ``base``: positive is better, either way.

    For a minimised metric (a loss) that is ``base - value``, so "gain +0.05" always reads as
    an improvement.

    Args:
        value: The trial's (or mean) value.
        base: The baseline's value.
        direction: ``maximize`` or ``minimize``.
    """
    return value - base if direction == "maximize" else base - value


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


# A diverged trial is an outcome of its hyps, so it is no failure; but when this many times
# ``max_failures`` trials diverge in a row, even after the sampler has seen the earlier ones,
# the loss is more likely broken (NaN in the data, a bad loss scale) than the hyps.
DIVERGED_FACTOR = 2


class Budget:
    """Counts failures (and divergences) in a row; the study's total is kept by :func:`run`.

    Finished means complete or pruned. The count is of the trials this process saw end (one
    worker's, under ``--workers N`` each worker stops after its own ``max_failures``): trials
    that failed because a run was interrupted or lost its worker, which the storage also
    holds, say nothing about the setup. The same counter serves every backend.
    """

    def __init__(self, n_trials: int, max_failures: int) -> None:
        self.n_trials = n_trials
        self.max_failures = max_failures
        self.failures_in_a_row = 0
        self.diverged_in_a_row = 0
        self.stopped_for: str | None = None  # "failures" or "divergence"

    @property
    def stopped_for_failures(self) -> bool:
        """The study must stop: too many failed (or diverged) trials in a row."""
        return self.stopped_for is not None

    def __call__(self, study: optuna.Study, trial: FrozenTrial) -> None:
        self.count(trial.state, bool(trial.user_attrs.get("diverged")))

    def count(self, state: TrialState, diverged: bool = False) -> None:
        """Count one finished trial."""
        if state == TrialState.FAIL:
            self.failures_in_a_row += 1
            self.diverged_in_a_row = 0
        elif diverged:
            self.failures_in_a_row = 0
            self.diverged_in_a_row += 1
        else:
            self.failures_in_a_row = self.diverged_in_a_row = 0
        if self.failures_in_a_row >= self.max_failures:
            self.stopped_for = "failures"
        elif self.diverged_in_a_row >= DIVERGED_FACTOR * self.max_failures:
            self.stopped_for = "divergence"

    def failure_error(self) -> StudyError:
        """The error that ends a study stopped by ``max_failures``."""
        if self.stopped_for == "divergence":
            return StudyError(
                f"stopped after {DIVERGED_FACTOR * self.max_failures} diverged trials in a row "
                f"(NaN or infinite loss; the limit is {DIVERGED_FACTOR} x --max-failures): with "
                "the sampler "
                "steering away from diverging hyps, this points at the data or the loss; see "
                "`tuner status`"
            )
        return StudyError(
            f"stopped after {self.max_failures} failed trials in a row: the setup is broken, "
            "not the hyps; see the reasons with `tuner status` (raise the limit with "
            "--max-failures N)"
        )


# -- workers: who runs a trial, is it still alive --------------------------------------------


def _proc_stat(pid: int) -> tuple[str, str] | None:
    """(state, start time in clock ticks) of a process, from /proc; None when it is gone."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # the command name in parentheses may hold spaces; the fields after it are fixed
    fields = text.rsplit(")", 1)[-1].split()
    return fields[0], fields[19]


def _pid_table() -> str | None:
    """Names this machine's process table: hostname, boot and pid namespace.

    Two processes with the same value see the same process ids, so one can tell whether the
    other's process is gone. None where /proc is missing (not Linux): no such checks.
    """
    try:
        boot = Path("/proc/sys/kernel/random/boot_id").read_text().strip()
        pid_ns = os.readlink("/proc/self/ns/pid")
    except OSError:
        return None
    return f"{socket.gethostname()}/{boot}/{pid_ns}"


def worker_identity(pid: int | None = None) -> dict[str, Any]:
    """What a trial records about the process that runs it (system attr ``tuner:worker``)."""
    pid = os.getpid() if pid is None else pid
    stat = _proc_stat(pid)
    return {
        "host": socket.gethostname(),
        "pid": pid,
        "pid_table": _pid_table(),
        "started": stat[1] if stat else None,
    }


def worker_gone(worker: Mapping[str, Any] | None) -> bool:
    """True when ``worker`` ran on this machine and its process has ended.

    Only a sure answer is True: another machine's worker, or one without a record, is judged
    by its heartbeats instead. A zombie (killed, not yet reaped) or a reused process id
    (another start time) counts as gone.
    """
    if not worker or worker.get("pid_table") is None or worker["pid_table"] != _pid_table():
        return False
    stat = _proc_stat(int(worker["pid"]))
    if stat is None:
        return True
    state, started = stat
    return state in ("Z", "X") or (worker.get("started") not in (None, started))


def _storage_of(study: optuna.Study) -> Any:
    # Optuna has no public accessor for a study's storage; heartbeats and system attrs need it.
    storage = study._storage
    if isinstance(storage, _CachedStorage):
        return storage._backend  # the RDB storage behind Optuna's cache
    return storage


def set_user_attrs(trial: optuna.Trial, attrs: Mapping[str, Any]) -> None:
    """Set several user attrs of a running trial, in one transaction on RDB storages.

    Optuna commits each ``set_user_attr`` on its own (a demo trial's eleven facts were eleven
    SQLite transactions); an RDB storage takes them in one. Either all of them are stored or,
    on an error, none: a concurrent insert of the same key (an IntegrityError, which another
    worker writing this trial would cause) falls back to Optuna's one-by-one writes. Other
    storages write one by one.
    """
    storage = _storage_of(trial.study)
    write = getattr(storage, "_set_trial_attr_without_commit", None)
    try:
        # Optuna internals, checked: another Optuna version falls back to its public setter
        import sqlalchemy.exc
        from optuna.storages._rdb import models
        from optuna.storages._rdb.storage import _create_scoped_session
    except ImportError:
        write = None
    if not isinstance(storage, optuna.storages.RDBStorage) or write is None or not attrs:
        for key, value in attrs.items():
            trial.set_user_attr(key, value)
        return
    try:
        # Optuna's own session scope: commit at the end, its errors as Optuna raises them
        with _create_scoped_session(storage.scoped_session) as session:
            for key, value in attrs.items():
                write(session, models.TrialUserAttributeModel, trial._trial_id, key, value)
    except sqlalchemy.exc.IntegrityError:
        for key, value in attrs.items():
            trial.set_user_attr(key, value)
        return
    # Optuna's Trial keeps a copy of its frozen trial, which its own setter updates
    cached = getattr(trial, "_cached_frozen_trial", None)
    if cached is not None:
        cached.user_attrs.update(attrs)


def _rdb_heartbeat(storage: Any) -> bool:
    return (
        isinstance(storage, optuna.storages.RDBStorage)
        and storage.get_heartbeat_interval() is not None
    )


def claim(study: optuna.Study, trial_id: int) -> None:
    """Record this process as the worker of a running trial (for crash detection)."""
    _storage_of(study).set_trial_system_attr(trial_id, WORKER_ATTR, worker_identity())


class Heartbeat:
    """Keeps running trials alive in the storage while this process works on them.

    RDB storages get Optuna's own heartbeat rows (timed by the database server's clock); journal
    files, for which Optuna records none, get a ``tuner:heartbeat`` system attr (one machine,
    one clock). Use it where Optuna's ``study.optimize`` does not already beat: journal storages
    and the Ray backend's driver, which owns many trials at once.
    """

    def __init__(self, study: optuna.Study) -> None:
        self.storage = _storage_of(study)
        self.interval = _heartbeat_settings(self.storage)[0]
        self.trial_ids: set[int] = set()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def active(self) -> bool:
        """Whether this storage can hold heartbeats at all."""
        return self.interval is not None

    def add(self, trial_id: int) -> None:
        """Beat for ``trial_id`` from now on (one beat at once)."""
        if not self.active:
            return
        with self._lock:
            self.trial_ids.add(trial_id)
        self._beat(trial_id)
        if self._thread is None:
            self._thread = threading.Thread(target=self._loop, name="tuner-heartbeat", daemon=True)
            self._thread.start()

    def discard(self, trial_id: int) -> None:
        """Stop beating for ``trial_id``."""
        with self._lock:
            self.trial_ids.discard(trial_id)

    def stop(self) -> None:
        """End the thread."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None

    def __enter__(self) -> Heartbeat:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            with self._lock:
                ids = list(self.trial_ids)
            for trial_id in ids:
                self._beat(trial_id)

    def _beat(self, trial_id: int) -> None:
        try:
            if isinstance(self.storage, optuna.storages.RDBStorage):
                self.storage.record_heartbeat(trial_id)
            else:
                self.storage.set_trial_system_attr(trial_id, HEARTBEAT_ATTR, time.time())
        except optuna.exceptions.UpdateFinishedTrialError:
            self.discard(trial_id)  # finished meanwhile (or failed by another worker)
        except Exception:  # noqa: BLE001 - a missed beat is retried; the grace allows several
            logging.getLogger(__name__).debug("heartbeat failed", exc_info=True)


def _heartbeat_settings(storage: Any) -> tuple[int | None, int | None]:
    """(interval, grace) in seconds, or (None, None) when the storage keeps no heartbeats."""
    if _rdb_heartbeat(storage):
        interval = storage.get_heartbeat_interval()
        return interval, storage.grace_period or 2 * interval
    if isinstance(storage, TunerJournalStorage):
        return storage.tuner_heartbeat_interval, storage.tuner_grace_period
    return None, None


def retry_stale_trial(study: optuna.Study, trial: FrozenTrial) -> int | None:
    """Queue the configuration of a trial whose worker died, up to ``MAX_RETRIES`` times.

    Like Optuna's ``RetryHeartbeatStaleTrialCallback`` (same ``failed_trial`` and
    ``retry_history`` system attrs), but the new trial keeps only the ``baseline`` mark of the
    old one's user attrs, not its outcome (``fail_reason``, partial history).

    Returns:
        The number of the queued trial, or None when the retries are used up.
    """
    history = [*trial.system_attrs.get("retry_history", []), trial.number]
    if len(history) > MAX_RETRIES:
        return None
    user_attrs: dict[str, Any] = {"retry_of": trial.number}
    if trial.user_attrs.get("baseline"):
        user_attrs["baseline"] = True
    study.add_trial(
        optuna.trial.create_trial(
            state=TrialState.WAITING,
            params=trial.params,
            distributions=trial.distributions,
            user_attrs=user_attrs,
            system_attrs={"failed_trial": history[0], "retry_history": history},
        )
    )
    return study.get_trials(deepcopy=False)[-1].number


def fail_stale_trials(study: optuna.Study) -> list[int]:
    """Fail the running trials whose worker is gone, and queue their configurations again.

    A worker is gone when its process on this machine has ended (seen at once), or when its
    trial missed heartbeats for the grace period (any machine). For RDB storages this is
    Optuna's own ``fail_stale_trials`` (which ``study.optimize`` also runs before each trial),
    plus a ``fail_reason`` and the process check.

    Returns:
        The numbers of the trials failed now.
    """
    storage = _storage_of(study)
    _, grace = _heartbeat_settings(storage)
    stale_rdb: set[int] = set()
    if _rdb_heartbeat(storage):
        # Optuna fails these itself but cannot say why; reading them first lets us record
        # a reason while the trial can still take user attrs.
        stale_rdb = set(storage._get_stale_trial_ids(study._study_id))
    failed = []
    now = time.time()
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        worker = trial.system_attrs.get(WORKER_ATTR)
        where = f"pid {worker['pid']} on {worker['host']}" if worker else "unknown worker"
        reason = None
        if worker_gone(worker):
            reason = f"worker lost: process {where} ended during the trial (killed or crashed)"
        elif trial._trial_id in stale_rdb:
            reason = f"worker lost: no heartbeat from {where} for over {grace}s"
        elif isinstance(storage, TunerJournalStorage) and grace is not None:
            beat = trial.system_attrs.get(HEARTBEAT_ATTR)
            if beat is None and trial.datetime_start is not None:
                beat = trial.datetime_start.timestamp()
            if beat is not None and now - beat > grace:
                reason = f"worker lost: no heartbeat from {where} for over {grace}s"
        if reason is None:
            continue
        try:
            storage.set_trial_user_attr(trial._trial_id, "fail_reason", reason)
            if not storage.set_trial_state_values(trial._trial_id, TrialState.FAIL):
                continue
        except optuna.exceptions.UpdateFinishedTrialError:
            continue  # another worker failed (or the worker finished) it first
        failed.append(trial.number)
        retry_stale_trial(study, study.get_trials(deepcopy=False)[trial.number])
    return failed


# -- the budget lock -------------------------------------------------------------------------


class SlotLock:
    """Serialises "count the study's trials, then start one" across all workers of a study.

    Without it two workers could both see one missing trial and both start one, overshooting
    ``n_trials``. This base class only serialises the threads of one process; subclasses
    reach across processes (a lock file next to a SQLite or journal file) or machines (a
    PostgreSQL advisory lock). ``release`` may be called more than once.
    """

    def __init__(self) -> None:
        self._thread_lock = threading.Lock()
        self.held = False

    def acquire(self) -> None:
        """Block until this worker holds the lock."""
        self._thread_lock.acquire()
        try:
            self._acquire()
        except BaseException:
            self._thread_lock.release()
            raise
        self.held = True

    def release(self) -> None:
        """Let the next worker in (no-op when not held)."""
        if not self.held:
            return
        self.held = False
        try:
            self._release()
        finally:
            self._thread_lock.release()

    def __enter__(self) -> SlotLock:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()

    def _acquire(self) -> None:
        pass

    def _release(self) -> None:
        pass


class FileSlotLock(SlotLock):
    """An ``flock`` on a file: every process on this machine (released if one dies)."""

    def __init__(self, path: Path) -> None:
        super().__init__()
        self.path = path
        self._fd: int | None = None

    def _acquire(self) -> None:
        import fcntl

        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
        except BaseException:
            os.close(fd)
            raise
        self._fd = fd

    def _release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing drops the flock
            self._fd = None


class PostgresSlotLock(SlotLock):
    """A PostgreSQL session advisory lock: every worker on every machine of the database.

    The lock lives on one connection; if the worker dies, the server drops it with the
    connection.
    """

    def __init__(self, engine: Any, name: str) -> None:
        super().__init__()
        self.engine = engine
        digest = hashlib.blake2b(f"tuner:{name}".encode(), digest_size=8).digest()
        self.key = int.from_bytes(digest, "big", signed=True)
        self._conn: Any = None

    def _acquire(self) -> None:
        import sqlalchemy

        conn = self.engine.connect()
        try:
            conn.execute(sqlalchemy.text("SELECT pg_advisory_lock(:k)"), {"k": self.key})
        except BaseException:
            conn.close()
            raise
        self._conn = conn

    def _release(self) -> None:
        import sqlalchemy

        conn, self._conn = self._conn, None
        if conn is None:
            return
        try:
            conn.execute(sqlalchemy.text("SELECT pg_advisory_unlock(:k)"), {"k": self.key})
        finally:
            conn.close()


def slot_lock(url: str, storage: Any, study_name: str) -> SlotLock:
    """The lock that keeps the total exact for this storage (see :class:`SlotLock`).

    SQLite and journal files: a lock file beside them (all workers share one machine);
    PostgreSQL: an advisory lock. Other databases get a per-process lock only, so workers of
    different ``tuner search`` commands may overshoot ``n_trials`` by a trial or two there.
    """
    if url.startswith("journal:"):
        return FileSlotLock(Path(f"{url.removeprefix('journal:')}.tuner-lock"))
    if url.startswith("sqlite:"):
        db = url.split(":///", 1)[-1]
        if db and db != ":memory:":
            return FileSlotLock(Path(f"{db}.tuner-lock"))
    if url.startswith("postgresql") and isinstance(storage, optuna.storages.RDBStorage):
        return PostgresSlotLock(storage.engine, study_name)
    return SlotLock()


@contextlib.contextmanager
def locked(lock: SlotLock | None) -> Iterator[None]:
    """Hold ``lock`` (if any) for a block."""
    if lock is None:
        yield
        return
    with lock:
        yield


def quiet_optuna() -> None:
    """Optuna's per-trial log lines would duplicate the tuner's progress display."""
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    logging.getLogger("optuna").propagate = False
    # heartbeats and the stale-trial retry are "experimental" in Optuna; we rely on them
    # knowingly and the warning would greet every `tuner search`
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)


def run(
    study: optuna.Study,
    objective: Callable[[optuna.Trial], Any],
    config: StudyConfig,
    callbacks: list[Callable[[optuna.Study, FrozenTrial], None]],
    *,
    lock: SlotLock | None = None,
    on_wait: Callable[[int], None] | None = None,
    poll_seconds: float = POLL_SECONDS,
) -> Budget:
    """Run trials until the study's total reaches exactly ``n_trials`` (or timeout / failures).

    Any number of workers may run this on the same study. Before a trial starts, the worker
    counts finished and running trials under ``lock``: a trial starts only while that sum is
    below ``n_trials``, so the study never overshoots. When the remaining trials are all
    running elsewhere the worker waits instead of leaving, because one of them may still fail
    (a failed trial does not count) or belong to a dead worker (failed and retried here).

    Args:
        study: The study.
        objective: Called with each trial.
        config: The validated space (budget, timeout, failure limit).
        callbacks: Called with each finished trial.
        lock: Shared by all workers of the study (:func:`slot_lock`); default: this process.
        on_wait: Called with the number of trials running elsewhere when this worker starts
            waiting for them.
        poll_seconds: How often a waiting worker looks again.

    Raises:
        StudyError: The study stopped because ``max_failures`` trials failed in a row.
    """
    search = config.search
    budget = Budget(search.n_trials, search.max_failures)
    lock = lock or SlotLock()
    deadline = None if search.timeout is None else time.monotonic() + search.timeout
    claimed = _Claimed(study, objective, lock)
    n_waited_for = 0
    while not budget.stopped_for_failures:
        if deadline is not None and time.monotonic() >= deadline:
            break
        with lock:
            fail_stale_trials(study)
            by_state = counts(study)
            n_done = by_state["COMPLETE"] + by_state["PRUNED"]
            n_running = by_state["RUNNING"]
            if n_done >= budget.n_trials:
                break
            start = n_done + n_running < budget.n_trials
            if start:
                # the objective releases the lock once its trial is RUNNING and claimed
                study.optimize(
                    claimed, n_trials=1, catch=(Exception,), callbacks=[budget, *callbacks]
                )
        if not start:
            if on_wait is not None and n_running != n_waited_for:
                on_wait(n_running)
            n_waited_for = n_running
            pause = poll_seconds
            if deadline is not None:
                pause = max(0.0, min(pause, deadline - time.monotonic()))
            time.sleep(pause)
        else:
            n_waited_for = 0
    if budget.stopped_for_failures:
        raise budget.failure_error()
    return budget


class _Claimed:
    """Wraps the objective: claim the new trial, let the next worker in, keep it alive."""

    def __init__(
        self, study: optuna.Study, objective: Callable[[optuna.Trial], Any], lock: SlotLock
    ) -> None:
        self.study = study
        self.objective = objective
        self.lock = lock
        # study.optimize already beats for RDB storages; journal files need ours
        self.own_beats = isinstance(_storage_of(study), TunerJournalStorage)

    def __call__(self, trial: optuna.Trial) -> Any:
        try:
            claim(self.study, trial._trial_id)
        finally:
            self.lock.release()
        if not self.own_beats:
            return self.objective(trial)
        with Heartbeat(self.study) as beats:
            beats.add(trial._trial_id)
            return self.objective(trial)
