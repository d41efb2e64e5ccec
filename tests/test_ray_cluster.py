"""``--ray-address``: a study joins a Ray cluster that was started separately (``ray start``).

The cluster is a real head node on this machine (2 CPUs); ``tuner search`` runs as its own
process, as it would on a login node, and its trials land in the SQLite study as usual.
"""

from __future__ import annotations

import os
import secrets
import shutil
import socket
import subprocess
import sys

import optuna
import pytest

from tests.conftest import ROOT

pytest.importorskip("ray", reason="the ray extra is not installed")

pytestmark = pytest.mark.slow

SPACE = """
study: c
trainer: {adapter: curve, epochs: 3, sleep: 0.05}
objective: {metric: val/acc}
search: {n_trials: 4, seed: 1, pruner: {name: none}}
space:
  lr0: {type: float, low: 1.0e-4, high: 1.0e-1, log: true}
"""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def cluster(tmp_path_factory):
    """A Ray head node started with ``ray start``; yields its address, stops it afterwards."""
    ray_cli = shutil.which("ray", path=os.path.dirname(sys.executable))
    if ray_cli is None:
        pytest.skip("no ray command next to this Python")
    port = free_port()
    env = {
        **os.environ,
        "RAY_USAGE_STATS_ENABLED": "0",
        # token authentication, as a shared cluster should have; the driver presents the token
        "RAY_AUTH_MODE": "token",
        "RAY_AUTH_TOKEN": secrets.token_hex(32),
        # the workers import the test adapter (tests.fakes) like the driver does
        "PYTHONPATH": os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p),
    }
    start = [
        ray_cli, "start", "--head", f"--port={port}", "--num-cpus=2",
        "--node-ip-address=127.0.0.1", "--include-dashboard=false", "--disable-usage-stats",
        f"--temp-dir={tmp_path_factory.mktemp('ray')}",
    ]
    subprocess.run(start, env=env, check=True, capture_output=True, timeout=120)
    try:
        yield f"127.0.0.1:{port}", env
    finally:
        subprocess.run([ray_cli, "stop", "--force"], env=env, capture_output=True, timeout=120)


def test_search_joins_a_running_cluster(cluster, workdir):
    address, env = cluster
    (workdir / "c.yaml").write_text(SPACE)
    command = [
        sys.executable, "-m", "tests.run_tuner", "search", "--space", "c.yaml",
        "--backend", "ray", "--ray-address", address, "--concurrency", "2",
    ]
    done = subprocess.run(
        command, cwd=workdir, env=env, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-3000:]
    study = optuna.load_study(study_name="c", storage="sqlite:///studies/c.db")
    complete = study.get_trials(states=(optuna.trial.TrialState.COMPLETE,))
    assert len(complete) == 4
    assert all(t.user_attrs["epochs_run"] == 3 for t in complete)
    assert "2 CPUs" in done.stderr  # the driver reports the cluster it joined
    # leaving the cluster disconnects the driver; the cluster itself keeps running
    ray_cli = os.path.join(os.path.dirname(sys.executable), "ray")
    status = subprocess.run(
        [ray_cli, "status", f"--address={address}"], env=env, capture_output=True, timeout=120
    )
    assert status.returncode == 0, status.stderr[-2000:]


def test_sigterm_stops_a_ray_search_like_ctrl_c(cluster, workdir):
    """``ray.init`` sets SIGTERM to ``sys.exit``: a batch system's stop ended the driver
    without its cleanup (no best-so-far file, Ray's C++ stack dump, exit code -6). The tuner
    puts its own handler back: the running trials fail as interrupted, exit code 130."""
    import signal
    import time

    address, env = cluster
    (workdir / "c.yaml").write_text(
        SPACE.replace("n_trials: 4", "n_trials: 40").replace("sleep: 0.05", "sleep: 0.5")
    )
    command = [
        sys.executable, "-m", "tests.run_tuner", "search", "--space", "c.yaml",
        "--backend", "ray", "--ray-address", address,
    ]
    proc = subprocess.Popen(command, cwd=workdir, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    url = "sqlite:///studies/c.db"

    def complete_and_running():
        try:
            states = [t.state for t in optuna.load_study(study_name="c", storage=url).trials]
        except Exception:  # noqa: BLE001 - not created yet
            return False
        return optuna.trial.TrialState.COMPLETE in states and states[-1].name == "RUNNING"

    deadline = time.monotonic() + 180
    while not complete_and_running() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.2)
    assert proc.poll() is None, proc.communicate()[1][-3000:]
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err[-3000:]
    assert "interrupted" in err and "SIGTERM received" not in err
    study = optuna.load_study(study_name="c", storage=url)
    assert not study.get_trials(states=(optuna.trial.TrialState.RUNNING,))
    failed = study.get_trials(states=(optuna.trial.TrialState.FAIL,))
    reasons = {t.user_attrs.get("fail_reason") for t in failed}
    assert reasons == {"interrupted (SIGTERM)"}, err[-3000:]
    assert (workdir / "studies" / "c" / "best_hyp.yaml").exists()
