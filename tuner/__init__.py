"""tuner: hyperparameter search for the freeze strategy of transfer learning."""

from __future__ import annotations

__version__ = "0.1.0"
