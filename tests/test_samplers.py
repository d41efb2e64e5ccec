"""The GP sampler that learns from pruned trials (:mod:`tuner.samplers`)."""

from __future__ import annotations

import optuna
import pytest
from optuna.distributions import FloatDistribution
from optuna.trial import TrialState, create_trial

from tuner import study as st
from tuner.samplers import PrunedGPSampler, _WithPrunedTrials, imputed, pruned_value
from tuner.space import load_space

X = FloatDistribution(-5.0, 5.0)


def _pruned(x: float, reports: dict[int, float]) -> optuna.trial.FrozenTrial:
    return create_trial(
        state=TrialState.PRUNED, params={"x": x}, distributions={"x": X},
        intermediate_values=reports,
    )


def _complete(x: float, value: float) -> optuna.trial.FrozenTrial:
    return create_trial(value=value, params={"x": x}, distributions={"x": X})


def _study() -> optuna.Study:
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return optuna.create_study(direction="maximize")


@pytest.mark.parametrize(("maximize", "expected"), [(True, 0.4), (False, 0.1)])
def test_a_pruned_trial_counts_at_its_best_report(maximize: bool, expected: float) -> None:
    trial = _pruned(1.0, {0: 0.1, 1: 0.4, 2: 0.3})
    assert pruned_value(trial, maximize, worst=-1.0) == expected
    out = imputed(trial, expected)
    assert out.state == TrialState.COMPLETE and out.value == expected
    assert trial.state == TrialState.PRUNED  # the stored trial is left alone


def test_a_diverged_or_silent_pruned_trial_counts_as_the_worst_seen() -> None:
    # a too-high lr can score well for an epoch before the loss blows up: that epoch must not
    # draw the GP to the cliff
    diverged = _pruned(1.0, {0: 0.9})
    diverged.user_attrs["diverged"] = True
    assert pruned_value(diverged, True, worst=0.05) == 0.05
    silent = _pruned(1.0, {})
    assert pruned_value(silent, True, worst=0.05) == 0.05
    assert pruned_value(_pruned(1.0, {0: float("nan")}), True, worst=0.05) == 0.05
    assert pruned_value(silent, True, worst=None) is None


def test_the_view_shows_pruned_trials_as_complete() -> None:
    study = _study()
    study.add_trial(_complete(0.0, 0.5))
    study.add_trial(_pruned(1.0, {0: 0.2, 1: 0.3}))
    study.add_trial(_pruned(2.0, {}))  # pruned before any report: as bad as the worst seen
    diverged = _pruned(2.5, {0: 0.1, 1: float("nan")})
    diverged.user_attrs["diverged"] = True
    study.add_trial(diverged)
    study.add_trial(create_trial(state=TrialState.FAIL, params={"x": 3.0},
                                 distributions={"x": X}))
    view = _WithPrunedTrials(study)
    complete = view._get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    assert [(t.params["x"], t.value) for t in complete] == [
        (0.0, 0.5), (1.0, 0.3), (2.0, 0.1), (2.5, 0.1)
    ]
    assert view._get_trials(states=(TrialState.PRUNED,)) == []
    assert [t.state for t in view.get_trials()][-1] == TrialState.FAIL
    assert view.directions == study.directions and view._study_id == study._study_id
    # the storage still holds them as pruned
    assert len(study.get_trials(states=(TrialState.PRUNED,))) == 3


def _suggestions(sampler: optuna.samplers.BaseSampler, n: int = 4) -> list[float]:
    study = _study()
    study.sampler = sampler
    # the good region is x in [1, 2]; everything left of 0 was pruned after scoring badly
    study.add_trial(_complete(1.0, 1.0))
    study.add_trial(_complete(2.0, 0.9))
    for x in (-4.5, -3.5, -2.5, -1.5, -0.5, 4.0, 4.5):
        study.add_trial(_pruned(x, {0: -10.0}))
    out = []
    for _ in range(n):
        trial = study.ask({"x": X})
        out.append(trial.params["x"])
        study.tell(trial, state=TrialState.FAIL)  # invisible to every sampler
    return out


