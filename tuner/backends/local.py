"""The ``optuna`` backend: Optuna's loop in this process, or in N local worker processes.

Workers are ``tuner search`` itself, started with multiprocessing's *spawn* (a fresh
interpreter, no forked locks or CUDA state), each preparing its own adapter and pulling trials
from the shared storage until the study's total is reached. The total stays exact because
every worker reserves its trial under the study's lock (:func:`tuner.study.run`).
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import sys
import time
from collections.abc import Mapping

from tuner import study as st
from tuner.backends import SearchJob
from tuner.errors import StudyError
from tuner.objective import Objective, frozen_heap

EXIT_INTERRUPTED = 130
# After forwarding Ctrl-C, how long workers get to record their trial as failed and exit.
INTERRUPT_GRACE_SECONDS = 30.0


def run(job: SearchJob) -> None:
    """Run the study here, or in ``job.options.workers`` worker processes."""
    if job.options.workers > 1:
        run_workers(job)
    else:
        run_here(job)


def run_here(job: SearchJob) -> None:
    """Prepare the adapter once, then run trials in this process."""
    job.say("preparing trainer (once per process, shared by all trials)...")
    started = time.perf_counter()
    job.config.prepare(job.adapter)
    job.say(f"ready in {time.perf_counter() - started:.1f}s")
    objective = Objective(job.config, job.adapter, job.base_hyp, job.out_dir, job.on_epoch)

    def waiting(n_running: int) -> None:
        job.say(
            f"waiting: the last {n_running} trial{'s' if n_running != 1 else ''} of the budget "
            "run in other workers (a failed one would be run again here)"
        )

    with frozen_heap():
        st.run(job.study, objective, job.config, job.on_trial, lock=job.lock, on_wait=waiting)


def _adapter_targets(job: SearchJob) -> dict[str, str]:
    # A spawned interpreter only knows the built-in adapters; one registered at run time (a
    # plugin, a test fake) is passed on by its import path.
    cls = type(job.adapter)
    return {job.config.trainer.adapter: f"{cls.__module__}:{cls.__qualname__}"}


def run_workers(job: SearchJob) -> None:
    """Start the workers, wait for them, and forward Ctrl-C to them.

    Raises:
        KeyboardInterrupt: Interrupted (the workers recorded their trials as failed).
        StudyError: The study is short of its total because workers failed or died.
    """
    ctx = multiprocessing.get_context("spawn")
    argv = [*job.argv, *(["--debug"] if job.options.debug else [])]
    seed = job.config.search.seed
    workers = [
        ctx.Process(
            target=worker_main,
            # one seed for all would make every worker sample the same startup trials
            args=([*argv, *_seed_flag(seed, index)], _adapter_targets(job), index,
                  _threads_per_worker(job.options.workers)),
            name=f"tuner-worker-{index}",
        )
        for index in range(1, job.options.workers + 1)
    ]
    _start(workers)
    job.say(
        f"{len(workers)} workers started (pids {', '.join(str(w.pid) for w in workers)}); "
        "each prepares its own trainer"
    )
    try:
        for worker in workers:
            worker.join()
    except KeyboardInterrupt:
        _interrupt(workers)
        raise
    codes = {worker.name: worker.exitcode for worker in workers}
    n_total = job.config.search.n_trials
    if st.n_finished(job.study) >= n_total or all(code == 0 for code in codes.values()):
        return  # the total is reached, or the timeout ended every worker
    if any(code == EXIT_INTERRUPTED for code in codes.values()):
        raise KeyboardInterrupt
    died = [
        f"{name} {_describe(code)}" for name, code in codes.items() if code not in (0, None)
    ]
    raise StudyError(
        f"the study has {st.n_finished(job.study)} of {n_total} trials: {'; '.join(died)}. "
        "Run the same command again to resume"
    )


def _start(workers: list[multiprocessing.process.BaseProcess]) -> None:
    """Start the workers with Ctrl-C ignored until each runs in a process group of its own.

    A worker leaves the terminal's group (``os.setpgrp`` in :func:`worker_main`) only once
    spawn has imported it; a Ctrl-C before that reached it too and printed spawn's
    traceback. An ignored SIGINT survives the exec, and the worker's ``tuner search`` installs
    its handler after leaving the group. A Ctrl-C to this process in that instant is lost.
    """
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        for worker in workers:
            worker.start()
    finally:
        signal.signal(signal.SIGINT, previous)


def _seed_flag(seed: int | None, index: int) -> list[str]:
    """Worker ``index``'s seed: distinct per worker, reproducible from the study's seed."""
    # a trailing --set: overrides apply in order, so it wins over a --set search.seed=N of
    # the user's command line (a --seed flag would not: --set applies after the flags)
    return [] if seed is None else ["--set", f"search.seed={seed + index - 1}"]


def _describe(code: int | None) -> str:
    if code is not None and code < 0:
        return f"killed by {signal.Signals(-code).name}"
    return f"exited with code {code}"


def _interrupt(workers: list[multiprocessing.process.BaseProcess]) -> None:
    # Workers run in process groups of their own, so a terminal's Ctrl-C reaches only this
    # process; each worker gets exactly one SIGINT, records its running trial as failed and
    # exits with 130.
    for worker in workers:
        if worker.is_alive() and worker.pid is not None:
            os.kill(worker.pid, signal.SIGINT)
    deadline = time.monotonic() + INTERRUPT_GRACE_SECONDS
    for worker in workers:
        worker.join(max(0.0, deadline - time.monotonic()))
        if worker.is_alive():
            # stuck (in a C call, say): a further SIGINT or SIGTERM would only be counted
            # (tuner.interrupt); its trial fails as lost when the study is run again
            worker.kill()
            worker.join()


def _threads_per_worker(n_workers: int) -> int | None:
    """CPU threads for each of ``n_workers`` training processes; None: the user chose.

    Each torch process starts as many threads as the machine has cores, so N workers would
    run N times too many and slow one another down; an ``OMP_NUM_THREADS`` of the user's is
    kept.
    """
    if "OMP_NUM_THREADS" in os.environ:
        return None
    return max(1, (os.cpu_count() or 1) // n_workers)


def worker_main(
    argv: list[str], adapters: Mapping[str, str], index: int, n_threads: int | None = None
) -> None:
    """Entry point of a worker process: ``tuner search ARGV`` as worker ``index``, training
    with ``n_threads`` CPU threads (set before torch is imported, which reads it then)."""
    from trainer.base import register_adapter
    from tuner.cli import main

    if n_threads is not None:
        os.environ["OMP_NUM_THREADS"] = str(n_threads)
    os.setpgrp()
    # started with SIGINT ignored (_start); in a group of its own, it takes the parent's again
    signal.signal(signal.SIGINT, signal.default_int_handler)
    for name, target in adapters.items():
        register_adapter(name, target)
    sys.exit(main([*argv, "--worker-index", str(index)]))
