"""Search-space files: YAML in, typed frozen dataclasses out, every check at this edge.

Precedence is defaults < space file < overrides (``--set a.b=c`` and the CLI flags, which are
applied to the raw mapping before validation so that errors name the same fields).
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from trainer.base import HYP_BOUNDS, Adapter, ConfigError, adapter_names, get_adapter
from trainer.yaml_io import parse_yaml, yaml_problem
from tuner.errors import InputError

TOP_LEVEL_KEYS = ("study", "trainer", "objective", "base", "search", "space")
PARAM_TYPES = ("float", "int", "categorical")
DIRECTIONS = ("maximize", "minimize")
REDUCTIONS = ("best", "last")
# Measured by every adapter, so they can be objectives too (accuracy-vs-cost studies).
COST_METRICS = {"train_time": "minimize", "peak_memory": "minimize"}

_PARAM_FIELDS = {
    "float": {"type", "low", "high", "log", "step"},
    "int": {"type", "low", "high", "log", "step"},
    "categorical": {"type", "choices"},
}


@dataclass(frozen=True)
class ParamSpec:
    """One searched hyp key."""

    name: str
    type: str
    low: float | int | None = None
    high: float | int | None = None
    log: bool = False
    step: float | int | None = None
    choices: tuple[Any, ...] = ()

    def contains(self, value: Any) -> bool:
        """Whether ``value`` lies in this parameter's domain."""
        if self.type == "categorical":
            return value in self.choices
        if isinstance(value, bool) or not isinstance(value, int | float):
            return False
        return self.low <= value <= self.high

    def to_dict(self) -> dict[str, Any]:
        """The mapping form used in space files."""
        if self.type == "categorical":
            return {"type": self.type, "choices": list(self.choices)}
        out: dict[str, Any] = {"type": self.type, "low": self.low, "high": self.high}
        if self.log:
            out["log"] = True
        if self.step is not None:
            out["step"] = self.step
        return out


@dataclass(frozen=True)
class Target:
    """One objective: a metric the adapter reports, and which way is better."""

    metric: str
    direction: str = "maximize"


@dataclass(frozen=True)
class ObjectiveConfig:
    """What a trial's value is.

    Attributes:
        targets: One target, or several for an accuracy-vs-cost (multi-objective) study.
        reduce: ``best`` takes the best epoch (the checkpoint a pipeline keeps), ``last`` the
            final one.
    """

    targets: tuple[Target, ...]
    reduce: str = "best"

    @property
    def is_multi(self) -> bool:
        """True for a multi-objective study."""
        return len(self.targets) > 1

    @property
    def primary(self) -> Target:
        """The target reported per epoch and used for pruning."""
        return self.targets[0]


@dataclass(frozen=True)
class ComponentConfig:
    """A sampler or pruner by registry name, with keyword arguments."""

    name: str
    args: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class ConfirmConfig:
    """Re-train the ``top_k`` best trials and the baseline on ``n_seeds`` fresh trainer seeds
    after the search, and export the best mean (:mod:`tuner.confirm`); ``top_k: 0`` is off.

    ``epochs`` is the length of a confirmation run (None: a trial's ``trainer.epochs``): the
    full training length checks the pick where it will be used, not where it was searched.
    ``reduce`` scores each run by its best or its last epoch (None: as the search scores a
    trial, ``objective.reduce``): ``last`` judges the weights a pipeline ships at the end of a
    full-length run, which a config that peaks early and then collapses fails.
    """

    top_k: int = 0
    n_seeds: int = 2
    epochs: int | None = None
    reduce: str | None = None


@dataclass(frozen=True)
class SearchConfig:
    """How the study searches. The field defaults here are the only defaults."""

    n_trials: int = 20
    timeout: float | None = None
    # the GP that learns from pruned trials: in the 19-key YOLO space it ends best in 14 of 15
    # seeds, and in 10 of 15 its first quarter of the budget reaches 99% of what random and
    # genetic search reach with all of it (TPE, earlier checkpoint: 3 of 10; benchmarks/)
    sampler: ComponentConfig = ComponentConfig("gp")
    seed: int | None = None
    pruner: ComponentConfig = ComponentConfig("median")
    baseline: bool = True
    max_failures: int = 5
    confirm: ConfirmConfig = ConfirmConfig()


# multi-objective studies are never pruned, so the GP's edge is gone there, and multivariate
# TPE models several objectives from a few trials on at a fraction of the GP's cost per trial
MULTI_OBJECTIVE_SAMPLER = ComponentConfig("tpe")


