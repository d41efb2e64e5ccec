"""Bad input: every row of the README's table, and random YAML thrown at the space loader."""

from __future__ import annotations

import contextlib
import http.server
import importlib.util
import socket
import threading
import time
from collections.abc import Iterator

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tuner.cli import main
from tuner.errors import InputError
from tuner.space import load_space

VALID = {
    "trainer": {"adapter": "curve", "epochs": 2},
    "objective": {"metric": "val/acc"},
    "search": {"n_trials": 3},
    "space": {
        "freeze": {"type": "int", "low": 0, "high": 5},
        "lr0": {"type": "float", "low": 1e-4, "high": 0.1, "log": True},
        "optimizer": {"type": "categorical", "choices": ["SGD", "AdamW"]},
    },
}


def space_text(**changes):
    data = yaml.safe_load(yaml.safe_dump(VALID))
    for dotted, value in changes.items():
        node = data
        *parents, last = dotted.split(".")
        for part in parents:
            node = node[part]
        node[last] = value
    return yaml.safe_dump(data)


TV = (
    "trainer: {{adapter: torchvision, {}}}\n"
    "space: {{lr0: {{type: float, low: 0.001, high: 0.1}}}}\n"
)
TV_BASE = (
    "trainer: {{adapter: torchvision, epochs: 2}}\n"
    "base: {{{}}}\n"
    "space: {{lr0: {{type: float, low: 0.001, high: 0.1}}}}\n"
)
ROWS = [
    ("malformed YAML", "trainer: [1, 2\n", [], "s.yaml: invalid YAML at line"),
    ("no trainer section", "space: {}\n", [], "s.yaml: trainer: is required: the adapter"),
    ("no adapter", "trainer: {epochs: 2}\n", [], "s.yaml: trainer.adapter: is required; choose "
     "from "),
    (
        "a key twice (PyYAML alone keeps the last)",
        "study: a\n" + space_text() + "study: b\n",
        [],
        "s.yaml: invalid YAML at line 24, column 1: duplicate key 'study'",
    ),
    ("unknown top-level key", space_text() + "serach: {}\n", [], "s.yaml: serach: unknown key"),
    (
        "pruner arguments that fail only when it decides",
        space_text(**{"search.pruner": {"name": "hyperband", "args": {"min_resource": 0}}}),
        [],
        "s.yaml: search.pruner.args: hyperband fails with these arguments: ZeroDivisionError",
    ),
    (
        "a pruner argument of the wrong type",
        space_text(**{"search.pruner": {"name": "median", "args": {"n_startup_trials": "abc"}}}),
        [],
        "s.yaml: search.pruner.args.n_startup_trials: must be an integer (median's default is 5)"
        ", got 'abc'",
    ),
    (
        "a searched range outside what the key can mean (momentum above 1)",
        space_text(**{"space.momentum": {"type": "float", "low": 0.6, "high": 1.5}}),
        [],
        "s.yaml: space.momentum: 1.5 is outside the valid range [0.0, 1.0]",
    ),
    (
        "a base value outside what the key can mean (a probability above 1)",
        space_text(base={"fliplr": 1.5}),
        [],
        "s.yaml: base.fliplr: 1.5 is outside the valid range [0.0, 1.0]",
    ),
    (
        "a base key the adapter does not read (a typo)",
        space_text(base={"momentun": 0.5}),
        [],
        "s.yaml: base.momentun: adapter 'curve' reads no such hyp; did you mean 'momentum'?",
    ),
    (
        "unknown param type",
        space_text(**{"space.freeze.type": "integer"}),
        [],
        "s.yaml: space.freeze.type: unknown value 'integer'",
    ),
    (
        "low >= high",
        space_text(**{"space.lr0.low": 0.5}),
        [],
        "s.yaml: space.lr0: low (0.5) must be < high (0.1)",
    ),
    (
        "log with low <= 0",
        space_text(**{"space.lr0.low": 0.0}),
        [],
        "s.yaml: space.lr0: log scale needs low > 0",
    ),
    (
        "categorical with no choices",
        space_text(**{"space.optimizer.choices": []}),
        [],
        "s.yaml: space.optimizer.choices: must be a non-empty list",
    ),
    (
        "unknown adapter",
        space_text(**{"trainer.adapter": "yolov9"}),
        [],
        "s.yaml: trainer.adapter: unknown adapter 'yolov9'",
    ),
    (
        "key unsupported by the adapter",
        space_text(**{"space.mosaic": {"type": "float", "low": 0, "high": 1}}),
        [],
        "s.yaml: space.mosaic: adapter 'curve' cannot tune this key",
    ),
    (
        "missing dataset path",
        TV.format("data: /no/such/root"),
        [],
        "s.yaml: trainer.data: no such directory: /no/such/root",
    ),
    (
        "a base value of another type than its key's",
        TV_BASE.format("fliplr: half"),
        [],
        "s.yaml: base.fliplr: must be a number (as its default 0.5), got 'half'",
    ),
    (
        "an optimizer the trainer does not have",
        TV_BASE.format("optimizer: Lion"),
        [],
        "s.yaml: base.optimizer: must be one of SGD, AdamW, got 'Lion'",
    ),
    (
        "a fractional freeze",
        TV_BASE.format("freeze: 2.5"),
        [],
        "s.yaml: base.freeze: must be an integer (as its default 0), got 2.5",
    ),
    (
        "a true/false key that is neither",
        TV_BASE.format("nesterov: maybe"),
        [],
        "s.yaml: base.nesterov: must be true or false (as its default True), got 'maybe'",
    ),
    (
        "a true/false key searched as a range",
        TV_BASE.format("").replace("space: {", "space: {cos_lr: {type: int, low: 0, high: 3}, "),
        [],
        "s.yaml: space.cos_lr.type: cos_lr is true or false (default False), not an int range",
    ),
    (
        "a searched choice the trainer does not have",
        TV_BASE.format("").replace(
            "space: {", "space: {optimizer: {type: categorical, choices: [SGD, RMSprop]}, "),
        ["--set", "search.baseline=false"],
        "s.yaml (with --set search.baseline): space.optimizer.choices: must be one of SGD, "
        "AdamW, got 'RMSprop'",
    ),
    (
        "an integer key searched as a float range",
        TV_BASE.format("").replace(
            "space: {", "space: {freeze: {type: float, low: 0, high: 2}, "),
        [],
        "s.yaml: space.freeze.type: freeze takes integers (default 0): search it as type: int",
    ),
    ("missing checkpoint", TV.format("weights: /no/such.pt"), [], "s.yaml: trainer.weights:"),
    (
        "torchvision weights not in the local cache",
        TV.format("weights: DEFAULT"),
        [],
        "s.yaml: trainer.weights: torchvision weights DEFAULT for resnet18 are not cached",
    ),
    (
        "unknown sampler argument",
        space_text(**{"search.sampler": {"name": "tpe", "args": {"n_startup": 3}}}),
        [],
        "s.yaml: search.sampler.args.n_startup: not an argument of tpe",
    ),
    (
        "malformed storage URL",
        space_text(),
        ["--storage", "studies.db"],
        "--storage: 'studies.db' is not a storage URL",
    ),
    (
        "storage URL without a database file",
        space_text(),
        ["--storage", "sqlite:///:memory:"],
        "--storage: 'sqlite:///:memory:' names no database file",
    ),
    (
        "unreachable storage",
        space_text(),
        ["--storage", "postgresql://u:p@127.0.0.1:1/db"],
        "--storage: cannot open postgresql://u:p@127.0.0.1:1/db",
    ),
    (
        "unwritable output path",
        space_text(),
        ["--out", "afile/best.yaml"],
        "--out: cannot write afile/best.yaml: afile is not a directory",
    ),
    (
        "output below a broken link",
        space_text(),
        ["--out", "alink/best.yaml"],
        "--out: cannot write alink/best.yaml: alink is not a directory",
    ),
    ("n_trials <= 0", space_text(**{"search.n_trials": 0}), [],
     "s.yaml: search.n_trials: must be > 0"),
    # a flag's value is the flag's error, not the file's, which never said it
    ("--n-trials 0", space_text(), ["--n-trials", "0"], "--n-trials: must be > 0, got 0"),
    ("--set of a bad value", space_text(), ["--set", "search.seed=-1"],
     "--set: search.seed: must be in 0 .. 2**32-1, got -1"),
    ("--set of part of a field with an error",
     space_text(**{"search.pruner": {"name": "hyperband"}}),
     ["--set", "search.pruner.args.min_resource=0"],
     "s.yaml (with --set): search.pruner.args: hyperband fails with these arguments"),
    ("--set that puts a range of the file out of bounds",
     TV_BASE.format("").replace(
         "space: {", "space: {unfreeze_epoch: {type: int, low: 0, high: 1}, "),
     ["--set", "trainer.epochs=1"],
     "s.yaml (with --set trainer.epochs): space.unfreeze_epoch: 1 is outside the valid range "
     "[0, 0]"),
    ("--set of a name YAML reads as a number", space_text(), ["--set", "study=1e5"],
     "--set: study: must be a non-empty string, got 100000.0 (YAML read a number: quote it)"),
    ("--set of a whole mapping", space_text(),
     ["--set", "search.pruner={name: median, args: {n_startup: 1}}"],
     "--set: search.pruner.args.n_startup: not an argument of median"),
    (
        "malformed resources per trial",
        space_text(),
        ["--backend", "ray", "--resources-per-trial", "cpu=two"],
        "--resources-per-trial: expected NAME=AMOUNT",
    ),
    (
        "unreachable Ray cluster",
        space_text(),
        ["--backend", "ray", "--ray-address", "127.0.0.1:1"],
        "--ray-address: cannot reach a Ray cluster at 127.0.0.1:1: Connection refused",
    ),
    (
        "malformed Ray address",
        space_text(),
        ["--backend", "ray", "--ray-address", "headnode"],
        "--ray-address: expected auto, HOST:PORT or ray://HOST:PORT, got 'headnode'",
    ),
    (
        "negative confirm top_k",
        space_text(**{"search.confirm": {"top_k": -1}}),
        [],
        "s.yaml: search.confirm.top_k: must be >= 0 (0: off), got -1",
    ),
    (
        "confirm with an adapter that has no seed",
        space_text(**{"trainer.adapter": "curve-noseed"}),
        ["--confirm", "2"],
        "s.yaml (with --confirm): search.confirm: adapter 'curve-noseed' has no seed setting to "
        "vary",
    ),
    (
        "study name with URL characters",
        space_text(study="v1?b"),
        [],
        "s.yaml: study: 'v1?b' is not a usable study name",
    ),
    ("study flag naming a folder", space_text(), ["--study", ".."],
     "--study: '..' is not a usable study name"),
    ("negative seed", space_text(), ["--seed", "-1"],
     "--seed: must be in 0 .. 2**32-1, got -1"),
    (
        "confirmation length without a confirmation",
        space_text(),
        ["--confirm-epochs", "12"],
        "--confirm-epochs: needs --confirm K (or search.confirm.top_k in the space)",
    ),
    (
        "confirmation scoring without a confirmation",
        space_text(),
        ["--confirm-reduce", "last"],
        "--confirm-reduce: needs --confirm K (or search.confirm.top_k in the space)",
    ),
    (
        "unknown confirmation scoring",
        space_text(**{"search.confirm": {"top_k": 1, "reduce": "mean"}}),
        [],
        "s.yaml: search.confirm.reduce: unknown value 'mean'; choose from best, last",
    ),
    (
        "Ray flag without the ray backend",
        space_text(),
        ["--ray-address", "auto"],
        "--ray-address: needs --backend ray (got --backend optuna)",
    ),
]


