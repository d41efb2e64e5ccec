"""Ctrl-C and SIGTERM that cannot be lost.

Python raises ``KeyboardInterrupt`` wherever the main thread is when the signal is handled. If
that is inside a ``__del__`` or a weakref callback run by the garbage collector (SQLAlchemy's
connection pool has such callbacks), the interpreter prints "Exception ignored in ..." and
carries on: the search would go on as if no key had been pressed. The handler installed here
also records the signal, and the tuner's checkpoints (:func:`check`: every epoch's report, the
start of every trial and confirmation run) raise it again, so a swallowed interrupt stops the
run at the next epoch at the latest.

SIGTERM (a batch system's time limit, ``docker stop``, ``kill``) stops like Ctrl-C. Python's
default for it ends the process at once, without the cleanup Ctrl-C gets: the running trial
would stay RUNNING, the best-so-far file unwritten and a training subprocess in its own
session left running.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator
from typing import Any

_SIGNALS = (signal.SIGINT, signal.SIGTERM)
# the signal that arrived (its KeyboardInterrupt message), None while none has
_pending: str | None = None


def _interrupt(signum: int, frame: Any) -> None:
    global _pending
    # Ctrl-C keeps Python's bare KeyboardInterrupt; a trial's fail_reason names SIGTERM
    _pending = "SIGTERM" if signum == signal.SIGTERM else ""
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


@contextlib.contextmanager
def handled() -> Iterator[None]:
    """SIGINT and SIGTERM raise ``KeyboardInterrupt`` and stay pending until the block ends.

    Off the main thread, where no handler can be set, the block runs as it is.
    """
    global _pending
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {sig: signal.signal(sig, _interrupt) for sig in _SIGNALS}
    _pending = None
    try:
        yield
    finally:
        for sig, handler in previous.items():
            if handler is not None:  # None: set outside Python, nothing to put back
                signal.signal(sig, handler)
        _pending = None
