"""Does the tuned configuration hold at full length? (issue section 5)

For each task: a real ``tuner search`` (the task's space as shipped: short, pruned trials)
exports ``best_hyp.yaml``; then both that file and the baseline hyps (the space's ``base``
over the trainer defaults: trial 0) train ``--factor`` times longer than a trial, for
``--seeds`` trainer seeds (data order, head init, augmentation draws). Reported per config:
final and best val/acc, mean and standard deviation over seeds, and the paired gain
(tuned - baseline, same seed). A tuned config that does not beat the baseline at full length
is reported as such.

Run: ``python -m benchmarks.full_length [--tasks demo,fewshot] [--seeds 3] [--factor 3]``.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import statistics
import tempfile
from collections.abc import Sequence
from pathlib import Path

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


def mean_std(values: Sequence[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (0 for a single value)."""
    mean = statistics.fmean(values)
    return mean, statistics.stdev(values) if len(values) > 1 else 0.0


def paired_gain(tuned: Sequence[float], baseline: Sequence[float]) -> tuple[float, float, int]:
    """Mean and std of ``tuned - baseline`` per seed, and how many seeds the tuned one won."""
    diffs = [t - b for t, b in zip(tuned, baseline, strict=True)]
    mean, std = mean_std(diffs)
    return mean, std, sum(d > 0 for d in diffs)


def tuned_hyp(task: str, work: Path, n_trials: int | None) -> tuple[dict, str]:
    """Run the task's study and return the exported hyp and the header line naming the trial."""
    from tuner.cli import main as tuner

    out = work / f"{task}-best.yaml"
    sets = [*task_overrides(task), f"study=full-{task}"]
    if n_trials is not None:
        sets.append(f"search.n_trials={n_trials}")
    with contextlib.redirect_stdout(io.StringIO()):
        code = tuner(
            ["search", "--space", str(DEMO_SPACE), "--storage",
             f"sqlite:///{work / f'{task}.db'}", "--out", str(out),
             *(f"--set={s}" for s in sets)]
        )
    if code != 0:
        raise SystemExit(f"tuner search for {task} exited {code}")
    text = out.read_text()
    header = next((line for line in text.splitlines() if line.startswith("# trial:")), "")
    return yaml.safe_load(text), header.lstrip("# ")


def main(argv: list[str] | None = None) -> int:
    from tuner import study as st

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tasks", default="demo,fewshot")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--factor", type=int, default=3, help="full length = factor x epochs")
    parser.add_argument("--n-trials", type=int, help="trials of the study (default: the space's)")
    add_common_flags(parser)
    args = parser.parse_args(argv)
    set_quick(args.quick)
    if args.quick:
        args.seeds, args.factor, args.n_trials = 2, 1, 3
    st.quiet_optuna()
    work = Path(tempfile.mkdtemp(prefix="bench-full-"))
    sections, verdicts = [], []
    for task in (t.strip() for t in args.tasks.split(",") if t.strip()):
        print(f"task {task}: tuning", flush=True)
        tuned, header = tuned_hyp(task, work, args.n_trials)
        config = load_task(task)
        epochs = args.factor * prepared_adapter(config).settings.epochs
        baseline = config.base_hyp(prepared_adapter(config))
        scores: dict[str, dict[str, list[float]]] = {}
        for name, hyp in (("tuned", tuned), ("baseline", baseline)):
            scores[name] = {"final": [], "best": []}
            for seed in range(args.seeds):
                adapter = prepared_adapter(
                    load_task(task, [f"trainer.epochs={epochs}", f"trainer.seed={seed}"])
                )
                result = adapter.run(hyp, Recorder(), work / task / f"{name}-{seed}")
                accs = [h["val/acc"] for h in result.history]
                scores[name]["final"].append(accs[-1])
                scores[name]["best"].append(max(accs))
                print(
                    f"  {name:>8} seed {seed}: final {accs[-1]:.4f} best {max(accs):.4f}",
                    flush=True,
                )
        rows = []
        for name in ("tuned", "baseline"):
            final, best = mean_std(scores[name]["final"]), mean_std(scores[name]["best"])
            rows.append(
                (name, f"{final[0]:.4f} ± {final[1]:.4f}", f"{best[0]:.4f} ± {best[1]:.4f}")
            )
        gain, spread, n_won = paired_gain(scores["tuned"]["final"], scores["baseline"]["final"])
        rows.append(("gain (paired)", f"{gain:+.4f} ± {spread:.4f}", f"tuned won {n_won}/"
                     f"{args.seeds} seeds"))
        holds = "holds" if gain > 0 and n_won * 2 > args.seeds else "does NOT hold"
        verdict = (
            f"{task}: tuned vs baseline at {epochs} epochs: final val/acc gain {gain:+.4f} ± "
            f"{spread:.4f} over {args.seeds} seeds; the tuned config {holds} at full length"
        )
        verdicts.append(verdict)
        tuned_keys = ", ".join(
            f"{k}={tuned[k]:.4g}" if isinstance(tuned[k], float) else f"{k}={tuned[k]}"
            for k in config.space
        )
        sections.append(
            f"**{task}** ({header}; {tuned_keys})\n\n"
            + table(("config", f"final val/acc at {epochs} ep", "best epoch val/acc"), rows)
        )
    body = "\n\n".join(
        [
            f"Each task's study as shipped picks the config (short pruned trials); then the "
            f"exported `best_hyp.yaml` and the baseline hyps train {args.factor}x a trial's "
            f"epochs, trainer seeds 0..{args.seeds - 1}. Mean ± standard deviation over seeds.",
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
