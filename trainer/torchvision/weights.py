"""Where a trial's starting weights come from; nothing is ever downloaded.

``weights`` is one of

* ``pretrain``: a backbone trained here on the synthetic SOURCE task, once, then cached under
  ``cache_dir`` as ``torchvision/pretrain-<model>-<imgsz>px-<hash>.pt`` (the hash covers the
  model, the pretrain settings, the image size, the generator version, the code of the
  pretraining recipe and the torch version, so no edit or upgrade reads a stale checkpoint;
  not the CPU model, whose float kernels may pretrain slightly different weights);
* ``none``: random initialisation;
* a torchvision weights name (``DEFAULT``, ``IMAGENET1K_V1``...) whose file already sits in
  ``torch.hub.get_dir()/checkpoints/``;
* a checkpoint path: a state_dict, or ``{"model": state_dict}`` (what ``__main__`` saves).

Head keys whose shape does not fit the target class count are dropped (the head is then
freshly initialised); the source task's head is always dropped, its classes mean nothing for
the target task.
"""

from __future__ import annotations

import ast
import functools
import hashlib
import json
import logging
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict
from pathlib import Path
from urllib.parse import urlparse

import torch

from trainer.base import NullReporter
from trainer.torchvision import data, loop, synthetic
from trainer.torchvision.blocks import BlockModel, build_model, final_linear
from trainer.torchvision.settings import DEFAULT_HYP, SPECIAL_WEIGHTS, WEIGHTS_NAME, Settings

log = logging.getLogger(__name__)

# Bump when the checkpoint layout changes: part of the cache key. 3: the loop's steps hold at
# most `batch` images (4638fa2); a checkpoint pretrained before that holds other weights, and a
# stale cache silently gave other results than a fresh machine (the demo's baseline 0.703
# instead of 0.713).
PRETRAIN_FORMAT = 3
# The modules whose code decides the pretrained weights: the loop and all it calls, the source
# data, the model and the recipe in this file. Their code (not comments or docstrings) is part
# of the cache key, so a change of the recipe never depends on someone bumping PRETRAIN_FORMAT,
# which is how 4638fa2's went unnoticed.
RECIPE_MODULES = (
    "augment", "blocks", "data", "features", "freeze", "loop", "optim", "settings",
    "synthetic", "weights",
)
# The source task's own validation images, for the accuracy recorded with the checkpoint.
N_SOURCE_VAL = 500


def kind(weights: str) -> str:
    """``"pretrain"``, ``"none"``, ``"name"`` (torchvision weights) or ``"path"``."""
    if weights in SPECIAL_WEIGHTS:
        return weights
    return "name" if WEIGHTS_NAME.fullmatch(weights) else "path"


def torchvision_weights_file(model: str, name: str) -> Path:
    """Where torch.hub keeps the file of torchvision weights ``name`` for ``model``.

    Raises:
        ValueError: ``name`` is not a weights name of ``model``.
    """
    import torchvision.models

    enum = torchvision.models.get_model_weights(model)
    short = name.rsplit(".", 1)[-1]
    choices = ["DEFAULT", *(w.name for w in enum)]
    if short not in choices:
        raise ValueError(
            f"{name!r} is not a torchvision weights name for {model} ({', '.join(choices)}), "
            "nor pretrain, none or an existing checkpoint path"
        )
    spec = enum.DEFAULT if short == "DEFAULT" else enum[short]
    filename = os.path.basename(urlparse(spec.url).path)
    return Path(torch.hub.get_dir()) / "checkpoints" / filename


def weights_problem(settings: Settings) -> str | None:
    """Why ``settings.weights`` cannot be loaded, or None. Cheap: reads no file."""
    weights = settings.weights
    if kind(weights) == "name":
        try:
            path = torchvision_weights_file(settings.model, weights)
        except ValueError as exc:
            return str(exc)
        if not path.is_file():
            return (
                f"torchvision weights {weights} for {settings.model} are not cached: looked for "
                f"{path} and nothing is downloaded; copy the file there, or use pretrain, none "
                "or a checkpoint path"
            )
    elif kind(weights) == "path" and not Path(weights).is_file():
        return (
            f"no such checkpoint file: {weights} (use pretrain, none, a torchvision weights "
            "name such as DEFAULT, or the path of a state_dict)"
        )
    return None


