"""The ``ultralytics`` adapter: trains in-process with ``YOLO(model).train(...)``.

Each trial maps its hyp onto Ultralytics train arguments (``freeze``, lr0, lrf, momentum,
weight_decay, warmup_*, box, cls, dfl, the augmentation gains, close_mosaic) and trains under
``TRIAL_DIR/trial_NNNN`` (``project=TRIAL_DIR, name=trial_NNNN, exist_ok=True, plots=False``).

The freeze strategy:

* ``freeze: N`` is Ultralytics' own: parameters of ``model.0`` .. ``model.N-1`` stop training
  and their BatchNorm layers stay in eval mode (running statistics fixed);
* ``lr_decay`` (layer-wise LR decay): a trainer subclass splits every optimizer parameter group
  per model index, module ``i`` of ``L`` getting ``lr0 * lr_decay ** (L - 1 - i)`` (the Detect
  head keeps lr0); warmup and the lrf schedule then act on each group's own initial lr;
* ``unfreeze_epoch: k`` (> 0): the frozen modules train again from epoch ``k`` (0-based), with
  their BatchNorm layers back in train mode; 0 never unfreezes.

Reporting and stopping: an ``on_train_epoch_end`` callback rejects NaN / infinite training
losses, and ``on_fit_epoch_end`` reports ``mAP50``, ``mAP50-95``, ``fitness``, precision, recall
and the losses once per finished epoch (Ultralytics' extra call for its final validation of
best.pt is not an epoch and is skipped). ``fitness`` is Ultralytics' own ``trainer.fitness``,
the score its best.pt and early stopping go by, as the installed version computes it: for
detection mAP50-95 alone since 8.3.198 (0.1 mAP50 + 0.9 mAP50-95 before, as in YOLOv5). A
:class:`Pruned` raised by the reporter leaves the training loop at once: no further epoch, no
final validation, and the checkpoints keep their optimizer state, so the run is not marked
finished; its data loaders are closed before the signal propagates. ``train_args`` may not
turn per-epoch validation off (``val: false``), set a time limit (``time``) or an early stop
inside the trials (``patience`` below ``epochs``), and a space
may not search mosaic, mixup or copy_paste in trials that ``close_mosaic`` leaves without them
(:meth:`UltralyticsAdapter.check_space`).

Offline and out of ``$HOME``: before the first import of ``ultralytics`` this sets
``YOLO_OFFLINE=true`` and, unless already set, ``YOLO_CONFIG_DIR`` and ``MPLCONFIGDIR`` under
the adapter cache, and a local TrueType font is copied into Ultralytics' config dir as
``Arial.ttf`` / ``Arial.Unicode.ttf``. On CPU ``amp`` is off; on a GPU the AMP self-check
(which downloads yolo26n.pt) is skipped and AMP trusted (set ``amp: false`` to train in FP32).
Integration callbacks (Ray Tune, MLflow, W&B, Comet, ClearML, DVC, TensorBoard, the Ultralytics
platform and usage events) are removed from every trial's trainer: the study is the logger.

Ultralytics 8.4.3 or later: the freeze strategy relies on its trainer keeping frozen BatchNorm
layers in eval mode (``_model_train``, from 8.3.99) and on warmup finding the bias groups by
their ``param_group == "bias"`` tag (from 8.4.3; before, by position, which the per-module
groups of ``lr_decay`` break). ``check_data`` refuses an older one.
"""

from __future__ import annotations

import contextlib
import gc
import importlib.metadata
import importlib.util
import logging
import math
import os
import re
import sys
import time
from collections import defaultdict
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from trainer.base import Adapter, ConfigError, Pruned, Reporter, TrialError, TrialResult
from trainer.memory import RssSampler
from trainer.yolo_common import (
    FREEZE_DEFAULTS,
    ULTRALYTICS_HYP,
    ULTRALYTICS_METRICS,
    SettingsReader,
    as_float,
    check_losses,
    data_yaml_problem,
    early_stop_problem,
    module_table,
    normalise_metrics,
    offline_env,
    provide_fonts,
    synthetic_data,
    synthetic_spec,
    tail,
    yaml_modules,
)

