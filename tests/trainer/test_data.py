"""Synthetic tasks and ImageFolder decoding, cached once per process."""

from __future__ import annotations

import time

import numpy as np
import pytest
import torch
from PIL import Image

from trainer.torchvision import data, synthetic


def test_synthetic_is_deterministic_by_seed():
    a_images, a_labels = synthetic.make_split("target", 6, 60, 24, seed=3)
    b_images, b_labels = synthetic.make_split("target", 6, 60, 24, seed=3)
    c_images, _ = synthetic.make_split("target", 6, 60, 24, seed=4)
    assert torch.equal(a_images, b_images) and torch.equal(a_labels, b_labels)
    assert not torch.equal(a_images, c_images)
    assert a_images.shape == (60, 3, 24, 24) and a_images.dtype == torch.uint8
    assert torch.bincount(a_labels).tolist() == [10] * 6  # balanced


def test_source_and_target_classes_are_disjoint():
    source, target = set(synthetic.SOURCE_CLASSES), set(synthetic.TARGET_CLASSES)
    assert not source & target
    assert len(source) == len(synthetic.SOURCE_CLASSES)
    assert len(target) == len(synthetic.TARGET_CLASSES)
    names_source = synthetic.class_names("source", synthetic.max_classes("source"))
    names_target = synthetic.class_names("target", synthetic.max_classes("target"))
    assert not set(names_source) & set(names_target)
    # the default target task needs primitives the source task never shows
    seen = {p for pair in synthetic.SOURCE_CLASSES[:10] for p in pair}
    assert {p for pair in synthetic.TARGET_CLASSES[:6] for p in pair} - seen


def test_class_count_limits():
    with pytest.raises(ValueError, match="n_classes"):
        synthetic.make_split("target", synthetic.max_classes("target") + 1, 10, 16, 0)
    with pytest.raises(ValueError, match="unknown task"):
        synthetic.class_names("other", 2)


def test_synthetic_generation_is_fast():
    start = time.perf_counter()
    synthetic.make_split("source", 10, 1000, 32, seed=0)
    # 3000 images take about a second on two cores; a third of that, with slack for busy CI
    assert time.perf_counter() - start < 2.0


def test_synthetic_split_is_drawn_once_per_process():
    data.clear_cache()
    before = data.n_decodes()
    first = data.load_synthetic("target", 3, 20, 16, seed=7)
    second = data.load_synthetic("target", 3, 20, 16, seed=7)
    assert second is first
    assert data.n_decodes() == before + 1
    data.load_synthetic("target", 3, 20, 16, seed=8)
    assert data.n_decodes() == before + 2


def _write_png(path, size, colour):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, colour).save(path)


@pytest.fixture
def folder(tmp_path):
    root = tmp_path / "folder"
    for split, n in (("train", 3), ("val", 2)):
        for name, colour in (("cat", (255, 0, 0)), ("dog", (0, 0, 255))):
            for i in range(n):
                _write_png(root / split / name / f"{i}.png", (20 + 5 * i, 30), colour)
    # a wide image: left third green, so the centre crop must cut it away
    wide = np.zeros((16, 48, 3), dtype=np.uint8)
    wide[:, :16] = (0, 255, 0)
    wide[:, 16:] = (255, 0, 0)
    Image.fromarray(wide).save(root / "train" / "cat" / "wide.png")
    (root / "train" / "cat" / "notes.txt").write_text("not an image")
    return root


def test_image_folder_loads_resized_and_centre_cropped(folder):
    train = data.load_image_folder(folder, "train", 16)
    assert train.classes == ("cat", "dog")
    assert train.images.shape == (7, 3, 16, 16) and train.images.dtype == torch.uint8
    assert train.labels.tolist() == [0, 0, 0, 0, 1, 1, 1]
    assert (train.images[train.labels == 1, 2] == 255).all()  # blue stays blue
    wide = train.images[3]  # sorted: 0.png, 1.png, 2.png, wide.png
    assert (wide[0] == 255).all() and (wide[1] == 0).all()  # the green third is cropped off


def test_image_folder_is_decoded_once(folder):
    data.clear_cache()
    before = data.n_decodes()
    data.load_image_folder(folder, "val", 8, classes=("cat", "dog"))
    data.load_image_folder(folder, "val", 8, classes=("cat", "dog"))
    assert data.n_decodes() == before + 1


def test_val_classes_follow_train(folder):
    _write_png(folder / "val" / "fox" / "0.png", (20, 20), (0, 0, 0))
    with pytest.raises(ValueError, match="fox"):
        data.load_image_folder(folder, "val", 8, classes=("cat", "dog"))


def test_image_folder_problem(folder, tmp_path):
    assert data.image_folder_problem(folder) is None
    assert "no such directory" in data.image_folder_problem(tmp_path / "nope")
    (tmp_path / "half" / "train" / "a").mkdir(parents=True)
    assert "val" in data.image_folder_problem(tmp_path / "half")
    # without decoding: a split with class folders but no image, a val class train lacks
    (tmp_path / "half" / "val" / "a").mkdir(parents=True)
    assert "half/train/: no images" in data.image_folder_problem(tmp_path / "half")
    _write_png(folder / "val" / "fox" / "0.png", (20, 20), (0, 0, 0))
    assert "classes that train/ has not: fox" in data.image_folder_problem(folder)


def test_an_unreadable_image_is_named(folder):
    (folder / "train" / "dog" / "broken.jpg").write_bytes(b"not a jpeg")
    data.clear_cache()
    with pytest.raises(ValueError, match=r"broken\.jpg: not a readable image"):
        data.load_image_folder(folder, "train", 8)
