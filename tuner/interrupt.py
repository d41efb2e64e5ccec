"""Ctrl-C and SIGTERM that cannot be lost, and cannot break the cleanup they start.

Python raises ``KeyboardInterrupt`` wherever the main thread is when the signal is handled. If
that is inside a ``__del__`` or a weakref callback run by the garbage collector (SQLAlchemy's
connection pool has such callbacks), the interpreter prints "Exception ignored in ..." and
carries on: the search would go on as if no key had been pressed. The handler installed here
also records the signal, and the tuner's checkpoints (:func:`check`: every epoch's report, the
start of every trial and confirmation run) raise it again, so a swallowed interrupt stops the
run at the next epoch at the latest (and Python's "Exception ignored" report of it is left
out, unless ``--debug``).

Only the first signal raises. A second one, while the first one's cleanup records the running
trial as failed and writes the best configuration so far, only says that it is still stopping:
raised inside Optuna's bookkeeping it would leave that trial RUNNING (a batch system's stop
sends SIGTERM, and a ``--workers`` parent forwards SIGINT: two signals at once). A third one
stops at once.

SIGTERM (a batch system's time limit, ``docker stop``, ``kill``) stops like Ctrl-C. Python's
default for it ends the process at once, without the cleanup Ctrl-C gets: the running trial
would stay RUNNING, the best-so-far file unwritten and a training subprocess in its own
session left running.
"""

from __future__ import annotations

import contextlib
import signal
import sys
import threading
from collections.abc import Iterator
from typing import Any

_SIGNALS = (signal.SIGINT, signal.SIGTERM)
# the first signal that arrived (its KeyboardInterrupt message), None while none has
_pending: str | None = None
_n_signals = 0
# the signal that makes the tuner stop without its cleanup
_FORCING = 3


def _interrupt(signum: int, frame: Any) -> None:
    global _pending, _n_signals
    _n_signals += 1
    if _n_signals == 1:
        # Ctrl-C keeps Python's bare KeyboardInterrupt; a trial's fail_reason names SIGTERM
        _pending = "SIGTERM" if signum == signal.SIGTERM else ""
        raise _error()
    if _n_signals < _FORCING:
        print("\nstill stopping (recording the running trial and the best so far); "
              "Ctrl-C again to stop at once", file=sys.stderr, flush=True)
        return
    raise _error()


def _error() -> KeyboardInterrupt:
    return KeyboardInterrupt(_pending) if _pending else KeyboardInterrupt()


def check() -> None:
    """Raise the interrupt of a signal that arrived, if Python swallowed it where it landed.

    Raises:
        KeyboardInterrupt: SIGINT or SIGTERM arrived inside :func:`handled`.
    """
    if _pending is not None:
        raise _error()


def received() -> str | None:
    """The first signal that arrived inside :func:`handled` (``Ctrl-C`` or ``SIGTERM``)."""
    if _pending is None:
        return None
    return _pending or "Ctrl-C"


@contextlib.contextmanager
def handled(quiet: bool = True) -> Iterator[None]:
    """SIGINT and SIGTERM raise ``KeyboardInterrupt`` and stay pending until the block ends.

    Off the main thread, where no handler can be set, the block runs as it is. A SIGINT that
    was ignored (a shell's background job) stays ignored.

    Args:
        quiet: Leave out Python's "Exception ignored" report of an interrupt it swallowed
            (it is recorded and raised again; the report looks like a crash).
    """
    global _pending, _n_signals
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    _pending, _n_signals = None, 0  # before the handlers: one arriving at once counts
    hook = sys.unraisablehook
    previous: dict[int, Any] = {}
    try:
        # a SIGINT ignored from the start stays so: a shell starts background jobs that way,
        # so that the Ctrl-C meant for the foreground leaves them running
        previous = {
            sig: signal.signal(sig, _interrupt)
            for sig in _SIGNALS
            if not (sig == signal.SIGINT and signal.getsignal(sig) == signal.SIG_IGN)
        }
        if quiet:
            sys.unraisablehook = _without_recorded_interrupts(hook)
        yield
    finally:
        sys.unraisablehook = hook
        _restore(previous)
        _pending, _n_signals = None, 0


@contextlib.contextmanager
def kept() -> Iterator[None]:
    """Put the SIGINT and SIGTERM handlers back after a block that replaces them.

    ``ray.init`` sets SIGTERM to ``sys.exit`` (no cleanup, exit code 15) and Ray Tune's
    ``fit`` leaves its own SIGINT handler installed when it returns (a later Ctrl-C would only
    ask a finished Tune run to stop).
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {sig: signal.getsignal(sig) for sig in _SIGNALS}
    try:
        yield
    finally:
        _restore(previous)


def _restore(handlers: dict[int, Any]) -> None:
    for sig, handler in handlers.items():
        if handler is not None:  # None: set outside Python, nothing to put back
            signal.signal(sig, handler)


def _without_recorded_interrupts(hook: Any) -> Any:
    def unraisable(info: Any) -> None:
        if _pending is not None and isinstance(info.exc_value, KeyboardInterrupt):
            return  # recorded: check() raises it again
        hook(info)

    return unraisable