# Train arguments the adapter sets itself (from settings or per trial); not allowed in
# train_args or as hyp keys.
MANAGED_ARGS = (
    "model", "data", "epochs", "imgsz", "batch", "device", "workers", "optimizer", "seed",
    "project", "name", "exist_ok", "plots", "amp", "verbose", "freeze", "resume", "mode", "task",
    "cfg",
)
OPTIMIZERS = ("SGD", "Adam", "Adamax", "AdamW", "NAdam", "RAdam", "RMSProp", "MuSGD", "auto")
# Modules whose callbacks are integrations (loggers, platform, usage events), not training.
_INTEGRATION_MODULES = re.compile(
    r"ultralytics\.(utils\.callbacks\.(?!base$)\w+|utils\.events|hub)"
)
_N_LOG_LINES = 20
# The first release with both things the freeze strategy relies on (see the module docstring).
MIN_VERSION = (8, 4, 3)
# Train arguments that would take per-epoch reporting away: without validation each epoch
# (val: false validates the last only) the reported metrics are stale, and a time limit
# rewrites epochs from the measured epoch time, so a study's trials would differ in length.
# train argument -> (the one value allowed, why)
_REJECTED_TRAIN_ARGS: dict[str, tuple[Any, str]] = {
    "val": (True, "must stay true: with val: false Ultralytics validates the last epoch only, "
                   "so every other epoch would report stale metrics and be pruned on them"),
    "time": (None, "must not be set: a time limit makes Ultralytics recompute epochs from the "
                   "measured epoch time, so trials would train different lengths (the pruner's "
                   "epochs would not compare); set trainer.epochs instead"),
}
# What Ultralytics switches off for the last close_mosaic epochs (its datasets' close_mosaic).
CLOSED_BY_CLOSE_MOSAIC = ("mosaic", "mixup", "copy_paste", "cutmix")
# From 8.4.157 that happens at `epoch >= epochs - close_mosaic`, so from the first epoch when
# close_mosaic >= epochs; before, at `epoch == epochs - close_mosaic` only: from the first
# epoch when they are equal, never when close_mosaic is larger.
_CLOSE_MOSAIC_AT_OR_AFTER = (8, 4, 157)


@dataclass(frozen=True)
class UltralyticsSettings:
    """Resolved settings of the ``ultralytics`` adapter."""

    model: str = "yolov8n.yaml"
    data: str = "synthetic"
    epochs: int = 10
    imgsz: int = 640
    batch: int = 16
    device: str = "auto"
    workers: int = 0
    optimizer: str = "SGD"
    amp: bool = True
    seed: int = 0
    verbose: bool = False
    train_args: dict[str, Any] = field(default_factory=dict)
    synthetic: dict[str, int] = field(default_factory=dict)


# YOLO train arguments that change how a run executes or what it saves, not what it measures
_RUNTIME_TRAIN_ARGS = ("device", "workers", "cache", "plots", "verbose", "save_period",
                       "exist_ok", "project", "name")


