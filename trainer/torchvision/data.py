"""Datasets as uint8 tensors, decoded once per process and shared by every trial.

An ImageFolder split (``root/train/<class>/*.png``) is decoded with PIL, resized so that its
shorter side is ``imgsz`` and centre-cropped to ``imgsz x imgsz``, into one ``(N, 3, H, W)``
uint8 tensor. Synthetic sets are drawn the same way. Both are cached in this module under
their full key, so the second trial of a study costs no decoding at all;
:func:`n_decodes` counts real decodes (tests use it to prove the cache works).

Memory: ``N * 3 * imgsz**2`` bytes per split (50 000 images at 64 px: 600 MB).
"""

from __future__ import annotations

import os
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from trainer.torchvision import synthetic

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")
SPLITS = ("train", "val")


@dataclass(frozen=True)
class TensorSet:
    """A decoded split.

    Attributes:
        images: uint8 ``(N, 3, H, W)``.
        labels: int64 ``(N,)``.
        classes: Class names; label ``i`` is ``classes[i]``.
    """

    images: torch.Tensor
    labels: torch.Tensor
    classes: tuple[str, ...]

    def __len__(self) -> int:
        return int(self.labels.numel())


_cache: dict[tuple, TensorSet] = {}
_lock = threading.Lock()
_n_decodes = 0


def n_decodes() -> int:
    """How many splits this process has decoded or drawn (cache hits do not count)."""
    return _n_decodes


def clear_cache() -> None:
    """Forget every cached split (tests; frees memory)."""
    with _lock:
        _cache.clear()


def image_folder_problem(root: Path) -> str | None:
    """Why ``root`` is not a usable ImageFolder root with ``train/`` and ``val/``, or None.

    Cheap: looks at directories only, decodes nothing.
    """
    expected = "(expected an ImageFolder root with train/ and val/)"
    if not root.is_dir():
        return f"no such directory: {root} {expected}"
    classes: dict[str, set[str]] = {}
    for split in SPLITS:
        if not (root / split).is_dir():
            return f"missing {root / split}/ {expected}"
        classes[split] = {child.name for child in (root / split).iterdir() if child.is_dir()}
        if not classes[split]:
            return f"{root / split}/ has no class directories {expected}"
    for split in SPLITS:
        # the first image ends the walk: a large set costs one directory listing or two
        images = (p for p in (root / split).rglob("*") if p.suffix.lower() in IMAGE_EXTENSIONS)
        if next(images, None) is None:
            return f"{root / split}/: no images ({', '.join(IMAGE_EXTENSIONS)})"
    unknown = sorted(classes["val"] - classes["train"])
    if unknown:
        return f"{root / 'val'}/ has classes that train/ has not: {', '.join(unknown)}"
    return None


def load_image_folder(
    root: Path, split: str, imgsz: int, classes: tuple[str, ...] | None = None
) -> TensorSet:
    """Decode ``root/split`` (cached per process).

    Args:
        root: The ImageFolder root.
        split: ``"train"`` or ``"val"``.
        imgsz: Output side length.
        classes: Label order to use (pass the train classes when loading val); by default
            the sorted class directories.

    Raises:
        ValueError: No images, or a class directory that ``classes`` does not name.
    """
    key = ("folder", str(Path(root).resolve()), split, imgsz, classes)
    with _lock:
        if key not in _cache:
            _cache[key] = _decode_folder(Path(root) / split, imgsz, classes)
            _count_decode()
        return _cache[key]


def load_synthetic(task: str, n_classes: int, n_images: int, imgsz: int, seed: int) -> TensorSet:
    """Draw a synthetic split (cached per process); see :func:`synthetic.make_split`."""
    key = ("synthetic", synthetic.GENERATOR_VERSION, task, n_classes, n_images, imgsz, seed)
    with _lock:
        if key not in _cache:
            images, labels = synthetic.make_split(task, n_classes, n_images, imgsz, seed)
            _cache[key] = TensorSet(images, labels, tuple(synthetic.class_names(task, n_classes)))
            _count_decode()
        return _cache[key]


def _count_decode() -> None:
    global _n_decodes
    _n_decodes += 1


def _decode_folder(directory: Path, imgsz: int, classes: tuple[str, ...] | None) -> TensorSet:
    found = sorted(child.name for child in directory.iterdir() if child.is_dir())
    if classes is None:
        classes = tuple(found)
    unknown = sorted(set(found) - set(classes))
    if unknown:
        raise ValueError(f"{directory}: classes not in train/: {', '.join(unknown)}")
    files: list[Path] = []
    labels: list[int] = []
    for label, name in enumerate(classes):
        class_dir = directory / name
        if not class_dir.is_dir():
            continue
        for path in sorted(class_dir.rglob("*")):
            if path.suffix.lower() in IMAGE_EXTENSIONS:
                files.append(path)
                labels.append(label)
    if not files:
        raise ValueError(f"{directory}: no images ({', '.join(IMAGE_EXTENSIONS)})")
    # PIL releases the GIL while decoding and resizing, so threads give a real speed-up
    with ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1)) as pool:
        arrays = list(pool.map(lambda path: _decode_image(path, imgsz), files))
    images = torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).contiguous()
    return TensorSet(images, torch.tensor(labels, dtype=torch.int64), classes)


def _decode_image(path: Path, imgsz: int) -> np.ndarray:
    """Shorter side to ``imgsz``, centre crop; returns ``(imgsz, imgsz, 3)`` uint8.

    Raises:
        ValueError: The file is no image PIL can read (named, so the data set can be fixed).
    """
    try:
        return _decoded(path, imgsz)
    except OSError as exc:  # PIL's UnidentifiedImageError and truncated files are OSErrors
        raise ValueError(f"{path}: not a readable image ({exc})") from None


def _decoded(path: Path, imgsz: int) -> np.ndarray:
    from PIL import Image

    with Image.open(path) as image:
        image = image.convert("RGB")
        width, height = image.size
        ratio = imgsz / min(width, height)
        size = (max(imgsz, round(width * ratio)), max(imgsz, round(height * ratio)))
        image = image.resize(size, Image.Resampling.BILINEAR)
        left, top = (size[0] - imgsz) // 2, (size[1] - imgsz) // 2
        image = image.crop((left, top, left + imgsz, top + imgsz))
        return np.asarray(image, dtype=np.uint8)
