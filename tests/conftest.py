from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest

from trainer.base import register_adapter

register_adapter("curve", "tests.fakes:CurveAdapter")
register_adapter("curve-noseed", "tests.fakes:NoSeedCurveAdapter")
register_adapter("curve-noepochs", "tests.fakes:NoEpochsCurveAdapter")

ROOT = Path(__file__).resolve().parent.parent


def process_alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie is gone for every purpose but its table entry; Linux)."""
    try:
        with open(f"/proc/{pid}/stat") as handle:
            return handle.read().split(") ")[1][0] != "Z"
    except FileNotFoundError:
        return False


@pytest.fixture(scope="session", autouse=True)
def repository_studies_untouched():
    """Tests keep their studies in temporary folders: a study, its outputs or a cache that
    appears in the repository's ``studies/`` during the run is a test without ``workdir``."""
    studies = ROOT / "studies"
    before = set(os.listdir(studies)) if studies.is_dir() else set()
    yield
    added = (set(os.listdir(studies)) if studies.is_dir() else set()) - before
    assert not added, f"tests wrote into {studies}: {sorted(added)} (use the workdir fixture)"


@pytest.fixture(scope="session", autouse=True)
def sigint_as_a_terminal_sends_it():
    """Tests send SIGINT as a terminal's Ctrl-C does. A test run started in the background
    (``pytest &`` in a script) inherits SIGINT ignored, which the tuner keeps ignored, as a
    background job should (tuner.interrupt); Python's own handler, which the tuner replaces,
    is what a run in a terminal has, and processes the tests start get the default."""
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, previous)


@pytest.fixture
def workdir(tmp_path, monkeypatch):
    """Run in a temporary folder, so ``studies/`` and its caches are private to the test."""
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.fixture
def write_space(tmp_path):
    """Write a space YAML into tmp_path and return its path."""

    def write(text: str, name: str = "space.yaml") -> Path:
        path = tmp_path / name
        path.write_text(text)
        return path

    return write


os.environ.setdefault("YOLO_OFFLINE", "true")