class UltralyticsAdapter(Adapter):
    """Trains Ultralytics YOLO models in this process; see the module docstring.

    Attributes:
        extra_callbacks: ``event -> [fn(trainer)]`` added to every trial's model after the
            adapter's own (for tests and custom logging; not a setting).
    """

    name = "ultralytics"
    supported_keys = frozenset(ULTRALYTICS_HYP) | frozenset(FREEZE_DEFAULTS)
    metrics = ULTRALYTICS_METRICS
    default_metric = "fitness"
    default_direction = "maximize"
    export_format = "ultralytics"
    seed_setting = "seed"
    runtime_settings = frozenset(
        {"device", "workers", "verbose", *(f"train_args.{k}" for k in _RUNTIME_TRAIN_ARGS)}
    )

    def __init__(self, settings: Mapping[str, Any], cache_dir: Path) -> None:
        super().__init__(settings, cache_dir)
        reader = SettingsReader(settings, UltralyticsSettings.__dataclass_fields__)
        imgsz = reader.integer("imgsz", 640, minimum=32)
        train_args = reader.mapping("train_args")
        epochs = reader.integer("epochs", 10, minimum=1)
        for key, value in train_args.items():
            if key in MANAGED_ARGS or key in ULTRALYTICS_HYP or key in FREEZE_DEFAULTS:
                raise ConfigError(f"train_args.{key}", "is set by the adapter (a setting or a "
                                                       "hyp key); set it there")
            problem = _rejected_arg(key, value, epochs)
            if problem:
                raise ConfigError(f"train_args.{key}", problem)
        device = reader.string("device", "auto").lower()
        # One device per trial: with several GPUs Ultralytics trains in DDP subprocesses, where
        # the adapter's callbacks (reporting, pruning) do not run.
        if not re.fullmatch(r"auto|cpu|mps|\d+|cuda(:\d+)?", device):
            raise ConfigError("device", f"must be auto, cpu, mps, one GPU index or cuda:N, "
                                        f"got {device!r}")
        optimizer = reader.string("optimizer", "SGD")
        if optimizer.lower() not in {o.lower() for o in OPTIMIZERS}:
            raise ConfigError("optimizer", f"must be one of {', '.join(OPTIMIZERS)}, "
                                           f"got {optimizer!r}")
        self.settings = UltralyticsSettings(
            model=_resolve_model(reader.string("model", "yolov8n.yaml")),
            data=reader.path("data", "synthetic", words=("synthetic",)),
            epochs=epochs,
            imgsz=imgsz,
            batch=reader.integer("batch", 16, minimum=1),
            device=device,
            workers=reader.integer("workers", 0, minimum=0),
            optimizer=optimizer,
            amp=reader.boolean("amp", True),
            seed=reader.integer("seed", 0, minimum=0),
            verbose=reader.boolean("verbose", False),
            train_args=train_args,
            synthetic=synthetic_spec(reader, imgsz),
        )
        self.extra_callbacks: dict[str, list[Callable[[Any], None]]] = defaultdict(list)
        self._modules_cache: list[tuple[int, str]] | None = None

    # -- declarations ---------------------------------------------------------------------

    @classmethod
    def default_hyp(cls) -> dict[str, Any]:
        """Ultralytics' default.yaml values of the searchable keys, plus the freeze strategy."""
        return {**ULTRALYTICS_HYP, **FREEZE_DEFAULTS}

    def settings_dict(self) -> dict[str, Any]:
        return asdict(self.settings)

    def modules(self) -> list[tuple[int, str]] | None:
        """``(index, type)`` of the model's top-level modules (what ``freeze`` counts)."""
        if self._modules_cache is None:
            model = self.settings.model
            if model.endswith((".yaml", ".yml")):
                path = _shipped_yaml(model) if not Path(model).is_file() else Path(model)
                self._modules_cache = yaml_modules(path) if path else None
            elif Path(model).is_file():
                import_ultralytics(self.cache_dir)
                from ultralytics import YOLO

                net = YOLO(model).model
                self._modules_cache = [(i, type(m).__name__) for i, m in enumerate(net.model)]
        return self._modules_cache

    def limits(self) -> dict[str, tuple[float, float]]:
        """``freeze`` up to the last module (the head must train); ``unfreeze_epoch`` up to
        ``epochs - 1`` (0-based: ``epochs`` would never unfreeze, the schedule of 0)."""
        out: dict[str, tuple[float, float]] = {"unfreeze_epoch": (0, self.settings.epochs - 1)}
        modules = self.modules()
        if modules:
            out["freeze"] = (0, len(modules) - 1)
        return out

    def describe(self) -> str:
        lines = [
            f"ultralytics: YOLO({self.settings.model}).train(...) in this process",
            "freeze N: modules model.0 .. model.N-1 get no gradient and their BatchNorm layers "
            "stay in eval mode; the last module (Detect) must stay trainable.",
            "lr_decay d: module i of L trains at lr0 * d ** (L - 1 - i) (the head at lr0).",
            "unfreeze_epoch k > 0: frozen modules train again from epoch k (0-based).",
        ]
        modules = self.modules()
        if modules:
            lines.append(f"modules of this model ({len(modules)}):")
            lines.append(module_table(modules, f"  (module {len(modules) - 1} is the head)"))
        return "\n".join(lines)

    # -- checks ---------------------------------------------------------------------------

    def check_space(
        self,
        searched: Mapping[str, Mapping[str, Any]],
        hyp: Mapping[str, Any],
        length_field: str = "trainer.epochs",
    ) -> None:
        """A searched mosaic, mixup, copy_paste or cutmix must be on in the trials' epochs, and
        a base hyp must not set ``val: false`` or ``time`` (as in ``train_args``).

        Ultralytics switches them off for the last ``close_mosaic`` epochs (default 10): in
        trials no longer than that, from the first epoch (see :func:`mosaic_closed_at_start`),
        so every trial would train without them and their search would rank noise.
        """
        for key in (*_REJECTED_TRAIN_ARGS, "patience"):  # a base hyp passes them on too
            if key in hyp:
                problem = _rejected_arg(key, hyp[key], self.settings.epochs)
                if problem:
                    raise ConfigError(f"base.{key}", problem)
        closed = [key for key in CLOSED_BY_CLOSE_MOSAIC if key in searched]
        if not closed:
            return
        epochs = self.settings.epochs
        at_or_after = _close_mosaic_at_or_after()
        keeps = f"0 keeps {_and(CLOSED_BY_CLOSE_MOSAIC)} on in every epoch"
        spec = searched.get("close_mosaic")
        if spec is not None:
            values = _candidates(spec, epochs)
            bad = [v for v in values if mosaic_closed_at_start(v, epochs, at_or_after)]
            if bad:
                raise ConfigError(
                    "space.close_mosaic",
                    f"close_mosaic {_number_text(bad[0])} switches the searched "
                    f"{_and(closed)} off from the first of the trials' {epochs} epochs "
                    f"(Ultralytics turns them off for the last close_mosaic epochs), so those "
                    f"trials would train without them: search close_mosaic below "
                    f"{length_field} ({epochs}; {keeps})",
                )
            return
        value = hyp.get("close_mosaic", ULTRALYTICS_HYP["close_mosaic"])
        if not mosaic_closed_at_start(value, epochs, at_or_after):
            return
        origin = "the default" if value == ULTRALYTICS_HYP["close_mosaic"] else "base"
        raise ConfigError(
            f"space.{closed[0]}",
            f"Ultralytics turns {_and(CLOSED_BY_CLOSE_MOSAIC)} off for the last "
            f"close_mosaic epochs, and close_mosaic {_number_text(value)} ({origin}) "
            f"{'>=' if at_or_after else '='} {length_field} ({epochs}) means from the first: "
            f"every trial would train without {_and(closed)}, so the search would tune "
            f"noise; set base close_mosaic below {length_field} ({epochs}); {keeps}",
        )

    def check_data(self) -> None:
        s = self.settings
        if importlib.util.find_spec("ultralytics") is None:
            raise ConfigError("adapter", "the ultralytics package is not installed "
                                         "(pip install -e '.[yolo]')")
        version = installed_version()
        if version is not None and version < MIN_VERSION:
            need = ".".join(map(str, MIN_VERSION))
            raise ConfigError(
                "adapter",
                f"ultralytics {'.'.join(map(str, version))} is older than {need}, the first "
                "release whose trainer keeps frozen BatchNorm layers in eval mode and tags "
                "the warmup's bias parameter groups, which freeze and lr_decay rely on; "
                f"pip install 'ultralytics>={need}'",
            )
        if s.data != "synthetic" and not Path(s.data).is_file():
            raise ConfigError("data", f"no such dataset YAML: {s.data} (nothing is downloaded "
                                      "here; use a local data YAML or data: synthetic)")
        if s.data != "synthetic":
            problem = data_yaml_problem(Path(s.data))
            if problem:
                raise ConfigError("data", problem)
        if s.model.endswith((".yaml", ".yml")):
            if not Path(s.model).is_file() and _shipped_yaml(s.model) is None:
                raise ConfigError("model", f"no such model yaml: {s.model}")
        elif not Path(s.model).is_file():
            raise ConfigError(
                "model",
                f"{s.model!r} is not a local file and nothing is downloaded here; download the "
                "weights once and give their path, or use a model yaml (e.g. yolov8n.yaml) to "
                "train from scratch",
            )
        if s.train_args:
            import_ultralytics(self.cache_dir)
            from ultralytics.cfg import DEFAULT_CFG_DICT

            for key in s.train_args:
                if key not in DEFAULT_CFG_DICT:
                    raise ConfigError(f"train_args.{key}", "is not an Ultralytics train argument")

    def hyp_keys(self) -> frozenset[str] | None:
        """The freeze keys and every train argument the adapter can pass on to YOLO."""
        import_ultralytics(self.cache_dir)
        from ultralytics.cfg import DEFAULT_CFG_DICT

        passed_on = set(DEFAULT_CFG_DICT) - set(MANAGED_ARGS)
        return frozenset(passed_on | set(FREEZE_DEFAULTS) | set(self.supported_keys))

    def prepare(self) -> None:
        """Import Ultralytics offline and generate the synthetic set if used."""
        import_ultralytics(self.cache_dir)
        self._data()

    def _data(self) -> str:
        s = self.settings
        if s.data == "synthetic":
            return str(synthetic_data(self.cache_dir, s.synthetic))
        return s.data

    # -- running --------------------------------------------------------------------------

    def train_args(self, hyp: Mapping[str, Any], trial_dir: Path) -> dict[str, Any]:
        """The keyword arguments of ``YOLO.train`` for one trial (without ``trainer``)."""
        from ultralytics.cfg import DEFAULT_CFG_DICT

        s = self.settings
        device = _device(s.device)
        args: dict[str, Any] = {
            "data": self._data(),
            "epochs": s.epochs,
            "imgsz": s.imgsz,
            "batch": s.batch,
            "device": device,
            "workers": s.workers,
            "optimizer": s.optimizer,
            "seed": s.seed,
            "project": str(trial_dir),
            "name": run_name(trial_dir),
            "exist_ok": True,
            "plots": False,
            # AMP has no use on CPU, and its self-check would download weights.
            "amp": s.amp and device not in ("cpu", "mps"),
            "verbose": s.verbose,
            **s.train_args,
        }
        for key, value in hyp.items():
            if key in FREEZE_DEFAULTS:
                continue
            if key in MANAGED_ARGS or key not in DEFAULT_CFG_DICT:
                raise TrialError(f"hyp key {key!r} is not an Ultralytics train argument the "
                                 "adapter can pass on; remove it from the base hyp")
            problem = _rejected_arg(key, value, s.epochs)
            if problem:
                raise TrialError(f"hyp key {key}: {problem}")
            args[key] = _plain(value)
        args["freeze"] = _int_hyp(hyp, "freeze")
        if "close_mosaic" in args:
            args["close_mosaic"] = _int_hyp(hyp, "close_mosaic")
        return args

    def run(self, hyp: Mapping[str, Any], reporter: Reporter, trial_dir: Path) -> TrialResult:
        import_ultralytics(self.cache_dir)
        from ultralytics import YOLO

        trial_dir = Path(trial_dir).absolute()
        hyp = {**self.default_hyp(), **hyp}
        args = self.train_args(hyp, trial_dir)
        lr_decay = float(hyp["lr_decay"])
        if not (math.isfinite(lr_decay) and lr_decay > 0):
            raise TrialError(f"lr_decay must be > 0, got {lr_decay}")
        run_dir = trial_dir / args["name"]
        log = trial_dir / "train.log"
        result = TrialResult(extra={"run_dir": str(run_dir), "log": str(log)})
        state = _TrialState(reporter, result, _int_hyp(hyp, "unfreeze_epoch"))
        model = YOLO(self.settings.model)
        for event, fn in state.callbacks().items():
            model.add_callback(event, fn)
        for event, fns in self.extra_callbacks.items():
            for fn in fns:
                model.add_callback(event, fn)
        trainer_cls = _trainer_class(model.task_map[model.task]["trainer"], lr_decay)
        try:
            with _capture_output(log, self.settings.verbose):
                model.train(trainer=trainer_cls, **args)
        except Pruned as exc:
            state.finish()
            exc.result = result
            raise
        except TrialError as exc:
            state.finish()
            exc.result = exc.result or result
            raise
        except Exception as exc:  # a crash inside Ultralytics: a failed trial, not a bug here
            state.finish()
            raise TrialError(
                f"{type(exc).__name__}: {exc}; last lines of {log}:\n{tail(log, _N_LOG_LINES)}",
                result,
            ) from exc
        finally:
            _release(model)
        state.finish()
        if result.epochs_run == 0:
            raise TrialError(f"no epoch finished; last lines of {log}:\n{tail(log, _N_LOG_LINES)}",
                             result)
        return result