def initial_state(
    settings: Settings, cache_dir: Path, device: torch.device | None = None
) -> tuple[dict | None, bool]:
    """The state_dict a trial starts from and whether its head must be dropped.

    Pretrains first (on ``device``) when ``weights: pretrain`` has no cached checkpoint yet.

    Returns:
        ``(state_dict or None for random init, drop_head)``.
    """
    match kind(settings.weights):
        case "none":
            return None, False
        case "pretrain":
            return _read_cached(ensure_pretrained(settings, cache_dir, device)), True
        case "name":
            return _read_cached(torchvision_weights_file(settings.model, settings.weights)), False
        case _:
            return _read_cached(Path(settings.weights)), False


def read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """Load a state_dict, or the ``"model"`` entry of a checkpoint, on the CPU.

    ``net.`` (a saved :class:`BlockModel`) and ``module.`` (DataParallel) prefixes are removed.
    """
    state = torch.load(path, map_location="cpu", weights_only=True)
    if isinstance(state, dict) and isinstance(state.get("model"), dict):
        state = state["model"]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ValueError(f"{path}: not a state_dict nor a {{'model': state_dict}} checkpoint")
    for prefix in ("module.", "net."):
        if state and all(key.startswith(prefix) for key in state):
            state = {key[len(prefix) :]: value for key, value in state.items()}
    return state


def load_weights(model: BlockModel, state: dict[str, torch.Tensor], drop_head: bool) -> list[str]:
    """Load ``state`` into ``model.net``; returns the head keys left out.

    Raises:
        ValueError: The state does not fit the architecture outside the final Linear.
    """
    target = model.net.state_dict()
    head = final_linear(model)
    head_prefix = next(name for name, module in model.net.named_modules() if module is head)
    head_keys = {f"{head_prefix}.weight", f"{head_prefix}.bias"}
    kept, dropped = {}, []
    for key, value in state.items():
        if key in head_keys and (drop_head or value.shape != target[key].shape):
            dropped.append(key)
        else:
            kept[key] = value
    # old checkpoints lack the BatchNorm counters, which is harmless
    missing = [
        k
        for k in target
        if k not in kept and k not in head_keys and not k.endswith("num_batches_tracked")
    ]
    unexpected = [k for k in kept if k not in target]
    wrong = [k for k in kept if k in target and kept[k].shape != target[k].shape]
    if missing or unexpected or wrong:
        details = "; ".join(
            f"{label}: {', '.join(keys[:3])}{'...' if len(keys) > 3 else ''}"
            for label, keys in (
                ("missing", missing),
                ("unexpected", unexpected),
                ("wrong shape", wrong),
            )
            if keys
        )
        raise ValueError(f"checkpoint does not fit this model ({details})")
    model.net.load_state_dict(kept, strict=False)
    return dropped


def code_fingerprint(source: str) -> str:
    """A digest of Python ``source`` that ignores comments, docstrings and layout."""
    tree = ast.parse(source)
    for node in ast.walk(tree):
        body = getattr(node, "body", None)
        if (
            isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef)
            and body
            and isinstance(body[0], ast.Expr)
            and isinstance(body[0].value, ast.Constant)
            and isinstance(body[0].value.value, str)
        ):
            node.body = body[1:] or [ast.Pass()]
    return hashlib.sha256(ast.dump(tree).encode()).hexdigest()


@functools.cache
def recipe_fingerprint() -> str:
    """The digest of :data:`RECIPE_MODULES`' code; read once per process."""
    package = Path(__file__).parent
    digests = [
        code_fingerprint((package / f"{name}.py").read_text(encoding="utf-8"))
        for name in RECIPE_MODULES
    ]
    return hashlib.sha256("".join(digests).encode()).hexdigest()


