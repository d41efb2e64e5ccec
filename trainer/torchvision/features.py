"""Frozen-feature caching: run a frozen prefix over a dataset once, then train only the rest.

While blocks ``0..k-1`` are frozen with their BatchNorm in eval mode (``bn_frozen: eval``),
they are a fixed function: the same image always gives the same output. When that image is
also fed the same way every epoch (validation always; training when no augmentation is
applied), the prefix's outputs are identical in every epoch and in every trial that starts
from the same weights with the same freeze index. :class:`FeatureStore` computes them once
and keeps them; the loop then runs blocks ``k..head`` on cached features, which is exact
(the same numbers as running the prefix, up to float rounding of different batch shapes),
not an approximation.

Entries are keyed by a digest of the prefix's weights and buffers (so a different checkpoint,
seed or freeze index never hits a stale entry), the dataset and the device. Memory is bounded:
entries are kept in memory up to ``max_bytes`` in all; beyond that the least recently used
ones are moved to ``.npy`` files in a private temporary folder and read back memory-mapped
(only the rows a batch needs), so a large dataset costs disk, not RAM. An entry larger than
the bound by itself is written batch by batch straight into its file (computing it in memory
first would need all of it at once, on the GPU when it runs there). The folder goes away with
the process.

What is NOT cached, because it would not be exact: a prefix with a stochastic layer
(dropout, stochastic depth: :func:`stochastic_layers`) for training data, training data with
any augmentation on, and anything with ``bn_frozen: train`` (frozen BatchNorm statistics then
move every batch).
"""

from __future__ import annotations

import atexit
import hashlib
import shutil
import tempfile
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from trainer.torchvision.blocks import BlockModel

DEFAULT_MAX_MB = 1024

# modules whose output is random in train mode (torchvision's StochasticDepth by name, so
# torchvision.ops is not imported just to check)
_STOCHASTIC = (nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d, nn.AlphaDropout)


def stochastic_layers(model: BlockModel, n_frozen: int) -> list[str]:
    """Names of the layers in blocks ``0..n_frozen-1`` whose train-mode output is random."""
    found = []
    for index, block in enumerate(model.blocks[:n_frozen]):
        for name, module in block.named_modules():
            if isinstance(module, _STOCHASTIC) or type(module).__name__ == "StochasticDepth":
                if getattr(module, "p", 1.0) > 0:
                    found.append(f"{model.names[index]}.{name}" if name else model.names[index])
    return found


def prefix_digest(model: BlockModel, n_frozen: int) -> str:
    """A digest of every parameter and buffer of blocks ``0..n_frozen-1`` (the cache key).

    Hashing the bytes (about 45 MB for a ResNet-18 backbone, tens of milliseconds) is exact:
    any changed weight or BatchNorm statistic gives another key.
    """
    digest = hashlib.blake2b(digest_size=16)
    for block in model.blocks[:n_frozen]:
        for name, tensor in block.state_dict().items():
            data = tensor.detach().cpu().contiguous().reshape(-1)
            digest.update(f"{name}:{tuple(data.shape)}:{data.dtype}".encode())
            digest.update(data.view(torch.uint8).numpy().tobytes() if data.numel() else b"")
    return digest.hexdigest()


@dataclass
class Features:
    """Cached prefix outputs of a dataset: index them like a tensor of ``(N, C, H, W)``.

    Attributes:
        memory: The features as a tensor, or None once moved to disk.
        path: The ``.npy`` file after a move to disk.
    """

    memory: torch.Tensor | None
    path: Path | None = None
    _mapped: np.ndarray | None = None

    @property
    def nbytes(self) -> int:
        """Bytes held in memory (0 on disk)."""
        return 0 if self.memory is None else self.memory.numel() * self.memory.element_size()

    def __len__(self) -> int:
        if self.memory is not None:
            return int(self.memory.shape[0])
        return int(self._array().shape[0])

    def take(self, index: torch.Tensor, device: torch.device) -> torch.Tensor:
        """Rows ``index`` on ``device``, channels-last like the prefix produced them."""
        if self.memory is not None:
            rows = self.memory[index.to(self.memory.device)]
        else:
            rows = torch.from_numpy(np.ascontiguousarray(self._array()[index.numpy()]))
        rows = rows.to(device, non_blocking=True)
        return rows.contiguous(memory_format=torch.channels_last) if rows.dim() == 4 else rows

    def spill(self, folder: Path, name: str) -> None:
        """Move the features to ``folder/name.npy`` and free the memory."""
        assert self.memory is not None
        path = folder / f"{name}.npy"
        np.save(path, self.memory.cpu().contiguous().numpy())
        self.path, self.memory = path, None

    def _array(self) -> np.ndarray:
        if self._mapped is None:
            assert self.path is not None
            self._mapped = np.load(self.path, mmap_mode="r")
        return self._mapped