def run_name(trial_dir: Path) -> str:
    """The run folder name under ``project=TRIAL_DIR``."""
    return f"trial_{Path(trial_dir).name}"


class _TrialState:
    """The callbacks of one trial and what they measured."""

    def __init__(self, reporter: Reporter, result: TrialResult, unfreeze_epoch: int) -> None:
        self.reporter = reporter
        self.result = result
        self.unfreeze_epoch = unfreeze_epoch
        self.unfrozen = False
        self.pending = False  # an epoch finished training and awaits its validation
        self.started: float | None = None
        self.cuda_device: Any = None
        self.rss: RssSampler | None = None  # on CPU: this trial's peak, not the process's

    def callbacks(self) -> dict[str, Callable[[Any], None]]:
        return {
            "on_pretrain_routine_start": self.on_pretrain_routine_start,
            "on_train_start": self.on_train_start,
            "on_train_epoch_start": self.on_train_epoch_start,
            "on_train_epoch_end": self.on_train_epoch_end,
            "on_fit_epoch_end": self.on_fit_epoch_end,
        }

    def on_pretrain_routine_start(self, trainer: Any) -> None:
        # Runs first among this event's callbacks: integrations were appended after ours, so
        # filtering the lists in place also skips them for the event being run now.
        for fns in trainer.callbacks.values():
            fns[:] = [fn for fn in fns
                      if not _INTEGRATION_MODULES.match(getattr(fn, "__module__", "") or "")]

    def on_train_start(self, trainer: Any) -> None:
        import torch

        n_trainable = n_frozen = 0
        for param in trainer.model.parameters():
            if param.requires_grad:
                n_trainable += param.numel()
            else:
                n_frozen += param.numel()
        self.result.n_params_trainable = n_trainable
        self.result.n_params_frozen = n_frozen
        if trainer.device.type == "cuda":
            self.cuda_device = trainer.device
            torch.cuda.reset_peak_memory_stats(trainer.device)
        else:
            self.rss = RssSampler()
            self.rss.start()
        self.started = time.perf_counter()

    def on_train_epoch_start(self, trainer: Any) -> None:
        if self.unfreeze_epoch > 0 and trainer.epoch >= self.unfreeze_epoch and not self.unfrozen:
            always = [".dfl"]  # Ultralytics keeps the DFL projection frozen in every run
            for name, param in trainer.model.named_parameters():
                if param.dtype.is_floating_point and not any(a in name for a in always):
                    param.requires_grad = True
            # _model_train(), called right after this, keeps BatchNorm in eval mode only for
            # these names: the unfrozen modules train their statistics again.
            if hasattr(trainer, "freeze_layer_names"):
                trainer.freeze_layer_names = [n for n in trainer.freeze_layer_names if n in always]
            self.unfrozen = True

    def on_train_epoch_end(self, trainer: Any) -> None:
        self.pending = True
        check_losses(normalise_metrics(_train_losses(trainer)), trainer.epoch)

    def on_fit_epoch_end(self, trainer: Any) -> None:
        if not self.pending:  # Ultralytics' final validation of best.pt, not an epoch
            return
        self.pending = False
        raw = {**_train_losses(trainer), **(trainer.metrics or {})}
        metrics = normalise_metrics(raw)
        # Ultralytics' own score, what its best.pt and early stopping go by, exactly as the
        # installed version computes it (its weights changed in 8.3.198; segmentation and pose
        # add the masks' or keypoints' score), not one recomputed from the columns.
        own = as_float(getattr(trainer, "fitness", None))
        if own is not None:
            metrics["fitness"] = own
        epoch = int(trainer.epoch)
        check_losses(metrics, epoch, also=("fitness",))
        self.result.add_epoch(metrics)
        self.measure()
        self.reporter.report(epoch, metrics)

    def measure(self) -> None:
        if self.started is not None:
            self.result.train_seconds = time.perf_counter() - self.started
        if self.cuda_device is not None:
            import torch

            peak = torch.cuda.max_memory_allocated(self.cuda_device) / 2**20
            self.result.peak_memory_mb = round(peak, 1)
        elif self.rss is not None:
            self.result.peak_memory_mb = self.rss.peak_mb()

    def finish(self) -> None:
        self.measure()
        if self.rss is not None:
            self.rss.stop()
            self.rss = None


