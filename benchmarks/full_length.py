"""Does the tuned configuration hold at full length? (issue section 5)

Short pruned trials pick the configuration; users then train it for longer. For each task: a
real ``tuner search`` (the demo space as shipped with the task's overrides, in a scratch
folder) writes ``best_hyp.yaml``; then that file, as exported, and the baseline hyps (the
space's ``base`` over the trainer's defaults: what trial 0 trains) each train ``--factor``
times a trial's epochs through the adapter, for ``--seeds`` trainer seeds (data order, head
initialisation, augmentation draws).

Seeds start at ``--first-seed`` (1): the study tuned on trainer seed 0, so seed 0 would
replay the draws the winner was picked on. For the same reason there is a third split: the
study picked its winner on the validation images, so each final model is also scored on
fresh images of the same classes drawn for this benchmark (``test/acc``; synthetic data
only).

Reported per config: final and best-epoch val/acc and final test/acc, mean ± sample standard
deviation over seeds; and the paired gain (tuned - baseline on the same seed) with its
spread and the number of seeds the tuned config won. A tuned config that does not beat the
baseline at full length is reported as such.

Run: ``python -m benchmarks.full_length [--tasks demo,fewshot] [--seeds 3] [--factor 3]``.
"""

from __future__ import annotations

import argparse
import math
import statistics
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from benchmarks.common import (
    DEMO_SPACE,
    Recorder,
    add_common_flags,
    load_task,
    prepared_adapter,
    set_quick,
    table,
    task_overrides,
    write_section,
)
from benchmarks.overhead import run_search, scratch_workdir

CONFIGS = ("tuned", "baseline")
# what is scored at the end of each full-length run, and what the gain is measured on first
SCORES = ("final", "best", "test")
SCORE_NAMES = {
    "final": "final val/acc",
    "best": "best-epoch val/acc",
    "test": "final test/acc (fresh images)",
}


# -- statistics (tested without training) ----------------------------------------------------


