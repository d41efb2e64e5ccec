"""``tuner dashboard``: optuna-dashboard on a study storage.

Before serving, every study made by ``tuner search`` gets a note (the space file, the command
line and the resolved config) and its objective names, so a reviewer sees in the dashboard what
the study searched and how to run it again. Trials already carry their facts as user attrs.
"""

from __future__ import annotations

import os
import signal
import sys
import warnings
from collections.abc import Callable
from typing import Any

from trainer.yaml_io import dump_yaml
from tuner.errors import InputError

# A note that starts with this line was written by tuner and may be refreshed; any other
# non-empty note was written by a person in the dashboard and is left alone.
NOTE_TITLE = "## tuner study"
TRIAL_ATTRS = (
    ("train_seconds", "training + validation time"),
    ("wall_seconds", "time including set-up"),
    ("report_seconds", "part of wall_seconds in the tuner (storage, pruning decisions)"),
    ("peak_memory_mb", "peak GPU memory (peak RSS on CPU)"),
    ("epochs_run", "epochs trained (fewer when pruned)"),
    ("n_params_trainable / n_params_frozen", "parameters trained / frozen at the start"),
    ("hyp_path", "the trial's full hyp YAML"),
    ("fail_reason", "why a failed trial failed"),
    ("baseline", "true on the baseline trial (base values)"),
    ("history", "every metric per epoch"),
)


def study_note(study: Any) -> str:
    """The Markdown note of a study made by ``tuner search``."""
    attrs = study.user_attrs
    metrics = attrs.get("metrics") or []
    directions = [d.name.lower() for d in study.directions]
    objective = ", ".join(f"`{m}` ({d})" for m, d in zip(metrics, directions))
    config = dump_yaml(attrs.get("config") or {}).rstrip()
    rows = "\n".join(f"| `{key}` | {meaning} |" for key, meaning in TRIAL_ATTRS)
    return (
        f"{NOTE_TITLE} `{study.study_name}`\n\n"
        f"- **space file:** `{attrs.get('space_file', 'n/a')}`\n"
        f"- **command:** `{attrs.get('command', 'n/a')}`\n"
        f"- **objective:** {objective or 'n/a'}\n\n"
        "Trial user attrs:\n\n| attr | meaning |\n|---|---|\n"
        f"{rows}\n\n"
        f"Resolved config:\n\n```yaml\n{config}\n```\n"
    )


def annotate(storage: Any) -> list[str]:
    """Write the note and objective names of every ``tuner search`` study in ``storage``.

    A study's note is written when it is empty or an earlier tuner note that differs; a note a
    person wrote is kept.

    Returns:
        The names of the studies whose note was written now.
    """
    import optuna
    from optuna_dashboard import get_note, save_note

    written = []
    for summary in optuna.get_all_study_summaries(storage, include_best_trial=False):
        if "config" not in summary.user_attrs:
            continue  # not made by tuner search: nothing to say about it
        study = optuna.load_study(study_name=summary.study_name, storage=storage)
        metrics = study.user_attrs.get("metrics") or []
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # set_metric_names is experimental in Optuna
            if study.metric_names is None and len(metrics) == len(study.directions):
                study.set_metric_names(list(metrics))
        body = study_note(study)
        current = get_note(study)
        if current == body or (current and not current.startswith(NOTE_TITLE)):
            continue
        save_note(study, body)
        written.append(study.study_name)
    return written


def serve(
    storage_url: str,
    host: str = "127.0.0.1",
    port: int = 8080,
    on_ready: Callable[[str], None] | None = None,
) -> None:
    """Annotate the studies, then serve optuna-dashboard until interrupted.

    The address is bound first, so a bad ``--host`` or ``--port`` fails before any note is
    written and before anything says the dashboard is listening.

    Args:
        storage_url: The studies' storage (it must exist).
        host: Address to listen on.
        port: Port to listen on (0: one the OS picks, shown by ``on_ready``).
        on_ready: Called with the URL once the address is bound and the studies annotated,
            before serving (the CLI's "on http://...").

    Raises:
        InputError: optuna-dashboard is not installed, or the address cannot be bound.
    """
    try:
        import optuna_dashboard
    except ImportError:
        raise InputError(
            "dashboard", None, "optuna-dashboard is not installed; pip install -e '.[dashboard]'"
        ) from None
    from tuner.study import open_storage

    storage = open_storage(storage_url, heartbeat=False, create=False)
    # optuna_dashboard.run_server leaves the binding to bottle, which prints "Listening on"
    # before it binds and lets a port out of range escape as an OverflowError: the WSGI app
    # runs on a server bound here instead (the same wsgiref server bottle would start)
    server = _listen(host, port, optuna_dashboard.wsgi(storage))
    previous = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        annotate(storage)
        if on_ready is not None:
            bound_host, bound_port = server.server_address[:2]
            on_ready(f"http://{_url_host(bound_host)}:{bound_port}/")
        for sig in previous:
            # wsgiref swallows a KeyboardInterrupt that lands inside a request, so Ctrl-C
            # sometimes did not stop the server: stop at once instead (the server only reads;
            # the note was written before serving)
            signal.signal(sig, _stop_now)
        server.serve_forever()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        server.server_close()


def _listen(host: str, port: int, app: Any) -> Any:
    """A wsgiref server for ``app``, bound to ``host:port`` and listening.

    Raises:
        InputError: ``host`` does not resolve or is no address of this machine (``--host``),
            or the port is taken or needs privileges (``--port``).
    """
    import errno
    import socket
    from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

    try:
        # the address family of the host (IPv6 for ::1), which wsgiref's server does not pick
        family = socket.getaddrinfo(host or None, port, type=socket.SOCK_STREAM,
                                    flags=socket.AI_PASSIVE)[0][0]
    except (socket.gaierror, UnicodeError, ValueError) as exc:  # ValueError: a NUL in it
        reason = getattr(exc, "strerror", None) or str(exc)
        raise InputError("--host", None, f"cannot listen on {host}: {reason}") from None

    class Server(WSGIServer):
        address_family = family

    try:
        return make_server(host, port, app, Server, WSGIRequestHandler)
    except OSError as exc:
        # an address this machine does not have is the host's fault; anything else (in use,
        # a privileged port) the port's
        host_errors = (errno.EADDRNOTAVAIL, errno.EAFNOSUPPORT)
        # a resolver error (gaierror, negative EAI_* codes) in wsgiref's own lookup too
        resolver = isinstance(exc, socket.gaierror)
        flag = "--host" if resolver or exc.errno in host_errors else "--port"
        where = f"{_url_host(host)}:{port}"
        raise InputError(flag, None, f"cannot listen on {where}: {exc.strerror or exc}") from None


def _url_host(host: str) -> str:
    """``host`` as a URL writes it: an IPv6 address in brackets."""
    return f"[{host}]" if ":" in host else host


def _stop_now(signum: int, frame: Any) -> None:
    print("\ndashboard stopped", file=sys.stderr, flush=True)
    os._exit(0)