def _train_losses(trainer: Any) -> dict[str, Any]:
    """The epoch's mean training losses as ``train/<name>`` ({} before the first batch)."""
    if getattr(trainer, "tloss", None) is None:
        return {}
    losses = trainer.label_loss_items(trainer.tloss, prefix="train")
    return dict(losses) if isinstance(losses, Mapping) else {}


def _trainer_class(base: type, lr_decay: float) -> type:
    """The task's trainer with layer-wise LR decay and no AMP self-check download."""

    class FreezeStrategyTrainer(base):  # type: ignore[misc, valid-type]
        """Ultralytics trainer with per-module parameter groups (``lr_decay``)."""

        def build_optimizer(self, model: Any, *args: Any, **kwargs: Any) -> Any:
            optimizer = super().build_optimizer(model, *args, **kwargs)
            if lr_decay != 1.0:
                apply_layer_decay(optimizer, model, lr_decay)
            return optimizer

        def preprocess_batch(self, batch: Any) -> Any:
            # Runs right after Ultralytics' warmup step set this batch's learning rates
            if lr_decay != 1.0:
                decay_bias_warmup(self.optimizer, self.args.warmup_bias_lr, self.lf(self.epoch))
            return super().preprocess_batch(batch)

        def _setup_train(self, *args: Any, **kwargs: Any) -> Any:
            import ultralytics.engine.trainer as engine

            # check_amp downloads yolo26n.pt to compare FP32 and AMP outputs; trust AMP instead.
            original = getattr(engine, "check_amp", None)
            if original is not None:
                engine.check_amp = _amp_without_download
            try:
                return super()._setup_train(*args, **kwargs)
            finally:
                if original is not None:
                    engine.check_amp = original

    FreezeStrategyTrainer.__name__ = f"FreezeStrategy{base.__name__}"
    return FreezeStrategyTrainer


