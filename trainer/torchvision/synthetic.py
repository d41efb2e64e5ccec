"""Procedurally drawn image classification tasks that need no download.

Every image shows one textured shape on a noisy background. A class is a (shape, texture)
pair; colours, position, size, rotation, texture scale and phase and background noise are
nuisance factors drawn per image. Two tasks are defined over the same primitives:

* the SOURCE task (``task="source"``) used to pretrain a backbone, and
* the TARGET task (``task="target"``), the one a study fine-tunes on.

Their class definitions are disjoint, and the target task also uses primitives the source task
never shows, so pretrained features help (edges, stripes, blobs) but the head must be learned
and deeper blocks still have something to adapt. Everything is drawn with one seeded generator
and fully vectorised over the batch, so a few thousand images take well under a second.
"""

from __future__ import annotations

import math

import torch

# Bump when the drawing changes: it is part of the pretrain cache key.
GENERATOR_VERSION = 2

SHAPES = ("circle", "square", "triangle", "cross", "ring", "bars", "semicircle", "ellipse")
TEXTURES = ("solid", "stripes", "checker", "dots", "concentric", "grid", "speckle")

# Source classes only use the first six shapes and first four textures; the target task mixes
# those with primitives the source never shows (semicircle, ellipse, concentric, grid), so
# a frozen backbone lacks some of the features it needs. No pair appears in both lists.
SOURCE_CLASSES: tuple[tuple[str, str], ...] = (
    ("circle", "stripes"),
    ("square", "solid"),
    ("triangle", "checker"),
    ("cross", "dots"),
    ("ring", "solid"),
    ("bars", "stripes"),
    ("circle", "checker"),
    ("square", "dots"),
    ("triangle", "solid"),
    ("cross", "stripes"),
    ("ring", "checker"),
    ("bars", "dots"),
    ("circle", "solid"),
    ("square", "stripes"),
    ("triangle", "dots"),
    ("cross", "checker"),
)
TARGET_CLASSES: tuple[tuple[str, str], ...] = (
    ("circle", "dots"),
    ("square", "checker"),
    ("triangle", "stripes"),
    ("semicircle", "solid"),
    ("ellipse", "grid"),
    ("ring", "concentric"),
    ("cross", "solid"),
    ("bars", "checker"),
    ("semicircle", "stripes"),
    ("ellipse", "dots"),
    ("square", "grid"),
    ("circle", "concentric"),
)
TASKS = {"source": SOURCE_CLASSES, "target": TARGET_CLASSES}


def class_names(task: str, n_classes: int) -> list[str]:
    """Names (``shape-texture``) of the first ``n_classes`` classes of a task.

    Raises:
        ValueError: Unknown task or more classes than the task defines.
    """
    defs = _defs(task, n_classes)
    return [f"{shape}-{texture}" for shape, texture in defs]


def max_classes(task: str) -> int:
    """How many classes a task defines."""
    return len(TASKS[task])