@dataclass(frozen=True)
class TrainerConfig:
    """The adapter name and its settings as written (the adapter validates and fills them)."""

    adapter: str
    settings: Mapping[str, Any]


@dataclass(frozen=True)
class StudyConfig:
    """A validated space file.

    Attributes:
        source: The file it came from (for messages).
        study: Study name.
        trainer: Adapter and settings.
        objective: Metric(s) and direction(s).
        base: Hyp values for keys that are not searched, as given (inline or from ``base_file``).
        base_file: The hyp file ``base`` was read from, if any.
        search: Sampler, pruner, budget.
        space: Searched keys in file order.
        origins: The fields that flags set, by dotted key: the flag (``--seed``) or
            ``--set``, so that an error in them names the flag, not the file.
    """

    source: str
    study: str
    trainer: TrainerConfig
    objective: ObjectiveConfig
    base: Mapping[str, Any]
    base_file: str | None
    search: SearchConfig
    space: Mapping[str, ParamSpec]
    origins: Mapping[str, str] = dataclasses.field(default_factory=dict)

    def error(self, field_name: str | None, message: str) -> InputError:
        """An input error about ``field_name``, naming the flag that set it or else the file."""
        return blamed(self.source, self.origins, field_name, message)

    def make_adapter(self, cache_dir: Path) -> Adapter:
        """A fresh adapter for these settings (already validated at load time)."""
        return get_adapter(self.trainer.adapter)(self.trainer.settings, cache_dir)

    def prepare(self, adapter: Adapter) -> None:
        """``adapter.prepare()`` (decode the data, load the weights).

        Raises:
            InputError: What only decoding finds (an unreadable image), as this space's
                ``trainer.<setting>`` error.
        """
        try:
            adapter.prepare()
        except ConfigError as exc:
            raise self.error(f"trainer.{exc.field}", exc.message) from None

    def base_hyp(self, adapter: Adapter) -> dict[str, Any]:
        """Every hyp key: the adapter's defaults overlaid with ``base``."""
        return {**adapter.default_hyp(), **self.base}

    def to_dict(self, adapter: Adapter | None = None) -> dict[str, Any]:
        """The resolved config (adapter defaults filled in when ``adapter`` is given)."""
        settings = adapter.settings_dict() if adapter else dict(self.trainer.settings)
        objective: dict[str, Any] | list[dict[str, Any]]
        if self.objective.is_multi:
            objective = [dataclasses.asdict(t) for t in self.objective.targets]
        else:
            objective = dataclasses.asdict(self.objective.primary)
            objective["reduce"] = self.objective.reduce
        search = dataclasses.asdict(self.search)
        for key in ("sampler", "pruner"):
            search[key] = {"name": search[key]["name"], "args": dict(search[key]["args"])}
        return {
            "study": self.study,
            "trainer": {"adapter": self.trainer.adapter, **settings},
            "objective": objective,
            "base": self.base_hyp(adapter) if adapter else dict(self.base),
            "search": search,
            "space": {name: spec.to_dict() for name, spec in self.space.items()},
        }


# -- parsing helpers -------------------------------------------------------------------------


def blamed(
    source: str, origins: Mapping[str, str], field_name: str | None, message: str
) -> InputError:
    """An input error about ``field_name``: naming the flag that set the field (or a mapping
    above it), or else the space file ``source``.

    A typed flag is named alone (``--seed: must be in ...``), ``--set`` with the field
    (``--set: search.seed: ...``): the file never said what the error is about. When flags
    set only part of the field (``--set search.pruner.args.min_resource=0`` and an error
    about ``search.pruner.args``), the file and the flags share it: ``s.yaml (with --set)``.
    An error of a field the flags did not touch may still be theirs (``--set
    trainer.epochs=4`` puts the file's ``unfreeze_epoch`` range out of bounds): the flags
    are named beside the file, ``s.yaml (with --set trainer.epochs)``.
    """
    if field_name:
        keys = [k for k in origins if field_name == k or field_name.startswith(k + ".")]
        if keys:
            flag = origins[max(keys, key=len)]
            if flag == "--set":
                return InputError(flag, field_name, message)
            return InputError(flag, None, message)
        inside = sorted({flag for k, flag in origins.items() if k.startswith(field_name + ".")})
        if inside:
            return InputError(f"{source} (with {', '.join(inside)})", field_name, message)
    if origins:
        given = sorted({f"--set {k}" if flag == "--set" else flag for k, flag in origins.items()})
        return InputError(f"{source} (with {', '.join(given)})", field_name, message)
    return InputError(source, field_name, message)


