"""Ctrl-C and SIGTERM handling (tuner.interrupt): recorded, raised once, never lost."""

from __future__ import annotations

import signal

import optuna
import pytest

from tests.fakes import CurveAdapter
from tuner import interrupt
from tuner.cli import _during_interrupt, main

SPACE = """
study: i
trainer: {adapter: curve, epochs: 2}
objective: {metric: val/acc}
base: {lr0: 0.001, momentum: 0.7}
search: {n_trials: 6, seed: 3, sampler: {name: random}}
space:
  lr0: {type: float, low: 1.0e-4, high: 1.0e-1, log: true}
"""


def test_only_the_first_signal_raises_a_second_says_so_a_third_forces(capsys):
    before = signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)
    with interrupt.handled():
        with pytest.raises(KeyboardInterrupt) as first:
            signal.raise_signal(signal.SIGTERM)
        assert str(first.value) == "SIGTERM" == interrupt.received()
        signal.raise_signal(signal.SIGINT)  # the cleanup goes on
        assert "still stopping" in capsys.readouterr().err
        with pytest.raises(KeyboardInterrupt):
            interrupt.check()  # recorded: raised again at each checkpoint
        with pytest.raises(KeyboardInterrupt):
            signal.raise_signal(signal.SIGINT)
    assert (signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)) == before
    interrupt.check()  # nothing pending outside the block
    assert interrupt.received() is None
    with interrupt.handled(), pytest.raises(KeyboardInterrupt) as again:
        signal.raise_signal(signal.SIGINT)  # a new block counts from the first again
    assert str(again.value) == "" and interrupt.received() is None


def test_kept_puts_back_handlers_a_library_replaced():
    """ray.init sets SIGTERM to sys.exit; Ray Tune leaves its SIGINT handler after fit."""
    with interrupt.handled():
        ours = signal.getsignal(signal.SIGTERM)
        with interrupt.kept():
            signal.signal(signal.SIGTERM, lambda *_: None)
            signal.signal(signal.SIGINT, lambda *_: None)
        assert signal.getsignal(signal.SIGTERM) is ours is signal.getsignal(signal.SIGINT)


def test_an_error_raised_while_an_interrupt_unwinds_counts_as_the_interrupt():
    try:
        try:
            raise KeyboardInterrupt
        finally:
            raise UnboundLocalError("cannot access local variable")  # Optuna's tell, cut short
    except UnboundLocalError as exc:
        assert _during_interrupt(exc)
    assert not _during_interrupt(ValueError("a plain bug"))


def test_a_second_ctrl_c_inside_optunas_bookkeeping_still_records_the_trial(
    workdir, monkeypatch, capsys
):
    """A batch system's stop (SIGTERM) plus a forwarded SIGINT, or Ctrl-C pressed twice: the
    second landed in Optuna's tell of the interrupted trial, which then raised
    UnboundLocalError ("internal error", exit 1) and left the trial RUNNING."""
    run = CurveAdapter.run
    calls = []

    def interrupted_third(self, hyp, reporter, trial_dir):
        calls.append(1)
        if len(calls) == 3:
            signal.raise_signal(signal.SIGINT)
        return run(self, hyp, reporter, trial_dir)

    storage = optuna.storages.RDBStorage
    set_state = storage.set_trial_state_values

    def again_while_failing(self, trial_id, state, values=None):
        if state == optuna.trial.TrialState.FAIL:
            signal.raise_signal(signal.SIGINT)
        return set_state(self, trial_id, state, values)

    monkeypatch.setattr(CurveAdapter, "run", interrupted_third)
    monkeypatch.setattr(storage, "set_trial_state_values", again_while_failing)
    (workdir / "i.yaml").write_text(SPACE)
    assert main(["search", "--space", "i.yaml"]) == 130
    err = capsys.readouterr().err
    assert "still stopping" in err and "internal error" not in err
    study = optuna.load_study(study_name="i", storage="sqlite:///studies/i.db")
    assert [t.state.name for t in study.trials] == ["COMPLETE", "COMPLETE", "FAIL"]
    assert study.trials[2].user_attrs["fail_reason"] == "interrupted (Ctrl-C)"
    assert (workdir / "studies" / "i" / "best_hyp.yaml").exists()


def test_an_ignored_sigint_stays_ignored():
    """A shell starts background jobs (`tuner search ... &` in a script) with SIGINT ignored,
    so that a Ctrl-C meant for the foreground leaves them running; SIGTERM still stops."""
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        with interrupt.handled():
            signal.raise_signal(signal.SIGINT)
            interrupt.check()  # nothing recorded
            with pytest.raises(KeyboardInterrupt):
                signal.raise_signal(signal.SIGTERM)
        assert signal.getsignal(signal.SIGINT) == signal.SIG_IGN
    finally:
        signal.signal(signal.SIGINT, previous)