def test_pruned_trials_steer_the_gp_away_from_where_they_scored_badly() -> None:
    learned = _suggestions(PrunedGPSampler(seed=0, n_startup_trials=5))
    # 2 complete + 7 reported pruned trials: the GP models them and samples between the two
    # good points, not in the pruned region
    assert all(1.0 <= x <= 2.0 for x in learned), learned
    # Optuna's GP sees 2 complete trials, fewer than its 5 startup ones: it is still drawing
    # the random sampler's values
    plain = _suggestions(PrunedGPSampler(seed=0, n_startup_trials=5, use_pruned=False))
    assert plain == _suggestions(optuna.samplers.RandomSampler(seed=0))


def test_the_registry_gives_gp_with_pruned_trials_seeded(tmp_path) -> None:
    space = tmp_path / "s.yaml"
    space.write_text(
        "trainer: {adapter: curve, epochs: 2}\nobjective: {metric: val/acc}\n"
        "search: {sampler: gp, seed: 3}\n"
        "space: {lr0: {type: float, low: 0.001, high: 0.1, log: true}}\n"
    )
    sampler = st.make_sampler(load_space(space))
    assert isinstance(sampler, PrunedGPSampler)
    assert sampler._use_pruned and sampler._n_startup_trials == 5
    space.write_text(space.read_text().replace("sampler: gp", "sampler: {name: gp, args: "
                                               "{use_pruned: false, n_startup_trials: 8}}"))
    sampler = st.make_sampler(load_space(space))
    assert not sampler._use_pruned and sampler._n_startup_trials == 8


def test_the_default_sampler_is_the_gp_for_one_objective_and_tpe_for_several(tmp_path) -> None:
    space = tmp_path / "s.yaml"
    body = "space: {lr0: {type: float, low: 0.001, high: 0.1, log: true}}\n"
    space.write_text("trainer: {adapter: curve, epochs: 2}\nobjective: {metric: val/acc}\n" + body)
    config = load_space(space)
    assert config.search.sampler.name == "gp"
    assert isinstance(st.make_sampler(config), PrunedGPSampler)
    space.write_text(
        "trainer: {adapter: curve, epochs: 2}\n"
        "objective: [{metric: val/acc, direction: maximize}, {metric: train_time}]\n" + body
    )
    assert load_space(space).search.sampler.name == "tpe"
    # the CLI's --set wins over the default either way
    assert load_space(space, ["search.sampler=gp"]).search.sampler.name == "gp"


def _gp_draws(monkeypatch, fast: bool, n: int = 3) -> tuple[list[dict], list[dict]]:
    """What a GP samples after 8 trials of a 2-key space, and the system attrs it leaves."""
    import tuner.samplers as samplers

    monkeypatch.setattr(samplers, "_HAS_IMPL", fast and samplers._HAS_IMPL)
    study = _study()
    study.sampler = PrunedGPSampler(seed=0, n_startup_trials=5)
    space = {"x": X, "y": FloatDistribution(0.0, 1.0)}
    for i in range(8):
        study.add_trial(create_trial(
            value=-((i - 3.0) ** 2) / 10, params={"x": i - 4.0, "y": i / 8}, distributions=space,
        ))
    draws, attrs = [], []
    for _ in range(n):
        trial = study.ask(space)
        draws.append(trial.params)
        attrs.append(study._storage.get_trial(trial._trial_id).system_attrs)
        study.tell(trial, -abs(trial.params["x"] - 3.0))
    return draws, attrs


def test_the_gp_samples_as_optunas_without_its_cpu_device_mode(monkeypatch) -> None:
    # the fast path leaves out Optuna's `with torch.device("cpu")` only; every draw, and what
    # it shares with other workers' GPs (the running trial's params), stays the same
    import tuner.samplers as samplers

    assert samplers._HAS_IMPL, "Optuna's GPSampler internals moved: the fast path is off"
    fast = _gp_draws(monkeypatch, fast=True)
    assert fast == _gp_draws(monkeypatch, fast=False)
    assert all(any(k.startswith("gp:relative_params") for k in a) for a in fast[1])


def test_the_gp_keeps_optunas_cpu_mode_under_another_default_device(monkeypatch) -> None:
    import torch

    reference = _gp_draws(monkeypatch, fast=True, n=1)[0]
    torch.set_default_device("meta")  # tensors without storage: the GP fails unless on CPU
    try:
        assert _gp_draws(monkeypatch, fast=True, n=1)[0] == reference
    finally:
        torch.set_default_device(None)
