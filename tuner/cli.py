"""The ``tuner`` command: the only place that parses argv, prints and picks exit codes.

Exit codes: 0 ok, 1 study failure, 2 usage or input error, 130 interrupted.
"""

from __future__ import annotations

import argparse
import os
import shlex
import sys
import time
import traceback
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, TextIO

from tuner import interrupt
from tuner.errors import InputError, TunerError

EXIT_INTERRUPTED = 130
# how long --ray-address may take to connect and answer as a gRPC (HTTP/2) server before it
# counts as unreachable
RAY_PROBE_SECONDS = 5.0
# a client's HTTP/2 connection preface (RFC 9113 3.4) and an empty SETTINGS frame after it
HTTP2_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + bytes(3) + b"\x04" + bytes(5)


# -- progress --------------------------------------------------------------------------------


class Progress:
    """One line per finished trial (n/N, state counts, best so far), a live epoch line on a TTY."""

    def __init__(self, n_total: int, metric: str, direction: str, stream: TextIO) -> None:
        self.n_total = n_total
        self.metric = metric
        self.maximize = direction == "maximize"
        self.stream = stream
        self.live = stream.isatty()
        self.started = time.perf_counter()
        self.max_epochs: int | None = None
        self.prefix = ""

    def epoch(self, number: int, epoch: int, metrics: Mapping[str, float]) -> None:
        """Live line for the running trial (terminals only; logs get one line per trial)."""
        if not self.live:
            return
        value = metrics.get(self.metric)
        shown = f"{value:.4f}" if isinstance(value, int | float) else "?"
        of = f"/{self.max_epochs}" if self.max_epochs else ""
        self.stream.write(f"\r  trial #{number} epoch {epoch + 1}{of}  {self.metric} {shown}   ")
        self.stream.flush()

    def __call__(self, study: Any, trial: Any) -> None:
        from tuner.study import best_trial, counts

        by_state = counts(study)
        n_done = by_state.get("COMPLETE", 0) + by_state.get("PRUNED", 0)
        state = trial.state.name
        epochs = trial.user_attrs.get("epochs_run")
        detail = f"{epochs} epoch{'s' if epochs != 1 else ''}" if epochs is not None else ""
        if state == "COMPLETE" and trial.values:
            detail += f"  {self.metric} {trial.values[0]:.4f}"
        if state == "FAIL":
            # n/N counts finished trials: a failed one is not among them
            detail = f"(not counted) {detail}"
        if state == "FAIL" or trial.user_attrs.get("diverged"):
            # a script's log tail is several lines: its first here, all of it in `tuner status`
            lines = str(trial.user_attrs.get("fail_reason", "unknown")).splitlines() or [""]
            more = " ... (tuner status shows all)" if len(lines) > 1 else ""
            detail += f"  reason: {lines[0]}{more}"
        if trial.user_attrs.get("baseline"):
            detail += "  (baseline)"
        best = best_trial(study) if len(study.directions) == 1 else None
        best_txt = f"best {best.value:.4f} (#{best.number})" if best is not None else "best -"
        line = (
            f"trial {n_done}/{self.n_total}  #{trial.number} {state:<8} {detail.strip()}"
            f"  | complete {by_state.get('COMPLETE', 0)}, pruned {by_state.get('PRUNED', 0)},"
            f" failed {by_state.get('FAIL', 0)} | {best_txt}"
            f" | {time.perf_counter() - self.started:.0f}s"
        )
        if self.live:
            self.stream.write("\r" + " " * 70 + "\r")
        print(self.prefix + line, file=self.stream, flush=True)


# -- commands --------------------------------------------------------------------------------


def _space_overrides(args: argparse.Namespace) -> list[str | tuple[str, Any]]:
    # CLI flags are overrides of space fields, applied before validation (precedence:
    # defaults < space file < flags), checked by the same code; an error names the flag that
    # set the field. Typed flags go as (key, value, flag): argparse has typed them, and YAML
    # would re-read '007' as 7.
    # `tuner confirm` spells the confirmation flags without the prefix
    prefix = "--" if getattr(args, "command", None) == "confirm" else "--confirm-"
    flags = [
        ("study", "--study", args.study),
        ("search.n_trials", "--n-trials", getattr(args, "n_trials", None)),
        ("search.timeout", "--timeout", getattr(args, "timeout", None)),
        ("search.seed", "--seed", getattr(args, "seed", None)),
        ("search.max_failures", "--max-failures", getattr(args, "max_failures", None)),
        ("search.confirm.top_k", "--confirm", getattr(args, "confirm", None)),
        ("search.confirm.top_k", "--top-k", getattr(args, "top_k", None)),
        ("search.confirm.n_seeds", "--n-seeds", getattr(args, "n_seeds", None)),
        ("search.confirm.epochs", f"{prefix}epochs", getattr(args, "confirm_epochs", None)),
        ("search.confirm.reduce", f"{prefix}reduce", getattr(args, "confirm_reduce", None)),
    ]
    typed = [(key, value, flag) for key, flag, value in flags if value is not None]
    return [*typed, *(args.set or [])]


