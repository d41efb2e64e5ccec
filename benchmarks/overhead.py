"""The tuner's own cost per trial, next to training (issue section 4).

Runs a real ``tuner search`` (in this process, SQLite storage) of ``--n-trials`` short trials
on the demo task and reads the study back. Per trial, the trainer's time is the ``wall_seconds``
user attr (the wall time of ``adapter.run``); everything else between the first trial's start
and the last trial's end is the tuner's: sampling, storage writes, pruning decisions, the
progress line, the per-trial ``hyp.yaml``. overhead per trial = (that span - sum of trainer
time) / trials, also shown as a share of the mean trial time (target <= 3%).

It also shows that data is decoded once per process: the trainer's decode counter before and
after the study (train and validation splits: 2, whatever the number of trials).

Run: ``python -m benchmarks.overhead [--n-trials 50] [--epochs 2]``.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from benchmarks.common import (
    add_common_flags,
    run_search,
    set_quick,
    table,
    task_overrides,
    write_section,
)

TARGET = 0.03


@dataclass(frozen=True)
class Overhead:
    """The tuner's share of a study.

    Attributes:
        n_trials: Trials in the span.
        span: First trial start to last trial end, seconds.
        in_trainer: Sum of the trials' trainer wall time, seconds.
    """

    n_trials: int
    span: float
    in_trainer: float

    @property
    def per_trial(self) -> float:
        """Tuner seconds per trial."""
        return (self.span - self.in_trainer) / self.n_trials

    @property
    def share(self) -> float:
        """Tuner time as a fraction of the mean trial (trainer) time."""
        return self.per_trial / (self.in_trainer / self.n_trials)


def overhead_of(
    starts: Sequence[datetime], ends: Sequence[datetime], trainer_seconds: Sequence[float]
) -> Overhead:
    """:class:`Overhead` from the trials' start and end times and trainer seconds."""
    span = (max(ends) - min(starts)).total_seconds()
    return Overhead(len(trainer_seconds), span, float(sum(trainer_seconds)))


def main(argv: list[str] | None = None) -> int:
    import optuna

    from trainer.torchvision import data

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n-trials", type=int, default=50)
    parser.add_argument("--epochs", type=int, default=2, help="epochs per trial (short trials)")
    parser.add_argument("--task", default="demo")
    add_common_flags(parser)
    args = parser.parse_args(argv)
    set_quick(args.quick)
    if args.quick:
        args.n_trials = 4
    work = Path(tempfile.mkdtemp(prefix="bench-overhead-"))
    url = f"sqlite:///{work / 'overhead.db'}"
    sets = [
        *task_overrides(args.task),
        f"trainer.epochs={args.epochs}",
        f"space.unfreeze_epoch.high={args.epochs}",
        f"search.n_trials={args.n_trials}",
        "search.confirm.top_k=0",  # the trials' overhead only
        "study=overhead",
    ]
    decodes_before = data.n_decodes()
    started = time.perf_counter()
    run_search(sets, url, work / "best.yaml")
    wall = time.perf_counter() - started
    n_decodes = data.n_decodes() - decodes_before
    study = optuna.load_study(study_name="overhead", storage=url)
    trials = [t for t in study.trials if t.datetime_complete is not None]
    result = overhead_of(
        [t.datetime_start for t in trials],
        [t.datetime_complete for t in trials],
        [t.user_attrs["wall_seconds"] for t in trials],
    )
    states = {s: sum(t.state.name == s for t in trials) for s in ("COMPLETE", "PRUNED", "FAIL")}
    verdict = (
        f"tuner overhead {result.per_trial * 1000:.0f} ms per trial = {result.share:.1%} of the "
        f"mean trial time (<= {TARGET:.0%} wanted: "
        f"{'met' if result.share <= TARGET else 'NOT met'})"
        f"; data decoded {n_decodes} times for {len(trials)} trials"
    )
    rows = [
        ("trials", f"{len(trials)} ({states['COMPLETE']} complete, {states['PRUNED']} pruned, "
         f"{states['FAIL']} failed)"),
        ("first trial start to last trial end", f"{result.span:.1f} s"),
        ("in the trainer (sum of adapter.run)", f"{result.in_trainer:.1f} s"),
        ("mean trial (trainer)", f"{result.in_trainer / len(trials) * 1000:.0f} ms"),
        ("tuner per trial", f"{result.per_trial * 1000:.1f} ms ({result.share:.2%})"),
        ("whole command, incl. one-time preparation", f"{wall:.1f} s"),
        ("data splits decoded in this process", f"{n_decodes} (train, val) for all trials"),
    ]
    body = "\n\n".join(
        [
            f"`tuner search` in-process on the {args.task} task, {args.epochs}-epoch trials, "
            "SQLite storage, the space's TPE sampler and median pruner.",
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