def _amp_without_download(model: Any) -> bool:
    device = next(model.parameters()).device
    return device.type not in ("cpu", "mps")


def apply_layer_decay(optimizer: Any, model: Any, lr_decay: float) -> None:
    """Split every parameter group of ``optimizer`` per model index and scale its lr.

    Module ``i`` of ``L`` (``model.model[i]``) gets ``lr * lr_decay ** (L - 1 - i)``; every
    other option of the group (weight decay, momentum, Ultralytics' ``param_group`` tag used by
    warmup) is kept. Each new group records ``module_index``. Must run before the scheduler is
    built (it reads each group's lr as its ``initial_lr``).
    """
    from ultralytics.utils.torch_utils import unwrap_model

    net = unwrap_model(model)
    n_modules = len(net.model)
    index_of: dict[int, int] = {}
    for name, param in net.named_parameters():
        match = re.match(r"model\.(\d+)\.", name)
        index_of[id(param)] = int(match.group(1)) if match else n_modules - 1
    groups = []
    for group in optimizer.param_groups:
        by_index: dict[int, list[Any]] = defaultdict(list)
        for param in group["params"]:
            by_index[index_of.get(id(param), n_modules - 1)].append(param)
        for index in sorted(by_index):
            new = {key: value for key, value in group.items() if key != "params"}
            new["params"] = by_index[index]
            new["lr"] = group["lr"] * lr_decay ** (n_modules - 1 - index)
            new["module_index"] = index
            new["decay_scale"] = lr_decay ** (n_modules - 1 - index)  # decay_bias_warmup
            groups.append(new)
    optimizer.param_groups.clear()
    for group in groups:
        optimizer.add_param_group(group)


