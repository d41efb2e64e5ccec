"""The contract between the search side and the training side.

`trainer/` never imports `tuner/`. An adapter receives a flat hyp mapping, a directory of its
own and a :class:`Reporter`; it trains, calls ``reporter.report(epoch, metrics)`` after every
epoch and returns a :class:`TrialResult`. The reporter may raise :class:`Pruned`, which the
adapter lets through (after attaching its partial result) so that the trial stops at once. The
same adapter therefore runs under Optuna, Ray Tune or a plain test fake.
"""

from __future__ import annotations

import importlib
import math
from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Protocol

# Hyp keys that describe the freeze strategy rather than the optimiser or augmentation.
FREEZE_KEYS = ("freeze", "lr_decay", "unfreeze_epoch")

_INF = float("inf")
# Inclusive bounds of the YOLO hyp keys every adapter reads with YOLO's meaning, outside which
# a value is no setting at all (a probability above 1, a negative learning rate), whatever the
# model; an adapter's limits() add the ones that depend on its settings (freeze).
HYP_BOUNDS: dict[str, tuple[float, float]] = {
    **dict.fromkeys(("lr0", "lrf", "weight_decay", "warmup_epochs", "warmup_bias_lr",
                     "degrees", "shear", "perspective", "lr_decay"), (0.0, _INF)),
    # SGD momentum and Adam's beta1 (YOLO passes momentum as beta1)
    **dict.fromkeys(("momentum", "warmup_momentum"), (0.0, 1.0)),
    # probabilities, and gains that are fractions of the image or of the HSV range
    **dict.fromkeys(("hsv_h", "hsv_s", "hsv_v", "translate", "scale", "flipud", "fliplr",
                     "mosaic", "mixup", "copy_paste", "label_smoothing"), (0.0, 1.0)),
}


class Reporter(Protocol):
    """Receives per-epoch metrics; may raise :class:`Pruned` to stop the trial."""

    def report(self, epoch: int, metrics: Mapping[str, float]) -> None:
        """Record the metrics of one finished epoch (0-based)."""


class NullReporter:
    """A reporter that records everything and never prunes (for plain training runs)."""

    def __init__(self) -> None:
        self.history: list[tuple[int, dict[str, float]]] = []

    def report(self, epoch: int, metrics: Mapping[str, float]) -> None:
        self.history.append((epoch, dict(metrics)))


class Pruned(Exception):  # noqa: N818 - it is a signal, not an error
    """Raised by a reporter to stop the running trial now.

    Adapters let it propagate and attach what they measured so far as ``result``.
    """

    def __init__(self, epoch: int, message: str = "") -> None:
        super().__init__(message or f"pruned after epoch {epoch + 1}")  # 1-based, as printed
        self.epoch = epoch
        self.result: TrialResult | None = None


class TrialError(Exception):
    """A trial that cannot go on (NaN loss, crashed subprocess...). The study records it as failed.

    ``result`` holds what was measured before the failure, when anything was.
    """

    def __init__(self, message: str, result: TrialResult | None = None) -> None:
        super().__init__(message)
        self.result = result


class DivergedError(TrialError):
    """Training diverged: a NaN or infinite loss or metric.

    Unlike other trial errors this is an outcome of the hyps (mostly too high a learning rate
    for the unfrozen layers), not of a broken setup, so the search side records such a trial
    as pruned at its last finite epoch, with the reason: the sampler then learns to avoid the
    region instead of drawing from it again and again.
    """


