"""``python -m tests.run_tuner ARGS``: the ``tuner`` command with the test adapters registered.

For tests that need a real process (signals, kill -9, several workers) on the fake adapters.
"""

from __future__ import annotations

import tests.conftest  # noqa: F401 - registers the `curve` adapter
from tuner.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