def _cache_dir() -> Path:
    from tuner.study import STUDIES_DIR

    return STUDIES_DIR / ".cache"


def _load(args: argparse.Namespace):
    from tuner.space import load_space

    return load_space(args.space, _space_overrides(args), _cache_dir())


def _check_writable(path: Path) -> None:
    """Fail before any training when the output cannot be written, creating nothing.

    A file is created and removed in the nearest existing folder above ``path`` (a real write:
    permission bits, read-only mounts, ``/proc``); the folders below it are made only when the
    file is written, so an input error found later leaves no empty ``studies/<study>/``.
    """
    import tempfile

    try:
        if path.is_dir():
            raise InputError("--out", None, f"{path} is a directory, expected a file path")
        # a file (or a broken link) in the way would surface as mkdir's "File exists", which
        # hides which part is wrong; a relative path's parents end at ".", an absolute one's
        # at "/"
        blocker = next((p for p in path.parents if p.exists() or p.is_symlink()), Path("."))
        if not blocker.is_dir():
            raise InputError("--out", None, f"cannot write {path}: {blocker} is not a directory")
        with tempfile.TemporaryFile(dir=blocker):
            pass
    except OSError as exc:  # stat errors too: a name too long, a folder that cannot be entered
        raise InputError("--out", None, f"cannot write {path}: {exc.strerror or exc}") from None


def _adapter_checked(config: Any):
    from trainer.base import ConfigError

    adapter = config.make_adapter(_cache_dir())
    try:
        adapter.check_data()
    except ConfigError as exc:
        raise config.error(f"trainer.{exc.field}", exc.message) from None
    return adapter


def _parse_resources(text: str | None) -> dict[str, float]:
    """``cpu=2,gpu=0.5`` -> ``{"cpu": 2.0, "gpu": 0.5}``."""
    if not text:
        return {}
    resources: dict[str, float] = {}
    for item in text.split(","):
        key, sep, value = item.partition("=")
        key = key.strip().lower()
        try:
            amount = float(value)
        except ValueError:
            amount = -1.0
        if not sep or not key or not amount >= 0:  # also rejects nan
            raise InputError(
                "--resources-per-trial",
                None,
                f"expected NAME=AMOUNT[,NAME=AMOUNT...] such as cpu=2,gpu=0.5, got {item!r}",
            )
        resources[key] = amount
    return resources


def _check_ray_address(address: str) -> None:
    """Fail fast on a cluster address that cannot work.

    ``ray.init`` retries an address for minutes, printing a warning every few seconds, both when
    nothing listens there and when something that is not Ray does (a web server, a database):
    a Ray GCS (or Ray Client server, ``ray://``) is a gRPC server, and a probe that opens an
    HTTP/2 connection to ``HOST:PORT`` tells one from anything else in seconds, before any
    study is created. ``auto`` and ``local`` are left to Ray.
    """
    import socket

    if address in ("auto", "local"):
        return
    host_port = address.removeprefix("ray://")
    host, sep, port = host_port.rpartition(":")
    if not sep or not host or not port.isdigit() or "/" in host_port:
        raise InputError(
            "--ray-address", None, f"expected auto, HOST:PORT or ray://HOST:PORT, got {address!r}"
        )
    if not 0 < int(port) <= 65535:  # the resolver would keep the low 16 bits of 99999
        raise InputError("--ray-address", None, f"port must be in 1 .. 65535, got {port}")
    # with RAY_USE_TLS Ray's gRPC is behind TLS, which a plain HTTP/2 preface cannot pass: only
    # the TCP connection is checked then
    tls = os.environ.get("RAY_USE_TLS", "0").lower() in ("1", "true")
    try:
        with socket.create_connection(
            (host.strip("[]"), int(port)), timeout=RAY_PROBE_SECONDS
        ) as sock:
            not_ray = None if tls else _not_grpc(sock, time.monotonic() + RAY_PROBE_SECONDS)
    except OSError as exc:
        reason = exc.strerror or str(exc) or type(exc).__name__
        raise InputError(
            "--ray-address", None, f"cannot reach a Ray cluster at {address}: {reason}"
        ) from None
    if not_ray:
        raise InputError(
            "--ray-address", None,
            f"{address} is not a Ray cluster: {not_ray} (a cluster with TLS needs RAY_USE_TLS=1)",
        )


