"""The tuner's own cost per trial, next to training (issue section 4).

Runs a real ``tuner search`` (in this process, in a scratch folder, SQLite storage) of
``--n-trials`` short trials on the demo task (``--epochs`` epochs on ``--images`` training and
validation images, so a trial takes well under a second on a 2-core CPU: the regime where the
tuner's fixed cost per trial shows most), then takes the study apart:

* **In the trainer**: the time inside ``adapter.run``, less the tuner's own calls made from
  inside it (the per-epoch ``trial.report`` write and the pruner's decision).
* **Tuner, per trial** = (wall time of the trial loop, :func:`tuner.study.run`, minus the time
  in the trainer) / trials. Shown in ms and as a share of the mean in-trainer time per trial
  (target <= 3%), split into storage calls, sampler, pruner and the rest (Optuna's and
  tuner's bookkeeping between trials: hyp file, progress line, lock, garbage collection).
  The split times each call exclusively (a storage call made by the sampler counts as
  storage), in this thread only (the heartbeat thread's writes overlap the training).
* **Cross-check from the storage alone**: first trial start to last trial end (Optuna's
  ``datetime_start`` / ``datetime_complete``) minus the trials' ``wall_seconds`` user attrs
  (``adapter.run`` wall time as the objective records it, reporting writes included).

It also shows that data is decoded once per process: the trainer's decode counter before and
after the study (the train and validation splits: 2, whatever the number of trials).

Run: ``python -m benchmarks.overhead [--n-trials 50] [--epochs 2] [--images 128]``.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import inspect
import io
import os
import shutil
import statistics
import tempfile
import threading
import time
import types
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from benchmarks.common import (
    DEMO_SPACE,
    add_common_flags,
    cache_dir,
    set_quick,
    table,
    task_overrides,
    write_section,
)

TARGET = 0.03
# the parts of a study's time, in the order they are shown
PARTS = ("trainer", "storage", "sampler", "pruner", "other")


# -- arithmetic (tested without training) ----------------------------------------------------


@dataclass(frozen=True)
class Overhead:
    """The tuner's share of a study.

    Attributes:
        n_trials: Trials in the span.
        span: Wall time of the trial loop (or first trial start to last trial end), seconds.
        in_trainer: Sum of the trials' time in the trainer, seconds.
    """

    n_trials: int
    span: float
    in_trainer: float

    @property
    def per_trial(self) -> float:
        """Tuner seconds per trial."""
        return (self.span - self.in_trainer) / self.n_trials

    @property
    def mean_trial(self) -> float:
        """Mean seconds in the trainer per trial."""
        return self.in_trainer / self.n_trials

    @property
    def share(self) -> float:
        """Tuner time as a fraction of the mean in-trainer time per trial (the stricter of the
        two readings of "% of trial time")."""
        return self.per_trial / self.mean_trial

    @property
    def share_of_wall(self) -> float:
        """Tuner time as a fraction of the wall time per trial (tuner included)."""
        return self.per_trial / (self.span / self.n_trials)

    def trial_seconds_for(self, target: float = TARGET) -> float:
        """How long a trial must train for this overhead to be ``target`` of it."""
        return self.per_trial / target


def overhead_of(
    starts: Sequence[datetime], ends: Sequence[datetime], trainer_seconds: Sequence[float]
) -> Overhead:
    """:class:`Overhead` from the trials' start and end times and trainer seconds."""
    span = (max(ends) - min(starts)).total_seconds()
    return Overhead(len(trainer_seconds), span, float(sum(trainer_seconds)))


class Profiler:
    """Exclusive wall time per category of the calls it wraps, in one thread.

    A wrapped call's time counts for its category less the time of wrapped calls made inside
    it (which count for theirs), so the categories add up to the outermost call's wall time.
    Calls from other threads pass through untimed.

    Args:
        clock: Seconds, monotonic (tests pass a fake).
        root: When given, only this category's calls and the calls made inside them count
            (the trial loop, not the study's creation before it or the export after it).
    """

    def __init__(
        self, clock: Callable[[], float] = time.perf_counter, root: str | None = None
    ) -> None:
        self.clock = clock
        self.root = root
        self.thread = threading.get_ident()
        self.totals: Counter[str] = Counter()
        self.calls: Counter[str] = Counter()
        # per open call: [category, seconds spent in nested wrapped calls]
        self._stack: list[list[Any]] = []

    def wrap(self, category: str, fn: Callable[..., Any]) -> Callable[..., Any]:
        """``fn`` with its calls timed under ``category``."""

        @functools.wraps(fn)
        def timed(*args: Any, **kwargs: Any) -> Any:
            outside = self.root is not None and not self._stack and category != self.root
            if outside or threading.get_ident() != self.thread:
                return fn(*args, **kwargs)
            frame = [category, 0.0]
            self._stack.append(frame)
            start = self.clock()
            try:
                return fn(*args, **kwargs)
            finally:
                elapsed = self.clock() - start
                self._stack.pop()
                self.totals[category] += elapsed - frame[1]
                self.calls[category] += 1
                if self._stack:
                    self._stack[-1][1] += elapsed

        return timed


