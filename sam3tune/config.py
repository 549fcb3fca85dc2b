"""Dataclass configs as plain data: load from YAML, override from the command line, save back.

Every config in sam3tune is a (possibly nested) dataclass whose defaults are the official recipe.
``load_config(TrainConfig, "run.yaml", ["optim.lr=1e-4", "data.negatives=none"])`` reads the YAML,
applies the ``dotted.key=value`` overrides (values parsed as YAML scalars/lists) and checks every
key and type, so a typo fails loudly instead of silently training with a default.
"""

from __future__ import annotations

import dataclasses
import json
import re
import types
import typing
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal, TypeVar, Union, get_args, get_origin

import yaml

T = TypeVar("T")


class _Yaml12Loader(yaml.SafeLoader):
    """YAML with 1.2 scalars: only true/false are booleans (``amp: off`` stays the string "off")."""


_Yaml12Loader.yaml_implicit_resolvers = {
    first: [(tag, rx) for tag, rx in resolvers if tag != "tag:yaml.org,2002:bool"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_Yaml12Loader.add_implicit_resolver(
    "tag:yaml.org,2002:bool", re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF")
)


def parse_yaml(text: str) -> Any:
    """Parse YAML text with YAML 1.2 booleans (see ``_Yaml12Loader``)."""
    return yaml.load(text, Loader=_Yaml12Loader)


class ConfigError(ValueError):
    """A config file or override that does not fit the dataclass schema."""


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
    kwargs = {name: _coerce(hints[name], value, where + name) for name, value in data.items()}
    return cls(**kwargs)


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
            loaded = parse_yaml(path.read_text())
        except (OSError, yaml.YAMLError) as err:
            raise ConfigError(f"cannot read config {path}: {err}") from err
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
