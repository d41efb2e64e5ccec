"""Train one configuration to the end: ``python -m trainer.torchvision --hyp best_hyp.yaml``.

This is how a tuned configuration is trained full length: the hyp file exported by the tuner
(a flat mapping of hyp keys; a ``hyp:`` section is accepted too), with the study's trainer
settings when ``--config studies/<study>/config.yaml`` (the resolved config the search wrote)
is given, else the adapter's defaults; flags override either (``--epochs 90``). Prints every
epoch's metrics and saves ``last.pt`` (``{"model": state_dict, ...}``, loadable again with
``--weights last.pt``) into ``--out``.

``--blocks`` only prints the block table of ``--model`` (what ``freeze=N`` means).
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from trainer.base import ConfigError, NullReporter, Pruned, TrialError


class PrintReporter(NullReporter):
    """Records like :class:`NullReporter` and prints one line per epoch."""

    def __init__(self, n_epochs: int) -> None:
        super().__init__()
        self.n_epochs = n_epochs

    def report(self, epoch: int, metrics: Mapping[str, float]) -> None:
        super().report(epoch, metrics)
        values = "  ".join(f"{key} {value:.4g}" for key, value in metrics.items())
        print(f"epoch {epoch + 1}/{self.n_epochs}  {values}", flush=True)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m trainer.torchvision",
        description="Fine-tune a torchvision classifier with one hyp configuration.",
    )
    parser.add_argument("--hyp", type=Path, help="hyp YAML (e.g. the tuner's best_hyp.yaml)")
    parser.add_argument(
        "--config", type=Path,
        help="a study's resolved config (studies/<study>/config.yaml): its trainer settings",
    )
    parser.add_argument("--model", help="resnet18, resnet34, resnet50, mobilenet_v3_small, ...")
    parser.add_argument("--data", help="'synthetic' or an ImageFolder root with train/ and val/")
    parser.add_argument("--weights", help="pretrain, none, a torchvision weights name or a path")
    parser.add_argument("--epochs", type=int, help="epochs to train")
    parser.add_argument("--imgsz", type=int, help="image side in pixels")
    parser.add_argument("--batch", type=int, help="batch size")
    parser.add_argument("--device", help="auto, cpu, cuda or cuda:N")
    parser.add_argument("--out", type=Path, default=Path("runs/torchvision"), help="output dir")
    parser.add_argument(
        "--cache-dir", type=Path, default=Path("studies/.cache"), help="pretrain cache"
    )
    parser.add_argument("--blocks", action="store_true", help="print the block table and exit")
    return parser.parse_args(argv)


def _read_yaml(path: Path, field: str) -> Any:
    """The YAML document in ``path`` (``1e-4`` a float), an empty file as ``{}``.

    Raises:
        ConfigError: The file cannot be read or is not valid YAML.
    """
    import yaml

    from trainer.yaml_io import parse_yaml, yaml_problem

    try:
        return parse_yaml(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(field, f"{path}: {yaml_problem(exc)}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(field, f"cannot read {path}: {exc}") from None


def read_hyp(path: Path) -> dict[str, Any]:
    """A flat hyp mapping from YAML (a top-level ``hyp:`` mapping is unwrapped).

    Raises:
        ConfigError: The file is missing or not a mapping.
    """
    if not path.is_file():
        raise ConfigError("hyp", f"no such file: {path}")
    loaded = _read_yaml(path, "hyp")
    if isinstance(loaded, Mapping) and isinstance(loaded.get("hyp"), Mapping):
        loaded = loaded["hyp"]
    if not isinstance(loaded, Mapping):
        raise ConfigError("hyp", f"{path} does not hold a mapping of hyp keys")
    return dict(loaded)


def read_settings(path: Path) -> dict[str, Any]:
    """The ``trainer:`` settings of a study's resolved config (without ``adapter``).

    Raises:
        ConfigError: The file is missing, has no trainer mapping, or is another adapter's.
    """
    if not path.is_file():
        raise ConfigError("config", f"no such file: {path}")
    loaded = _read_yaml(path, "config")
    trainer = loaded.get("trainer") if isinstance(loaded, Mapping) else None
    if not isinstance(trainer, Mapping):
        raise ConfigError("config", f"{path} has no trainer: mapping")
    settings = dict(trainer)
    adapter = settings.pop("adapter", "torchvision")
    if adapter != "torchvision":
        raise ConfigError("config", f"{path} is a study of the {adapter!r} adapter")
    return settings


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the exit status (2 for bad input, 1 for a failed run)."""
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    from trainer.torchvision.adapter import TorchvisionAdapter  # torch loads only now

    flags = {
        key: getattr(args, key)
        for key in ("model", "data", "weights", "epochs", "imgsz", "batch", "device")
        if getattr(args, key) is not None
    }
    try:
        settings = {**(read_settings(args.config) if args.config else {}), **flags}
        adapter = TorchvisionAdapter(settings, args.cache_dir)
        if args.blocks:
            print(adapter.describe())
            return 0
        hyp = {**adapter.default_hyp(), **(read_hyp(args.hyp) if args.hyp else {})}
        adapter.check_data()
        reporter = PrintReporter(adapter.settings.epochs)
        args.out.mkdir(parents=True, exist_ok=True)
        path = adapter.train_and_save(hyp, reporter, args.out)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except (TrialError, Pruned) as exc:
        print(f"training failed: {exc}", file=sys.stderr)
        return 1
    print(f"saved {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
