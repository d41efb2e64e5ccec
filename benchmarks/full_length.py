"""Does the tuned configuration hold at full length? (issue section 5)

For each task: a real ``tuner search`` (the task's space as shipped: short, pruned trials,
then the confirmation of the 3 best trials and the baseline on 2 fresh trainer seeds) picks
two configurations: the trial with the best search value (``--pick best-metric``, what a
plain search exports) and the best mean over the fresh seeds (``--pick confirmed``, what the
shipped space exports). A third comes from ``tuner confirm --epochs`` on the same study: the
same candidates and seeds confirmed at the full length (``confirmed-full``), scored as the
search scores (the best epoch); a fourth from those runs re-scored by their last epoch
(``--reduce last``, ``confirmed-last``: no training, the curves are recorded). The picks and
the baseline hyps (the space's ``base`` over the trainer defaults: trial 0) then train
``--factor`` times longer than a trial, for ``--seeds`` trainer seeds from ``--first-seed`` on
(default 100: seeds neither the study, 0, nor its confirmations, 1 and 2, trained with).
Reported per config: final and best val/acc, mean and standard deviation over seeds, and the
paired gain over the baseline (same seed). A pick that does not beat the baseline at full
length is reported as such.

Run: ``python -m benchmarks.full_length [--tasks demo,fewshot,fullspace] [--seeds 3] [--factor 3]
[--first-seed 100]``.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
from collections.abc import Sequence
from pathlib import Path

from benchmarks.common import (
    Recorder,
    add_common_flags,
    load_task,
    prepared_adapter,
    run_search,
    set_quick,
    table,
    task_overrides,
    write_section,
)

# the pick rules read after the search, and the picks of the full-length confirmation by the
# scoring of its runs (the best epoch, as the search scores; the last epoch)
PICKS = ("best-metric", "confirmed")
FULL = {"confirmed-full": "best", "confirmed-last": "last"}


def mean_std(values: Sequence[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (0 for a single value)."""
    mean = statistics.fmean(values)
    return mean, statistics.stdev(values) if len(values) > 1 else 0.0


def paired_gain(tuned: Sequence[float], baseline: Sequence[float]) -> tuple[float, float, int]:
    """Mean and std of ``tuned - baseline`` per seed, and how many seeds the tuned one won."""
    diffs = [t - b for t, b in zip(tuned, baseline, strict=True)]
    mean, std = mean_std(diffs)
    return mean, std, sum(d > 0 for d in diffs)


def tuned_picks(
    task: str, work: Path, n_trials: int | None, full_epochs: int
) -> dict[str, tuple[int, dict, str]]:
    """Run the task's study, then confirm the same candidates again at ``full_epochs``.

    Args:
        task: The benchmark task.
        work: Folder of the study database and the hyp files.
        n_trials: Trials of the study (None: the space's).
        full_epochs: The length of the second confirmation's runs.

    Returns:
        Per pick (``best-metric``, ``confirmed``, ``confirmed-full``, ``confirmed-last``): the
        trial number, its hyp and the rule's description.
    """
    import optuna

    from tuner.export import pick_trial, trial_hyp

    url = f"sqlite:///{work / f'{task}.db'}"
    sets = [*task_overrides(task), f"study=full-{task}"]
    if n_trials is not None:
        sets.append(f"search.n_trials={n_trials}")
    run_search(sets, url, work / f"{task}-best.yaml")
    study = optuna.load_study(study_name=f"full-{task}", storage=url)
    out = {}
    for rule in PICKS:
        pick = pick_trial(study, rule=rule)
        out[rule] = (pick.trial.number, trial_hyp(study, pick.trial), pick.rule)
    # the same top trials and seeds, each run at the full length (it replaces the short
    # record); the second call re-scores those runs by their last epoch without training
    for name, reduce in FULL.items():
        run_search(sets, url, work / f"{task}-{name}.yaml", "confirm",
                   ["--epochs", str(full_epochs), "--reduce", reduce])
        study = optuna.load_study(study_name=f"full-{task}", storage=url)
        pick = pick_trial(study, rule="confirmed")
        out[name] = (pick.trial.number, trial_hyp(study, pick.trial), pick.rule)
    return out


def holds(gain: float, n_won: int, n_seeds: int) -> str:
    """``holds`` when the mean paired gain is positive and the pick won most seeds."""
    return "holds" if gain > 0 and n_won * 2 > n_seeds else "does NOT hold"


