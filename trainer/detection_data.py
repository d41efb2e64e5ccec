"""A tiny synthetic object-detection data set in YOLO layout, drawn offline and deterministically.

Every image is a noisy, randomly tinted background with one to three filled shapes; the class
is the shape (rectangle, ellipse, triangle), colours and sizes are nuisance factors. The layout
is the one both YOLOv5 and Ultralytics read::

    OUT_DIR/
      data.yaml                  path (absolute), train, val, nc, names
      images/{train,val}/NNNN.png
      labels/{train,val}/NNNN.txt   one "class cx cy w h" line per object, normalised to [0, 1]

The same arguments always give byte-identical files, so a cached copy can be reused across
studies and machines. Command line::

    python -m trainer.detection_data OUT_DIR [--n-train 64] [--n-val 16] [--imgsz 128] [--seed 0]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from trainer.yaml_io import dump_yaml

# Bump when the drawing changes, so cached copies made by an older version are redrawn.
GENERATOR_VERSION = 1
CLASS_NAMES = ("rectangle", "ellipse", "triangle")
_MARKER = ".synthetic.json"  # written last: its presence means the set is complete


@dataclass(frozen=True)
class DetectionSpec:
    """What to draw.

    Attributes:
        n_train: Training images.
        n_val: Validation images.
        imgsz: Square image side in pixels.
        seed: Seed of the single random generator everything is drawn from.
        n_classes: How many of :data:`CLASS_NAMES` to use (1 to 3).
        max_objects: Most objects per image (at least one is always drawn).
    """

    n_train: int = 64
    n_val: int = 16
    imgsz: int = 128
    seed: int = 0
    n_classes: int = 3
    max_objects: int = 3

    def __post_init__(self) -> None:
        if self.n_train < 1 or self.n_val < 1:
            raise ValueError("n_train and n_val must be at least 1")
        if self.imgsz < 32:
            raise ValueError(f"imgsz must be at least 32, got {self.imgsz}")
        if not 1 <= self.n_classes <= len(CLASS_NAMES):
            raise ValueError(f"n_classes must be in 1..{len(CLASS_NAMES)}, got {self.n_classes}")
        if self.max_objects < 1:
            raise ValueError("max_objects must be at least 1")


def _draw_image(rng: np.random.Generator, spec: DetectionSpec) -> tuple[Image.Image, list[str]]:
    size = spec.imgsz
    tint = rng.integers(40, 200, size=3)
    noise = rng.normal(0.0, 18.0, size=(size, size, 3))
    background = np.clip(tint[None, None, :] + noise, 0, 255).astype(np.uint8)
    image = Image.fromarray(background, "RGB")
    draw = ImageDraw.Draw(image)
    lines = []
    n_objects = int(rng.integers(1, spec.max_objects + 1))
    for _ in range(n_objects):
        cls = int(rng.integers(0, spec.n_classes))
        # Objects between ~15% and ~45% of the side, fully inside the image.
        w = int(rng.integers(size * 0.15, size * 0.45))
        h = int(rng.integers(size * 0.15, size * 0.45))
        x0 = int(rng.integers(0, size - w))
        y0 = int(rng.integers(0, size - h))
        x1, y1 = x0 + w - 1, y0 + h - 1
        # A colour far from the background tint, so every object is visible.
        colour = tuple(int(c) for c in (tint + rng.integers(80, 176, size=3)) % 256)
        if CLASS_NAMES[cls] == "rectangle":
            draw.rectangle((x0, y0, x1, y1), fill=colour)
        elif CLASS_NAMES[cls] == "ellipse":
            draw.ellipse((x0, y0, x1, y1), fill=colour)
        else:
            draw.polygon(((x0 + w / 2, y0), (x1, y1), (x0, y1)), fill=colour)
        cx, cy = (x0 + w / 2) / size, (y0 + h / 2) / size
        lines.append(f"{cls} {cx:.6f} {cy:.6f} {w / size:.6f} {h / size:.6f}")
    return image, lines


def _write_split(root: Path, split: str, n_images: int, rng: np.random.Generator,
                 spec: DetectionSpec) -> None:
    images = root / "images" / split
    labels = root / "labels" / split
    images.mkdir(parents=True)
    labels.mkdir(parents=True)
    for i in range(n_images):
        image, lines = _draw_image(rng, spec)
        image.save(images / f"{i:04d}.png", optimize=False)
        (labels / f"{i:04d}.txt").write_text("\n".join(lines) + "\n")


def _data_yaml(root: Path, spec: DetectionSpec) -> dict:
    return {
        # Absolute, so neither YOLOv5 nor Ultralytics resolves it against a global datasets dir.
        "path": str(root.resolve()),
        "train": "images/train",
        "val": "images/val",
        "nc": spec.n_classes,
        "names": {i: CLASS_NAMES[i] for i in range(spec.n_classes)},
    }


def is_complete(out_dir: Path, spec: DetectionSpec) -> bool:
    """Whether ``out_dir`` already holds this exact set (same spec, same generator version)."""
    marker = Path(out_dir) / _MARKER
    try:
        stored = json.loads(marker.read_text())
    except (OSError, ValueError):
        return False
    return stored == {"version": GENERATOR_VERSION, **asdict(spec)}


def generate(out_dir: str | Path, spec: DetectionSpec | None = None) -> Path:
    """Draw the data set into ``out_dir`` (reused when already there) and return its data YAML.

    The set is drawn into a temporary sibling folder and moved into place, so concurrent callers
    (several study workers) never see a half-written set.

    Args:
        out_dir: Folder to create; an existing different set there is replaced.
        spec: What to draw; the defaults give 64 + 16 images of 128 px.

    Returns:
        The path of ``out_dir/data.yaml``.
    """
    spec = spec or DetectionSpec()
    out_dir = Path(out_dir).absolute()
    data_yaml = out_dir / "data.yaml"
    if is_complete(out_dir, spec):
        return data_yaml
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", dir=out_dir.parent))
    try:
        rng = np.random.default_rng(spec.seed)
        _write_split(tmp, "train", spec.n_train, rng, spec)
        _write_split(tmp, "val", spec.n_val, rng, spec)
        # data.yaml names the final location, not the temporary one.
        (tmp / "data.yaml").write_text(dump_yaml(_data_yaml(out_dir, spec)))
        (tmp / _MARKER).write_text(json.dumps({"version": GENERATOR_VERSION, **asdict(spec)}))
        if is_complete(out_dir, spec):  # another process finished first
            return data_yaml
        if out_dir.exists():
            shutil.rmtree(out_dir)
        try:
            os.replace(tmp, out_dir)
        except OSError:
            if not is_complete(out_dir, spec):  # not a concurrent writer that just finished
                raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return data_yaml


def main(argv: list[str] | None = None) -> int:
    """Command-line entry: draw the set and print the data YAML path."""
    parser = argparse.ArgumentParser(
        prog="python -m trainer.detection_data",
        description="Write a tiny synthetic YOLO detection data set (images, labels, data.yaml).",
    )
    parser.add_argument("out_dir", type=Path)
    defaults = DetectionSpec()
    parser.add_argument("--n-train", type=int, default=defaults.n_train)
    parser.add_argument("--n-val", type=int, default=defaults.n_val)
    parser.add_argument("--imgsz", type=int, default=defaults.imgsz)
    parser.add_argument("--seed", type=int, default=defaults.seed)
    parser.add_argument("--classes", type=int, default=defaults.n_classes, dest="n_classes")
    args = parser.parse_args(argv)
    try:
        spec = DetectionSpec(n_train=args.n_train, n_val=args.n_val, imgsz=args.imgsz,
                             seed=args.seed, n_classes=args.n_classes)
    except ValueError as exc:
        parser.error(str(exc))
    print(generate(args.out_dir, spec))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