class _Ctx:
    """Carries the source name (and what flags set) so every error names file and field."""

    def __init__(self, source: str, origins: Mapping[str, str] | None = None) -> None:
        self.source = source
        self.origins = origins if origins is not None else {}

    def error(self, field_name: str | None, message: str) -> InputError:
        return blamed(self.source, self.origins, field_name, message)

    def mapping(self, value: Any, field_name: str) -> Mapping[str, Any]:
        if not isinstance(value, Mapping):
            raise self.error(field_name, f"must be a mapping, got {_kind(value)}")
        for key in value:
            if not isinstance(key, str):
                raise self.error(field_name, f"keys must be strings, got {key!r}")
        return value

    def unknown(self, value: Mapping[str, Any], allowed: Iterable[str], field_name: str) -> None:
        allowed = list(allowed)
        for key in value:
            if key not in allowed:
                where = f"{field_name}.{key}" if field_name else key
                raise self.error(where, f"unknown key; expected one of {', '.join(allowed)}")

    def number(self, value: Any, field_name: str, *, integer: bool = False) -> float | int:
        ok = isinstance(value, int) if integer else isinstance(value, int | float)
        if isinstance(value, bool) or not ok:
            kind = "an integer" if integer else "a number"
            raise self.error(field_name, f"must be {kind}, got {value!r}")
        if not math.isfinite(value):
            raise self.error(field_name, f"must be finite, got {value!r}")
        return value

    def boolean(self, value: Any, field_name: str) -> bool:
        if not isinstance(value, bool):
            raise self.error(field_name, f"must be true or false, got {value!r}")
        return value

    def string(self, value: Any, field_name: str, choices: Iterable[str] | None = None) -> str:
        if not isinstance(value, str) or not value:
            # YAML reads 1e5, 007 or yes as a number or a boolean: quoted, they stay text
            read = "true/false" if isinstance(value, bool) else "a number"
            hint = f" (YAML read {read}: quote it)" if isinstance(value, int | float) else ""
            raise self.error(field_name, f"must be a non-empty string, got {value!r}{hint}")
        if choices is not None and value not in (choices := list(choices)):
            raise self.error(
                field_name, f"unknown value {value!r}; choose from {', '.join(choices)}"
            )
        return value


def _kind(value: Any) -> str:
    return "nothing" if value is None else type(value).__name__


def _parse_param(ctx: _Ctx, name: str, raw: Any) -> ParamSpec:
    where = f"space.{name}"
    if isinstance(raw, list):  # shorthand: a list is a categorical
        raw = {"type": "categorical", "choices": raw}
    raw = ctx.mapping(raw, where)
    kind = ctx.string(raw.get("type"), f"{where}.type", PARAM_TYPES)
    ctx.unknown(raw, sorted(_PARAM_FIELDS[kind]), where)
    if kind == "categorical":
        choices = raw.get("choices")
        if not isinstance(choices, list) or not choices:
            raise ctx.error(f"{where}.choices", "must be a non-empty list")
        for choice in choices:
            if choice is not None and not isinstance(choice, bool | int | float | str):
                raise ctx.error(f"{where}.choices", f"choices must be scalars, got {choice!r}")
        if len(set(map(repr, choices))) != len(choices):
            raise ctx.error(f"{where}.choices", "choices must be distinct")
        return ParamSpec(name, kind, choices=tuple(choices))
    integer = kind == "int"
    for key in ("low", "high"):
        if key not in raw:
            raise ctx.error(f"{where}.{key}", "is required")
    low = ctx.number(raw["low"], f"{where}.low", integer=integer)
    high = ctx.number(raw["high"], f"{where}.high", integer=integer)
    if low >= high:
        raise ctx.error(where, f"low ({low}) must be < high ({high})")
    log = ctx.boolean(raw.get("log", False), f"{where}.log")
    step = raw.get("step")
    if step is not None:
        step = ctx.number(step, f"{where}.step", integer=integer)
        if step <= 0:
            raise ctx.error(f"{where}.step", f"must be > 0, got {step}")
        if log:
            raise ctx.error(where, "log and step cannot be combined")
        if step > high - low:
            raise ctx.error(f"{where}.step", f"step ({step}) is wider than the range")
    if log and low <= 0:
        raise ctx.error(where, f"log scale needs low > 0, got {low}")
    if integer:
        low, high = int(low), int(high)
    else:
        low, high = float(low), float(high)
    return ParamSpec(name, kind, low=low, high=high, log=log, step=step)