def mean_std(values: Sequence[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (0 for a single value)."""
    mean = statistics.fmean(values)
    return mean, statistics.stdev(values) if len(values) > 1 else 0.0


def paired_gain(tuned: Sequence[float], baseline: Sequence[float]) -> tuple[float, float, int]:
    """Mean and std of ``tuned - baseline`` per seed, and how many seeds the tuned one won."""
    diffs = [t - b for t, b in zip(tuned, baseline, strict=True)]
    mean, std = mean_std(diffs)
    return mean, std, sum(d > 0 for d in diffs)


@dataclass(frozen=True)
class Gain:
    """The paired gain of tuned over baseline on one score.

    Attributes:
        mean: Mean of ``tuned - baseline`` over seeds.
        std: Its sample standard deviation.
        n_won: Seeds where tuned scored strictly higher.
        n: Seeds.
    """

    mean: float
    std: float
    n_won: int
    n: int

    @classmethod
    def of(cls, tuned: Sequence[float], baseline: Sequence[float]) -> Gain:
        """From per-seed scores, paired by position."""
        mean, std, n_won = paired_gain(tuned, baseline)
        return cls(mean, std, n_won, len(tuned))

    @property
    def stderr(self) -> float:
        """Standard error of the mean gain."""
        return self.std / math.sqrt(self.n)

    @property
    def holds(self) -> bool:
        """Tuned beats baseline: a positive mean gain and a win on most seeds."""
        return self.mean > 0 and 2 * self.n_won > self.n

    def text(self) -> str:
        """``+0.0422 ± 0.0117 (tuned won 3/3 seeds)``."""
        return f"{self.mean:+.4f} ± {self.std:.4f} (tuned won {self.n_won}/{self.n} seeds)"

    def verdict(self) -> str:
        """Plain words, with a warning when the mean is within two standard errors of 0."""
        if self.holds:
            words = "holds: the tuned config beats the baseline at full length"
        else:
            words = "does NOT hold: the tuned config does not beat the baseline at full length"
        if self.n > 1 and abs(self.mean) < 2 * self.stderr:
            words += f" (the mean gain is within 2 standard errors, {2 * self.stderr:.4f}, of 0)"
        return words


def scores_of(history: Sequence[Mapping[str, float]], test_acc: float | None) -> dict[str, float]:
    """A run's scores: the last epoch's and the best epoch's val/acc, and test/acc."""
    accs = [float(h["val/acc"]) for h in history]
    out = {"final": accs[-1], "best": max(accs)}
    if test_acc is not None:
        out["test"] = test_acc
    return out


# -- the runs --------------------------------------------------------------------------------


def tuned_hyp(task: str, n_trials: int | None) -> tuple[dict[str, Any], str, str]:
    """Run the task's study (in the current folder) as a user would.

    Returns:
        The exported hyp, the header line naming the trial, and a line comparing the
        winner's and the baseline trial's study values (short trials).
    """
    import optuna

    from tuner.study import baseline_trial, best_trial, counts

    study_name = f"full-{task}"
    args = ["--space", str(DEMO_SPACE), "--study", study_name,
            *(f"--set={s}" for s in task_overrides(task))]
    if n_trials is not None:
        args += ["--n-trials", str(n_trials)]
    run_search(args)
    out = Path("studies") / study_name / "best_hyp.yaml"
    text = out.read_text()
    header = next((line for line in text.splitlines() if line.startswith("# trial:")), "")
    study = optuna.load_study(study_name=study_name, storage=f"sqlite:///studies/{study_name}.db")
    best, base, by_state = best_trial(study), baseline_trial(study), counts(study)
    if best is None:
        raise SystemExit(f"the {task} study has no complete trial")
    in_study = (
        f"{by_state.get('COMPLETE', 0)} complete and {by_state.get('PRUNED', 0)} pruned trials; "
        f"short-trial val/acc: winner #{best.number} {best.value:.4f}"
    )
    if base is not None and base.value is not None:
        in_study += f", baseline #{base.number} {base.value:.4f}"
    return yaml.safe_load(text), header.lstrip("# "), in_study


def fresh_images(adapter: Any) -> Any:
    """Fresh images of the task's classes (synthetic data), or None for image folders.

    The trainer draws the training split with the data seed and validation with seed + 1;
    seed + 2 gives images neither the study nor the runs have seen.
    """
    from trainer.torchvision import data

    s = adapter.settings
    if s.data != "synthetic":
        return None
    syn = s.synthetic
    return data.load_synthetic("target", syn.n_classes, syn.n_val, s.imgsz, syn.seed + 2)


def full_run(
    task: str, hyp: Mapping[str, Any], epochs: int, seed: int, out_dir: Path
) -> dict[str, float]:
    """Train ``hyp`` for ``epochs`` with trainer seed ``seed``; its scores."""
    from trainer.torchvision.loop import evaluate

    config = load_task(task, [f"trainer.epochs={epochs}", f"trainer.seed={seed}"])
    adapter = prepared_adapter(config)
    reporter = Recorder()
    model, result = adapter.fit(hyp, reporter, out_dir)
    fresh = fresh_images(adapter)
    test_acc = None
    if fresh is not None:
        test_acc, _ = evaluate(model, fresh, adapter.device(), adapter.settings.batch)
    return scores_of(result.history, test_acc)


def _fmt(key: str, value: Any) -> str:
    return f"{key}={value:.4g}" if isinstance(value, float) else f"{key}={value}"


def main(argv: list[str] | None = None) -> int:
    from tuner import study as st

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tasks", default="demo,fewshot")
    parser.add_argument("--seeds", type=int, default=3, help="trainer seeds per config")
    parser.add_argument("--first-seed", type=int, default=1, help="0 is the study's own seed")
    parser.add_argument("--factor", type=int, default=3, help="full length = factor x epochs")
    parser.add_argument("--n-trials", type=int, help="trials of each study (default: the space's)")
    parser.add_argument("--keep", action="store_true", help="keep the scratch study folder")
    add_common_flags(parser)
    args = parser.parse_args(argv)
    set_quick(args.quick)
    if args.quick:
        args.seeds, args.factor, args.n_trials = 2, 1, 3
    if args.seeds < 1 or args.factor < 1:
        parser.error("--seeds and --factor must be at least 1")
    st.quiet_optuna()
    tasks = [t.strip() for t in args.tasks.split(",") if t.strip()]
    seeds = list(range(args.first_seed, args.first_seed + args.seeds))
    started = time.perf_counter()
    sections, verdicts = [], []
    with scratch_workdir("bench-full-", args.keep) as work:
        for task in tasks:
            print(f"task {task}: tuning (the space's study, short pruned trials)", flush=True)
            tuned, header, in_study = tuned_hyp(task, args.n_trials)
            config = load_task(task)
            adapter = prepared_adapter(config)
            trial_epochs = adapter.settings.epochs
            epochs = args.factor * trial_epochs
            hyps = {"tuned": tuned, "baseline": config.base_hyp(adapter)}
            scores: dict[str, list[dict[str, float]]] = {name: [] for name in CONFIGS}
            print(f"task {task}: {epochs} epochs per run, seeds {seeds}", flush=True)
            for seed in seeds:
                for name in CONFIGS:
                    run = full_run(task, hyps[name], epochs, seed, work / task / f"{name}-{seed}")
                    scores[name].append(run)
                    print(
                        f"  {task} {name:>8} seed {seed}: "
                        + ", ".join(f"{SCORE_NAMES[k]} {v:.4f}" for k, v in run.items()),
                        flush=True,
                    )
            keys = [k for k in SCORES if all(k in r for runs in scores.values() for r in runs)]
            rows = []
            for name in CONFIGS:
                cells = []
                for key in keys:
                    mean, std = mean_std([r[key] for r in scores[name]])
                    cells.append(f"{mean:.4f} ± {std:.4f}")
                rows.append((name, *cells))
            tuned_scores, base_scores = scores["tuned"], scores["baseline"]
            gains = {
                key: Gain.of([r[key] for r in tuned_scores], [r[key] for r in base_scores])
                for key in keys
            }
            rows.append(("gain (paired)", *(gains[key].text() for key in keys)))
            verdicts.append(f"{task}: final val/acc gain {gains['final'].text()}: "
                            f"{gains['final'].verdict()}")
            if "test" in gains:
                verdicts.append(f"{task}: on fresh images the gain is {gains['test'].text()}: "
                                f"{gains['test'].verdict().split(':')[0]}")
            tuned_keys = ", ".join(_fmt(k, tuned[k]) for k in config.space if k in tuned)
            sections.append(
                f"**{task}** ({trial_epochs}-epoch trials, full length {epochs} epochs). "
                f"Exported {header}: {tuned_keys}. Study: {in_study}.\n\n"
                + table(("config", *(SCORE_NAMES[k] for k in keys)), rows)
            )
        if args.keep:
            print(f"studies and runs kept in {work}", flush=True)
    minutes = (time.perf_counter() - started) / 60
    body = "\n\n".join(
        [
            f"Each task's study as shipped (the demo space with the task's overrides) picks "
            f"the config in short pruned trials; then the exported `best_hyp.yaml`, as it is "
            f"(epoch-based keys such as `unfreeze_epoch` and `warmup_epochs` unchanged), and "
            f"the baseline hyps train {args.factor}x a trial's epochs, trainer seeds "
            f"{seeds[0]}..{seeds[-1]} (the study used seed 0). Mean ± sample standard "
            "deviation over seeds; the gain is paired by seed. val/acc is the split the study "
            "selected on; test/acc is scored on fresh images of the same classes that "
            "neither the study nor the runs saw.",
            *sections,
            "\n".join(f"- {v}" for v in verdicts),
            f"Total benchmark time: {minutes:.1f} min.",
        ]
    )
    write_section("full_length", "5. The tuned config at full length", body)
    print("\n\n".join(sections))
    print("ratios:")
    for line in verdicts:
        print(" ", line)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
