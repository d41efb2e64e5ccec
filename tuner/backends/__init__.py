"""Where trials run: the backend registry behind ``tuner search --backend NAME``.

Every backend writes into the same Optuna study (same storage, same trial states and user
attrs), so ``status``, ``export``, ``report`` and the dashboard work whatever ran the trials.
A backend is a function taking a :class:`SearchJob`; it returns when the study's total is
reached (or its timeout passed) and raises ``StudyError`` or ``KeyboardInterrupt`` otherwise.
"""

from __future__ import annotations

import importlib
import importlib.util
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tuner.errors import InputError


@dataclass(frozen=True)
class SearchOptions:
    """Backend flags of ``tuner search``.

    Attributes:
        workers: Local worker processes (optuna backend).
        ray_address: Address of a running Ray cluster; None starts a local instance.
        concurrency: Trials running at once (ray backend); None lets Ray fill the resources.
        resources: Resources of one trial, e.g. ``{"cpu": 2, "gpu": 0.5}`` (ray backend).
        debug: Tracebacks wanted (passed on to worker processes).
    """

    workers: int = 1
    ray_address: str | None = None
    concurrency: int | None = None
    resources: Mapping[str, float] = field(default_factory=dict)
    debug: bool = False


@dataclass
class SearchJob:
    """Everything a backend needs, prepared and checked by ``tuner search``.

    Attributes:
        config: The validated space.
        study: The Optuna study (created, baseline enqueued).
        storage_url: Where the study lives.
        lock: The study's :class:`tuner.study.SlotLock` (keeps the total exact).
        adapter: The checked (not yet prepared) adapter.
        base_hyp: Every hyp key with its base value.
        out_dir: The study's output folder.
        argv: The ``tuner search`` arguments, for worker processes.
        options: Backend flags.
        on_trial: Called with ``(study, frozen trial)`` after each finished trial.
        on_epoch: Called with ``(trial number, epoch, metrics)`` after each epoch, if given.
        say: Prints one progress message.
    """

    config: Any
    study: Any
    storage_url: str
    lock: Any
    adapter: Any
    base_hyp: dict[str, Any]
    out_dir: Path
    argv: list[str]
    options: SearchOptions
    on_trial: list[Callable[[Any, Any], None]]
    on_epoch: Callable[[int, int, Mapping[str, float]], None] | None
    say: Callable[[str], None]


@dataclass(frozen=True)
class Backend:
    """A registry entry.

    Attributes:
        target: ``"module:function"`` running a :class:`SearchJob`.
        description: One line for ``--help``.
        extra: The pip extra that installs its dependencies, if any.
        requires: The module that extra provides (checked before any study is touched).
    """

    target: str
    description: str
    extra: str | None = None
    requires: str | None = None

    def check(self, name: str) -> None:
        """Fail early, with the install line, when the backend's extra is missing.

        Raises:
            InputError: Its dependencies are not installed.
        """
        if self.requires and importlib.util.find_spec(self.requires) is None:
            raise InputError(
                "--backend",
                None,
                f"{name} needs the {self.extra!r} extra: pip install -e '.[{self.extra}]'",
            )

    def load(self) -> Callable[[SearchJob], None]:
        """The backend function (imports its module only now: heavy imports stay lazy)."""
        module, _, attr = self.target.partition(":")
        return getattr(importlib.import_module(module), attr)


BACKENDS: dict[str, Backend] = {
    "optuna": Backend(
        "tuner.backends.local:run",
        "Optuna's loop in this process, or in --workers N local processes (default)",
    ),
    "ray": Backend(
        "tuner.backends.ray:run",
        "Ray Tune on a local instance or --ray-address ADDR (Optuna's sampler, Ray's schedulers)",
        extra="ray",
        requires="ray",
    ),
}


def get_backend(name: str) -> Backend:
    """The backend registered under ``name``.

    Raises:
        InputError: No backend has that name.
    """
    try:
        return BACKENDS[name]
    except KeyError:
        raise InputError(
            "--backend", None, f"unknown backend {name!r}; choose from {', '.join(BACKENDS)}"
        ) from None