def make_split(
    task: str, n_classes: int, n_images: int, imgsz: int, seed: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Draw a labelled set with balanced classes.

    Args:
        task: ``"source"`` or ``"target"``.
        n_classes: The first ``n_classes`` definitions of the task are used.
        n_images: Images to draw.
        imgsz: Side length in pixels.
        seed: Same seed, same images (on any machine: drawing is done on the CPU).

    Returns:
        uint8 images ``(n_images, 3, imgsz, imgsz)`` and int64 labels ``(n_images,)``.
    """
    defs = _defs(task, n_classes)
    gen = torch.Generator().manual_seed(seed)
    # balanced, then shuffled so a truncated prefix is still roughly balanced
    labels = torch.arange(n_images) % n_classes
    labels = labels[torch.randperm(n_images, generator=gen)]
    shape_ids = torch.tensor([SHAPES.index(s) for s, _ in defs])[labels]
    texture_ids = torch.tensor([TEXTURES.index(t) for _, t in defs])[labels]
    images = draw(shape_ids, texture_ids, imgsz, gen)
    return images, labels


def draw(
    shape_ids: torch.Tensor, texture_ids: torch.Tensor, imgsz: int, gen: torch.Generator
) -> torch.Tensor:
    """Draw one image per (shape, texture) index pair; returns uint8 ``(N, 3, H, W)``."""
    n = shape_ids.numel()

    def uniform(lo: float, hi: float, *shape: int) -> torch.Tensor:
        return torch.rand(n, *shape, generator=gen) * (hi - lo) + lo

    # pixel-centre coordinates in [-1, 1]
    axis = (torch.arange(imgsz, dtype=torch.float32) + 0.5) / imgsz * 2 - 1
    ys, xs = torch.meshgrid(axis, axis, indexing="ij")
    xs, ys = xs.expand(n, -1, -1), ys.expand(n, -1, -1)

    # shape frame: translate, rotate, scale to the unit shape
    cx, cy = uniform(-0.3, 0.3, 1, 1), uniform(-0.3, 0.3, 1, 1)
    radius = uniform(0.65, 0.9, 1, 1)
    theta = uniform(0, 2 * math.pi, 1, 1)
    dx, dy = xs - cx, ys - cy
    cos, sin = torch.cos(theta), torch.sin(theta)
    u = (cos * dx + sin * dy) / radius
    v = (-sin * dx + cos * dy) / radius
    mask = _shape_masks(u, v, shape_ids)

    # texture in the shape frame, with its own period and phase
    period = uniform(0.6, 0.8, 1, 1) / radius  # in unit-shape coordinates
    phase_u, phase_v = uniform(0, 1, 1, 1), uniform(0, 1, 1, 1)
    stripe_angle = uniform(0, math.pi, 1, 1)
    pattern = _textures(u, v, period, phase_u, phase_v, stripe_angle, texture_ids, gen)

    # colours: background, shape and the shape's second texture colour, far enough apart that
    # the shape is always visible (hue is a nuisance, never the class)
    bg = uniform(0, 1, 3, 1, 1)
    fg = (bg + uniform(0.3, 0.7, 3, 1, 1)) % 1.0
    # the texture modulates the shape's brightness, so the silhouette stays one coherent region
    toward = (fg.mean(1, keepdim=True) < 0.5).float()  # lighten dark shapes, darken light ones
    fg2 = fg + (toward - fg) * uniform(0.4, 0.7, 1, 1, 1)
    shape_rgb = torch.where(pattern.unsqueeze(1), fg2, fg)
    image = torch.where(mask.unsqueeze(1), shape_rgb, bg)
    # background and sensor noise of random strength, plus a smooth illumination gradient
    noise_sigma = uniform(0.01, 0.06, 1, 1, 1)
    image = image + torch.randn(image.shape, generator=gen) * noise_sigma
    grad_dir = uniform(0, 2 * math.pi, 1, 1)
    gradient = (torch.cos(grad_dir) * xs + torch.sin(grad_dir) * ys) * uniform(0, 0.1, 1, 1)
    image = image + gradient.unsqueeze(1)
    return (image.clamp(0, 1) * 255).round().to(torch.uint8)


def _defs(task: str, n_classes: int) -> tuple[tuple[str, str], ...]:
    if task not in TASKS:
        raise ValueError(f"unknown task {task!r}; choose from {', '.join(TASKS)}")
    defs = TASKS[task]
    if not 2 <= n_classes <= len(defs):
        raise ValueError(f"n_classes must be in 2..{len(defs)} for the {task} task")
    return defs[:n_classes]


def _shape_masks(u: torch.Tensor, v: torch.Tensor, shape_ids: torch.Tensor) -> torch.Tensor:
    """Boolean masks ``(N, H, W)``; every shape is drawn for every image, then one is picked.

    Computing all eight for all images wastes a little arithmetic but keeps the code free of
    per-image loops, which is what makes drawing thousands of images cheap.
    """
    r = torch.sqrt(u * u + v * v)
    au, av = u.abs(), v.abs()
    root3 = math.sqrt(3.0)
    masks = torch.stack(
        [
            r < 1.0,  # circle
            torch.maximum(au, av) < 0.8,  # square
            (v > -0.5) & (root3 * u + v < 1.0) & (-root3 * u + v < 1.0),  # triangle
            ((au < 0.3) & (av < 1.0)) | ((av < 0.3) & (au < 1.0)),  # cross
            (r < 1.0) & (r > 0.55),  # ring
            (av < 0.95) & (au > 0.2) & (au < 0.75),  # bars: two parallel bars
            (r < 1.0) & (v > -0.1),  # semicircle
            (u / 1.0) ** 2 + (v / 0.45) ** 2 < 1.0,  # ellipse
        ],
        dim=1,
    )
    return masks[torch.arange(u.shape[0]), shape_ids]


def _textures(
    u: torch.Tensor,
    v: torch.Tensor,
    period: torch.Tensor,
    phase_u: torch.Tensor,
    phase_v: torch.Tensor,
    stripe_angle: torch.Tensor,
    texture_ids: torch.Tensor,
    gen: torch.Generator,
) -> torch.Tensor:
    """Boolean patterns ``(N, H, W)`` (True = second colour) in the shape's frame."""
    pu, pv = u / period + phase_u, v / period + phase_v
    su = (torch.cos(stripe_angle) * u + torch.sin(stripe_angle) * v) / period + phase_u
    fu, fv = pu - torch.floor(pu), pv - torch.floor(pv)
    r = torch.sqrt(u * u + v * v) / period
    patterns = torch.stack(
        [
            torch.zeros_like(u, dtype=torch.bool),  # solid
            su - torch.floor(su) < 0.5,  # stripes, any orientation
            (fu < 0.5) ^ (fv < 0.5),  # checker
            (fu - 0.5) ** 2 + (fv - 0.5) ** 2 < 0.3**2,  # dots
            r - torch.floor(r) < 0.5,  # concentric rings around the shape's centre
            (fu < 0.3) | (fv < 0.3),  # grid of thin lines
            torch.rand(u.shape, generator=gen) < 0.5,  # speckle
        ],
        dim=1,
    )
    return patterns[torch.arange(u.shape[0]), texture_ids]