def _not_grpc(sock: Any, deadline: float) -> str | None:
    """Why the server on ``sock`` is not a gRPC server, or None when it answers as one.

    A gRPC server answers a client's HTTP/2 preface with a SETTINGS frame first (RFC 9113 3.4),
    before any authentication (a Ray cluster's token travels in each call's metadata). An
    HTTP/1 server answers with a status line or hangs up; many other servers say nothing.

    Args:
        sock: A connected TCP socket, nothing sent on it yet.
        deadline: ``time.monotonic()`` by which the answer must have come.
    """
    received = b""
    timed_out = False
    try:
        sock.sendall(HTTP2_PREFACE)
        while len(received) < 9:  # a frame header: length (3), type (1), flags (1), stream (4)
            sock.settimeout(max(deadline - time.monotonic(), 0.01))
            chunk = sock.recv(9 - len(received))
            if not chunk:
                break
            received += chunk
    except TimeoutError:
        timed_out = True
    except OSError:  # reset by the server: judged by what it sent before, if anything
        pass
    if received[3:5] == b"\x04\x00" and received[5:9] == bytes(4):  # SETTINGS, no ACK, stream 0
        try:  # a polite goodbye (GOAWAY, NO_ERROR), so the server logs no broken connection
            sock.sendall(b"\x00\x00\x08\x07" + bytes(13))
        except OSError:
            pass
        return None
    if not received:
        if timed_out:
            return f"no gRPC (HTTP/2) answer within {RAY_PROBE_SECONDS:g} s"
        return "it closed the connection without a gRPC (HTTP/2) answer"
    try:  # the rest of its first line, to show what it is (an HTTP/1 status line, HTML)
        sock.settimeout(0.2)
        received += sock.recv(64)
    except OSError:
        pass
    first = received.decode("utf-8", "replace").splitlines()[0][:60]
    return f"it answered {first!r} where Ray answers in gRPC (HTTP/2)"


def _search_options(args: argparse.Namespace) -> Any:
    from tuner.backends import SearchOptions, get_backend

    get_backend(args.backend).check(args.backend)
    for flag, value in (("--workers", args.workers), ("--concurrency", args.concurrency)):
        if value is not None and value < 1:
            raise InputError(flag, None, f"must be >= 1, got {value}")
    if args.workers > 1 and args.backend != "optuna":
        raise InputError(
            "--workers", None, f"starts local Optuna workers; with --backend {args.backend} use "
            "--concurrency"
        )
    ray_flags = {
        "--ray-address": args.ray_address,
        "--concurrency": args.concurrency,
        "--resources-per-trial": args.resources_per_trial,
    }
    for flag, value in ray_flags.items():
        # silently ignoring a cluster address would run the study on this machine instead
        if value is not None and args.backend != "ray":
            raise InputError(flag, None, f"needs --backend ray (got --backend {args.backend})")
    if args.ray_address is not None:
        _check_ray_address(args.ray_address)
    return SearchOptions(
        workers=args.workers,
        ray_address=args.ray_address,
        concurrency=args.concurrency,
        resources=_parse_resources(args.resources_per_trial),
        debug=args.debug,
    )


