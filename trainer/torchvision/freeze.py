"""Freezing a prefix of blocks, and staged unfreezing.

``freeze(model, N)`` stops gradients for blocks ``0..N-1`` (``requires_grad=False``), makes the
model run them under ``torch.no_grad()`` and, with ``bn_frozen="eval"``, keeps their BatchNorm
layers in eval mode whenever the model is put in train mode, so their running statistics stay
exactly as loaded. ``bn_frozen="train"`` lets those statistics keep adapting to the new data,
which is what YOLOv5 does (it only sets ``requires_grad``).
"""

from __future__ import annotations

from trainer.torchvision.blocks import BlockModel

BN_MODES = ("eval", "train")


def freeze(model: BlockModel, n_frozen: int, bn_frozen: str = "eval") -> None:
    """Freeze blocks ``0..n_frozen-1`` and unfreeze the rest.

    Args:
        model: The model; its train/eval mode is re-applied so BatchNorm follows at once.
        n_frozen: Blocks to freeze; 0 trains everything. Must leave the head trainable.
        bn_frozen: ``"eval"`` keeps frozen BatchNorm statistics fixed, ``"train"`` updates them.

    Raises:
        ValueError: ``n_frozen`` out of ``0..head_index`` or unknown ``bn_frozen``.
    """
    if not 0 <= n_frozen <= model.head_index:
        raise ValueError(f"freeze must be in 0..{model.head_index}, got {n_frozen}")
    if bn_frozen not in BN_MODES:
        raise ValueError(f"bn_frozen must be one of {', '.join(BN_MODES)}, got {bn_frozen!r}")
    for index, block in enumerate(model.blocks):
        for param in block.parameters():
            param.requires_grad_(index >= n_frozen)
    model.n_frozen = n_frozen
    model.freeze_bn = bn_frozen == "eval"
    model.train(model.training)


def unfreeze_all(model: BlockModel) -> None:
    """Make every block trainable again (BatchNorm back in train mode if the model is)."""
    freeze(model, 0, "eval" if model.freeze_bn else "train")


def frozen_for_epoch(freeze_n: int, unfreeze_epoch: int, epoch: int) -> int:
    """Blocks frozen during ``epoch`` (0-based) under staged unfreezing.

    ``unfreeze_epoch=k>0`` keeps the freeze for epochs ``0..k-1`` and trains everything from
    epoch ``k`` on; ``0`` never unfreezes.
    """
    if unfreeze_epoch > 0 and epoch >= unfreeze_epoch:
        return 0
    return freeze_n


def count_params(model: BlockModel) -> tuple[int, int]:
    """Parameters that train and parameters that are frozen, now."""
    n_trainable = n_frozen = 0
    for param in model.parameters():
        if param.requires_grad:
            n_trainable += param.numel()
        else:
            n_frozen += param.numel()
    return n_trainable, n_frozen
