"""Samplers ``tuner`` adds to Optuna's: a Gaussian process that learns from pruned trials.

Optuna's :class:`~optuna.samplers.GPSampler` fits its Gaussian process to COMPLETE trials only.
Under a pruner most trials of a freeze study are PRUNED (Hyperband stops two in three after
one or three epochs), so the plain GP sees a handful of points, still samples at random when
the study is a quarter through, and never learns where the space trains badly, which is what
pruned trials say. :class:`PrunedGPSampler` counts every pruned trial as an observation at the
best value it reported. With the objective's default ``reduce: best`` that is a pessimistic
estimate (a stopped trial would only have gone up from there), so the GP learns "at least this
bad" regions without ever rating a stopped trial above what it showed. A diverged trial counts
as the worst value the study has seen: its last finite epoch may have looked good.

Its effect against TPE on the same seeds and rivals was measured in the ``-tuner-gp`` sections
of the search benchmark (kept in the history: ``git show 14330c6:benchmarks/RESULTS.md``); the
current ``benchmarks/RESULTS.md`` measures it as tuner's default against the rivals.
"""

from __future__ import annotations

import copy
import inspect
import json
import math
from collections.abc import Container
from typing import Any

import optuna
from optuna.distributions import BaseDistribution
from optuna.trial import FrozenTrial, TrialState

try:
    # Optuna internals for sample_relative without its CPU-device mode (checked: another Optuna
    # version falls back to Optuna's own sample_relative)
    from optuna.samplers._gp.sampler import (
        _RELATIVE_PARAMS_KEY,
        _SYSTEM_ATTR_MAX_LENGTH,
        _get_params,
    )

    _HAS_IMPL = list(
        inspect.signature(optuna.samplers.GPSampler._sample_relative_impl).parameters
    ) == ["self", "study", "completed_trials", "running_trials", "search_space"]
except (ImportError, AttributeError):
    _HAS_IMPL = False

# the user attr of a trial stopped by a non-finite loss or metric (tuner.objective.diverged_attrs
# writes it, from here, so writer and reader cannot drift apart)
DIVERGED_ATTR = "diverged"


def imputed(trial: FrozenTrial, value: float) -> FrozenTrial:
    """A COMPLETE copy of pruned ``trial`` with objective ``value`` (the stored one is kept)."""
    out = copy.copy(trial)
    out.state = TrialState.COMPLETE
    out.values = [value]
    return out


def pruned_value(trial: FrozenTrial, maximize: bool, worst: float | None) -> float | None:
    """What a pruned trial counts as: its best finite report, or ``worst`` when it diverged or
    reported nothing finite (None: leave it out, no trial has a value yet).

    A diverged trial's last finite epoch can look good (a too-high lr often scores well for an
    epoch before the loss blows up), so it counts as the worst value the study has seen, which
    keeps the GP off the cliff as TPE's ranking of pruned trials does.

    Args:
        trial: A PRUNED trial.
        maximize: The study's direction.
        worst: The worst value any trial reported or finished with.
    """
    reported = [v for v in trial.intermediate_values.values() if math.isfinite(v)]
    if trial.user_attrs.get(DIVERGED_ATTR) or not reported:
        return worst
    return max(reported) if maximize else min(reported)


class _WithPrunedTrials:
    """The study as the GP sees it: pruned trials read as complete, at :func:`pruned_value`.

    Everything else (storage, directions, system attributes) is the real study's, so what the
    sampler writes lands in the real study.
    """

    def __init__(self, study: optuna.Study) -> None:
        self._study = study

    def __getattr__(self, name: str) -> Any:
        return getattr(self._study, name)

    def _get_trials(
        self,
        deepcopy: bool = True,
        states: Container[TrialState] | None = None,
        use_cache: bool = False,
    ) -> list[FrozenTrial]:
        trials = self._study._get_trials(deepcopy=deepcopy, states=None, use_cache=use_cache)
        maximize = self._study.directions[0] == optuna.study.StudyDirection.MAXIMIZE
        seen = [v for t in trials for v in t.intermediate_values.values() if math.isfinite(v)]
        seen += [t.value for t in trials if t.state == TrialState.COMPLETE]
        worst = (min(seen) if maximize else max(seen)) if seen else None
        wants_complete = states is None or TrialState.COMPLETE in states
        out = []
        for trial in trials:
            if trial.state != TrialState.PRUNED:
                if states is None or trial.state in states:
                    out.append(trial)
                continue
            value = pruned_value(trial, maximize, worst)
            if value is None:
                if states is None or TrialState.PRUNED in states:
                    out.append(trial)
            elif wants_complete:
                out.append(imputed(trial, value))
        return out

    def get_trials(
        self,
        deepcopy: bool = True,
        states: Container[TrialState] | None = None,
    ) -> list[FrozenTrial]:
        return self._get_trials(deepcopy=deepcopy, states=states)

    @property
    def trials(self) -> list[FrozenTrial]:
        return self.get_trials()


