"""Dataclass configs as plain data: load from YAML, override from the command line, save back.

Every config in sam3tune is a (possibly nested) dataclass whose defaults are the official recipe.
``load_config(TrainConfig, "run.yaml", ["optim.lr=1e-4", "data.negatives=none"])`` reads the YAML,
applies the ``dotted.key=value`` overrides (values parsed as YAML scalars/lists) and checks every
key and type, so a typo fails loudly instead of silently training with a default. Each config
dataclass also checks its values (``validate``, run by ``__post_init__``): a value that would make the
recipe meaningless (``optim.grad_clip_norm=-1``, ``loop.max_steps=0``) raises :class:`InvalidValue`
naming the dotted key.
"""

from __future__ import annotations

import dataclasses
import json
import math
import re
import types
import typing
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal, TypeVar, Union, get_args, get_origin

import yaml

from sam3tune.errors import UserError

T = TypeVar("T")


class _Yaml12Loader(yaml.SafeLoader):
    """YAML with 1.2 scalars: only true/false are booleans (``amp: off`` stays the string "off"); a key
    given twice in one mapping is an error (YAML 1.2 requires unique keys; PyYAML keeps the last one)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict:
        seen: dict[Any, int] = {}
        for key_node, _ in node.value:  # the mapping's own keys (a `<<` merge may be overridden)
            if not isinstance(key_node, yaml.ScalarNode) or key_node.tag == "tag:yaml.org,2002:merge":
                continue
            key = self.construct_object(key_node)
            line = key_node.start_mark.line + 1
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None,
                    None,
                    f"key {key!r} is given twice in one mapping (lines {seen[key]} and {line}); only one "
                    "value can be meant: remove the other",
                    key_node.start_mark,
                )
            seen[key] = line
        return super().construct_mapping(node, deep=deep)


_Yaml12Loader.yaml_implicit_resolvers = {
    first: [(tag, rx) for tag, rx in resolvers if tag != "tag:yaml.org,2002:bool"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_Yaml12Loader.add_implicit_resolver(
    "tag:yaml.org,2002:bool", re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF")
)


def parse_yaml(text: str) -> Any:
    """Parse YAML text with YAML 1.2 booleans and unique keys (see ``_Yaml12Loader``)."""
    return yaml.load(text, Loader=_Yaml12Loader)


def yaml_problem(err: yaml.YAMLError) -> str:
    """``line N: what is wrong`` of a YAML error (its text without PyYAML's excerpt of the input)."""
    mark = getattr(err, "problem_mark", None)
    problem = getattr(err, "problem", None) or str(err)
    return f"line {mark.line + 1}: {problem}" if mark is not None else problem


class ConfigError(UserError, ValueError):
    """A config file or override that does not fit the dataclass schema."""


class InvalidValue(ConfigError):
    """A config value of the right type that makes the recipe meaningless (e.g. a negative learning
    rate); ``key`` is its dotted name relative to the dataclass that refused it."""

    def __init__(self, key: str, value: Any, requirement: str) -> None:
        super().__init__(f"{key}={value!r}: {requirement}", key=key)
        self.value, self.requirement = value, requirement

    def under(self, prefix: str) -> InvalidValue:
        """The same error with ``prefix`` (e.g. ``"optim."``) in front of the key."""
        return InvalidValue(prefix + self.key, self.value, self.requirement)


def require(condition: bool, key: str, value: Any, requirement: str) -> None:
    """Raise :class:`InvalidValue` for ``key`` unless ``condition``."""
    if not condition:
        raise InvalidValue(key, value, requirement)


_DEVICE = re.compile(r"auto|cpu|mps|(cuda|xpu)(:\d+)?")


def require_device(config: Any, name: str = "device") -> None:
    """Field ``name`` of ``config`` must be a device string torch takes: ``auto`` (CUDA when available),
    ``cpu``, ``cuda``, ``cuda:N``, ``mps``, ``xpu[:N]``."""
    value = getattr(config, name)
    require(
        isinstance(value, str) and _DEVICE.fullmatch(value) is not None,
        name,
        value,
        "must be auto, cpu, cuda, cuda:N, mps or xpu[:N]",
    )


def require_range(
    config: Any,
    *names: str,
    low: float | None = None,
    high: float | None = None,
    low_open: bool = False,
    high_open: bool = False,
) -> None:
    """Every field ``names`` of ``config`` that is not None must be a finite number in the interval
    (``low_open``/``high_open`` exclude the end); used by the configs' ``validate`` methods."""
    left = f"{'(' if low_open else '['}{low}" if low is not None else "(-inf"
    right = f"{high}{')' if high_open else ']'}" if high is not None else "inf)"
    if high is None and low is not None:
        wording = f"must be {'>' if low_open else '>='} {low}"
    else:
        wording = f"must be in {left}, {right}"
    for name in names:
        value = getattr(config, name)
        if value is None:
            continue
        ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
        require(ok, name, value, f"must be a finite number; {wording}")
        above = low is None or (value > low if low_open else value >= low)
        below = high is None or (value < high if high_open else value <= high)
        require(above and below, name, value, wording)


def from_dict(cls: type[T], data: dict[str, Any] | None, where: str = "") -> T:
    """Build dataclass ``cls`` from a mapping, recursing into nested dataclasses.

    Unknown keys and wrongly typed values raise :class:`ConfigError` naming the dotted key.
    """
    data = dict(data or {})
    hints = typing.get_type_hints(cls)
    known = {f.name for f in dataclasses.fields(cls) if f.init}
    unknown = sorted(set(data) - known)
    if unknown:
        raise ConfigError(
            f"unknown config key(s) {', '.join(where + k for k in unknown)}; "
            f"valid keys of {cls.__name__}: {', '.join(sorted(known))}"
        )
    required = [
        f.name
        for f in dataclasses.fields(cls)
        if f.init and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
    ]
    missing = [name for name in required if name not in data]
    if missing:
        raise ConfigError(f"missing config key(s) {', '.join(where + k for k in missing)} of {cls.__name__}")
    kwargs = {name: _coerce(hints[name], value, where + name) for name, value in data.items()}
    try:
        return cls(**kwargs)  # configs check their values in __post_init__ (a ``validate`` method)
    except InvalidValue as err:
        raise err.under(where) from None


def to_dict(obj: Any) -> Any:
    """A dataclass (nested) as plain dicts/lists/scalars, ready for YAML or JSON."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: to_dict(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, (list, tuple)):
        return [to_dict(v) for v in obj]
    if isinstance(obj, dict):
        return {k: to_dict(v) for k, v in obj.items()}
    if isinstance(obj, Path):
        return str(obj)
    return obj


def apply_overrides(data: dict[str, Any], overrides: Sequence[str]) -> dict[str, Any]:
    """Apply ``a.b.c=value`` strings to a nested dict (values are parsed as YAML)."""
    data = dict(data)
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override {item!r} is not of the form key=value (e.g. optim.lr=1e-4)")
        key, raw = item.split("=", 1)
        parts = key.strip().split(".")
        node = data
        for part in parts[:-1]:
            child = node.get(part)
            node[part] = dict(child) if isinstance(child, dict) else {}
            node = node[part]
        node[parts[-1]] = parse_yaml(raw) if raw.strip() else None
    return data


def as_overrides(values: dict[str, Any], prefix: str = "") -> list[str]:
    """A (nested) mapping as ``dotted.key=value`` overrides, values quoted so that a path stays a string:
    ``{"loop": {"epochs": 2}}`` -> ``["loop.epochs=2"]``."""
    overrides = []
    for key, value in values.items():
        if isinstance(value, dict):
            overrides += as_overrides(value, f"{prefix}{key}.")
        else:
            overrides.append(f"{prefix}{key}={json.dumps(to_dict(value))}")
    return overrides


def with_shortcuts(overrides: Sequence[str], values: dict[str, Any]) -> list[str]:
    """``overrides`` followed by the ``key=value`` of every value that is not None: what command-line
    shortcuts set (``--data PATH`` is ``data.root=PATH``)."""
    return [*overrides, *as_overrides({k: v for k, v in values.items() if v is not None})]


def is_override(text: str) -> bool:
    """Whether a command-line word is a ``dotted.key=value`` override (not, e.g., a file path)."""
    return _OVERRIDE.match(text) is not None


_OVERRIDE = re.compile(r"^[A-Za-z_][A-Za-z0-9_.]*=")


def load_config(cls: type[T], path: str | Path | None = None, overrides: Sequence[str] = ()) -> T:
    """Load ``cls`` from an optional YAML file, then apply ``overrides``."""
    data: dict[str, Any] = {}
    if path is not None:
        path = Path(path)
        try:
            loaded = parse_yaml(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError) as err:
            raise ConfigError(f"cannot read config {path}: {err}", path=path) from err
        except yaml.YAMLError as err:
            raise ConfigError(f"config {path}: {yaml_problem(err)}", path=path) from err
        if loaded is not None and not isinstance(loaded, dict):
            raise ConfigError(f"config {path} must hold a mapping at top level, got {type(loaded).__name__}")
        data = loaded or {}
    return from_dict(cls, apply_overrides(data, overrides))


def save_config(obj: Any, path: str | Path, comment: str | None = None) -> None:
    """Write a dataclass config as YAML (the resolved config of a run), under ``comment`` lines if given."""
    header = "".join(f"# {line}\n" for line in comment.splitlines()) if comment else ""
    Path(path).write_text(header + yaml.safe_dump(to_dict(obj), sort_keys=False))


def _coerce(tp: Any, value: Any, key: str) -> Any:
    origin = get_origin(tp)
    if origin in (Union, types.UnionType):
        args = get_args(tp)
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in (a for a in args if a is not type(None)):
            try:
                return _coerce(arg, value, key)
            except ConfigError as err:
                errors.append(str(err))
        raise ConfigError(f"{key}: {value!r} fits none of {tp}: {'; '.join(errors)}")
    if origin is Literal:
        if value not in get_args(tp):
            raise ConfigError(f"{key}: {value!r} is not one of {list(get_args(tp))}")
        return value
    if origin in (list, tuple, Sequence):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{key}: expected a list, got {value!r}")
        args = get_args(tp) or (Any, ...)
        if origin is tuple and args[-1] is not Ellipsis and len(args) != len(value):  # tuple[int, str]
            raise ConfigError(f"{key}: expected {len(args)} items, got {value!r}")
        types_ = args if origin is tuple and args[-1] is not Ellipsis else args[:1] * len(value)
        items = [_coerce(t, v, f"{key}[{i}]") for i, (t, v) in enumerate(zip(types_, value, strict=True))]
        return tuple(items) if origin is tuple else items
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: expected a mapping, got {value!r}")
        return dict(value)
    if dataclasses.is_dataclass(tp):
        if isinstance(value, tp):
            return value
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: expected a mapping for {tp.__name__}, got {value!r}")
        return from_dict(tp, value, where=key + ".")
    if tp is Any:
        return value
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{key}: expected true/false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{key}: expected an integer, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, str):  # YAML 1.1 reads "1e-4" as a string
            try:
                return float(value)
            except ValueError:
                pass
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{key}: expected a number, got {value!r}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{key}: expected a string, got {value!r}")
        return value
    if tp is Path:
        if not isinstance(value, (str, Path)):
            raise ConfigError(f"{key}: expected a path, got {value!r}")
        return Path(value)
    return value