@contextlib.contextmanager
def patched_methods(
    profiler: Profiler, category: str, cls: type, names: Sequence[str] | None = None
) -> Iterator[None]:
    """Time the public methods of ``cls`` (or ``names``) under ``category``; restored after."""
    if names is None:
        names = [
            name for name in dir(cls)
            if not name.startswith("_")
            and isinstance(inspect.getattr_static(cls, name), types.FunctionType)
        ]
    missing = object()
    saved = {name: cls.__dict__.get(name, missing) for name in names}
    try:
        for name in names:
            setattr(cls, name, profiler.wrap(category, getattr(cls, name)))
        yield
    finally:
        for name, original in saved.items():
            if original is missing:
                delattr(cls, name)  # it was inherited: uncover the base class's again
            else:
                setattr(cls, name, original)


def _wrap_instance(profiler: Profiler, category: str, obj: Any, names: Sequence[str]) -> Any:
    for name in names:
        if callable(getattr(obj, name, None)):
            # an instance attribute shadows the method for this object only
            setattr(obj, name, profiler.wrap(category, getattr(obj, name)))
    return obj


@contextlib.contextmanager
def instrumented(profiler: Profiler) -> Iterator[None]:
    """Time a ``tuner search`` in this process by part (see the module docstring)."""
    import optuna
    from optuna.storages._cached_storage import _CachedStorage

    from tuner import study as st
    from tuner.space import StudyConfig

    make_sampler, make_pruner, run = st.make_sampler, st.make_pruner, st.run
    make_adapter = StudyConfig.make_adapter
    sampler_methods = (
        "infer_relative_search_space", "sample_relative", "sample_independent",
        "before_trial", "after_trial",
    )
    st.make_sampler = lambda config: _wrap_instance(
        profiler, "sampler", make_sampler(config), sampler_methods
    )
    st.make_pruner = lambda config: _wrap_instance(
        profiler, "pruner", make_pruner(config), ("prune",)
    )
    # whatever the adapter, its run is the trainer's time
    StudyConfig.make_adapter = lambda config, cache: _wrap_instance(
        profiler, "trainer", make_adapter(config, cache), ("run",)
    )
    # the trial loop's own time (outside the calls above and below) is the "other" part
    st.run = profiler.wrap("other", run)
    try:
        with contextlib.ExitStack() as stack:
            stack.enter_context(patched_methods(profiler, "storage", optuna.storages.RDBStorage))
            stack.enter_context(patched_methods(profiler, "storage", _CachedStorage))
            yield
    finally:
        st.make_sampler, st.make_pruner, st.run = make_sampler, make_pruner, run
        StudyConfig.make_adapter = make_adapter


# -- the study -------------------------------------------------------------------------------


@contextlib.contextmanager
def scratch_workdir(prefix: str, keep: bool = False) -> Iterator[Path]:
    """Run in a new temporary folder, as a user would in a fresh project folder.

    Its ``studies/.cache`` links to the repository's, so the pretrained source checkpoint is
    reused instead of pretrained again. Removed afterwards unless ``keep``.
    """
    work = Path(tempfile.mkdtemp(prefix=prefix))
    shared = cache_dir()
    shared.mkdir(parents=True, exist_ok=True)
    (work / "studies").mkdir()
    (work / "studies" / ".cache").symlink_to(shared, target_is_directory=True)
    before = os.getcwd()
    os.chdir(work)
    try:
        yield work
    finally:
        os.chdir(before)
        if not keep:
            shutil.rmtree(work, ignore_errors=True)  # unlinks the link, never follows it


def run_search(args: list[str]) -> None:
    """``tuner search ARGS`` in this process; its trial lines go to stderr as progress."""
    from tuner.cli import main as tuner

    # stdout would get the best hyp YAML, not wanted here
    with contextlib.redirect_stdout(io.StringIO()):
        code = tuner(["search", *args])
    if code != 0:
        raise SystemExit(f"tuner search exited {code}")