def cmd_search(args: argparse.Namespace) -> int:
    from trainer.yaml_io import dump_yaml
    from tuner import study as st
    from tuner.backends import SearchJob, get_backend
    from tuner.export import export, write_atomic

    st.quiet_optuna()
    config = _load(args)
    if not config.search.confirm.top_k:
        # a confirmation flag would be silently ignored: no confirmation follows this search
        for flag, value in (("--confirm-epochs", args.confirm_epochs),
                            ("--confirm-reduce", args.confirm_reduce)):
            if value is not None:
                raise InputError(flag, None,
                                 "needs --confirm K (or search.confirm.top_k in the space)")
    options = _search_options(args)
    worker = args.worker_index
    storage_url = args.storage or st.default_storage(config.study)
    out_dir = st.STUDIES_DIR / config.study
    out = Path(args.out) if args.out else out_dir / "best_hyp.yaml"
    _check_writable(out)
    adapter = _adapter_checked(config)
    # sampler and pruner arguments are checked before the storage (a new SQLite file) exists,
    # so a typo there leaves no empty study database behind
    st.make_sampler(config)
    st.make_pruner(config)
    storage = st.open_storage(storage_url)
    lock = st.slot_lock(storage_url, storage, config.study)
    resolved = config.to_dict(adapter)
    command = "tuner " + shlex.join(args.argv)
    with lock:
        study = st.create_or_load(config, storage, resolved, command)
    err = sys.stderr
    target = config.objective.primary
    n_total = config.search.n_trials
    progress = Progress(n_total, target.metric, target.direction, err)
    progress.max_epochs = resolved["trainer"].get("epochs")
    job = SearchJob(
        config=config,
        study=study,
        storage_url=storage_url,
        lock=lock,
        adapter=adapter,
        base_hyp=config.base_hyp(adapter),
        out_dir=out_dir,
        argv=list(args.argv),
        options=options,
        on_trial=[progress],
        on_epoch=progress.epoch,
        say=lambda message: print(message, file=err, flush=True),
    )
    if worker is not None:
        return _search_worker(job, progress, worker)
    write_atomic(out_dir / "config.yaml", dump_yaml(resolved))

    print(
        f"study {config.study!r}  storage {storage_url}  adapter {config.trainer.adapter}  "
        "objective " + ", ".join(f"{t.metric} ({t.direction})" for t in config.objective.targets),
        file=err,
    )
    notice = st.pruning_disabled_notice(config)
    if notice:
        print(notice, file=err)
    with lock:
        # trials of a worker killed earlier (kill -9, power cut) fail now and run again
        for number in st.fail_stale_trials(study):
            print(f"trial #{number} lost its worker: marked failed, to be run again", file=err)
    n_done = st.n_finished(study)
    if n_done >= n_total:
        print(
            f"study already has {n_done} finished trials (of {n_total}); nothing to run", file=err
        )
    else:
        if n_done:
            print(f"resuming: {n_done} finished trials, {n_total - n_done} to run", file=err)
        with lock:
            if st.enqueue_baseline(study, config, job.base_hyp):
                print("baseline trial (base values) enqueued first", file=err)
        try:
            get_backend(args.backend).load()(job)
        except KeyboardInterrupt:
            print("\ninterrupted: the running trial is recorded as failed", file=err)
            _write_best(study, out, command, quiet=False)
            return EXIT_INTERRUPTED
        n_done = st.n_finished(study)
        if n_done < n_total and config.search.timeout is not None:
            # the only way a backend returns short of the budget (failures raise)
            print(
                f"stopped by the timeout ({config.search.timeout:g} s): {n_done} of {n_total} "
                "trials finished; a re-run resumes",
                file=err,
            )
    confirm = config.search.confirm
    record = None
    if confirm.top_k and st.best_trial(study) is not None:
        code, record = _confirm(study, config, adapter, out_dir, confirm.top_k, out, command,
                                lock)
        if code:
            return code
    if config.objective.is_multi:
        # the front is the result; the file gets its knee (the default pick rule)
        print(_status_text(study, storage_url), file=err)
    try:
        # the confirmation at the length this search asked for, whatever ran since
        pick, text = export(study, out, command=command, confirmation=record)
    except InputError as exc:
        print(f"no configuration written: {exc.message}", file=err)
        return 1
    if config.objective.is_multi:
        print(f"\ntrial {pick.trial.number} ({pick.rule}) written to {out}; choose another "
              "with `tuner export --pick best-metric|knee|max-time=SECONDS`:\n", file=err)
    else:
        print(f"\nbest configuration written to {out}:\n", file=err)
    print(text, file=sys.stdout)
    return 0


def _confirm(
    study: Any, config: Any, adapter: Any, out_dir: Path, top_k: int, out: Path, command: str,
    lock: Any,
) -> tuple[int, Any]:
    """Run (or resume) the confirmation; print its table.

    It holds the study's slot lock: every machine of a multi-machine search reaches this
    point, and the first one confirms while the others wait and then find nothing left to
    run (or only the runs of a trial that finished after it and entered the top k).

    Returns:
        0 and the confirmation (:class:`tuner.confirm.ConfirmRecord`), or 130 and None on
        Ctrl-C.
    """
    from tuner import study as st
    from tuner.confirm import run_confirm, summary_lines

    err = sys.stderr
    try:
        with st.locked(lock):
            record = run_confirm(
                study, config, adapter, out_dir, top_k, config.search.confirm.n_seeds,
                say=lambda message: print(message, file=err, flush=True),
                epochs=config.search.confirm.epochs, reduce=config.search.confirm.reduce,
            )
    except KeyboardInterrupt:
        print("\ninterrupted: finished confirmation runs are kept; `tuner confirm` resumes",
              file=err)
        _write_best(study, out, command, quiet=False)
        return EXIT_INTERRUPTED, None
    print("\n".join(summary_lines(record)), file=err)
    return 0, record


