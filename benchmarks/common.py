"""What every benchmark shares: the tasks, the machine line, the RESULTS.md sections.

A *task* is the demo space (``spaces/demo.yaml``) with ``--set`` style overrides, so every
benchmark runs the built-in trainer exactly as ``tuner search`` would. Three tasks:

* ``demo``: the offline demo study as shipped (ResNet-18 pretrained on the synthetic source
  task, 6 target classes, 300 training images, 32 px, 6 epochs per trial).
* ``fewshot``: the same backbone on a harder target split (10 classes, 100 training images),
  where how much to freeze matters more.
* ``fullspace``: fewshot's data and backbone, searched over all 19 hyp keys the built-in trainer
  shares with YOLO (:data:`FULL_SPACE`: lrf, weight decay, warmup momentum, HSV, affine, flips,
  mixup on top of the demo's eight), the space Ultralytics' ``model.tune()`` and YOLOv5's
  ``--evolve`` search; most of it trains poorly, so it asks how fast a search leaves it.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import io
import os
import platform
import re
import sys
from collections.abc import Iterable, Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DEMO_SPACE = ROOT / "spaces" / "demo.yaml"
RESULTS = ROOT / "benchmarks" / "RESULTS.md"

TASKS: dict[str, tuple[str, ...]] = {
    "demo": (),
    "fewshot": (
        "trainer.synthetic.n_classes=10",
        "trainer.synthetic.n_train=100",
        "trainer.synthetic.n_val=300",
    ),
}
# fullspace: fewshot's data, searched over every hyp key the built-in trainer shares with the
# YOLO tuners, with Ultralytics ``Tuner``'s ranges for the keys the demo space leaves out and
# for fliplr and scale, which it narrows (lr0, momentum and warmup_epochs keep the demo's
# ranges: a log lr0, and warmup that fits 6-epoch trials)
FULL_SPACE = {
    "lrf": (0.01, 1.0),
    "weight_decay": (0.0, 0.001),
    "warmup_momentum": (0.0, 0.95),
    "hsv_h": (0.0, 0.1),
    "hsv_s": (0.0, 0.9),
    "hsv_v": (0.0, 0.9),
    "degrees": (0.0, 45.0),
    "translate": (0.0, 0.9),
    "scale": (0.0, 0.95),
    "shear": (0.0, 10.0),
    "flipud": (0.0, 1.0),
    "fliplr": (0.0, 1.0),
    "mixup": (0.0, 1.0),
}
TASKS["fullspace"] = (
    *TASKS["fewshot"],
    *(
        f"space.{key}={{type: float, low: {lo}, high: {hi}}}"
        for key, (lo, hi) in FULL_SPACE.items()
    ),
)


# --quick: tiny trainer settings for smoke runs (tests), applied to every task
QUICK = (
    "trainer.weights=none",
    "trainer.imgsz=16",
    "trainer.epochs=2",
    "space.unfreeze_epoch.high=1",  # the last epoch that can still train unfrozen
    "trainer.synthetic.n_train=48",
    "trainer.synthetic.n_val=48",
)
_extra: list[str] = []
_trial_epochs: list[str] = []


def set_quick(quick: bool) -> None:
    """Use (or stop using) the :data:`QUICK` settings for every task of this process."""
    _extra[:] = list(QUICK) if quick else []


def set_trial_epochs(epochs: int | None) -> None:
    """Train every task's trials for ``epochs`` epochs (None: the space's own 6)."""
    _trial_epochs[:] = [] if epochs is None else [f"trainer.epochs={epochs}"]


def task_overrides(name: str) -> list[str]:
    """The ``--set`` overrides that make the demo space into task ``name``."""
    if name not in TASKS:
        raise SystemExit(f"unknown task {name!r}; choose from {', '.join(TASKS)}")
    return [*TASKS[name], *_trial_epochs, *_extra]


def load_task(name: str, overrides: Iterable[str] = ()):
    """The task's validated :class:`tuner.space.StudyConfig` (demo space plus overrides).

    Args:
        name: A key of :data:`TASKS`.
        overrides: More ``dotted.key=value`` strings, applied after the task's own.
    """
    from tuner.space import load_space

    return load_space(DEMO_SPACE, [*task_overrides(name), *overrides], cache_dir=cache_dir())


def cache_dir() -> Path:
    """Where the pretrained source checkpoint is cached (the same as ``tuner search``'s)."""
    return ROOT / "studies" / ".cache"


def prepared_adapter(config):
    """The task's adapter with its data decoded and its weights pretrained (once per process)."""
    adapter = config.make_adapter(cache_dir())
    adapter.prepare()
    return adapter


def run_search(
    sets: Sequence[str], url: str, out: Path, command: str = "search", flags: Sequence[str] = ()
) -> None:
    """``tuner search`` (or ``command``, e.g. ``confirm``) in-process on the demo space with
    ``--set`` overrides ``sets`` and more ``flags``.

    The progress lines go to stderr; the hyp YAML it prints on stdout is not wanted here.

    Raises:
        SystemExit: The command did not exit 0.
    """
    from tuner.cli import main

    with contextlib.redirect_stdout(io.StringIO()):
        code = main(
            [command, "--space", str(DEMO_SPACE), "--storage", url, "--out", str(out), *flags,
             *(f"--set={s}" for s in sets)]
        )
    if code != 0:
        raise SystemExit(f"tuner {command} exited {code}")


def machine() -> str:
    """One line: CPU model and cores, or the GPU, plus the torch version."""
    import torch

    cpu = platform.processor() or platform.machine()
    try:
        text = Path("/proc/cpuinfo").read_text()
        match = re.search(r"model name\s*:\s*(.+)", text)
        cpu = match.group(1).strip() if match else cpu
    except OSError:
        pass
    parts = [f"{cpu}, {os.cpu_count()} cores", f"torch {torch.__version__}"]
    if torch.cuda.is_available():
        parts.insert(1, torch.cuda.get_device_name(0))
    parts.append(f"Python {platform.python_version()}")
    return "; ".join(parts)


def command_line() -> str:
    """How this benchmark was started (``python -m benchmarks.X ...``)."""
    module = sys.modules["__main__"].__spec__
    name = module.name if module is not None else sys.argv[0]
    return " ".join(["python -m", name, *sys.argv[1:]])


def add_common_flags(parser) -> None:
    """``--quick``: tiny settings for a smoke run, RESULTS.md left alone."""
    parser.add_argument(
        "--quick", action="store_true", help="tiny settings for a smoke run; RESULTS.md untouched"
    )


def table(header: Sequence[str], rows: Iterable[Sequence[object]]) -> str:
    """A Markdown table."""
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines)