def main(argv: list[str] | None = None) -> int:
    from tuner import study as st

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tasks", default="demo,fewshot,fullspace")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--first-seed", type=int, default=100, help="first full-length seed")
    parser.add_argument("--factor", type=int, default=3, help="full length = factor x epochs")
    parser.add_argument("--n-trials", type=int, help="trials of the study (default: the space's)")
    add_common_flags(parser)
    args = parser.parse_args(argv)
    set_quick(args.quick)
    if args.quick:
        args.seeds, args.factor, args.n_trials = 2, 1, 3
    st.quiet_optuna()
    seeds = list(range(args.first_seed, args.first_seed + args.seeds))
    work = Path(tempfile.mkdtemp(prefix="bench-full-"))
    sections, verdicts = [], []
    for task in (t.strip() for t in args.tasks.split(",") if t.strip()):
        print(f"task {task}: tuning", flush=True)
        config = load_task(task)
        base_adapter = prepared_adapter(config)
        epochs = args.factor * base_adapter.settings.epochs
        picks = tuned_picks(task, work, args.n_trials, epochs)
        configs: dict[str, dict] = {rule: hyp for rule, (_, hyp, _) in picks.items()}
        configs["baseline"] = config.base_hyp(base_adapter)
        adapters = {
            seed: prepared_adapter(
                load_task(task, [f"trainer.epochs={epochs}", f"trainer.seed={seed}"])
            )
            for seed in seeds
        }
        scores: dict[str, dict[str, list[float]]] = {}
        for name, hyp in configs.items():
            same = next((n for n in scores if configs[n] == hyp), None)
            if same is not None:  # the two rules picked the same trial: train it once
                scores[name] = scores[same]
                print(f"  {name:>14}: same configuration as {same}", flush=True)
                continue
            scores[name] = {"final": [], "best": []}
            for seed in seeds:
                result = adapters[seed].run(hyp, Recorder(), work / task / f"{name}-{seed}")
                accs = [h["val/acc"] for h in result.history]
                scores[name]["final"].append(accs[-1])
                scores[name]["best"].append(max(accs))
                print(
                    f"  {name:>14} seed {seed}: final {accs[-1]:.4f} best {max(accs):.4f}",
                    flush=True,
                )
        rows = []
        for name in configs:
            final, best = mean_std(scores[name]["final"]), mean_std(scores[name]["best"])
            trial = f"trial {picks[name][0]}" if name in picks else "trial 0 (base)"
            rows.append(
                (name, trial, f"{final[0]:.4f} ± {final[1]:.4f}", f"{best[0]:.4f} ± {best[1]:.4f}")
            )
        for rule in (*PICKS, *FULL):
            gain, spread, n_won = paired_gain(
                scores[rule]["final"], scores["baseline"]["final"]
            )
            rows.append((f"gain of {rule} (paired)", "", f"{gain:+.4f} ± {spread:.4f}",
                         f"won {n_won}/{args.seeds} seeds"))
            verdicts.append(
                f"{task}: {rule} pick (trial {picks[rule][0]}) vs baseline at {epochs} epochs: "
                f"final val/acc gain {gain:+.4f} ± {spread:.4f} over {args.seeds} seeds; it "
                f"{holds(gain, n_won, args.seeds)} at full length"
            )
        described = "; ".join(
            f"{rule}: trial {number} ({text}): " + ", ".join(
                f"{k}={hyp[k]:.4g}" if isinstance(hyp[k], float) else f"{k}={hyp[k]}"
                for k in config.space
            )
            for rule, (number, hyp, text) in picks.items()
        )
        sections.append(
            f"**{task}** ({described})\n\n"
            + table(
                ("config", "trial", f"final val/acc at {epochs} ep", "best epoch val/acc"), rows
            )
        )
    body = "\n\n".join(
        [
            "Each task's study as shipped (short pruned trials, then the confirmation of the 3 "
            "best trials and the baseline on trainer seeds 1 and 2) gives two picks: the best "
            "search value (`--pick best-metric`) and the best fresh-seed mean (`--pick "
            "confirmed`, the default export); `tuner confirm --epochs` then confirms the same "
            f"candidates on the same seeds at {args.factor}x a trial's epochs, scored by "
            "their best epoch as the search scores (`confirmed-full`) and re-scored by their "
            "last epoch (`--reduce last`, `confirmed-last`, no training). The picks and the "
            f"baseline train {args.factor}x a "
            f"trial's epochs on trainer seeds {seeds[0]}..{seeds[-1]}, which neither the study "
            "nor the confirmations used. Mean ± standard deviation over seeds.",
            *sections,
            "\n".join(f"- {v}" for v in verdicts),
        ]
    )
    write_section("full_length", "5. The tuned config at full length", body)
    for section in sections:
        print(section)
    print("ratios:")
    for verdict in verdicts:
        print(" ", verdict)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
