"""`tuner dashboard`: optuna-dashboard serves the study, its note and the trials' user attrs."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request

import optuna
import pytest

from tests.conftest import ROOT
from tests.test_report import make_study
from tuner import study as st
from tuner.cli import main
from tuner.dashboard import annotate
from tuner.objective import Objective
from tuner.space import load_space

optuna_dashboard = pytest.importorskip("optuna_dashboard", reason="extra dashboard not installed")

TRIAL_FACTS = {"train_seconds", "wall_seconds", "report_seconds", "peak_memory_mb", "epochs_run",
               "n_params_trainable", "n_params_frozen", "hyp_path", "hyp", "history"}


def free_port() -> int:
    """A loopback port nothing listens on (the OS picks it)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def get_json(url: str) -> dict:
    with urllib.request.urlopen(url, timeout=10) as response:
        return json.loads(response.read())


def start(url: str, port: int) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "tuner", "dashboard", "--storage", url, "--port", str(port)],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )


def stop(server: subprocess.Popen) -> tuple[int, str]:
    """Ctrl-C the server (killed if it does not stop); returns its exit code and stderr.

    A Ctrl-C that lands while a request is still being answered is swallowed by wsgiref's
    error handler, so it is repeated until the server leaves its loop.
    """
    for _ in range(10):
        if server.poll() is not None:
            break
        server.send_signal(signal.SIGINT)
        try:
            server.wait(timeout=2)
        except subprocess.TimeoutExpired:
            continue
    if server.poll() is None:
        server.kill()
        server.wait()
    return server.returncode, server.stderr.read()


@pytest.fixture
def study_url(tmp_path):
    url = f"sqlite:///{tmp_path / 'dash.db'}"
    # lr0 above 0.3 fails, so the study holds a failed trial with its reason
    make_study(tmp_path, overrides=("search.n_trials=3", "trainer.crash_above_lr0=0.3",
                                    "search.pruner=none"), url=url)
    study = optuna.load_study(study_name="rep", storage=url)
    # one certain failure, whatever the sampler drew
    study.enqueue_trial({"freeze": 1, "lr0": 0.9, "momentum": 0.9})
    config = load_space(tmp_path / "space.yaml", ("trainer.crash_above_lr0=0.3",))
    adapter = config.make_adapter(tmp_path / "cache")
    study.optimize(Objective(config, adapter, config.base_hyp(adapter), tmp_path / "out"),
                   n_trials=1, catch=(Exception,))
    return url


def test_dashboard_serves_the_study_over_http(study_url):
    port = free_port()
    server = start(study_url, port)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:  # bounded wait for the server to listen
            try:
                summaries = get_json(f"{base}/api/studies")["study_summaries"]
                break
            except (urllib.error.URLError, ConnectionError, OSError):
                if server.poll() is not None or time.monotonic() > deadline:
                    code, err = stop(server)
                    pytest.fail(f"dashboard did not come up (exit {code}): {err[-2000:]}")
                time.sleep(0.2)
        [summary] = summaries
        assert summary["study_name"] == "rep"
        detail = get_json(f"{base}/api/studies/{summary['study_id']}")
    finally:
        code, err = stop(server)
    assert code == 0, err
    assert f"optuna-dashboard on http://127.0.0.1:{port}/" in err
    assert "dashboard stopped" in err  # the first Ctrl-C stops it

    study = optuna.load_study(study_name="rep", storage=study_url)
    assert len(detail["trials"]) == len(study.trials) >= 4
    states = {t["state"] for t in detail["trials"]}
    assert {"Complete", "Fail"} <= states
    for trial in detail["trials"]:
        keys = {a["key"] for a in trial["user_attrs"]}
        if trial["state"] == "Complete":
            assert TRIAL_FACTS <= keys, TRIAL_FACTS - keys
        if trial["state"] == "Fail":
            attrs = {a["key"]: a["value"] for a in trial["user_attrs"]}
            assert "simulated crash" in attrs["fail_reason"] and "hyp_path" in attrs
    note = detail["note"]["body"]
    assert note.startswith("## tuner study `rep`")
    assert "space.yaml" in note and "tuner search --space x" in note  # space file, command
    assert "```yaml\nstudy: rep" in note  # the resolved config
    assert detail["objective_names"] == ["val/acc"]


