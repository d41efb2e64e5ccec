"""Batch-wise training augmentation on tensors, driven by YOLOv5 hyp keys.

Works on whatever device the batch lives on. Random draws come from a seeded CPU generator
(the numbers are tiny: a few per image), so the draws are the same on CPU and GPU (the GPU's
own kernels need not be deterministic) and the data order, drawn from another generator, does
not depend on the augmentation settings. An operation draws only while its keys are not 0.

Every operation is skipped, an exact no-op, when its keys are 0. Validation data is never
augmented.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

AUGMENT_KEYS = (
    "hsv_h",
    "hsv_s",
    "hsv_v",
    "degrees",
    "translate",
    "scale",
    "shear",
    "flipud",
    "fliplr",
    "mixup",
)

# YOLOv5 pads with grey 114 where an affine transform uncovers the border.
FILL = 114 / 255

# YOLOv5 draws the mixup ratio from Beta(32, 32): close to an even blend.
MIXUP_BETA = 32.0


class Augmenter:
    """Applies random affine, HSV jitter, flips and mixup to float batches in ``[0, 1]``.

    Args:
        hyp: Reads the :data:`AUGMENT_KEYS`; other keys are ignored.
        n_classes: For mixup's soft targets.
        seed: Seed of the generator behind every random draw.
    """

    def __init__(self, hyp: Mapping[str, Any], n_classes: int, seed: int) -> None:
        self.p = {key: float(hyp.get(key, 0.0)) for key in AUGMENT_KEYS}
        self.n_classes = n_classes
        self.gen = torch.Generator().manual_seed(seed)
        # torch has no seeded Beta sampler; numpy's keeps mixup reproducible too
        self.np_rng = np.random.default_rng(seed)

    @property
    def identity(self) -> bool:
        """True when every augmentation key is 0: batches pass through unchanged."""
        return not any(self.p.values())

    def __call__(
        self, images: torch.Tensor, labels: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Augment one batch.

        Args:
            images: Float ``(N, 3, H, W)`` in ``[0, 1]``.
            labels: Int64 class indices ``(N,)``.

        Returns:
            The images and the targets: class indices, or soft targets ``(N, n_classes)``
            (rows summing to 1) when mixup was applied to this batch.
        """
        p, n = self.p, images.shape[0]
        if p["degrees"] or p["translate"] or p["scale"] or p["shear"]:
            images = random_affine(images, self._affine_matrices(n))
        if p["hsv_h"] or p["hsv_s"] or p["hsv_v"]:
            gains = self._uniform(n, 3) * torch.tensor([p["hsv_h"], p["hsv_s"], p["hsv_v"]]) + 1
            images = hsv_jitter(images, gains.to(images.device))
        if p["flipud"]:
            images = flip(images, self._coin(n, p["flipud"]).to(images.device), dim=-2)
        if p["fliplr"]:
            images = flip(images, self._coin(n, p["fliplr"]).to(images.device), dim=-1)
        targets = labels
        if p["mixup"] and torch.rand((), generator=self.gen).item() < p["mixup"]:
            lam = float(self.np_rng.beta(MIXUP_BETA, MIXUP_BETA))
            perm = torch.randperm(n, generator=self.gen).to(images.device)
            images, targets = mixup(images, labels, perm, lam, self.n_classes)
        return images, targets

    def _uniform(self, *shape: int) -> torch.Tensor:
        """Uniform in ``[-1, 1)``."""
        return torch.rand(*shape, generator=self.gen) * 2 - 1

    def _coin(self, n: int, prob: float) -> torch.Tensor:
        return torch.rand(n, generator=self.gen) < prob

    def _affine_matrices(self, n: int) -> torch.Tensor:
        """Per-image forward matrices ``(N, 3, 3)`` in normalised coordinates, as YOLOv5 draws."""
        p = self.p
        angle = torch.deg2rad(self._uniform(n) * p["degrees"])
        scale = 1 + self._uniform(n) * p["scale"]
        shear = torch.tan(torch.deg2rad(self._uniform(n, 2) * p["shear"]))
        # YOLOv5 translates by up to `translate` of the width; the normalised width is 2
        shift = self._uniform(n, 2) * p["translate"] * 2
        return affine_matrices(angle, scale, shear, shift)