class ConfigError(ValueError):
    """Invalid adapter settings or hyp values; ``field`` is the dotted key inside the section."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


@dataclass
class TrialResult:
    """What one training run measured.

    Attributes:
        metrics: Metrics of the last finished epoch.
        history: Per-epoch metrics, in order.
        epochs_run: Epochs that finished (a pruned trial has fewer than asked).
        train_seconds: Wall time spent in training and validation, excluding set-up.
        peak_memory_mb: Peak CUDA memory allocated, or peak process RSS on CPU (the built-in
            trainer leaves out features that other trials cached and this one did not use).
        n_params_trainable: Parameters that received gradients at the start of training.
        n_params_frozen: Parameters frozen at the start of training.
        extra: Adapter-specific facts (run directory, log tail...), JSON-serialisable.
    """

    metrics: dict[str, float] = field(default_factory=dict)
    history: list[dict[str, float]] = field(default_factory=list)
    epochs_run: int = 0
    train_seconds: float = 0.0
    peak_memory_mb: float | None = None
    n_params_trainable: int | None = None
    n_params_frozen: int | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def add_epoch(self, metrics: Mapping[str, float]) -> None:
        """Append one finished epoch."""
        self.metrics = dict(metrics)
        self.history.append(dict(metrics))
        self.epochs_run = len(self.history)

    def attrs(self) -> dict[str, Any]:
        """Plain facts for the study (Optuna user attrs), without the per-epoch history."""
        out: dict[str, Any] = {
            "epochs_run": self.epochs_run,
            "train_seconds": round(self.train_seconds, 4),
        }
        for key in ("peak_memory_mb", "n_params_trainable", "n_params_frozen"):
            value = getattr(self, key)
            if value is not None:
                out[key] = value
        out.update(self.extra)
        return out


def check_finite(value: float, what: str) -> None:
    """Raise :class:`DivergedError` for NaN or infinite values (a diverged trial stops at once)."""
    if not math.isfinite(value):
        raise DivergedError(f"non-finite {what} ({value})")


class Adapter(ABC):
    """One way of training a model for a trial.

    Subclasses declare what they support as class attributes so that a search space can be
    checked against them before anything trains.

    Attributes:
        name: Registry name used in space files (``trainer.adapter``).
        supported_keys: Hyp keys this adapter can search.
        metrics: Metric names reported every epoch (objective candidates).
        default_metric: Metric used when the space names none, with ``default_direction``.
        export_format: The native hyp file format for this adapter's pipeline.
        seed_setting: The setting that seeds a run (data order, initialisation, augmentation
            draws), or None when the adapter has none; ``tuner confirm`` varies it.
        runtime_settings: Settings that change how a run executes, not what it measures
            (device, loader workers, timeouts; dotted for a key inside a mapping setting): a
            resumed study may change them, while every other setting must stay as its trials
            were run.
    """

    name: ClassVar[str]
    supported_keys: ClassVar[frozenset[str]]
    metrics: ClassVar[tuple[str, ...]]
    default_metric: ClassVar[str]
    default_direction: ClassVar[str] = "maximize"
    export_format: ClassVar[str] = "generic"
    seed_setting: ClassVar[str | None] = None
    runtime_settings: ClassVar[frozenset[str]] = frozenset({"device", "workers"})

    def __init__(self, settings: Mapping[str, Any], cache_dir: Path) -> None:
        """Validate settings.

        Args:
            settings: The space file's ``trainer`` section without ``adapter``.
            cache_dir: A directory the adapter may use for caches shared across studies.

        Raises:
            ConfigError: A setting is missing, of the wrong type or points at nothing.
        """
        self.cache_dir = Path(cache_dir)

    @classmethod
    @abstractmethod
    def default_hyp(cls) -> dict[str, Any]:
        """Every hyp key the adapter reads, with its default value (the single source)."""

    @abstractmethod
    def settings_dict(self) -> dict[str, Any]:
        """The resolved settings (defaults filled in), for the saved config."""

    def trial_epochs(self) -> int | None:
        """The epochs every trial trains, where the adapter itself holds a run to them (None:
        unknown). The tuner never prunes a trial at its last epoch: it trained them all."""
        epochs = self.settings_dict().get("epochs")
        ok = isinstance(epochs, int) and not isinstance(epochs, bool) and epochs > 0
        return epochs if ok else None

    def hyp_keys(self) -> frozenset[str] | None:
        """The hyp keys this adapter reads, which a space's inline ``base`` is checked against
        (None: it passes any key on, e.g. into the pipeline's own hyp file)."""
        return frozenset(self.default_hyp()) | frozenset(self.supported_keys)

    @classmethod
    def hyp_choices(cls) -> dict[str, tuple[Any, ...]]:
        """The values a hyp key with a fixed set of them may take (``optimizer``), checked in
        the space's ``base`` and categorical choices; strings compare case-insensitively.

        Every other key of :meth:`default_hyp` is checked against its default's type: a
        number, an integer, true/false or a string.
        """
        return {}

    def limits(self) -> dict[str, tuple[float, float]]:
        """Inclusive bounds for hyp keys whose valid range depends on the settings.

        The space is checked against them (e.g. ``freeze`` cannot exceed the block count).
        """
        return {}

    def check_space(
        self,
        searched: Mapping[str, Mapping[str, Any]],
        hyp: Mapping[str, Any],
        length_field: str = "trainer.epochs",
    ) -> None:
        """Check the searched keys against the settings and the values every trial starts from.

        For what no range of a single key can say: a searched key that a setting or another
        hyp turns into a no-op, so that its search would tune noise (Ultralytics switches
        mosaic off for the last ``close_mosaic`` epochs: in trials no longer than that, from
        the first).

        Args:
            searched: Each searched key with its space-file form (``type`` and ``low`` /
                ``high``, or ``choices``).
            hyp: The adapter's defaults overridden by the space's ``base``.
            length_field: The space field that set this adapter's length, for messages
                (``search.confirm.epochs`` when the confirmation runs are checked).

        Raises:
            ConfigError: Whose ``field`` is a field of the space file itself (``space.mosaic``,
                ``base.close_mosaic``), not one inside its ``trainer`` section.
        """

    def check_data(self) -> None:
        """Check that data, weights and paths exist; raise :class:`ConfigError` if not.

        Called once before a study starts, so that a typo fails in a second, not an hour in.
        """

    def prepare(self) -> None:
        """One-time, per-process work shared by every trial (decode data, pretrain...)."""

    @abstractmethod
    def run(self, hyp: Mapping[str, Any], reporter: Reporter, trial_dir: Path) -> TrialResult:
        """Train one configuration.

        Args:
            hyp: Every hyp key (defaults < base < sampled values).
            reporter: Called after every epoch; may raise :class:`Pruned`.
            trial_dir: An existing directory for this trial's files.

        Returns:
            The measurements of the finished run.

        Raises:
            Pruned: From the reporter, with ``result`` attached.
            TrialError: The run cannot go on (NaN loss, crashed subprocess...).
        """

    def describe(self) -> str:
        """Human-readable notes (e.g. the block table behind ``freeze``)."""
        return ""


# name -> "module:Class". Modules are imported only when an adapter is asked for, so heavy
# dependencies (ultralytics, torch) never slow down `tuner --help`.
_REGISTRY: dict[str, str] = {
    "torchvision": "trainer.torchvision.adapter:TorchvisionAdapter",
    "ultralytics": "trainer.ultralytics:UltralyticsAdapter",
    "yolov5": "trainer.yolov5:YoloV5Adapter",
    "command": "trainer.command:CommandAdapter",
}


def register_adapter(name: str, target: str) -> None:
    """Register an adapter by dotted path (``"package.module:Class"``)."""
    _REGISTRY[name] = target


def adapter_names() -> list[str]:
    """Registered adapter names, sorted."""
    return sorted(_REGISTRY)


def get_adapter(name: str) -> type[Adapter]:
    """The adapter class registered under ``name``.

    Raises:
        KeyError: No adapter has that name.
    """
    try:
        target = _REGISTRY[name]
    except KeyError:
        raise KeyError(name) from None
    module_name, _, attr = target.partition(":")
    return getattr(importlib.import_module(module_name), attr)