def test_note_is_refreshed_but_a_persons_note_is_kept(tmp_path):
    from optuna_dashboard import get_note, save_note

    url = f"journal:{tmp_path / 'journal.log'}"
    study = make_study(tmp_path, overrides=("search.n_trials=1",), url=url)
    storage = st.open_storage(url)
    optuna.create_study(storage=storage, study_name="other")  # not a tuner study: untouched
    assert annotate(storage) == ["rep"]
    assert annotate(storage) == []  # unchanged: not written again
    save_note(study, "## tuner study `rep`\n\nold")
    assert annotate(storage) == ["rep"] and "Resolved config" in get_note(study)
    save_note(study, "freeze 3 looks best, ask Ana")
    assert annotate(storage) == []
    assert get_note(study) == "freeze 3 looks best, ask Ana"


def test_busy_port_is_a_clear_error(tmp_path):
    url = f"sqlite:///{tmp_path / 'x.db'}"
    optuna.create_study(storage=st.open_storage(url, heartbeat=False), study_name="x")
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        server = start(url, port)
        try:
            server.wait(timeout=60)
        finally:
            code, err = stop(server)
    assert code == 2 and "--port: cannot listen on 127.0.0.1" in err
    # bound before anything is said: no "Listening on" (bottle's) or "optuna-dashboard on" line
    assert err.strip().splitlines() == [
        f"tuner: error: --port: cannot listen on 127.0.0.1:{port}: Address already in use"
    ], err


@pytest.mark.parametrize("port", ["99999", "-1", "65536", "http"])
def test_port_out_of_range_is_a_usage_error(tmp_path, capsys, port):
    """It reached the server, which said "Listening on ..." and then failed with an
    OverflowError (exit 1)."""
    url = f"sqlite:///{tmp_path / 'x.db'}"
    with pytest.raises(SystemExit) as exit_:
        main(["dashboard", "--storage", url, "--port", port])
    err = capsys.readouterr().err
    assert exit_.value.code == 2
    assert "tuner dashboard: error: argument --port: " in err
    assert "Listening" not in err and "Traceback" not in err
    assert not (tmp_path / "x.db").exists()


def test_unresolvable_host_names_host(tmp_path, capsys):
    url = f"sqlite:///{tmp_path / 'x.db'}"
    optuna.create_study(storage=st.open_storage(url, heartbeat=False), study_name="x")
    assert main(["dashboard", "--storage", url, "--host", "999.1.1.1"]) == 2
    err = capsys.readouterr().err
    # one line, naming the flag at fault (it said --port)
    assert err.startswith("tuner: error: --host: cannot listen on 999.1.1.1: "), err
    assert len(err.strip().splitlines()) == 1 and "Listening" not in err


def test_port_0_serves_on_a_free_port_and_says_which(tmp_path):
    url = f"sqlite:///{tmp_path / 'x.db'}"
    optuna.create_study(storage=st.open_storage(url, heartbeat=False), study_name="x")
    server = start(url, 0)
    try:
        line = server.stderr.readline()  # the first thing it says: the URL, once bound
        assert line.startswith("optuna-dashboard on http://127.0.0.1:"), line
        base = line.split()[2].rstrip("/")
        assert not base.endswith(":0")
        [summary] = get_json(f"{base}/api/studies")["study_summaries"]
        assert summary["study_name"] == "x"
    finally:
        code, err = stop(server)
    assert code == 0, err


def test_missing_optuna_dashboard_is_an_input_error(monkeypatch, tmp_path, capsys):
    monkeypatch.setitem(sys.modules, "optuna_dashboard", None)  # import fails
    assert main(["dashboard", "--storage", f"sqlite:///{tmp_path / 'y.db'}"]) == 2
    assert "pip install -e '.[dashboard]'" in capsys.readouterr().err