def _parse_objective(ctx: _Ctx, raw: Any, adapter: Adapter) -> ObjectiveConfig:
    if raw is None:
        target = Target(adapter.default_metric, adapter.default_direction)
        return ObjectiveConfig((target,))
    if isinstance(raw, Mapping):
        ctx.unknown(raw, ("metric", "direction", "reduce"), "objective")
        items = [raw]
        reduce = ctx.string(raw.get("reduce", "best"), "objective.reduce", REDUCTIONS)
    elif isinstance(raw, list) and raw:
        items, reduce = raw, "best"
    else:
        raise ctx.error("objective", "must be a mapping {metric, direction} or a list of them")
    targets = []
    for i, item in enumerate(items):
        where = "objective" if isinstance(raw, Mapping) else f"objective[{i}]"
        item = ctx.mapping(item, where)
        if not isinstance(raw, Mapping):
            ctx.unknown(item, ("metric", "direction"), where)
        metric = ctx.string(item.get("metric", adapter.default_metric), f"{where}.metric")
        default_dir = COST_METRICS.get(metric, adapter.default_direction)
        direction = ctx.string(
            item.get("direction", default_dir), f"{where}.direction", DIRECTIONS
        )
        targets.append(Target(metric, direction))
    if len({t.metric for t in targets}) != len(targets):
        raise ctx.error("objective", "the same metric is listed twice")
    return ObjectiveConfig(tuple(targets), reduce)


def _parse_component(ctx: _Ctx, raw: Any, where: str, default: ComponentConfig) -> ComponentConfig:
    if raw is None:
        return default
    if isinstance(raw, str):
        return ComponentConfig(raw)
    raw = ctx.mapping(raw, where)
    ctx.unknown(raw, ("name", "args"), where)
    name = ctx.string(raw.get("name"), f"{where}.name")
    args = ctx.mapping(raw.get("args") or {}, f"{where}.args")
    return ComponentConfig(name, dict(args))


def _parse_search(ctx: _Ctx, raw: Any, multi_objective: bool) -> SearchConfig:
    defaults = SearchConfig()
    if multi_objective:
        defaults = dataclasses.replace(defaults, sampler=MULTI_OBJECTIVE_SAMPLER)
    raw = ctx.mapping(raw if raw is not None else {}, "search")
    ctx.unknown(raw, [f.name for f in dataclasses.fields(SearchConfig)], "search")
    n_trials = ctx.number(raw.get("n_trials", defaults.n_trials), "search.n_trials", integer=True)
    if n_trials <= 0:
        raise ctx.error("search.n_trials", f"must be > 0, got {n_trials}")
    timeout = raw.get("timeout", defaults.timeout)
    if timeout is not None:
        timeout = ctx.number(timeout, "search.timeout")
        if timeout <= 0:
            raise ctx.error("search.timeout", f"must be > 0 seconds, got {timeout}")
    seed = raw.get("seed", defaults.seed)
    if seed is not None:
        seed = ctx.number(seed, "search.seed", integer=True)
        if not 0 <= seed < 2**32:  # numpy's range, which every sampler seeds from
            raise ctx.error("search.seed", f"must be in 0 .. 2**32-1, got {seed}")
    max_failures = ctx.number(
        raw.get("max_failures", defaults.max_failures), "search.max_failures", integer=True
    )
    if max_failures <= 0:
        raise ctx.error("search.max_failures", f"must be > 0, got {max_failures}")
    return SearchConfig(
        n_trials=n_trials,
        timeout=timeout,
        sampler=_parse_component(ctx, raw.get("sampler"), "search.sampler", defaults.sampler),
        seed=seed,
        pruner=_parse_component(ctx, raw.get("pruner"), "search.pruner", defaults.pruner),
        baseline=ctx.boolean(raw.get("baseline", defaults.baseline), "search.baseline"),
        max_failures=max_failures,
        confirm=_parse_confirm(ctx, raw.get("confirm")),
    )


def _parse_confirm(ctx: _Ctx, raw: Any) -> ConfirmConfig:
    defaults = ConfirmConfig()
    raw = ctx.mapping(raw if raw is not None else {}, "search.confirm")
    ctx.unknown(raw, [f.name for f in dataclasses.fields(ConfirmConfig)], "search.confirm")
    top_k = ctx.number(raw.get("top_k", defaults.top_k), "search.confirm.top_k", integer=True)
    if top_k < 0:
        raise ctx.error("search.confirm.top_k", f"must be >= 0 (0: off), got {top_k}")
    n_seeds = ctx.number(
        raw.get("n_seeds", defaults.n_seeds), "search.confirm.n_seeds", integer=True
    )
    if n_seeds < 1:
        raise ctx.error("search.confirm.n_seeds", f"must be >= 1, got {n_seeds}")
    epochs = raw.get("epochs", defaults.epochs)
    if epochs is not None:
        epochs = ctx.number(epochs, "search.confirm.epochs", integer=True)
        if epochs < 1:
            raise ctx.error("search.confirm.epochs", f"must be >= 1, got {epochs}")
    reduce = raw.get("reduce", defaults.reduce)
    if reduce is not None:
        reduce = ctx.string(reduce, "search.confirm.reduce", REDUCTIONS)
    return ConfirmConfig(top_k=top_k, n_seeds=n_seeds, epochs=epochs, reduce=reduce)


