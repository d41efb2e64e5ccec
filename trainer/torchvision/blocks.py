"""Ordered block tables: what ``freeze=N`` means for each model family.

A torchvision classifier is cut into an ordered list of blocks, the unit of freezing (YOLOv5
semantics: ``freeze=N`` freezes blocks ``0..N-1``, the input side). The last block is always
the head (pooling, flatten, classifier), whose final Linear is replaced for the target class
count.

* resnet: 0 stem (conv1, bn1, relu, maxpool), 1..4 layer1..layer4, 5 head (avgpool, fc)
* mobilenet_v3 / efficientnet: one block per ``features`` child, then the head
  (avgpool, classifier)

:class:`BlockModel` keeps the torchvision model as ``net`` (so its ``state_dict`` has the
ordinary torchvision keys and checkpoints load into plain torchvision models) and runs the
blocks in order. Blocks ``0..n_frozen-1`` run under ``torch.no_grad()``: frozen layers then
build no autograd graph at all, which is where the speed of freezing comes from.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

FREEZE_SEMANTICS = (
    "freeze=N freezes blocks 0..N-1 (input side; 0 = train everything); "
    "the head (last block) always trains"
)


@dataclass(frozen=True)
class BlockInfo:
    """One row of a block table."""

    index: int
    name: str
    n_params: int


class BlockModel(nn.Module):
    """A torchvision classifier run as an ordered list of blocks.

    Attributes:
        net: The wrapped torchvision model (owns every parameter).
        names: Block names, in order.
        n_frozen: Blocks ``0..n_frozen-1`` are frozen (set by :mod:`.freeze`).
        freeze_bn: Keep BatchNorm layers of frozen blocks in eval mode in :meth:`train`.
    """

    def __init__(self, net: nn.Module, blocks: list[tuple[str, nn.Module]]) -> None:
        super().__init__()
        self.net = net
        self.names = [name for name, _ in blocks]
        # A plain tuple, not a ModuleList: the modules are already registered under `net`, and
        # registering them twice would duplicate every key in the state_dict.
        self._blocks: tuple[nn.Module, ...] = tuple(module for _, module in blocks)
        self.n_frozen = 0
        self.freeze_bn = True

    @property
    def blocks(self) -> tuple[nn.Module, ...]:
        """The blocks, in forward order."""
        return self._blocks

    @property
    def head_index(self) -> int:
        """Index of the head (the last block)."""
        return len(self._blocks) - 1

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n_frozen = self.n_frozen
        if n_frozen and torch.is_grad_enabled():
            # Nothing upstream of the first trainable block needs a gradient.
            with torch.no_grad():
                for block in self._blocks[:n_frozen]:
                    x = block(x)
        else:
            n_frozen = 0
        for block in self._blocks[n_frozen:]:
            x = block(x)
        return x

    def forward_from(self, x: torch.Tensor, start: int) -> torch.Tensor:
        """Run blocks ``start..head`` on ``x``, the output of block ``start - 1`` (cached
        frozen features)."""
        for block in self._blocks[start:]:
            x = block(x)
        return x

    def train(self, mode: bool = True) -> BlockModel:
        """Set train/eval mode; BatchNorm of frozen blocks stays in eval when ``freeze_bn``."""
        super().train(mode)
        if mode and self.freeze_bn:
            for block in self._blocks[: self.n_frozen]:
                for module in block.modules():
                    if isinstance(module, nn.modules.batchnorm._BatchNorm):
                        module.eval()
        return self


def build_model(name: str, n_classes: int, device: torch.device | str | None = None) -> BlockModel:
    """Build an untrained torchvision model cut into blocks, with an ``n_classes`` head.

    Args:
        name: One of :data:`MODELS`.
        n_classes: Outputs of the final Linear.
        device: Where to create the parameters; ``"meta"`` builds a shape-only model cheaply.

    Raises:
        ValueError: Unknown model name.
    """
    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}; choose from {', '.join(MODELS)}")
    import torchvision.models  # deferred: importing torchvision costs about a second

    with torch.device(device or "cpu"):
        net = getattr(torchvision.models, name)(weights=None, num_classes=n_classes)
    # channels-last suits oneDNN and cuDNN convolutions (inputs are converted in the loop)
    net = net.to(memory_format=torch.channels_last)
    return BlockModel(net, MODELS[name](net))


@functools.cache
def count_blocks(name: str) -> int:
    """Number of blocks of a model (built once per name, on the meta device: no memory)."""
    return len(build_model(name, 2, device="meta").blocks)


def block_table(model: BlockModel) -> list[BlockInfo]:
    """One :class:`BlockInfo` per block; the parameter counts sum to the model's total."""
    return [
        BlockInfo(index, name, sum(p.numel() for p in block.parameters()))
        for index, (name, block) in enumerate(zip(model.names, model.blocks, strict=True))
    ]


def format_block_table(table: list[BlockInfo]) -> str:
    """Lines of ``index: name, params``."""
    width = len(str(table[-1].index)) if table else 1
    return "\n".join(f"{b.index:>{width}}: {b.name}, {b.n_params:,} params" for b in table)


def final_linear(model: BlockModel) -> nn.Linear:
    """The classifier's last Linear (the layer replaced for the target class count)."""
    linears = [m for m in model.blocks[-1].modules() if isinstance(m, nn.Linear)]
    return linears[-1]


def _resnet_blocks(net: nn.Module) -> list[tuple[str, nn.Module]]:
    stem = nn.Sequential(net.conv1, net.bn1, net.relu, net.maxpool)
    layers = [(f"layer{i}", getattr(net, f"layer{i}")) for i in range(1, 5)]
    head = nn.Sequential(net.avgpool, nn.Flatten(1), net.fc)
    return [("stem", stem), *layers, ("head", head)]


def _features_blocks(net: nn.Module) -> list[tuple[str, nn.Module]]:
    blocks = [(f"features.{i}", child) for i, child in enumerate(net.features)]
    head = nn.Sequential(net.avgpool, nn.Flatten(1), net.classifier)
    return [*blocks, ("head", head)]


# model name -> how to cut it into blocks (the supported models, in the order users see them)
MODELS: dict[str, Callable[[nn.Module], list[tuple[str, nn.Module]]]] = {
    "resnet18": _resnet_blocks,
    "resnet34": _resnet_blocks,
    "resnet50": _resnet_blocks,
    "mobilenet_v3_small": _features_blocks,
    "mobilenet_v3_large": _features_blocks,
    "efficientnet_b0": _features_blocks,
}
