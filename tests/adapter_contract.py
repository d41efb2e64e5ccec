"""Contract tests every trainer adapter passes.

Use it as a mixin: subclass :class:`AdapterContract` in a ``test_*.py`` module and provide the
``adapter`` fixture (a ready adapter on tiny data) and the ``hyp`` fixture (a fast, valid hyp
mapping). ``failing_hyp`` gives a configuration that must end as :class:`TrialError`.
"""

from __future__ import annotations

from collections.abc import Mapping

import pytest

from trainer.base import Adapter, Pruned, TrialError, TrialResult, get_adapter


class RecordingReporter:
    """Records every report; prunes after ``prune_after`` epochs when set."""

    def __init__(self, prune_after: int | None = None) -> None:
        self.prune_after = prune_after
        self.calls: list[tuple[int, dict[str, float]]] = []

    def report(self, epoch: int, metrics: Mapping[str, float]) -> None:
        self.calls.append((epoch, dict(metrics)))
        if self.prune_after is not None and len(self.calls) >= self.prune_after:
            raise Pruned(epoch)


class AdapterContract:
    """Behaviour shared by all adapters. Subclasses provide the fixtures below."""

    n_epochs: int = 2  # the epochs the ``adapter`` fixture is configured to train

    @pytest.fixture
    def adapter(self, tmp_path) -> Adapter:  # pragma: no cover - abstract
        raise NotImplementedError

    @pytest.fixture
    def hyp(self, adapter) -> dict:
        return adapter.default_hyp()

    @pytest.fixture
    def failing_hyp(self, hyp) -> dict | None:
        """A hyp that makes training fail; None skips the failure test."""
        return None

    def test_registered(self, adapter):
        assert get_adapter(adapter.name) is type(adapter)

    def test_declares_support(self, adapter):
        assert adapter.supported_keys
        assert adapter.default_metric in adapter.metrics
        # every searchable key has a default, so a baseline trial is always complete
        assert set(adapter.supported_keys) <= set(adapter.default_hyp())
        # an inline base may set every key it reads (None: it passes any key on)
        keys = adapter.hyp_keys()
        assert keys is None or set(adapter.default_hyp()) <= keys
        # what a resume may change are settings the adapter has
        settings = adapter.settings_dict()
        assert {k.split(".")[0] for k in adapter.runtime_settings} <= set(settings) | {
            "device", "workers"}  # the base class's, which not every adapter has

    def test_reports_every_epoch(self, adapter, hyp, tmp_path):
        reporter = RecordingReporter()
        result = adapter.run(hyp, reporter, tmp_path)
        assert isinstance(result, TrialResult)
        assert [epoch for epoch, _ in reporter.calls] == list(range(self.n_epochs))
        assert result.epochs_run == self.n_epochs
        for _, metrics in reporter.calls:
            assert adapter.default_metric in metrics
        assert result.metrics == reporter.calls[-1][1]
        assert result.train_seconds > 0

    def test_prune_stops_at_once(self, adapter, hyp, tmp_path):
        reporter = RecordingReporter(prune_after=1)
        with pytest.raises(Pruned) as info:
            adapter.run(hyp, reporter, tmp_path)
        assert len(reporter.calls) == 1  # no epoch ran after the prune signal
        assert info.value.result is not None
        assert info.value.result.epochs_run == 1

    def test_failure_is_a_trial_error(self, adapter, failing_hyp, tmp_path):
        if failing_hyp is None:
            pytest.skip("adapter has no failing configuration")
        with pytest.raises(TrialError) as info:
            adapter.run(failing_hyp, RecordingReporter(), tmp_path)
        assert str(info.value)