# the trainer setting a confirmation run's length replaces (every built-in adapter has it)
EPOCHS_SETTING = "epochs"


def confirm_problem(is_multi: bool, adapter: Any, name: str) -> str | None:
    """Why studies of this objective and adapter cannot be confirmed on fresh seeds, or None.

    The one check behind ``search.confirm`` in a space, ``tuner confirm`` and
    :func:`tuner.confirm.run_confirm`.
    """
    if is_multi:
        return "confirms single-objective studies only"
    if getattr(adapter, "seed_setting", None) is None:
        return f"adapter {name!r} has no seed setting to vary"
    return None


# a study name becomes a file name (studies/<study>.db) and part of a database URL, where
# '/', '?', '#' and '%' would change what it points at
_STUDY_NAME = re.compile(r"\w[\w.-]*")


def _load_yaml(path: Path, source: str, field_name: str | None = None) -> Any:
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise InputError(source, field_name, f"no such file: {path}") from None
    except IsADirectoryError:
        raise InputError(source, field_name, f"is a directory, not a YAML file: {path}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(source, field_name, f"cannot read {path}: {exc}") from None
    try:
        return parse_yaml(text)
    except yaml.YAMLError as exc:
        # A referenced file (the base hyp) is named too; the space file is already the source.
        inside = f"{path}: " if field_name else ""
        raise InputError(source, field_name, inside + yaml_problem(exc)) from None


def _parse_base(ctx: _Ctx, raw: Any, folder: Path) -> tuple[dict[str, Any], str | None]:
    if raw is None:
        return {}, None
    base_file = None
    if isinstance(raw, str):
        path = Path(raw)
        if not path.is_absolute():
            path = folder / path
        base_file = str(path)
        try:
            raw = _load_yaml(path, ctx.source, "base")
        except InputError as exc:  # named by the flag when `--set base=FILE` gave the path
            raise ctx.error("base", exc.message) from None
        if raw is None:
            raw = {}
    raw = ctx.mapping(raw, "base")
    for key, value in raw.items():
        if isinstance(value, Mapping):
            raise ctx.error(f"base.{key}", "hyp values must be scalars or lists")
    return dict(raw), base_file


def _check_base_keys(ctx: _Ctx, base: Mapping[str, Any], adapter: Adapter, name: str) -> None:
    """Every key of an inline ``base`` is one the adapter reads: a typo would leave the baseline
    at the default and travel into the exported hyp file.

    A base *file* is left as it is: a pipeline's hyp file may carry keys for that pipeline;
    so are adapters that pass any key on (YOLOv5's ``--hyp`` file, the command's script).
    """
    defaults = set(adapter.default_hyp()) | set(getattr(adapter, "supported_keys", ()))
    if all(key in defaults for key in base):
        return
    known = adapter.hyp_keys()  # may import the pipeline: only when a key is not a default
    if known is None:
        return
    for key in base:
        if key not in known:
            close = difflib.get_close_matches(key, sorted(known), n=1)
            hint = f"did you mean {close[0]!r}? " if close else ""
            raise ctx.error(
                f"base.{key}",
                f"adapter {name!r} reads no such hyp; {hint}it reads {', '.join(sorted(known))}",
            )


def _check_base_values(
    ctx: _Ctx,
    base: Mapping[str, Any],
    limits: Mapping[str, tuple[float, float]],
    defaults: Mapping[str, Any],
    choices: Mapping[str, Sequence[Any]],
) -> None:
    """A base value outside its key's valid range would train the baseline (and every trial
    that does not search the key) on a setting that means nothing; one of another type than
    the key's default (``fliplr: half``) or outside the adapter's ``choices`` (``optimizer:
    Lion``) would fail every trial."""
    for key, value in base.items():
        if key in defaults:
            problem = hyp_value_problem(value, defaults[key], choices.get(key))
            if problem:
                raise ctx.error(f"base.{key}", problem)
        _check_in_range(ctx, f"base.{key}", value, limits.get(key))


def hyp_value_problem(
    value: Any, default: Any, choices: Sequence[Any] | None = None
) -> str | None:
    """Why ``value`` cannot stand for a hyp key whose default is ``default`` (None if it can).

    The default's type is the key's: a number (an int is one too), an integer (an integral
    float like YOLO hyp files write is one too), true/false, or a string; ``choices`` is the
    adapter's list for a key with a fixed set (strings compare case-insensitively).
    """
    if isinstance(default, bool):
        ok, kind = isinstance(value, bool), "true or false"
    elif isinstance(default, int):
        integral = isinstance(value, int) or isinstance(value, float) and value.is_integer()
        ok, kind = integral and not isinstance(value, bool), "an integer"
    elif isinstance(default, float):
        ok, kind = isinstance(value, int | float) and not isinstance(value, bool), "a number"
    elif isinstance(default, str):
        ok, kind = isinstance(value, str), "a string"
    else:
        return None  # a list or mapping (anchors, say): the pipeline's own to check
    if not ok:
        return f"must be {kind} (as its default {default!r}), got {value!r}"
    if choices and _folded(value) not in {_folded(c) for c in choices}:
        return f"must be one of {', '.join(map(str, choices))}, got {value!r}"
    return None


def _folded(value: Any) -> Any:
    return value.lower() if isinstance(value, str) else value


def _check_spec_type(
    ctx: _Ctx,
    spec: ParamSpec,
    defaults: Mapping[str, Any],
    choices: Mapping[str, Sequence[Any]],
) -> None:
    """A searched key's values must be of the key's type: every categorical choice, and a
    numeric range only for a number (``type: int`` for an integer key)."""
    if spec.name not in defaults:
        return
    default = defaults[spec.name]
    field_name = f"space.{spec.name}"
    if spec.type == "categorical":
        for choice in spec.choices:
            problem = hyp_value_problem(choice, default, choices.get(spec.name))
            if problem:
                raise ctx.error(f"{field_name}.choices", problem)
        return
    if isinstance(default, bool | str):
        kind, listed = (("true or false", "[true, false]") if isinstance(default, bool)
                        else ("a string", "of strings"))
        article = "an" if spec.type == "int" else "a"
        raise ctx.error(
            f"{field_name}.type",
            f"{spec.name} is {kind} (default {default!r}), not {article} {spec.type} range: "
            f"search it as type: categorical with choices {listed}",
        )
    if isinstance(default, int) and spec.type == "float":
        raise ctx.error(
            f"{field_name}.type",
            f"{spec.name} takes integers (default {default!r}): search it as type: int",
        )


Override = str | tuple[str, Any] | tuple[str, Any, str]
# fields whose short form is a name alone (`sampler: gp` for `sampler: {name: gp}`)
_SHORT_FORMS = frozenset({"search.sampler", "search.pruner"})


def apply_overrides(
    raw: dict[str, Any],
    overrides: Iterable[Override],
    source: str,
    origins: dict[str, str] | None = None,
) -> dict[str, Any]:
    """Apply overrides to a raw space mapping.

    Args:
        raw: The space file's mapping.
        overrides: ``"a.b.c=value"`` strings (``--set``; the value parsed as YAML) or
            ``(dotted key, value[, flag])`` tuples (typed CLI flags, taken as they are:
            ``--study 007`` stays the string ``'007'``).
        source: The space file, for messages.
        origins: Filled with what set each overridden key: the tuple's flag, or ``--set``.
    """
    for item in overrides:
        flag = "--set"
        if isinstance(item, tuple):
            key, parsed, *named = item
            flag = named[0] if named else flag
        else:
            key, sep, value = item.partition("=")
            if not sep or not key:
                raise InputError("--set", None, f"expected KEY=VALUE, got {item!r}")
            try:
                parsed = parse_yaml(value) if value else None
            except yaml.constructor.ConstructorError as exc:
                # valid syntax that cannot be read (a key twice): not meant as a plain string
                raise InputError("--set", key, yaml_problem(exc)) from None
            except yaml.YAMLError:
                parsed = value
        node = raw
        parts = key.split(".")
        for depth, part in enumerate(parts[:-1]):
            child = node.get(part)
            if child is None:
                child = node[part] = {}
            if isinstance(child, str) and ".".join(parts[: depth + 1]) in _SHORT_FORMS:
                # `sampler: gp` is {name: gp}: an override of its args extends it
                child = node[part] = {"name": child}
            if not isinstance(child, dict):
                raise InputError("--set", key, f"{part} is not a mapping in {source}")
            node = child
        node[parts[-1]] = parsed
        if origins is not None:
            origins[key] = flag
    return raw


def load_space(
    path: str | Path, overrides: Iterable[Override] = (), cache_dir: Path | None = None
) -> StudyConfig:
    """Read, validate and resolve a space file.

    Args:
        path: The YAML file.
        overrides: ``dotted.key=value`` strings or ``(key, value)`` pairs applied before
            validation (CLI flags, :func:`apply_overrides`).
        cache_dir: Passed to the adapter while its settings are checked.

    Returns:
        The validated configuration.

    Raises:
        InputError: Anything wrong, with the file and field named.
    """
    path = Path(path)
    source = str(path)
    raw = _load_yaml(path, source)
    origins: dict[str, str] = {}
    ctx = _Ctx(source, origins)
    if raw is None:
        raise ctx.error(None, "the file is empty")
    raw = dict(ctx.mapping(raw, "top level"))
    raw = apply_overrides(raw, overrides, source, origins)
    ctx.unknown(raw, TOP_LEVEL_KEYS, "")

    study = raw.get("study", path.stem)
    study = ctx.string(str(study) if isinstance(study, int) else study, "study")
    if not _STUDY_NAME.fullmatch(study):
        origin = "" if "study" in raw else " (the space file's name)"
        raise ctx.error(
            "study",
            f"{study!r}{origin} is not a usable study name: it names files and a database URL, "
            "so use letters, digits, '.', '_' and '-' (not starting with '.' or '-')",
        )

    if raw.get("trainer") is None:
        raise ctx.error("trainer", "is required: the adapter and its settings, e.g. "
                                   "trainer: {adapter: torchvision, model: resnet18}")
    trainer_raw = dict(ctx.mapping(raw.get("trainer"), "trainer"))
    if trainer_raw.get("adapter") is None:
        names = ", ".join(adapter_names())
        raise ctx.error("trainer.adapter", f"is required; choose from {names}")
    name = ctx.string(trainer_raw.pop("adapter", None), "trainer.adapter")
    try:
        adapter_cls = get_adapter(name)
    except KeyError:
        raise ctx.error(
            "trainer.adapter",
            f"unknown adapter {name!r}; choose from {', '.join(adapter_names())}",
        ) from None
    except ImportError as exc:
        raise ctx.error("trainer.adapter", f"adapter {name!r} is not installed: {exc}") from None
    try:
        adapter = adapter_cls(trainer_raw, cache_dir or Path("studies/.cache"))
    except ConfigError as exc:
        raise ctx.error(f"trainer.{exc.field}", exc.message) from None

    objective = _parse_objective(ctx, raw.get("objective"), adapter)
    known_metrics = list(getattr(adapter, "metrics", ())) + list(COST_METRICS)
    for i, target in enumerate(objective.targets):
        if target.metric not in known_metrics:
            where = "objective.metric" if not objective.is_multi else f"objective[{i}].metric"
            raise ctx.error(
                where,
                f"adapter {name!r} does not report {target.metric!r}; "
                f"it reports {', '.join(known_metrics)}",
            )

    base, base_file = _parse_base(ctx, raw.get("base"), path.parent)
    if base_file is None:
        _check_base_keys(ctx, base, adapter, name)
    # the keys' own valid ranges, and the adapter's that depend on its settings (freeze)
    limits = {**HYP_BOUNDS, **adapter.limits()}
    # each key's type is its default's; the adapter's fixed sets (optimizer) on top
    defaults, choices = adapter.default_hyp(), adapter.hyp_choices()
    _check_base_values(ctx, base, limits, defaults, choices)
    search = _parse_search(ctx, raw.get("search"), objective.is_multi)
    if search.confirm.top_k:
        problem = confirm_problem(objective.is_multi, adapter, name)
        if problem:
            raise ctx.error("search.confirm", f"{problem} (set top_k: 0)")
    if search.confirm.epochs is not None and EPOCHS_SETTING not in adapter.settings_dict():
        raise ctx.error("search.confirm.epochs", f"adapter {name!r} has no epochs setting")

    space_raw = ctx.mapping(raw.get("space"), "space")
    if not space_raw:
        raise ctx.error("space", "must name at least one parameter to search")
    supported = set(getattr(adapter, "supported_keys", ()))
    space: dict[str, ParamSpec] = {}
    for key, spec_raw in space_raw.items():
        spec = _parse_param(ctx, key, spec_raw)
        if key not in supported:
            raise ctx.error(
                f"space.{key}",
                f"adapter {name!r} cannot tune this key; "
                f"it supports {', '.join(sorted(supported))}",
            )
        _check_spec_type(ctx, spec, defaults, choices)
        _check_limits(ctx, spec, limits.get(key))
        space[key] = spec
    searched = {key: spec.to_dict() for key, spec in space.items()}
    try:
        adapter.check_space(searched, {**adapter.default_hyp(), **base})
    except ConfigError as exc:  # its field is the space file's own (space.mosaic, base.X)
        raise ctx.error(exc.field, exc.message) from None
    if search.confirm.epochs is not None:
        _check_confirm_length(ctx, search.confirm.epochs, adapter_cls, trainer_raw, cache_dir,
                              space, base, adapter)

    config = StudyConfig(
        source=source,
        study=study,
        trainer=TrainerConfig(name, dict(trainer_raw)),
        objective=objective,
        base=dict(base),
        base_file=base_file,
        search=search,
        space=dict(space),
        origins=dict(origins),
    )
    if search.baseline:
        _check_baseline(ctx, config, adapter)
    return config


def _check_confirm_length(
    ctx: _Ctx,
    epochs: int,
    adapter_cls: type[Adapter],
    trainer_raw: Mapping[str, Any],
    cache_dir: Path | None,
    space: Mapping[str, ParamSpec],
    base: Mapping[str, Any],
    adapter: Adapter,
) -> None:
    """A confirmation length must keep every searched value meaningful.

    Limits that depend on the length (``unfreeze_epoch`` <= epochs) are checked again for an
    adapter of ``search.confirm.epochs``: a run shorter than a trial's ``unfreeze_epoch`` would
    never unfreeze and so confirm another schedule than the one searched; so are the adapter's
    own checks of the space (a run no longer than Ultralytics' ``close_mosaic`` would confirm
    a searched ``mosaic`` that is off in every epoch).
    """
    field_name = "search.confirm.epochs"
    try:
        longer = adapter_cls({**trainer_raw, EPOCHS_SETTING: epochs},
                             cache_dir or Path("studies/.cache"))
    except ConfigError as exc:
        raise ctx.error(field_name, f"{epochs}: {exc.message}") from None
    limits = longer.limits()
    hyp = {**adapter.default_hyp(), **base}
    try:  # what a searched key means may depend on the length too (Ultralytics' close_mosaic)
        longer.check_space({key: spec.to_dict() for key, spec in space.items()}, hyp,
                           length_field=field_name)
    except ConfigError as exc:
        message = f"runs of {epochs} epochs: {exc.field}: {exc.message}"
        raise ctx.error(field_name, message) from None
    for key, (lo, hi) in limits.items():
        spec = space.get(key)
        values = [] if spec is None else _extremes(spec)
        where = f"space.{key}" if spec is not None else f"base.{key}"
        for value in [*values, hyp.get(key)]:
            if isinstance(value, int | float) and not isinstance(value, bool) \
                    and not lo <= value <= hi:
                raise ctx.error(
                    field_name,
                    f"{epochs} epochs cannot train {where} = {value} (valid at that length: "
                    f"[{lo}, {hi}]); confirm at least as long as that",
                )


def _extremes(spec: ParamSpec) -> tuple[Any, ...]:
    """The values that bound what ``spec`` can sample: its choices, or low and high."""
    return spec.choices if spec.type == "categorical" else (spec.low, spec.high)


def _check_limits(ctx: _Ctx, spec: ParamSpec, limit: tuple[float, float] | None) -> None:
    for value in _extremes(spec):
        _check_in_range(ctx, f"space.{spec.name}", value, limit)


def _check_in_range(
    ctx: _Ctx, field_name: str, value: Any, limit: tuple[float, float] | None
) -> None:
    """A number outside the inclusive ``limit`` is an error of ``field_name``; other values
    (strings, booleans, no limit) are not checked here."""
    if limit is None or isinstance(value, bool) or not isinstance(value, int | float):
        return
    lo, hi = limit
    if not lo <= value <= hi:
        raise ctx.error(field_name, f"{value} is outside the valid range [{lo}, {hi}]")


def _check_baseline(ctx: _Ctx, config: StudyConfig, adapter: Adapter) -> None:
    # The baseline trial must be expressible in the space: Optuna cannot enqueue a
    # categorical value that is not among the choices.
    hyp = config.base_hyp(adapter)
    for key, spec in config.space.items():
        if spec.type == "categorical" and hyp.get(key) not in spec.choices:
            raise ctx.error(
                f"space.{key}",
                f"the baseline value {hyp.get(key)!r} is not among the choices "
                f"{list(spec.choices)}; add it, or set search.baseline: false",
            )