def cmd_confirm(args: argparse.Namespace) -> int:
    from tuner import study as st
    from tuner.confirm import DEFAULT_TOP_K
    from tuner.export import export
    from tuner.space import EPOCHS_SETTING, confirm_problem

    st.quiet_optuna()
    if args.top_k is not None and args.top_k < 1:
        # the space's top_k 0 means "no confirmation after the search"; here it would be none
        raise InputError("--top-k", None, f"must be >= 1, got {args.top_k}")
    config = _load(args)
    storage_url = args.storage or st.default_storage(config.study)
    out = Path(args.out) if args.out else st.STUDIES_DIR / config.study / "best_hyp.yaml"
    _check_writable(out)
    adapter = _adapter_checked(config)
    problem = confirm_problem(config.objective.is_multi, adapter, config.trainer.adapter)
    if problem:
        raise config.error("search.confirm", problem)
    args.study = config.study
    args.storage = storage_url
    study = _open_study(args)
    st.check_objective(study, config, hint="confirm it with the space it was searched with")
    # fresh-seed runs under other settings (data, weights, length...) would rank trials by
    # something they were not searched with, and mix with runs a confirmation kept
    # (its length may change: `--set trainer.epochs=E` is `--epochs E`; and the seed: fresh
    # seeds follow the study's own, read from its saved config)
    seed = type(adapter).seed_setting
    st.check_settings(study, config, config.to_dict(adapter),
                      hint="confirm with the settings the study was searched with",
                      may_differ=frozenset({EPOCHS_SETTING, *([seed] if seed else [])}))
    top_k = config.search.confirm.top_k or DEFAULT_TOP_K
    command = "tuner " + shlex.join(args.argv)
    lock = st.slot_lock(storage_url, st._storage_of(study), config.study)
    code, record = _confirm(study, config, adapter, st.STUDIES_DIR / config.study, top_k, out,
                            command, lock)
    if code:
        return code
    pick, _ = export(study, out, command=command, confirmation=record)
    print(f"trial {pick.trial.number} ({pick.rule}) written to {out}", file=sys.stderr)
    return 0


def _search_worker(job: Any, progress: Progress, index: int) -> int:
    """One of ``--workers N`` processes: run trials; the parent enqueues and exports."""
    from tuner.backends.local import run_here

    progress.prefix = f"[worker {index}] "
    progress.live = False  # several workers share the terminal: whole lines only
    say = job.say
    job.say = lambda message: say(f"{progress.prefix}{message}")
    try:
        run_here(job)
    except KeyboardInterrupt:
        job.say("interrupted: the running trial is recorded as failed")
        return EXIT_INTERRUPTED
    return 0


def _write_best(study: Any, out: Path, command: str, quiet: bool) -> None:
    from tuner.export import export

    try:
        export(study, out, command=command)
        if not quiet:
            print(f"best configuration so far written to {out}", file=sys.stderr)
    except InputError as exc:
        print(f"no configuration written: {exc.message}", file=sys.stderr)


def _open_study(args: argparse.Namespace):
    import optuna

    from tuner import study as st

    st.quiet_optuna()
    storage = st.open_storage(args.storage, heartbeat=False, create=False)
    names = [s.study_name for s in optuna.get_all_study_summaries(storage)]
    name = args.study
    if name is None:
        if len(names) != 1:
            listed = ", ".join(names) if names else "none"
            raise InputError("--study", None, f"name one study; {args.storage} holds: {listed}")
        name = names[0]
    if name not in names:
        listed = ", ".join(names) if names else "none"
        raise InputError(
            "--study", None, f"no study {name!r} in {args.storage}; it holds: {listed}"
        )
    return optuna.load_study(study_name=name, storage=storage)


def cmd_export(args: argparse.Namespace) -> int:
    from tuner.export import export

    study = _open_study(args)
    _check_writable(Path(args.out))
    pick, text = export(
        study, Path(args.out), args.trial, args.format, "tuner " + shlex.join(args.argv),
        pick=args.pick,
    )
    print(f"trial {pick.trial.number} ({pick.rule}) written to {args.out}", file=sys.stderr)
    return 0


def _status_text(study: Any, storage_url: str) -> str:
    from tuner import study as st
    from tuner.export import edge_params

    by_state = st.counts(study)
    metrics = study.user_attrs.get("metrics") or ["value"]
    directions = [d.name.lower() for d in study.directions]
    lines = [
        f"study {study.study_name}  ({storage_url})",
        "objective " + ", ".join(f"{m} ({d})" for m, d in zip(metrics, directions)),
        f"trials {sum(by_state.values())}: "
        + ", ".join(f"{s.lower()} {n}" for s, n in sorted(by_state.items())),
    ]
    complete = study.get_trials(deepcopy=False, states=(st.TrialState.COMPLETE,))
    if len(directions) == 1:
        best = st.best_trial(study)
        base = st.baseline_trial(study)
        if best is not None:
            text = f"best {best.value:.6g} (trial {best.number})"
            if base is not None:
                text += f"   baseline {base.value:.6g} (trial {base.number})"
                text += f"   gain {st.gain(best.value, base.value, directions[0]):+.6g}"
            lines.append(text)
            edges = edge_params(best)
            if edges:
                lines.append("  at a bound of their searched range: " + ", ".join(edges))
        reverse = directions[0] == "maximize"
        top = sorted(complete, key=lambda t: t.value, reverse=reverse)[:5]
        title = "top 5"
    else:
        lines.extend(_pareto_lines(study))
        top, title = [], ""
    if top:
        lines.append(f"{title}:")
        lines.append(f"  {'trial':>5}  {'value':>20}  {'epochs':>6}  params")
        for t in top:
            value = ", ".join(f"{v:.4g}" for v in t.values)
            params = " ".join(f"{k}={_short(v)}" for k, v in t.params.items())
            epochs = t.user_attrs.get("epochs_run", "")
            lines.append(f"  {t.number:>5}  {value:>20}  {epochs!s:>6}  {params}")
    from tuner.confirm import load_record, summary_lines

    record = load_record(study)
    if record is not None:
        lines.extend(summary_lines(record))
    failed = study.get_trials(deepcopy=False, states=(st.TrialState.FAIL,))
    diverged = [
        t for t in study.get_trials(deepcopy=False, states=(st.TrialState.PRUNED,))
        if t.user_attrs.get("diverged")
    ]
    for title, trials in (
        ("failed:", failed),
        (f"diverged ({len(diverged)}, counted as pruned):", diverged),
    ):
        if trials:
            lines.append(title)
            for t in trials[-5:]:
                lines.append(
                    f"  {t.number:>5}  {t.user_attrs.get('fail_reason', 'no reason recorded')}"
                )
    return "\n".join(lines)


