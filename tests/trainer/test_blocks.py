"""Block tables: what ``freeze=N`` means per model family."""

from __future__ import annotations

import pytest
import torch

from trainer.torchvision.blocks import (
    BlockModel,
    block_table,
    build_model,
    count_blocks,
    final_linear,
    format_block_table,
)

RESNET_NAMES = ["stem", "layer1", "layer2", "layer3", "layer4", "head"]
MOBILENET_NAMES = [f"features.{i}" for i in range(13)] + ["head"]


@pytest.mark.parametrize(
    ("model_name", "names"),
    [("resnet18", RESNET_NAMES), ("mobilenet_v3_small", MOBILENET_NAMES)],
)
def test_block_table(model_name, names):
    model = build_model(model_name, 6)
    table = block_table(model)
    assert [b.name for b in table] == names
    assert [b.index for b in table] == list(range(len(names)))
    assert sum(b.n_params for b in table) == sum(p.numel() for p in model.parameters())
    assert all(b.n_params > 0 for b in table)
    assert count_blocks(model_name) == len(names)
    assert final_linear(model).out_features == 6


def test_resnet_block_contents():
    model = build_model("resnet18", 3)
    stem, head = model.blocks[0], model.blocks[-1]
    assert stem[0] is model.net.conv1 and stem[1] is model.net.bn1
    assert model.blocks[1] is model.net.layer1
    assert head[-1] is model.net.fc


def test_format_block_table():
    text = format_block_table(block_table(build_model("resnet18", 6)))
    lines = text.splitlines()
    assert lines[0] == "0: stem, 9,536 params"
    assert lines[-1] == "5: head, 3,078 params"  # 512 * 6 + 6


def test_blocks_compute_what_the_torchvision_model_computes():
    torch.manual_seed(0)
    model = build_model("mobilenet_v3_small", 5).eval()
    x = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.allclose(model(x), model.net(x), atol=1e-5)


def test_state_dict_has_torchvision_keys():
    keys = list(build_model("resnet18", 4).net.state_dict())
    assert keys[0] == "conv1.weight" and "fc.weight" in keys


def test_meta_build_allocates_nothing():
    model = build_model("resnet50", 10, device="meta")
    assert isinstance(model, BlockModel)
    assert next(model.parameters()).device.type == "meta"


def test_unknown_model():
    with pytest.raises(ValueError, match="unknown model 'resnet19'"):
        build_model("resnet19", 2)
