"""YAML as every ``tuner`` and ``trainer`` reader takes it: ``1e-4`` is a float.

PyYAML follows YAML 1.1, whose floats need a dot (``1.0e-4``), so a learning rate written the
way everyone writes it would be the string ``'1e-4'`` (YAML 1.2 and JSON read a float). The
space files, ``--set`` values, hyp files and study configs all go through :func:`parse_yaml`,
so a value reads the same wherever it is written. It lives in ``trainer/`` because the trainer
reads hyp files too and never imports ``tuner``.
"""

from __future__ import annotations

import re
from typing import Any

import yaml

# YAML 1.2's floats with an exponent and no dot, which YAML 1.1 (PyYAML) reads as strings
_EXPONENT_FLOAT = re.compile(r"^[-+]?[0-9][0-9_]*(?:\.[0-9_]*)?[eE][-+]?[0-9]+$")


class _Loader(yaml.SafeLoader):
    """PyYAML's safe loader with YAML 1.2's exponent floats and no duplicate keys.

    PyYAML keeps the last of two equal keys, so a second ``lr0:`` under ``space`` would
    silently replace the first; YAML 1.2 says keys are unique, and this loader holds to it.
    """

    def construct_mapping(self, node: yaml.Node, deep: bool = False) -> dict[Any, Any]:
        if isinstance(node, yaml.MappingNode):
            seen: set[Any] = set()
            for key_node, _ in node.value:
                if key_node.tag == "tag:yaml.org,2002:merge":
                    continue  # `<<: *defaults` may be overridden by the keys beside it
                key = self.construct_object(key_node, deep=True)
                if isinstance(key, list | dict):
                    continue  # unhashable: the base class reports it
                if key in seen:
                    raise yaml.constructor.ConstructorError(
                        "while constructing a mapping", node.start_mark,
                        f"duplicate key {key!r}", key_node.start_mark,
                    )
                seen.add(key)
        return super().construct_mapping(node, deep=deep)


def parse_yaml(text: str) -> Any:
    """The YAML document in ``text``, read by the safe loader with ``1e-4`` as a float.

    Raises:
        yaml.YAMLError: The text is not valid YAML.
    """
    return yaml.load(text, Loader=_Loader)  # noqa: S506 - a SafeLoader subclass


def yaml_problem(exc: yaml.YAMLError) -> str:
    """A one-line description of a YAML error and where it is, for an input-error message."""
    mark = getattr(exc, "problem_mark", None)
    where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
    problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
    return f"invalid YAML{where}: {problem}"


class _Dumper(yaml.SafeDumper):
    """PyYAML's safe dumper that quotes strings :func:`parse_yaml` would read as floats."""


# the dumper quotes a string whenever a resolver would read it back as another type, so with
# the loader's resolver `'1e5'` is written quoted and stays a string through parse_yaml
for _cls in (_Loader, _Dumper):
    _cls.add_implicit_resolver("tag:yaml.org,2002:float", _EXPONENT_FLOAT, list("-+0123456789"))


def dump_yaml(data: Any) -> str:
    """``data`` as block YAML in insertion order that :func:`parse_yaml` reads back unchanged."""
    return yaml.dump(data, Dumper=_Dumper, sort_keys=False)
