"""Parameter groups with layer-wise lr decay, and the YOLOv5 schedule."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from trainer.torchvision.blocks import build_model
from trainer.torchvision.freeze import freeze
from trainer.torchvision.optim import (
    Schedule,
    build_optimizer,
    head_lr,
    lr_factor,
    n_warmup_iters,
    param_groups,
    warmup_interp,
)
from trainer.torchvision.settings import DEFAULT_HYP


@pytest.fixture
def model():
    torch.manual_seed(0)
    return build_model("resnet18", 4)


def test_lr_per_block_decays_with_head_distance(model):
    groups = param_groups(model, lr0=0.1, lr_decay=0.5, weight_decay=1e-3, warmup_bias_lr=0.2)
    for group in groups:
        scale = 0.5 ** (5 - group["block"])
        assert group["lr"] == pytest.approx(0.1 * scale)
        assert group["initial_lr"] == group["lr"]
        expected_start = 0.2 * scale if group["kind"] == "bias" else 0.0
        assert group["warmup_start"] == pytest.approx(expected_start)
    assert {g["block"] for g in groups} == set(range(6))


def test_decay_split(model):
    groups = param_groups(model, lr0=0.1, lr_decay=1.0, weight_decay=1e-3, warmup_bias_lr=0.1)
    ids = [id(p) for g in groups for p in g["params"]]
    assert len(ids) == len(set(ids)) == len(list(model.parameters()))  # each param once
    by_kind = {kind: {id(p) for g in groups if g["kind"] == kind for p in g["params"]}
               for kind in ("weight", "norm", "bias")}
    assert id(model.net.conv1.weight) in by_kind["weight"]
    assert id(model.net.fc.weight) in by_kind["weight"]
    assert id(model.net.bn1.weight) in by_kind["norm"]
    assert id(model.net.bn1.bias) in by_kind["bias"]
    assert id(model.net.fc.bias) in by_kind["bias"]
    for group in groups:
        assert group["weight_decay"] == (1e-3 if group["kind"] == "weight" else 0.0)


def test_build_optimizer(model):
    sgd = build_optimizer(model, DEFAULT_HYP)
    assert isinstance(sgd, torch.optim.SGD)
    assert sgd.param_groups[0]["nesterov"] and sgd.param_groups[0]["momentum"] == 0.937
    adamw = build_optimizer(model, {**DEFAULT_HYP, "optimizer": "AdamW", "momentum": 0.9})
    assert isinstance(adamw, torch.optim.AdamW)
    assert adamw.param_groups[0]["betas"] == (0.9, 0.999)
    with pytest.raises(ValueError, match="unknown optimizer"):
        build_optimizer(model, {**DEFAULT_HYP, "optimizer": "Lion"})


def test_lr_factor_linear_and_cosine():
    assert lr_factor(0, 10, 0.01, cos_lr=False) == pytest.approx(1.0)
    assert lr_factor(5, 10, 0.01, cos_lr=False) == pytest.approx(0.505)
    assert lr_factor(10, 10, 0.01, cos_lr=False) == pytest.approx(0.01)
    assert lr_factor(0, 10, 0.1, cos_lr=True) == pytest.approx(1.0)
    assert lr_factor(5, 10, 0.1, cos_lr=True) == pytest.approx(0.55)
    assert lr_factor(10, 10, 0.1, cos_lr=True) == pytest.approx(0.1)
    # cosine stays above linear in the first half (one-cycle shape)
    assert lr_factor(2, 10, 0.01, cos_lr=True) > lr_factor(2, 10, 0.01, cos_lr=False)


def test_warmup_values():
    assert n_warmup_iters(3.0, 10) == 30
    assert n_warmup_iters(0.5, 4) == 2  # no 100-iteration floor
    assert n_warmup_iters(0.0, 10) == 0
    assert warmup_interp(0, 30, 0.1, 0.01) == pytest.approx(0.1)
    assert warmup_interp(15, 30, 0.1, 0.01) == pytest.approx(0.055)
    assert warmup_interp(30, 30, 0.1, 0.01) == pytest.approx(0.01)
    assert warmup_interp(99, 30, 0.1, 0.01) == pytest.approx(0.01)
    assert warmup_interp(0, 0, 0.1, 0.01) == pytest.approx(0.01)


def test_schedule_applies_warmup_then_lrf(model):
    hyp = {**DEFAULT_HYP, "lr0": 0.1, "lrf": 0.1, "warmup_epochs": 1.0, "lr_decay": 0.5}
    opt = build_optimizer(model, hyp)
    schedule = Schedule(opt, hyp, epochs=4, n_batches_per_epoch=4)
    bias = next(g for g in opt.param_groups if g["kind"] == "bias" and g["block"] == 5)
    weight = next(g for g in opt.param_groups if g["kind"] == "weight" and g["block"] == 4)

    schedule.step(0, 0)  # start of warmup
    assert bias["lr"] == pytest.approx(0.1)  # warmup_bias_lr at the head
    assert weight["lr"] == 0.0
    assert weight["momentum"] == pytest.approx(0.8)

    schedule.step(0, 2)  # halfway through the 4 warmup iterations, epoch 0 (lf = 1)
    assert bias["lr"] == pytest.approx((0.1 + 0.1) / 2)
    assert weight["lr"] == pytest.approx(0.05 / 2)
    assert weight["momentum"] == pytest.approx((0.8 + 0.937) / 2)

    schedule.step(2, 0)  # after warmup: initial_lr * lf(epoch)
    factor = lr_factor(2, 4, 0.1, cos_lr=False)
    assert weight["lr"] == pytest.approx(0.05 * factor)
    assert bias["lr"] == pytest.approx(0.1 * factor)
    assert weight["momentum"] == pytest.approx(0.937)
    assert head_lr(opt) == pytest.approx(0.1 * factor)


@pytest.mark.parametrize("optimizer", ["SGD", "AdamW"])
def test_optimizer_leaves_frozen_params_alone(model, optimizer):
    freeze(model, 4)
    opt = build_optimizer(model, {**DEFAULT_HYP, "optimizer": optimizer, "weight_decay": 0.1})
    before = [p.clone() for p in model.parameters()]
    model.train()
    nn.functional.cross_entropy(model(torch.rand(4, 3, 32, 32)), torch.arange(4)).backward()
    opt.step()
    for param, old in zip(model.parameters(), before, strict=True):
        assert torch.equal(param, old) != param.requires_grad
    assert math.isfinite(head_lr(opt))
