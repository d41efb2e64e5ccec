"""YAML as tuner and the trainer read and write it: exponent floats, and strings that look so."""

from __future__ import annotations

import pytest
import yaml

from trainer.yaml_io import dump_yaml, parse_yaml, yaml_problem


def test_exponent_floats_read_as_floats_and_such_strings_survive_a_round_trip():
    assert parse_yaml("lr0: 1e-4\nn: 10\nx: 1.5e3\nname: e5\n") == {
        "lr0": 1e-4, "n": 10, "x": 1500.0, "name": "e5"
    }
    assert yaml.safe_load("lr0: 1e-4")["lr0"] == "1e-4"  # what PyYAML alone reads
    # a study named 1e5, a categorical choice '2e3': strings, quoted so they stay strings
    data = {"study": "1e5", "choices": ["2e3", 1e-4, 3], "lr0": 0.001, "plain": "SGD"}
    text = dump_yaml(data)
    assert "study: '1e5'" in text and "- '2e3'" in text and "plain: SGD" in text
    assert parse_yaml(text) == data and yaml.safe_load(text) == data
    assert list(parse_yaml(dump_yaml({"b": 1, "a": 2}))) == ["b", "a"]  # insertion order


def test_yaml_problem_is_one_line_with_the_position():
    with pytest.raises(yaml.YAMLError) as info:
        parse_yaml("a: [1, 2\nb: 3\n")
    message = yaml_problem(info.value)
    assert message.startswith("invalid YAML at line 2, column 2: ") and "\n" not in message
