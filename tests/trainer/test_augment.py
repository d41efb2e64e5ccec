"""Batch augmentation: exact no-ops at 0, flips, mixup, HSV, affine."""

from __future__ import annotations

import colorsys

import pytest
import torch

from trainer.torchvision.augment import (
    AUGMENT_KEYS,
    Augmenter,
    affine_matrices,
    hsv_jitter,
    hsv_to_rgb,
    random_affine,
    rgb_to_hsv,
)
from trainer.torchvision.settings import DEFAULT_HYP

ZERO = dict.fromkeys(AUGMENT_KEYS, 0.0)
LABELS = torch.tensor([0, 1, 2, 1])


def test_identity_when_all_keys_are_zero(images):
    out, targets = Augmenter({**DEFAULT_HYP, **ZERO}, n_classes=3, seed=0)(images, LABELS)
    assert torch.equal(out, images)
    assert torch.equal(targets, LABELS)


@pytest.mark.parametrize(("key", "dim"), [("fliplr", -1), ("flipud", -2)])
def test_flip_with_probability_one_flips_every_image(images, key, dim):
    out, _ = Augmenter({**ZERO, key: 1.0}, n_classes=3, seed=0)(images, LABELS)
    assert torch.equal(out, images.flip(dim))


def test_flip_half_flips_some(images):
    batch = images.repeat(8, 1, 1, 1)
    out, _ = Augmenter({**ZERO, "fliplr": 0.5}, n_classes=3, seed=0)(batch, LABELS.repeat(8))
    flipped = [torch.equal(o, i.flip(-1)) for o, i in zip(out, batch, strict=True)]
    assert 0 < sum(flipped) < len(flipped)


def test_mixup_soft_targets_sum_to_one(images):
    out, targets = Augmenter({**ZERO, "mixup": 1.0}, n_classes=3, seed=0)(images, LABELS)
    assert targets.shape == (4, 3)
    assert torch.allclose(targets.sum(1), torch.ones(4))
    assert (targets >= 0).all() and (targets <= 1).all()
    assert not torch.equal(out, images)
    # Beta(32, 32) keeps the blend near even
    assert 0.2 < targets.max(1).values.min() < 1.0


def test_hsv_round_trip_and_reference(images):
    assert torch.allclose(hsv_to_rgb(rgb_to_hsv(images)), images, atol=1e-5)
    hsv = rgb_to_hsv(images)
    for y, x in [(0, 0), (3, 5)]:
        expected = colorsys.rgb_to_hsv(*images[1, :, y, x].tolist())
        assert torch.allclose(hsv[1, :, y, x], torch.tensor(expected), atol=1e-5)


def test_hsv_gains(images):
    assert torch.allclose(hsv_jitter(images, torch.ones(4, 3)), images, atol=1e-5)
    darker = hsv_jitter(images, torch.tensor([[1.0, 1.0, 0.5]]).repeat(4, 1))
    assert torch.allclose(darker.amax(1), images.amax(1) * 0.5, atol=1e-5)
    grey = hsv_jitter(images, torch.tensor([[1.0, 0.0, 1.0]]).repeat(4, 1))
    assert torch.allclose(grey.amin(1), grey.amax(1), atol=1e-5)


def test_identity_affine_and_translation():
    image = torch.zeros(1, 3, 8, 8)
    image[..., 2, 3] = 1.0
    n = torch.zeros(1)
    same = affine_matrices(n, torch.ones(1), torch.zeros(1, 2), torch.zeros(1, 2))
    assert torch.allclose(random_affine(image, same), image, atol=1e-6)
    # one pixel to the right is 2/8 in normalised units
    shift = affine_matrices(n, torch.ones(1), torch.zeros(1, 2), torch.tensor([[0.25, 0.0]]))
    moved = random_affine(image, shift)
    assert moved[0, 0, 2, 4] == pytest.approx(1.0)
    assert moved[0, 0, 0, 0] == pytest.approx(114 / 255)  # uncovered border is YOLO grey


def test_random_affine_changes_images_reproducibly(images):
    hyp = {**ZERO, "degrees": 10.0, "translate": 0.1, "scale": 0.5, "shear": 2.0}
    first, _ = Augmenter(hyp, 3, seed=5)(images, LABELS)
    second, _ = Augmenter(hyp, 3, seed=5)(images, LABELS)
    assert first.shape == images.shape
    assert not torch.allclose(first, images)
    assert torch.equal(first, second)


def test_full_default_augmentation_stays_in_range(images):
    out, targets = Augmenter({**DEFAULT_HYP, "mixup": 0.5}, 3, seed=1)(images, LABELS)
    assert out.min() >= -1e-6 and out.max() <= 1 + 1e-6
    assert targets.shape[0] == 4


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_runs_on_cuda(images):
    hyp = {**DEFAULT_HYP, "degrees": 5.0, "mixup": 1.0}
    out, targets = Augmenter(hyp, 3, seed=0)(images.cuda(), LABELS.cuda())
    assert out.is_cuda and targets.is_cuda
