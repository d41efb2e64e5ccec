"""Hyp file formats that training pipelines take as they are.

A format turns a trial's full hyp mapping (and the adapter settings it trained with) into the
mapping to write and a few header lines (for example the exact command that uses the file).
The search side adds its own header (study, trial, metric) and writes the file atomically.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from trainer.base import FREEZE_KEYS

Rendered = tuple[dict[str, Any], list[str]]


@dataclass(frozen=True)
class ExportFormat:
    """A named hyp file layout.

    Attributes:
        name: Registry name (``tuner export --format NAME``).
        description: One line for ``--help``.
        render: ``(hyp, settings) -> (mapping to write, header lines)``.
    """

    name: str
    description: str
    render: Callable[[Mapping[str, Any], Mapping[str, Any]], Rendered]


def _generic(hyp: Mapping[str, Any], settings: Mapping[str, Any]) -> Rendered:
    # Plain hyp keys first, then the freeze strategy, so the file reads like a YOLO hyp file.
    plain = {k: v for k, v in hyp.items() if k not in FREEZE_KEYS}
    strategy = {k: hyp[k] for k in FREEZE_KEYS if k in hyp}
    return {**plain, **strategy}, []


FORMATS: dict[str, ExportFormat] = {
    "generic": ExportFormat("generic", "flat hyp keys plus the freeze-strategy keys", _generic),
}


def register_format(fmt: ExportFormat) -> None:
    """Add a format to the registry."""
    FORMATS[fmt.name] = fmt