def _pareto_lines(study: Any) -> list[str]:
    """The Pareto front as a table: every objective, freeze index, epochs and the other params.

    Sorted by the primary metric, best first; the rows ``tuner export`` picks are marked.
    """
    from tuner.report.data import (
        best_primary,
        complete_trials,
        freeze_of,
        knee_trial,
        pareto_front,
        study_info,
    )

    info = study_info(study)
    complete = complete_trials(study.get_trials(deepcopy=False))
    if not complete:
        return []
    flags = pareto_front([t.values for t in complete], info.directions)
    sign = -1.0 if info.direction == "maximize" else 1.0
    front = [t for t, flag in zip(complete, flags) if flag]
    front.sort(key=lambda t: (sign * t.values[0], t.number))
    marks = {knee_trial(complete, info).number: "knee (default export)"}
    best = best_primary(complete, info).number
    marks[best] = f"{marks[best]}, best-metric" if best in marks else "best-metric"
    widths = [max(len(m), 10) for m in info.metrics]
    head = "  ".join(f"{m:>{w}}" for m, w in zip(info.metrics, widths))
    lines = [
        f"pareto front: {len(front)} of {len(complete)} complete trials, best {info.metric} first",
        f"  {'trial':>5}  {head}  {'freeze':>6}  {'epochs':>6}  params",
    ]
    for t in front:
        values = "  ".join(f"{v:>{w}.4g}" for v, w in zip(t.values, widths))
        freeze = freeze_of(t)
        params = " ".join(f"{k}={_short(v)}" for k, v in t.params.items() if k != "freeze")
        epochs = t.user_attrs.get("epochs_run", "")
        mark = f"  <- {marks[t.number]}" if t.number in marks else ""
        lines.append(
            f"  {t.number:>5}  {values}  {'-' if freeze is None else freeze!s:>6}  {epochs!s:>6}"
            f"  {params}{mark}"
        )
    return lines