class PrunedGPSampler(optuna.samplers.GPSampler):
    """Optuna's GP sampler, fitted to complete trials and to pruned ones at their best epoch.

    Args:
        use_pruned: Count pruned trials (False: Optuna's GPSampler as it is).
        seed: The sampler's seed.
        n_startup_trials: Random trials before the GP takes over; pruned trials that reported
            count toward them.
        deterministic_objective: Fit the GP without observation noise (Optuna's flag; short
            trials are noisy, so leave it off).
        independent_sampler: For parameters outside the relative search space (random).
        warn_independent_sampling: Log when that sampler is used.
    """

    def __init__(
        self,
        *,
        use_pruned: bool = True,
        seed: int | None = None,
        n_startup_trials: int = 10,
        deterministic_objective: bool = False,
        independent_sampler: optuna.samplers.BaseSampler | None = None,
        warn_independent_sampling: bool = True,
    ) -> None:
        super().__init__(
            seed=seed,
            n_startup_trials=n_startup_trials,
            deterministic_objective=deterministic_objective,
            independent_sampler=independent_sampler,
            warn_independent_sampling=warn_independent_sampling,
        )
        self._use_pruned = use_pruned

    def _view(self, study: optuna.Study) -> optuna.Study:
        # multi-objective studies are never pruned, so they see nothing different
        if not self._use_pruned or len(study.directions) != 1:
            return study
        return _WithPrunedTrials(study)  # type: ignore[return-value]

    def infer_relative_search_space(
        self, study: optuna.Study, trial: FrozenTrial
    ) -> dict[str, BaseDistribution]:
        return super().infer_relative_search_space(self._view(study), trial)

    def sample_relative(
        self, study: optuna.Study, trial: FrozenTrial, search_space: dict[str, BaseDistribution]
    ) -> dict[str, Any]:
        import torch  # the GP's own dependency, imported once a GP is sampled

        view = self._view(study)
        if not _HAS_IMPL or not search_space or torch.get_default_device().type != "cpu":
            return super().sample_relative(view, trial, search_space)
        # Optuna's sample_relative, less its `with torch.device("cpu")`: that mode routes every
        # torch call of the fit and the acquisition search through a Python hook (18 ms a
        # trial at 50 trials of 8 keys, benchmarks.overhead) and changes nothing when the
        # default device is the CPU
        states = (TrialState.COMPLETE, TrialState.RUNNING)
        trials = view._get_trials(deepcopy=False, states=states, use_cache=False)
        completed = [t for t in trials if t.state == TrialState.COMPLETE]
        running = [
            t
            for t in trials
            if t.state == TrialState.RUNNING and search_space.keys() <= _get_params(t).keys()
        ]
        if len(completed) < self._n_startup_trials:
            return {}
        params = self._sample_relative_impl(view, completed, running, search_space)
        if params:
            # other workers' GPs read a running trial's params from here (as Optuna's does)
            text = json.dumps(params)
            for i in range(0, len(text), _SYSTEM_ATTR_MAX_LENGTH):
                study._storage.set_trial_system_attr(
                    trial._trial_id,
                    f"{_RELATIVE_PARAMS_KEY}:{i // _SYSTEM_ATTR_MAX_LENGTH}",
                    text[i : i + _SYSTEM_ATTR_MAX_LENGTH],
                )
        return params