def decay_bias_warmup(optimizer: Any, warmup_bias_lr: float, factor: float) -> None:
    """Start each bias group's warmup at ``warmup_bias_lr`` times its layer's decay.

    Ultralytics' warmup moves every bias group from the one ``warmup_bias_lr`` (0.1) to its
    target, so a module far from the head would start about a thousand times above its
    decayed lr (yolov8n, lr_decay 0.8). The built-in trainer scales that start by the decay;
    this does the same for Ultralytics: it reads how far Ultralytics' interpolation has gone
    (``t`` from its lr) and puts the group at the same point between the decayed start and
    the target. Outside warmup a group sits at its target, ``t`` is 1 and nothing changes.

    Args:
        optimizer: Groups split by :func:`apply_layer_decay` (``module_index``,
            ``decay_scale``).
        warmup_bias_lr: Ultralytics' (undecayed) start for bias groups.
        factor: The scheduler's factor of this epoch (the target is ``initial_lr * factor``).
    """
    for group in optimizer.param_groups:
        scale = group.get("decay_scale", 1.0)
        if group.get("param_group") != "bias" or scale == 1.0:
            continue
        target = group["initial_lr"] * factor
        span = target - warmup_bias_lr
        t = 1.0 if abs(span) < 1e-12 else (group["lr"] - warmup_bias_lr) / span
        t = min(max(t, 0.0), 1.0)
        start = warmup_bias_lr * scale
        group["lr"] = start + t * (target - start)


# -- process-wide set-up ----------------------------------------------------------------------


def import_ultralytics(cache_dir: Path) -> Any:
    """Import ``ultralytics`` offline, with its config dir under ``cache_dir`` when first imported.

    Raises:
        TrialError: Ultralytics is not installed, or no local font can be provided.
    """
    os.environ["YOLO_OFFLINE"] = "true"  # read at import and by every download helper
    if "ultralytics" not in sys.modules:
        env = offline_env(cache_dir)
        for key in ("YOLO_CONFIG_DIR", "MPLCONFIGDIR"):
            os.environ.setdefault(key, env[key])
    try:
        import ultralytics
        from ultralytics.utils import USER_CONFIG_DIR
    except ImportError as exc:
        raise TrialError(f"ultralytics is not installed ({exc}); pip install -e '.[yolo]'") \
            from None
    # Wherever the config dir is, the dataset check looks for Arial.ttf there.
    provide_fonts(Path(USER_CONFIG_DIR))
    return ultralytics


@contextlib.contextmanager
def _capture_output(log_path: Path, verbose: bool) -> Iterator[None]:
    """Send Ultralytics' log (and, unless verbose, its console output) to ``log_path``."""
    logger = logging.getLogger("ultralytics")
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "a", buffering=1, errors="replace") as stream:
        handler = logging.StreamHandler(stream)
        handler.setFormatter(logging.Formatter("%(message)s"))
        if verbose:
            logger.addHandler(handler)
            try:
                yield
            finally:
                logger.removeHandler(handler)
            return
        # Quiet: the console handlers write into the log instead, and so do progress bars and
        # warnings (stdout / stderr), so a study's terminal shows the study's progress only.
        consoles = [h for h in logger.handlers if isinstance(h, logging.StreamHandler)
                    and not isinstance(h, logging.FileHandler)]
        previous = [h.setStream(stream) for h in consoles]
        try:
            with contextlib.redirect_stdout(stream), contextlib.redirect_stderr(stream):
                yield
        finally:
            for h, old in zip(consoles, previous):
                h.setStream(old)