def _short(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def cmd_status(args: argparse.Namespace) -> int:
    study = _open_study(args)
    print(_status_text(study, args.storage))
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from tuner import study as st
    from tuner.report import write_report

    study = _open_study(args)
    out = Path(args.out) if args.out else st.STUDIES_DIR / study.study_name / "report.html"
    _check_writable(out)
    write_report(study, out)
    print(f"report of study {study.study_name!r} written to {out}", file=sys.stderr)
    return 0


def cmd_dashboard(args: argparse.Namespace) -> int:
    from tuner.dashboard import serve

    def ready(url: str) -> None:
        print(
            f"optuna-dashboard on {url} for {args.storage} (Ctrl-C to stop)",
            file=sys.stderr, flush=True,
        )

    try:
        serve(args.storage, host=args.host, port=args.port, on_ready=ready)
    except KeyboardInterrupt:
        print("\ndashboard stopped", file=sys.stderr)
    return 0


def cmd_validate(args: argparse.Namespace) -> int:
    from trainer.yaml_io import dump_yaml
    from tuner import study as st

    if (args.space is None) == (args.space_flag is None):
        raise InputError("--space", None, "name the space file once: tuner validate S "
                                          "(or --space S)")
    args.space = args.space or args.space_flag
    config = _load(args)
    adapter = _adapter_checked(config)
    st.make_sampler(config)
    st.make_pruner(config)
    print(f"# {args.space}: ok", file=sys.stderr)
    print(dump_yaml(config.to_dict(adapter)), end="")
    return 0


def cmd_blocks(args: argparse.Namespace) -> int:
    config = _load(args)
    print(config.make_adapter(_cache_dir()).describe())
    return 0


# -- parser ----------------------------------------------------------------------------------


def _port(text: str) -> int:
    """The ``type`` of ``--port``: a TCP port, 0 to 65535 (argparse names the flag)."""
    try:
        port = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a port number, got {text!r}") from None
    if not 0 <= port <= 65535:
        # checked here: a port out of range reached the server as an OverflowError, after it
        # had said it was listening
        raise argparse.ArgumentTypeError(f"must be in 0 .. 65535, got {port}")
    return port


def _add_space_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--space", required=True, help="search-space YAML (see spaces/demo.yaml)")
    p.add_argument("--study", help="study name (default: the space's `study`, or its file name)")
    p.add_argument(
        "--set",
        action="append",
        metavar="KEY=VALUE",
        help="override a space field, e.g. --set trainer.epochs=3 (repeatable)",
    )


def build_parser() -> argparse.ArgumentParser:
    """The argument parser (subcommands)."""
    from trainer.formats import FORMATS
    from tuner.backends import BACKENDS
    from tuner.space import REDUCTIONS

    parser = argparse.ArgumentParser(
        prog="tuner",
        description="Hyperparameter search for the freeze strategy of transfer learning.",
        epilog="Add --debug anywhere to see tracebacks.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser(
        "search",
        help="run or resume a study",
        description=(
            "Run (or resume) a study. --n-trials is the study's total: complete and pruned trials "
            "count, failed ones do not; a resumed study runs only the missing trials."
        ),
    )
    _add_space_flags(p)
    p.add_argument("--storage", help="storage URL (default: sqlite:///studies/<study>.db)")
    p.add_argument("--n-trials", type=int, help="total finished trials wanted")
    p.add_argument("--timeout", type=float, help="stop starting trials after SECONDS")
    p.add_argument("--seed", type=int, help="sampler seed")
    p.add_argument("--out", help="best hyp file (default: studies/<study>/best_hyp.yaml)")
    p.add_argument(
        "--max-failures",
        type=int,
        metavar="N",
        help="stop after N failed trials in a row (default: the space's search.max_failures, 5)",
    )
    p.add_argument(
        "--backend",
        default="optuna",
        choices=sorted(BACKENDS),
        help="where trials run: "
        + "; ".join(f"{name}: {b.description}" for name, b in BACKENDS.items()),
    )
    p.add_argument(
        "--workers",
        type=int,
        default=1,
        metavar="N",
        help="local worker processes sharing the study (optuna backend; default: 1)",
    )
    p.add_argument("--worker-index", type=int, help=argparse.SUPPRESS)
    p.add_argument(
        "--ray-address",
        metavar="ADDR",
        help="join this Ray cluster, e.g. auto or ray://host:10001 (ray backend; default: start "
        "a local instance)",
    )
    p.add_argument(
        "--concurrency",
        type=int,
        metavar="K",
        help="trials running at once (ray backend; default: as many as the resources allow)",
    )
    p.add_argument(
        "--resources-per-trial",
        metavar="SPEC",
        help="resources of one trial, e.g. cpu=2,gpu=0.5 (ray backend; default: cpu=1)",
    )
    p.add_argument(
        "--confirm",
        type=int,
        metavar="K",
        help="after the search, re-train the best K trials and the baseline on fresh trainer "
        "seeds and export the best mean (default: the space's search.confirm.top_k, 0 = off)",
    )
    p.add_argument(
        "--confirm-epochs", dest="confirm_epochs", type=int, metavar="N",
        help="train each confirmation run N epochs, e.g. the full training length (default: "
        "the space's search.confirm.epochs, else a trial's trainer.epochs)",
    )
    p.add_argument(
        "--confirm-reduce", dest="confirm_reduce", choices=REDUCTIONS,
        help="score each confirmation run by its best or its last epoch (default: the space's "
        "search.confirm.reduce, else objective.reduce)",
    )
    p.set_defaults(func=cmd_search)

    p = sub.add_parser(
        "confirm",
        help="re-train a study's best trials on fresh seeds and export the best mean",
        description=(
            "Re-train the top-K complete trials and the baseline with trainer seeds the search "
            "never used (the study's seed + 1 ... + N), record the values in the study and "
            "export the trial with the best mean: a short trial's value is one noisy draw and "
            "the best of many draws is biased upwards. Interrupted runs resume."
        ),
    )
    _add_space_flags(p)
    p.add_argument("--storage", help="storage URL (default: sqlite:///studies/<study>.db)")
    p.add_argument(
        "--top-k", type=int, metavar="K",
        help="trials to confirm (default: the space's search.confirm.top_k, else 3)",
    )
    p.add_argument(
        "--n-seeds", type=int, metavar="N",
        help="fresh seeds per trial (default: the space's search.confirm.n_seeds, 2)",
    )
    p.add_argument(
        "--epochs", dest="confirm_epochs", type=int, metavar="N",
        help="train each run N epochs, e.g. the full training length (default: the space's "
        "search.confirm.epochs, else a trial's trainer.epochs)",
    )
    p.add_argument(
        "--reduce", dest="confirm_reduce", choices=REDUCTIONS,
        help="score each run by its best or its last epoch, e.g. last for the weights a "
        "full-length run ships (default: the space's search.confirm.reduce, else "
        "objective.reduce); recorded runs are re-scored, not trained again",
    )
    p.add_argument("--out", help="best hyp file (default: studies/<study>/best_hyp.yaml)")
    p.set_defaults(func=cmd_confirm)

    p = sub.add_parser("export", help="write the hyp YAML of the best or a chosen trial")
    p.add_argument("--storage", required=True, help="storage URL")
    p.add_argument("--study", help="study name (optional when the storage holds one)")
    which = p.add_mutually_exclusive_group()
    which.add_argument("--trial", type=int, help="trial number (default: chosen by --pick)")
    which.add_argument("--pick", metavar="RULE", help=(
        "best-metric (best first objective; on the Pareto front when there are several), "
        "confirmed (best mean over the fresh seeds of `tuner confirm`), "
        "knee (the Pareto-front trial closest to the utopia point, each objective scaled to "
        "[0, 1] over the complete trials; multi-objective only) or max-time=SECONDS (best "
        "first objective among trials trained within SECONDS); default: knee for "
        "multi-objective studies, confirmed for confirmed ones, else best-metric"
    ))
    p.add_argument("--out", required=True, help="file to write")
    p.add_argument(
        "--format", choices=sorted(FORMATS), help="file layout (default: the adapter's own)"
    )
    p.set_defaults(func=cmd_export)

    p = sub.add_parser("status", help="trials by state, best value, top-5 trials")
    p.add_argument("--storage", required=True, help="storage URL")
    p.add_argument("--study", help="study name (optional when the storage holds one)")
    p.set_defaults(func=cmd_status)

    p = sub.add_parser("report", help="write a self-contained HTML report of a study")
    p.add_argument("--storage", required=True, help="storage URL")
    p.add_argument("--study", help="study name (optional when the storage holds one)")
    p.add_argument("--out", help="HTML file (default: studies/<study>/report.html)")
    p.set_defaults(func=cmd_report)

    p = sub.add_parser("dashboard", help="serve optuna-dashboard on a storage (extra: dashboard)")
    p.add_argument("--storage", required=True, help="storage URL")
    p.add_argument("--host", default="127.0.0.1", help="address (default: %(default)s)")
    p.add_argument(
        "--port", type=_port, default=8080, help="port, 0: any free one (default: %(default)s)"
    )
    p.set_defaults(func=cmd_dashboard)

    p = sub.add_parser("validate", help="check a space file and print the resolved config")
    p.add_argument("space", nargs="?", help="search-space YAML")
    # the other commands name the space with --space: take it here too
    p.add_argument("--space", dest="space_flag", metavar="S", help="the same, as a flag")
    p.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a field")
    p.set_defaults(func=cmd_validate, study=None)

    p = sub.add_parser("blocks", help="print what each freeze index means for the space's model")
    _add_space_flags(p)
    p.set_defaults(func=cmd_blocks)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the exit code."""
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv
    argv = [a for a in argv if a != "--debug"]
    parser = build_parser()
    args = parser.parse_args(argv)  # exits 2 on usage errors
    args.argv = argv
    args.debug = debug
    # --debug adds the traceback; the exit code stays the same, so scripts read it either way
    try:
        with interrupt.handled(quiet=not debug):
            return args.func(args)
    except TunerError as exc:
        if debug:
            traceback.print_exc()
        print(f"tuner: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        if debug:
            traceback.print_exc()
        print("\ninterrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except Exception as exc:  # noqa: BLE001 - one clear line unless --debug
        if debug:
            traceback.print_exc()
        if _during_interrupt(exc):
            # a forced stop (the third Ctrl-C) inside a library's cleanup, which then failed
            print("\ninterrupted", file=sys.stderr)
            return EXIT_INTERRUPTED
        print(
            f"tuner: internal error: {type(exc).__name__}: {exc} (run with --debug for details)",
            file=sys.stderr,
        )
        return 1


def _during_interrupt(exc: BaseException) -> bool:
    """Whether ``exc`` was raised while a KeyboardInterrupt was being handled."""
    seen: set[int] = set()
    cause: BaseException | None = exc
    while cause is not None and id(cause) not in seen:
        if isinstance(cause, KeyboardInterrupt):
            return True
        seen.add(id(cause))
        cause = cause.__context__
    return False
