from __future__ import annotations

import pytest

from tuner.errors import InputError
from tuner.space import load_space

GOOD = """
study: t1
trainer: {adapter: curve, epochs: 3}
objective: {metric: val/acc, direction: maximize}
base: {lr0: 0.01, momentum: 0.9}
search:
  n_trials: 7
  sampler: {name: tpe, args: {n_startup_trials: 3}}
  pruner: {name: median, args: {n_startup_trials: 2}}
  seed: 3
space:
  freeze: {type: int, low: 0, high: 5}
  lr0: {type: float, low: 1.0e-4, high: 1.0e-1, log: true}
  momentum: {type: float, low: 0.6, high: 0.98}
  fliplr: {type: float, low: 0.0, high: 0.5, step: 0.1}
  optimizer: [SGD, AdamW]
"""


def test_good_space_loads_into_typed_config(write_space):
    cfg = load_space(write_space(GOOD))
    assert cfg.study == "t1"
    assert cfg.trainer.adapter == "curve"
    assert cfg.search.n_trials == 7 and cfg.search.seed == 3
    assert cfg.search.sampler.name == "tpe" and cfg.search.sampler.args == {"n_startup_trials": 3}
    assert cfg.space["lr0"].log and cfg.space["lr0"].low == 1e-4
    assert cfg.space["freeze"].type == "int" and cfg.space["freeze"].high == 5
    assert cfg.space["fliplr"].step == 0.1
    assert cfg.space["optimizer"].choices == ("SGD", "AdamW")
    assert list(cfg.space) == ["freeze", "lr0", "momentum", "fliplr", "optimizer"]
    with pytest.raises(AttributeError):
        cfg.study = "x"  # frozen


def test_defaults_then_file_then_overrides(write_space):
    path = write_space(GOOD.replace("  n_trials: 7\n", ""))
    assert load_space(path).search.n_trials == 20  # default
    assert load_space(write_space(GOOD)).search.n_trials == 7  # file
    cfg = load_space(write_space(GOOD), ["search.n_trials=9", "trainer.epochs=2", "study=x"])
    assert cfg.search.n_trials == 9 and cfg.trainer.settings["epochs"] == 2 and cfg.study == "x"


def test_an_override_of_args_extends_a_short_form_sampler_or_pruner(write_space):
    text = GOOD.replace("{name: tpe, args: {n_startup_trials: 3}}", "tpe")
    text = text.replace("{name: median, args: {n_startup_trials: 2}}", "median")
    cfg = load_space(write_space(text), ["search.sampler.args.n_startup_trials=5",
                                         "search.pruner.args.n_warmup_steps=1"])
    assert (cfg.search.sampler.name, dict(cfg.search.sampler.args)) == (
        "tpe", {"n_startup_trials": 5})
    assert (cfg.search.pruner.name, dict(cfg.search.pruner.args)) == (
        "median", {"n_warmup_steps": 1})
    # other scalars stay scalars: an override below one is an error naming it
    with pytest.raises(InputError, match="--set: study.x: study is not a mapping"):
        load_space(write_space(text), ["study.x=1"])


def test_exponent_floats_and_typed_flags(write_space):
    """``1e-4`` is a float (YAML 1.2, JSON), not PyYAML's string; a typed flag stays as typed."""
    text = GOOD.replace("low: 1.0e-4, high: 1.0e-1", "low: 1e-4, high: 1E-1")
    cfg = load_space(write_space(text), ["space.momentum.low=5e-1", ("study", "007")])
    assert cfg.space["lr0"].low == 1e-4 and cfg.space["lr0"].high == 0.1
    assert cfg.space["momentum"].low == 0.5
    assert cfg.study == "007"  # from --study 007; a YAML re-read would make it 7
    assert load_space(write_space(GOOD), ["study=007"]).study == "7"  # --set reads YAML


def test_study_name_defaults_to_file_stem(write_space):
    cfg = load_space(write_space(GOOD.replace("study: t1\n", ""), name="my-study.yaml"))
    assert cfg.study == "my-study"


def test_base_from_hyp_file_relative_to_space(write_space, tmp_path):
    (tmp_path / "hyps").mkdir()
    (tmp_path / "hyps" / "hyp.yaml").write_text("lr0: 0.02\nanchor_t: 4.0\n")
    cfg = load_space(
        write_space(GOOD.replace("base: {lr0: 0.01, momentum: 0.9}", "base: hyps/hyp.yaml"))
    )
    assert cfg.base == {"lr0": 0.02, "anchor_t": 4.0}
    assert cfg.base_file.endswith("hyp.yaml")


def test_resolved_config_has_adapter_defaults(write_space, tmp_path):
    cfg = load_space(write_space(GOOD))
    adapter = cfg.make_adapter(tmp_path)
    resolved = cfg.to_dict(adapter)
    assert resolved["trainer"]["epochs"] == 3 and resolved["trainer"]["sleep"] == 0.0
    assert resolved["base"]["lr0"] == 0.01 and resolved["base"]["optimizer"] == "SGD"
    assert resolved["space"]["lr0"] == {"type": "float", "low": 1e-4, "high": 0.1, "log": True}