def _release(model: Any) -> None:
    """Close a finished or stopped trial's data loaders and drop its trainer."""
    trainer = getattr(model, "trainer", None)
    if trainer is not None:
        for name in ("train_loader", "test_loader"):
            loader = getattr(trainer, name, None)
            if loader is not None and hasattr(loader, "close"):
                with contextlib.suppress(Exception):
                    loader.close()
        model.trainer = None
    gc.collect()
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_available():
        torch.cuda.empty_cache()


# -- helpers ----------------------------------------------------------------------------------


def _device(device: str) -> str:
    if device != "auto":
        return device.removeprefix("cuda:") if device.startswith("cuda:") else device
    import torch

    return "0" if torch.cuda.is_available() else "cpu"


def _rejected_arg(key: str, value: Any, epochs: int) -> str | None:
    """Why the train argument ``key`` may not be ``value`` in runs of ``epochs`` (None when it
    may)."""
    if key == "patience":
        return early_stop_problem(value, epochs)
    if key not in _REJECTED_TRAIN_ARGS:
        return None
    allowed, why = _REJECTED_TRAIN_ARGS[key]
    return None if value is allowed else f"{why}, got {value!r}"


def installed_version() -> tuple[int, ...] | None:
    """The installed Ultralytics release as numbers (``(8, 4, 190)``), None when unknown.

    Read from the package metadata, so nothing is imported.
    """
    try:
        text = importlib.metadata.version("ultralytics")
    except importlib.metadata.PackageNotFoundError:
        return None
    numbers = re.match(r"\d+(?:\.\d+)*", text)
    return tuple(int(n) for n in numbers.group(0).split(".")) if numbers else None


def _close_mosaic_at_or_after() -> bool:
    # unknown (not installed yet): the rule of the releases installed now
    version = installed_version()
    return version is None or version >= _CLOSE_MOSAIC_AT_OR_AFTER


def mosaic_closed_at_start(close_mosaic: Any, epochs: int, at_or_after: bool = True) -> bool:
    """Whether Ultralytics switches mosaic (mixup, copy_paste, cutmix) off from epoch 0.

    Args:
        close_mosaic: The train argument (0 never switches them off).
        epochs: The run's epochs.
        at_or_after: The rule from 8.4.157 (``epoch >= epochs - close_mosaic``); False for
            the earlier ``epoch == epochs - close_mosaic``.
    """
    if isinstance(close_mosaic, bool) or not isinstance(close_mosaic, int | float) \
            or close_mosaic <= 0:
        return False
    return close_mosaic >= epochs if at_or_after else int(close_mosaic) == epochs


def _candidates(spec: Mapping[str, Any], epochs: int) -> list[Any]:
    """Values of a searched ``close_mosaic`` to test: its choices, or its ends and ``epochs``
    where the range holds it (the one value the earlier ``==`` rule closes at)."""
    if spec.get("type") == "categorical":
        return list(spec.get("choices") or ())
    low, high = spec.get("low"), spec.get("high")
    inside = [epochs] if low is not None and high is not None and low <= epochs <= high else []
    return [v for v in (low, high) if v is not None] + inside


def _and(words: Sequence[str]) -> str:
    """``a``, ``a and b``, ``a, b and c``."""
    return words[0] if len(words) == 1 else f"{', '.join(words[:-1])} and {words[-1]}"


def _number_text(value: Any) -> str:
    return str(int(value)) if isinstance(value, float) and value.is_integer() else str(value)


def _int_hyp(hyp: Mapping[str, Any], key: str) -> int:
    value = hyp.get(key, 0)
    if isinstance(value, bool) or not float(value).is_integer() or value < 0:
        raise TrialError(f"{key} must be a non-negative integer, got {value!r}")
    return int(value)


def _plain(value: Any) -> Any:
    if hasattr(value, "item") and callable(value.item):
        return value.item()
    return value


def _ultralytics_root() -> Path | None:
    spec = importlib.util.find_spec("ultralytics")  # finds the package without importing it
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))


def _shipped_yaml(name: str) -> Path | None:
    """A model yaml shipped with Ultralytics (``yolov8n.yaml`` is ``yolov8.yaml`` at scale n)."""
    root = _ultralytics_root()
    if root is None:
        return None
    stem = Path(name).name
    unified = re.sub(r"(\d+)([nslmx])(.+)?$", r"\1\3", Path(stem).stem) + Path(stem).suffix
    for candidate in (stem, unified):
        matches = sorted((root / "cfg" / "models").rglob(candidate))
        if matches:
            return matches[0]
    return None


def _resolve_model(model: str) -> str:
    """A local file made absolute; a bare shipped yaml or weights name kept as given."""
    path = Path(model).expanduser()
    if path.is_file():
        return str(path.absolute())
    return model
