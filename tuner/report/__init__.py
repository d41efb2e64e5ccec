"""``tuner report``: what a study found, as one self-contained HTML file.

:mod:`tuner.report.data` builds plain objects from a study (tested without plotly);
:mod:`tuner.report.render` turns them into plotly figures and the HTML page.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any


def write_report(study: Any, out: Path) -> Path:
    """Build the report of ``study`` and write it to ``out`` (atomically).

    Args:
        study: An ``optuna.Study`` written by ``tuner search`` (others work with fewer facts).
        out: The HTML file to write.

    Returns:
        The path written.
    """
    from tuner.export import write_atomic
    from tuner.report.data import build_report
    from tuner.report.render import render_html

    write_atomic(Path(out), render_html(build_report(study)))
    return Path(out)