def pretrain_file(settings: Settings, cache_dir: Path) -> Path:
    """The cache path of the pretrained checkpoint for these settings."""
    key = {
        "format": PRETRAIN_FORMAT,
        "generator": synthetic.GENERATOR_VERSION,
        "recipe": recipe_fingerprint(),
        # Kernels change between releases: another torch pretrains other weights.
        "torch": torch.__version__,
        "model": settings.model,
        "imgsz": settings.imgsz,
        "pretrain": asdict(settings.pretrain),
    }
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:12]
    name = f"pretrain-{settings.model}-{settings.imgsz}px-{digest}.pt"
    return Path(cache_dir) / "torchvision" / name


def ensure_pretrained(
    settings: Settings, cache_dir: Path, device: torch.device | None = None
) -> Path:
    """Pretrain on the source task unless the checkpoint is cached; returns its path.

    Concurrent processes wait on a lock file instead of pretraining twice; the checkpoint is
    written to a temporary file and renamed, so nobody ever reads half a file.
    """
    path = pretrain_file(settings, cache_dir)
    if path.is_file():
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    with _file_lock(path.with_name(path.name + ".lock")):
        if path.is_file():  # another process finished it while we waited
            return path
        state, meta = pretrain(settings, device or torch.device("cpu"))
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        torch.save({"model": state, "meta": meta}, tmp)
        os.replace(tmp, path)
    log.info("pretrained %s in %.1f s: %s", settings.model, meta["seconds"], path)
    return path


def pretrain(settings: Settings, device: torch.device) -> tuple[dict[str, torch.Tensor], dict]:
    """Train ``settings.model`` from scratch on the synthetic source task.

    Returns:
        The CPU state_dict (torchvision keys) and facts about the run.
    """
    spec = settings.pretrain
    start = time.perf_counter()
    train_set = data.load_synthetic(
        "source", spec.n_classes, spec.n_train, settings.imgsz, spec.seed
    )
    val_set = data.load_synthetic(
        "source", spec.n_classes, N_SOURCE_VAL, settings.imgsz, spec.seed + 1
    )
    torch.manual_seed(spec.seed)
    model = build_model(settings.model, spec.n_classes).to(device)
    # A plain recipe: the pretrain lr, a short warmup, a cosine decay and flips only. The
    # default colour/affine augmentation slows learning so much at 32 px that eight epochs left
    # the source task near chance (features that transfer nothing).
    hyp = {
        **DEFAULT_HYP, "lr0": spec.lr, "warmup_epochs": 0.5, "cos_lr": True,
        "hsv_h": 0.0, "hsv_s": 0.0, "hsv_v": 0.0, "translate": 0.0, "scale": 0.0,
    }
    config = loop.LoopConfig(epochs=spec.epochs, batch=spec.batch, device=device, seed=spec.seed)
    log.info(
        "pretraining %s on the synthetic source task (%d images, %d epochs)",
        settings.model,
        spec.n_train,
        spec.epochs,
    )
    loop.train(model, train_set, None, hyp, config, NullReporter())
    acc, _ = loop.evaluate(model, val_set, device, spec.batch)
    meta = {
        "model": settings.model,
        "imgsz": settings.imgsz,
        "pretrain": asdict(spec),
        "source_val_acc": acc,
        "seconds": time.perf_counter() - start,
    }
    state = {key: value.detach().cpu() for key, value in model.net.state_dict().items()}
    return state, meta


_state_cache: dict[tuple[str, int, float], dict[str, torch.Tensor]] = {}


def _read_cached(path: Path) -> dict[str, torch.Tensor]:
    """:func:`read_state_dict`, kept in memory so later trials skip the disk."""
    stat = path.stat()
    key = (str(path), stat.st_size, stat.st_mtime)
    if key not in _state_cache:
        _state_cache[key] = read_state_dict(path)
    return _state_cache[key]


@contextmanager
def _file_lock(path: Path) -> Iterator[None]:
    """An exclusive lock between processes (POSIX); a no-op where fcntl is missing."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows
        yield
        return
    with open(path, "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