def main(argv: list[str] | None = None) -> int:
    import optuna

    from trainer.torchvision import data

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n-trials", type=int, default=50)
    parser.add_argument("--epochs", type=int, default=2, help="epochs per trial")
    parser.add_argument(
        "--images", type=int, default=128, help="training and validation images per trial"
    )
    parser.add_argument("--task", default="demo")
    parser.add_argument("--keep", action="store_true", help="keep the scratch study folder")
    add_common_flags(parser)
    args = parser.parse_args(argv)
    set_quick(args.quick)
    if args.quick:
        args.n_trials, args.images = min(args.n_trials, 4), 48
    sets = [
        *task_overrides(args.task),
        f"trainer.epochs={args.epochs}",
        f"space.unfreeze_epoch.high={args.epochs}",
        f"trainer.synthetic.n_train={args.images}",
        f"trainer.synthetic.n_val={args.images}",
    ]
    profiler = Profiler(root="other")
    with scratch_workdir("bench-overhead-", args.keep) as work:
        # the default storage, sqlite:///studies/overhead.db, as a user gets it
        url = "sqlite:///studies/overhead.db"
        decodes_before = data.n_decodes()
        started = time.perf_counter()
        with instrumented(profiler):
            run_search(
                ["--space", str(DEMO_SPACE), "--study", "overhead", "--n-trials",
                 str(args.n_trials), *(f"--set={s}" for s in sets)]
            )
        command_wall = time.perf_counter() - started
        n_decodes = data.n_decodes() - decodes_before
        study = optuna.load_study(study_name="overhead", storage=url)
        trials = [t for t in study.trials if t.datetime_complete is not None]
        if args.keep:
            print(f"study kept in {work}", flush=True)
    n = len(trials)
    loop_wall = sum(profiler.totals[p] for p in PARTS)
    strict = Overhead(n, loop_wall, profiler.totals["trainer"])
    stored = overhead_of(
        [t.datetime_start for t in trials],
        [t.datetime_complete for t in trials],
        [t.user_attrs["wall_seconds"] for t in trials],
    )
    states = Counter(t.state.name for t in trials)
    freezes = Counter(t.params.get("freeze") for t in trials)
    ok = "met" if strict.share <= TARGET else "NOT met"
    verdict = (
        f"tuner overhead {strict.per_trial * 1000:.1f} ms per trial = {strict.share:.1%} of "
        f"the mean {strict.mean_trial * 1000:.0f} ms trial (<= {TARGET:.0%} wanted: {ok}; "
        f"<= {TARGET:.0%} for trials of {strict.trial_seconds_for():.1f} s or more); "
        f"data decoded {n_decodes} times for {n} trials"
    )
    rows = [
        ("trials", f"{n} ({states['COMPLETE']} complete, {states['PRUNED']} pruned, "
         f"{states['FAIL']} failed); freeze drawn: "
         + ", ".join(f"{k}: {v}" for k, v in sorted(freezes.items(), key=str))),
        ("trial loop wall time (`tuner.study.run`)", f"{loop_wall:.2f} s"),
        ("in the trainer", f"{strict.in_trainer:.2f} s = {strict.mean_trial * 1000:.0f} ms "
         "per trial"),
        ("**tuner per trial**", f"**{strict.per_trial * 1000:.1f} ms = {strict.share:.2%}** of "
         f"the trainer's time ({strict.share_of_wall:.2%} of the wall time per trial)"),
    ]
    for part in PARTS[1:]:
        text = f"{profiler.totals[part] / n * 1000:.1f} ms per trial"
        if part != "other":  # "other" is one call: the loop itself
            text += f" ({profiler.calls[part] / n:.0f} calls)"
        rows.append((f"... {part}", text))
    rows += [
        ("cross-check from the storage: first start to last end, minus `wall_seconds`",
         f"{stored.span:.2f} s - {stored.in_trainer:.2f} s = {stored.per_trial * 1000:.1f} ms "
         f"per trial ({stored.share:.2%})"),
        ("whole command, incl. one-time preparation", f"{command_wall:.1f} s"),
        ("data splits decoded during the study", f"{n_decodes} (train and val, once per "
         f"process) for {n} trials"),
    ]
    mean_epochs = statistics.fmean(t.user_attrs.get("epochs_run", 0) for t in trials)
    body = "\n\n".join(
        [
            f"`tuner search` in-process on the {args.task} task cut to {args.images} training "
            f"and {args.images} validation images and {args.epochs}-epoch trials (mean "
            f"{mean_epochs:.1f} epochs run), default SQLite storage in a scratch folder, the "
            "space's TPE sampler and median pruner. In the trainer = time inside "
            "`adapter.run` less the tuner's calls made from it (per-epoch report, pruning "
            "decision); tuner = the trial loop's wall time less that, split by exclusive "
            "time per part (storage calls, sampler, pruner, the rest). The cross-check uses "
            "only what the storage records; its `wall_seconds` include the reporting calls "
            "(and, for complete trials, the garbage collection after them), so it reads lower.",
            table(("", ""), rows),
            verdict,
        ]
    )
    write_section("overhead", "4. Tuner overhead", body)
    print(table(("", ""), rows))
    print("ratios:", verdict)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