class FeatureStore:
    """Per-process cache of frozen-prefix outputs, bounded in memory, spilling to disk.

    Args:
        max_bytes: Memory for features in all; the least recently used entries beyond it go
            to disk.
    """

    def __init__(self, max_bytes: int = DEFAULT_MAX_MB * 2**20) -> None:
        self.max_bytes = max_bytes
        self._entries: OrderedDict[tuple, Features] = OrderedDict()
        # keeps each keyed dataset alive, so its id() cannot be reused by another tensor
        self._pinned: dict[int, torch.Tensor] = {}
        self._lock = threading.Lock()
        self._folder: Path | None = None
        self.n_computed = 0  # prefix passes over a dataset (tests and benchmarks read it)
        self.n_hits = 0

    def get(
        self,
        model: BlockModel,
        n_frozen: int,
        images: torch.Tensor,
        device: torch.device,
        compute: Callable[[], Iterable[torch.Tensor]],
        digest: str | None = None,
    ) -> Features:
        """The cached features of ``images`` through blocks ``0..n_frozen-1``.

        Args:
            model: The model (its prefix weights are part of the key).
            n_frozen: Frozen blocks.
            images: The dataset's uint8 images (their identity is part of the key).
            device: Where the features are computed.
            compute: On a miss, yields the features batch by batch, in row order
                (:func:`prefix_batches`).
            digest: :func:`prefix_digest` of the model, if the caller has it already.
        """
        key = (digest or prefix_digest(model, n_frozen), n_frozen, id(images), str(device))
        with self._lock:
            entry = self._entries.get(key)
            if entry is not None:
                self._entries.move_to_end(key)
                self.n_hits += 1
                return entry
        features = self._fill(iter(compute()), len(images), key)
        with self._lock:
            self._entries[key] = features
            self._pinned[id(images)] = images
            self.n_computed += 1
            self._bound()
        return features

    def _fill(self, batches: Iterator[torch.Tensor], n_rows: int, key: tuple) -> Features:
        """One entry from its batches, preallocated from the first batch's shape.

        In memory (where the batches are) when it fits ``max_bytes``, else straight into a
        ``.npy`` file: the entry is never held twice (a list of batches, then their
        concatenation) and never in memory at all when it is over the bound.
        """
        first = next(batches).detach()
        shape = (n_rows, *first.shape[1:])
        n_bytes = first[:1].numel() * first.element_size() * n_rows
        path = None
        if n_bytes <= self.max_bytes:
            sink: torch.Tensor | np.ndarray = torch.empty(
                shape, dtype=first.dtype, device=first.device
            )
            if first.dim() == 4 and first.is_contiguous(memory_format=torch.channels_last):
                sink = sink.contiguous(memory_format=torch.channels_last)
        else:
            with self._lock:
                path = self._spill_folder() / f"f{abs(hash(key)):x}.npy"
            dtype = torch.empty((), dtype=first.dtype).numpy().dtype
            sink = np.lib.format.open_memmap(path, mode="w+", dtype=dtype, shape=shape)
        start = 0
        for batch in (first, *batches):
            stop = start + len(batch)
            sink[start:stop] = batch if path is None else batch.cpu().numpy()
            start = stop
        if start != n_rows:
            raise ValueError(f"the prefix gave {start} rows for {n_rows} images")
        if path is None:
            return Features(sink)
        sink.flush()
        del sink
        return Features(None, path)

    def memory_bytes(self) -> int:
        """Bytes of features held in memory now."""
        return sum(entry.nbytes for entry in self._entries.values())

    def resident(self) -> dict[int, int]:
        """``id(entry) -> bytes`` of the entries held in memory now."""
        with self._lock:
            return {id(e): e.nbytes for e in self._entries.values() if e.nbytes}

    def clear(self) -> None:
        """Forget every entry, reset the counters and delete the spilled files."""
        with self._lock:
            self.n_computed = self.n_hits = 0
            self._entries.clear()
            self._pinned.clear()
            if self._folder is not None:
                shutil.rmtree(self._folder, ignore_errors=True)
                self._folder = None

    def _bound(self) -> None:
        """Spill least recently used in-memory entries until the total fits ``max_bytes``."""
        total = self.memory_bytes()
        for key, entry in list(self._entries.items()):
            if total <= self.max_bytes:
                break
            if entry.memory is None:
                continue
            total -= entry.nbytes
            entry.spill(self._spill_folder(), f"f{abs(hash(key)):x}")

    def _spill_folder(self) -> Path:
        if self._folder is None:
            self._folder = Path(tempfile.mkdtemp(prefix="tuner-features-"))
            atexit.register(shutil.rmtree, self._folder, True)
        return self._folder


_store = FeatureStore()


def store() -> FeatureStore:
    """The process-wide store shared by every trial of this process."""
    return _store


def prefix_batches(
    model: BlockModel,
    images: torch.Tensor,
    n_frozen: int,
    batch: int,
    to_input: Callable[[torch.Tensor], torch.Tensor],
) -> Iterator[torch.Tensor]:
    """Run blocks ``0..n_frozen-1`` over ``images`` without gradients, in eval mode, yielding
    the outputs batch by batch (so a large entry never needs to be in memory whole).

    Eval mode here equals the frozen prefix's train-mode behaviour exactly when its BatchNorm
    layers are kept in eval (``bn_frozen: eval``) and it has no stochastic layers, which the
    caller checks. The model's own mode is restored afterwards.
    """
    was_training = model.training
    prefix = model.blocks[:n_frozen]
    for block in prefix:
        block.eval()
    try:
        for index in torch.arange(len(images)).split(batch):
            with torch.no_grad():
                x = to_input(images[index])
                for block in prefix:
                    x = block(x)
            yield x
    finally:
        model.train(was_training)
