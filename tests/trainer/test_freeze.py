"""Freezing: gradients, BatchNorm statistics, no autograd graph, staged unfreeze."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from trainer.base import NullReporter
from trainer.torchvision import loop
from trainer.torchvision.blocks import build_model
from trainer.torchvision.data import load_synthetic
from trainer.torchvision.freeze import count_params, freeze, frozen_for_epoch
from trainer.torchvision.settings import DEFAULT_HYP


def _model(n_classes: int = 4):
    torch.manual_seed(0)
    return build_model("resnet18", n_classes)


def _bn_buffers(module: nn.Module) -> dict[str, torch.Tensor]:
    return {
        name: buf.clone()
        for name, buf in module.named_buffers()
        if "running" in name or "num_batches" in name
    }


def _sgd_steps(model, n_steps: int = 3) -> None:
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.1)
    gen = torch.Generator().manual_seed(1)
    for _ in range(n_steps):
        x = torch.rand(8, 3, 32, 32, generator=gen) * 3
        loss = model(x).logsumexp(1).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()


def test_frozen_params_get_no_gradient():
    model = _model()
    freeze(model, 3)
    model.train()
    model(torch.rand(4, 3, 32, 32)).sum().backward()
    for index, block in enumerate(model.blocks):
        for param in block.parameters():
            if index < 3:
                assert not param.requires_grad and param.grad is None
            else:
                assert param.requires_grad and param.grad is not None


def test_frozen_prefix_builds_no_autograd_graph():
    model = _model()
    freeze(model, 2)
    model.train()
    outputs: list[bool] = []
    for block in model.blocks:
        block.register_forward_hook(lambda _m, _i, out: outputs.append(out.requires_grad))
    model(torch.rand(2, 3, 32, 32))
    assert outputs == [False, False, True, True, True, True]


def test_bn_eval_keeps_frozen_running_stats():
    model = _model()
    freeze(model, 2, bn_frozen="eval")
    model.train()
    frozen_before = _bn_buffers(model.blocks[0]) | _bn_buffers(model.blocks[1])
    trained_before = _bn_buffers(model.blocks[2])
    _sgd_steps(model)
    frozen_after = _bn_buffers(model.blocks[0]) | _bn_buffers(model.blocks[1])
    assert all(torch.equal(frozen_before[k], frozen_after[k]) for k in frozen_before)
    trained_after = _bn_buffers(model.blocks[2])
    assert not torch.equal(
        trained_before["0.bn1.running_mean"], trained_after["0.bn1.running_mean"]
    )


def test_bn_train_updates_frozen_running_stats_but_not_weights():
    model = _model()
    freeze(model, 2, bn_frozen="train")
    model.train()
    before = _bn_buffers(model.blocks[0])
    weight = model.net.bn1.weight.clone()
    _sgd_steps(model)
    after = _bn_buffers(model.blocks[0])
    assert not torch.equal(before["1.running_mean"], after["1.running_mean"])
    assert int(after["1.num_batches_tracked"]) == 3
    assert torch.equal(weight, model.net.bn1.weight)


def test_train_mode_keeps_frozen_bn_in_eval():
    model = _model()
    freeze(model, 1)
    model.eval()
    model.train()
    assert not model.net.bn1.training
    assert model.net.layer1[0].bn1.training
    freeze(model, 0)
    assert model.net.bn1.training  # unfreezing puts BatchNorm back to train mode


def test_count_params_and_range():
    model = _model(4)
    freeze(model, 5)
    n_trainable, n_frozen = count_params(model)
    assert n_trainable == 512 * 4 + 4
    assert n_trainable + n_frozen == sum(p.numel() for p in model.parameters())
    with pytest.raises(ValueError, match="0..5"):
        freeze(model, 6)


def test_frozen_for_epoch():
    assert [frozen_for_epoch(3, 0, e) for e in range(4)] == [3, 3, 3, 3]
    assert [frozen_for_epoch(3, 2, e) for e in range(4)] == [3, 3, 0, 0]


def test_staged_unfreeze_trains_everything_after_unfreeze_epoch():
    train_set = load_synthetic("target", 3, 32, 16, seed=0)
    model = _model(3)
    stem_before = model.net.conv1.weight.clone()
    hyp = {**DEFAULT_HYP, "freeze": 4, "unfreeze_epoch": 1, "warmup_epochs": 0.0}
    config = loop.LoopConfig(epochs=2, batch=16, device=torch.device("cpu"))
    result = loop.train(model, train_set, None, hyp, config, NullReporter())
    assert result.n_params_frozen > 0  # counted at the start, while frozen
    assert model.n_frozen == 0
    assert all(p.requires_grad for p in model.parameters())
    assert model.net.bn1.training
    assert not torch.equal(stem_before, model.net.conv1.weight)  # trained in epoch 1