def utc_now() -> str:
    """The time as RESULTS.md stamps it (minutes, UTC)."""
    return f"{dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC"


def write_section(
    name: str,
    title: str,
    body: str,
    results: Path = RESULTS,
    *,
    command: str | None = None,
    command_note: str = "",
    machine_line: str | None = None,
    date: str | None = None,
) -> None:
    """Replace (or append) the section ``name`` of RESULTS.md, stamped with command, machine
    and date, leaving the other benchmarks' sections as they are. Quick runs write nothing.

    Args:
        name: The section's marker.
        title: Its heading.
        body: Its text, below the stamp.
        results: The file.
        command: The command the figures come from; this process's by default.
        command_note: Text after the command, e.g. that the section was re-scored by another.
        machine_line: The machine they were measured on; this one by default.
        date: When; now by default.
    """
    if _extra:
        return
    stamp = (
        f"Command: `{command or command_line()}`{command_note}  \n"
        f"Machine: {machine_line or machine()}  \nDate: {date or utc_now()}"
    )
    section = f"<!-- {name} -->\n## {title}\n\n{stamp}\n\n{body.strip()}\n<!-- /{name} -->\n"
    text = results.read_text() if results.exists() else "# Benchmark results\n\n"
    pattern = re.compile(rf"<!-- {re.escape(name)} -->.*?<!-- /{re.escape(name)} -->\n", re.S)
    if pattern.search(text):
        text = pattern.sub(lambda _: section, text)
    else:
        text = text.rstrip("\n") + "\n\n" + section
    tmp = results.with_suffix(".tmp")
    tmp.write_text(text)
    os.replace(tmp, results)


class Recorder:
    """A reporter that never prunes and keeps every epoch's metrics (trainer's Reporter)."""

    def __init__(self) -> None:
        self.history: list[dict[str, float]] = []

    def report(self, epoch: int, metrics) -> None:
        self.history.append(dict(metrics))