@pytest.mark.parametrize("text,flags,expected", [r[1:] for r in ROWS], ids=[r[0] for r in ROWS])
def test_bad_input_exits_2_with_one_line_and_leaves_nothing(
    workdir, capsys, monkeypatch, text, flags, expected
):
    # an empty torch cache, whatever this machine has downloaded (and no network is tried)
    monkeypatch.setenv("TORCH_HOME", str(workdir / "torch-home"))
    (workdir / "s.yaml").write_text(text)
    (workdir / "afile").write_text("")  # a regular file: nothing can be created below it
    (workdir / "alink").symlink_to(workdir / "nowhere")  # a link to nothing: the same
    code = main(["search", "--space", "s.yaml", *flags])
    err = capsys.readouterr().err
    assert code == 2, err
    assert expected in err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
    studies = workdir / "studies"
    leftovers = list(studies.rglob("*")) if studies.exists() else []
    # only caches may remain: no study database, lock file, hyp or config YAML, and no empty
    # studies/<study>/ folder
    assert [p for p in leftovers if ".cache" in p.relative_to(studies).parts] == leftovers


class QuietHandler(http.server.BaseHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - the base's name
        pass  # the test reads stderr: only the tuner may write there


@contextlib.contextmanager
def web_server() -> Iterator[int]:
    """An HTTP/1 server on a free loopback port (a thread); yields the port."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), QuietHandler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()


@contextlib.contextmanager
def silent_server() -> Iterator[int]:
    """A port that accepts TCP connections (the kernel's backlog) and never says a word."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield sock.getsockname()[1]


@pytest.mark.skipif(importlib.util.find_spec("ray") is None, reason="the ray extra is missing")
@pytest.mark.parametrize("server,expected", [
    (web_server, "is not a Ray cluster: it answered '"),
    (silent_server, "is not a Ray cluster: no gRPC (HTTP/2) answer within 0.5 s"),
], ids=["web server", "silent server"])
def test_ray_address_of_a_server_that_is_not_ray_fails_in_seconds(
    workdir, capsys, monkeypatch, server, expected
):
    """A plain TCP probe passed these, and ``ray.init`` then retried them for minutes, after
    the study was created and its baseline enqueued."""
    monkeypatch.setattr("tuner.cli.RAY_PROBE_SECONDS", 0.5)
    (workdir / "s.yaml").write_text(space_text())
    with server() as port:
        started = time.monotonic()
        code = main(["search", "--space", "s.yaml", "--backend", "ray",
                     "--ray-address", f"127.0.0.1:{port}"])
        elapsed = time.monotonic() - started
    err = capsys.readouterr().err
    assert code == 2, err
    assert err.startswith(f"tuner: error: --ray-address: 127.0.0.1:{port} {expected}"), err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert elapsed < 5, elapsed
    studies = workdir / "studies"
    leftovers = list(studies.rglob("*")) if studies.exists() else []
    assert [p for p in leftovers if ".cache" in p.relative_to(studies).parts] == leftovers


def test_the_ray_address_probe_accepts_a_grpc_server():
    """What a Ray GCS answers to an HTTP/2 preface: a SETTINGS frame first (the tests above
    only see refusals; a probe refusing everything would pass them)."""
    from tuner.cli import HTTP2_PREFACE, _check_ray_address

    received = []
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()

        def answer() -> None:
            conn, _ = sock.accept()
            with conn:
                received.append(conn.recv(len(HTTP2_PREFACE)))
                conn.sendall(bytes(3) + b"\x04" + bytes(5))  # SETTINGS, empty, stream 0
                received.append(conn.recv(64))  # the probe's GOAWAY

        thread = threading.Thread(target=answer, daemon=True)
        thread.start()
        _check_ray_address(f"127.0.0.1:{sock.getsockname()[1]}")
        thread.join(timeout=5)
    assert received[0] == HTTP2_PREFACE and received[1][3:4] == b"\x07"  # a polite GOAWAY
    with pytest.raises(InputError, match="port must be in 1 .. 65535, got 99999"):
        _check_ray_address("127.0.0.1:99999")  # the resolver would take port 34463


@pytest.mark.parametrize("command", [
    ["status"], ["export", "--out", "x.yaml"], ["report"], ["dashboard"],
])
def test_reading_a_study_from_a_mistyped_path_creates_nothing(workdir, capsys, command):
    name, *flags = command
    code = main([name, "--storage", "sqlite:///typo/s.db", *flags])
    err = capsys.readouterr().err
    assert code == 2, err
    assert err.strip() == "tuner: error: --storage: no such study file: typo/s.db"
    code = main([name, "--storage", "journal:typo/s.log", *flags])
    assert code == 2 and "no such study file: typo/s.log" in capsys.readouterr().err
    assert not (workdir / "typo").exists()  # no empty database, no folder


@pytest.mark.parametrize("command", [
    ["status"], ["export", "--out", "x.yaml"], ["report"], ["search", "--space", "s.yaml"],
])
def test_a_file_that_is_no_journal_is_an_input_error_and_is_left_as_it_is(
    workdir, capsys, command
):
    (workdir / "s.yaml").write_text(
        "study: s\ntrainer: {adapter: curve, epochs: 1}\nobjective: {metric: val/acc}\n"
        "space: {lr0: {type: float, low: 1.0e-4, high: 0.1}}\n"
    )
    # a one-line YAML file named by mistake (Optuna alone would read it as an empty journal,
    # and appending to it would make it unreadable)
    (workdir / "j.log").write_text("study: s\n")
    name, *flags = command
    code = main([name, *flags, "--storage", "journal:j.log"])
    err = capsys.readouterr().err
    assert code == 2, err
    assert err.startswith("tuner: error: --storage: j.log is not an Optuna journal file")
    assert len(err.strip().splitlines()) == 1
    assert (workdir / "j.log").read_text() == "study: s\n"
    (workdir / "j.log").write_text("study: s\nspace: {}\n")  # a longer one too
    assert main([name, *flags, "--storage", "journal:j.log"]) == 2
    assert "j.log is not an Optuna journal file" in capsys.readouterr().err


def test_confirm_bad_flags_and_another_objective(workdir, capsys):
    (workdir / "s.yaml").write_text(space_text())
    assert main(["confirm", "--space", "s.yaml", "--top-k", "0"]) == 2
    assert "tuner: error: --top-k: must be >= 1, got 0" in capsys.readouterr().err
    assert main(["search", "--space", "s.yaml", "--set", "objective.metric=val/loss",
                 "--set", "objective.direction=minimize"]) == 0
    capsys.readouterr()
    # the stored study minimises val/loss; this space maximises val/acc
    assert main(["confirm", "--space", "s.yaml"]) == 2
    err = capsys.readouterr().err
    assert "s.yaml: objective: study 's' already exists with directions ['minimize']" in err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
    # same direction, other metric: resuming would mix the two in one study
    assert main(["search", "--space", "s.yaml", "--set", "objective.direction=minimize"]) == 2
    err = capsys.readouterr().err
    assert "study 's' already exists optimising val/loss (reduce: best), not val/acc" in err


scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-5, 50),
    st.floats(allow_nan=True),
    st.text(max_size=8),
    st.sampled_from(["float", "int", "categorical", "curve", "tpe"]),
)
trees = st.recursive(
    scalars,
    lambda children: st.one_of(
        st.lists(children, max_size=4),
        st.dictionaries(
            st.one_of(
                st.sampled_from(
                    [
                        "type",
                        "low",
                        "high",
                        "log",
                        "step",
                        "choices",
                        "space",
                        "trainer",
                        "search",
                        "adapter",
                        "n_trials",
                        "metric",
                    ]
                ),
                st.text(max_size=6),
            ),
            children,
            max_size=5,
        ),
    ),
    max_leaves=20,
)
PATHS = [
    "trainer",
    "trainer.adapter",
    "trainer.epochs",
    "objective",
    "search",
    "search.n_trials",
    "search.sampler",
    "search.pruner",
    "space",
    "space.lr0",
    "space.lr0.low",
    "space.freeze.high",
    "space.optimizer.choices",
    "base",
]


@settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(tree=trees)
def test_random_yaml_loads_or_raises_input_error(tmp_path, tree):
    path = tmp_path / "r.yaml"
    path.write_text(yaml.safe_dump(tree))
    try:
        load_space(path)
    except InputError:
        pass


@settings(
    max_examples=200,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(where=st.sampled_from(PATHS), value=trees)
def test_mutated_valid_space_loads_or_raises_input_error(tmp_path, where, value):
    path = tmp_path / "m.yaml"
    data = yaml.safe_load(yaml.safe_dump(VALID))
    node = data
    *parents, last = where.split(".")
    for part in parents:
        node = node[part]
    node[last] = value
    path.write_text(yaml.safe_dump(data))
    try:
        load_space(path)
    except InputError:
        pass


VALID_TEXT = yaml.safe_dump(VALID)


@settings(
    max_examples=200,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(
    start=st.integers(0, len(VALID_TEXT)),
    n_cut=st.integers(0, 12),
    inserted=st.text(alphabet=st.sampled_from(list("{}[]:,-&*!|>'\"#%@` \n\t.0123456789ae")),
                     max_size=8),
)
def test_text_edits_of_a_valid_space_load_or_raise_input_error(tmp_path, start, n_cut, inserted):
    # typos at the character level: unbalanced brackets, stray anchors and tags, broken indents
    path = tmp_path / "t.yaml"
    path.write_text(VALID_TEXT[:start] + inserted + VALID_TEXT[start + n_cut :])
    try:
        load_space(path)
    except InputError:
        pass


def test_an_unreadable_image_is_an_input_error_and_the_fixed_rerun_may_change_settings(
    workdir, capsys
):
    """Only decoding finds a broken image file: one line naming it and trainer.data, exit 2
    (it was an "internal error", exit 1). The study it created has trained nothing, so the
    re-run after the fix may change a setting (it was refused: "ran its trials with")."""
    from PIL import Image

    for split in ("train", "val"):
        for name, colour in (("cat", (255, 0, 0)), ("dog", (0, 0, 255))):
            for i in range(3):
                path = workdir / "imgs" / split / name / f"{i}.png"
                path.parent.mkdir(parents=True, exist_ok=True)
                Image.new("RGB", (20, 20), colour).save(path)
    broken = workdir / "imgs" / "train" / "dog" / "broken.jpg"
    broken.write_bytes(b"not a jpeg")
    (workdir / "s.yaml").write_text(
        "trainer: {adapter: torchvision, model: resnet18, weights: none, data: imgs, "
        "imgsz: 16, batch: 4, epochs: 1}\n"
        "search: {n_trials: 2, seed: 0}\n"
        "space: {lr0: {type: float, low: 0.001, high: 0.1}}\n"
    )
    assert main(["search", "--space", "s.yaml"]) == 2
    err = capsys.readouterr().err
    last = err.strip().splitlines()[-1]
    assert last.startswith("tuner: error: s.yaml: trainer.data: ") and "broken.jpg: not a " \
        "readable image" in last
    assert "Traceback" not in err and "internal error" not in err
    broken.unlink()
    assert main(["search", "--space", "s.yaml", "--set", "trainer.epochs=2"]) == 0, (
        capsys.readouterr().err
    )
    import optuna

    study = optuna.load_study(study_name="s", storage="sqlite:///studies/s.db")
    states = [t.state.name for t in study.trials]
    # the baseline queued by the first run failed as queued under the old settings; the
    # second run queued its own
    assert states.count("COMPLETE") == 2 and study.user_attrs["config"]["trainer"]["epochs"] == 2
    assert study.trials[0].user_attrs["fail_reason"] == "queued under earlier settings"