def affine_matrices(
    angle: torch.Tensor, scale: torch.Tensor, shear: torch.Tensor, shift: torch.Tensor
) -> torch.Tensor:
    """Forward matrices ``T @ S @ R`` ``(N, 3, 3)`` mapping input to output coordinates.

    Args:
        angle: Rotation in radians ``(N,)``.
        scale: Scale gain ``(N,)``.
        shear: Shear as tangents, x and y ``(N, 2)``.
        shift: Translation in normalised units ``(N, 2)``.
    """
    n = angle.shape[0]
    eye = torch.eye(3).repeat(n, 1, 1)
    rot = eye.clone()
    cos, sin = torch.cos(angle) * scale, torch.sin(angle) * scale
    rot[:, 0, 0], rot[:, 0, 1], rot[:, 1, 0], rot[:, 1, 1] = cos, -sin, sin, cos
    shr = eye.clone()
    shr[:, 0, 1], shr[:, 1, 0] = shear[:, 0], shear[:, 1]
    trans = eye.clone()
    trans[:, 0, 2], trans[:, 1, 2] = shift[:, 0], shift[:, 1]
    return trans @ shr @ rot


def random_affine(images: torch.Tensor, matrices: torch.Tensor) -> torch.Tensor:
    """Warp each image by its forward matrix; uncovered pixels become grey :data:`FILL`."""
    # affine_grid wants the map from output to input coordinates: the inverse
    theta = torch.linalg.inv(matrices)[:, :2, :].to(images.device, images.dtype)
    grid = F.affine_grid(theta, list(images.shape), align_corners=False)
    warped = F.grid_sample(images - FILL, grid, mode="bilinear", align_corners=False)
    return warped + FILL


def hsv_jitter(images: torch.Tensor, gains: torch.Tensor) -> torch.Tensor:
    """YOLOv5 HSV augmentation: multiply h, s and v by per-image gains ``(N, 3)``.

    Hue wraps around; saturation and value are clipped, as in ``augment_hsv``.
    """
    hsv = rgb_to_hsv(images)
    g = gains.to(images.dtype).view(-1, 3, 1, 1)
    h = torch.remainder(hsv[:, 0:1] * g[:, 0:1], 1.0)
    s = (hsv[:, 1:2] * g[:, 1:2]).clamp(0, 1)
    v = (hsv[:, 2:3] * g[:, 2:3]).clamp(0, 1)
    return hsv_to_rgb(torch.cat([h, s, v], dim=1))


def rgb_to_hsv(images: torch.Tensor) -> torch.Tensor:
    """RGB ``(N, 3, H, W)`` in ``[0, 1]`` to HSV with every channel in ``[0, 1]``."""
    r, g, b = images.unbind(1)
    maxc, argmax = images.max(dim=1)
    minc = images.min(dim=1).values
    delta = maxc - minc
    safe = torch.where(delta > 0, delta, torch.ones_like(delta))
    hue = torch.stack([(g - b) / safe, (b - r) / safe + 2, (r - g) / safe + 4], dim=1)
    hue = hue.gather(1, argmax.unsqueeze(1)).squeeze(1)
    hue = torch.where(delta > 0, torch.remainder(hue / 6, 1.0), torch.zeros_like(hue))
    sat = torch.where(maxc > 0, delta / torch.where(maxc > 0, maxc, 1.0), torch.zeros_like(maxc))
    return torch.stack([hue, sat, maxc], dim=1)


def hsv_to_rgb(hsv: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`rgb_to_hsv`."""
    h, s, v = hsv.unbind(1)
    # the standard "k = (n + h*6) mod 6" formulation, free of per-sector branches
    offsets = torch.tensor([5.0, 3.0, 1.0], device=hsv.device, dtype=hsv.dtype)
    k = torch.remainder(offsets.view(1, 3, 1, 1) + h.unsqueeze(1) * 6, 6)
    weight = torch.clamp(torch.minimum(k, 4 - k), 0, 1)
    return v.unsqueeze(1) - (v * s).unsqueeze(1) * weight


def flip(images: torch.Tensor, mask: torch.Tensor, dim: int) -> torch.Tensor:
    """Flip the images where ``mask`` (``(N,)`` bool) is set, along ``dim``."""
    return torch.where(mask.view(-1, 1, 1, 1), images.flip(dim), images)


def mixup(
    images: torch.Tensor, labels: torch.Tensor, perm: torch.Tensor, lam: float, n_classes: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Blend each image with ``images[perm]``: ``lam * a + (1 - lam) * b``, targets alike."""
    onehot = F.one_hot(labels, n_classes).to(images.dtype)
    mixed = images * lam + images[perm] * (1 - lam)
    return mixed, onehot * lam + onehot[perm] * (1 - lam)