BAD = [
    ("trainer: [1\n", "space.yaml: invalid YAML at line 2"),
    ("", "space.yaml: the file is empty"),
    (GOOD + "extra: 1\n", "space.yaml: extra: unknown key"),
    (
        GOOD.replace("type: int, low: 0", "type: integer, low: 0"),
        "space.yaml: space.freeze.type: unknown value 'integer'",
    ),
    (
        GOOD.replace("low: 1.0e-4, high: 1.0e-1", "low: 0.1, high: 0.01"),
        "space.yaml: space.lr0: low (0.1) must be < high (0.01)",
    ),
    (
        GOOD.replace("low: 1.0e-4, high: 1.0e-1", "low: 0.0, high: 0.1"),
        "space.yaml: space.lr0: log scale needs low > 0",
    ),
    (
        GOOD.replace("optimizer: [SGD, AdamW]", "optimizer: {type: categorical, choices: []}"),
        "space.yaml: space.optimizer.choices: must be a non-empty list",
    ),
    (
        GOOD.replace("adapter: curve", "adapter: nope"),
        "space.yaml: trainer.adapter: unknown adapter 'nope'",
    ),
    (GOOD.replace("epochs: 3", "epochz: 3"), "space.yaml: trainer.epochz: unknown setting"),
    (
        GOOD + "  lrf: {type: float, low: 0.01, high: 0.2}\n",
        "space.yaml: space.lrf: adapter 'curve' cannot tune this key",
    ),
    (GOOD.replace("n_trials: 7", "n_trials: 0"), "space.yaml: search.n_trials: must be > 0"),
    (
        GOOD.replace("metric: val/acc", "metric: mAP50"),
        "space.yaml: objective.metric: adapter 'curve' does not report 'mAP50'",
    ),
    (
        GOOD.replace("high: 5}", "high: 9}"),
        "space.yaml: space.freeze: 9 is outside the valid range",
    ),
    (
        GOOD.replace("name: median", "name: medain"),
        None,
    ),  # pruner names are checked when the study is built (see test_study)
    (GOOD.replace("step: 0.1", "step: -0.1"), "space.yaml: space.fliplr.step: must be > 0"),
    (
        GOOD.replace("optimizer: [SGD, AdamW]", "optimizer: [AdamW]"),
        "space.yaml: space.optimizer: the baseline value 'SGD' is not among the choices",
    ),
    (
        GOOD.replace("base: {lr0: 0.01, momentum: 0.9}", "base: missing.yaml"),
        "space.yaml: base: no such file",
    ),
    (
        GOOD.replace("low: 0.6, high: 0.98", "low: 0.6, high: high"),
        "space.yaml: space.momentum.high: must be a number",
    ),
]


@pytest.mark.parametrize("text,expected", BAD)
def test_bad_space_names_file_and_field(write_space, text, expected):
    path = write_space(text)
    if expected is None:
        load_space(path)
        return
    with pytest.raises(InputError) as info:
        load_space(path)
    message = str(info.value)
    assert message.startswith(str(path)), message
    assert expected in message.replace(str(path.parent) + "/", ""), message
    assert "\n" not in message


def test_the_readme_space_example_is_a_valid_space(tmp_path):
    # the README's annotated space file is what users copy: it must load as written
    from pathlib import Path

    text = (Path(__file__).parents[1] / "README.md").read_text()
    start = text.index("```yaml\n", text.index("## The search space file")) + len("```yaml\n")
    path = tmp_path / "readme.yaml"
    path.write_text(text[start : text.index("```", start)])
    config = load_space(path)
    assert config.search.n_trials == 20 and config.search.sampler.name == "gp"
    assert {"freeze", "lr0", "momentum", "fliplr", "optimizer"} <= set(config.space)


TV_UNFREEZE = """
trainer: {adapter: torchvision, epochs: 6, data: synthetic, weights: none}
base: {unfreeze_epoch: 0}
search: {confirm: {top_k: 1, epochs: 18}}
space:
  freeze: {type: int, low: 0, high: 5}
  unfreeze_epoch: {type: int, low: 0, high: 4}
"""


def test_a_confirmation_length_must_fit_the_searched_schedule(write_space):
    """A confirmation run shorter than a trial's unfreeze_epoch would never unfreeze: it would
    confirm another schedule than the one searched."""
    assert load_space(write_space(TV_UNFREEZE)).search.confirm.epochs == 18  # longer: fine
    with pytest.raises(InputError) as info:
        load_space(write_space(TV_UNFREEZE.replace("epochs: 18", "epochs: 3")))
    assert str(info.value).endswith(
        "search.confirm.epochs: 3 epochs cannot train space.unfreeze_epoch = 4 (valid at that "
        "length: [0, 2]); confirm at least as long as that"
    )
    # as long as unfreeze_epoch is not enough: that run would never unfreeze either
    with pytest.raises(InputError, match=r"4 epochs cannot train space.unfreeze_epoch = 4 "):
        load_space(write_space(TV_UNFREEZE.replace("epochs: 18", "epochs: 4")))
    # the baseline's value counts too, searched or not
    text = TV_UNFREEZE.replace("unfreeze_epoch: 0}", "unfreeze_epoch: 5}").replace(
        "  unfreeze_epoch: {type: int, low: 0, high: 4}\n", "")
    with pytest.raises(InputError, match=r"5 epochs cannot train base.unfreeze_epoch = 5"):
        load_space(write_space(text.replace("epochs: 18", "epochs: 5")))
