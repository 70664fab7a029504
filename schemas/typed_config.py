"""Typed configuration from YAML: dataclasses, strict keys, `section.key=value` overrides.

Shared by the pipeline's and the trainer's configs. Unknown keys are errors that name them (a
typo must not silently fall back to a default); values must have the default's type.
"""
from __future__ import annotations

import dataclasses
import re
from dataclasses import fields
from typing import Optional

import yaml


class ConfigError(ValueError):
    pass


# PyYAML reads YAML 1.1, where a float needs a dot: `1e-5` and `2e-3` arrive as strings. A
# float field takes such a plain decimal literal (not nan or inf).
_FLOAT_LITERAL = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?")


def build(cls, data: dict, where: str = ""):
    """An instance of dataclass `cls` from a mapping, nested dataclasses included."""
    if not isinstance(data, dict):
        raise ConfigError(f"{where or 'config'}: expected a mapping, got {type(data).__name__}")
    known = {f.name: f for f in fields(cls)}
    unknown = sorted(set(data) - set(known))
    if unknown:
        raise ConfigError(f"unknown config key(s) {', '.join(where + k for k in unknown)}")
    kwargs = {}
    for name, value in data.items():
        default = known[name].default_factory() if known[name].default_factory \
            is not dataclasses.MISSING else known[name].default
        if dataclasses.is_dataclass(default):
            kwargs[name] = build(type(default), value, f"{where}{name}.")
        elif isinstance(default, tuple):
            kwargs[name] = tuple(value)
        elif isinstance(default, bool) and not isinstance(value, bool):
            raise ConfigError(f"{where}{name}: expected true or false, got {value!r}")
        elif isinstance(default, bool) or default is None or isinstance(value, type(default)):
            kwargs[name] = value
        elif isinstance(default, float) and isinstance(value, int):
            kwargs[name] = float(value)
        elif isinstance(default, float) and isinstance(value, str) \
                and _FLOAT_LITERAL.fullmatch(value.strip()):
            kwargs[name] = float(value)
        else:
            raise ConfigError(f"{where}{name}: expected {type(default).__name__}, got {value!r}")
    return cls(**kwargs)


def load_yaml(path: Optional[str] = None, overrides: Optional[list[str]] = None) -> dict:
    """The mapping in a YAML file (or {}) with `section.key=value` overrides applied."""
    data = {}
    if path:
        with open(path) as f:
            data = yaml.safe_load(f) or {}
    for item in overrides or []:
        dotted, sep, raw = item.partition("=")
        if not sep:
            raise ConfigError(f"override {item!r} must look like section.key=value")
        node = data
        *parents, leaf = dotted.split(".")
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = yaml.safe_load(raw)
    return data


def to_dict(config) -> dict:
    """A plain mapping (tuples as lists) that `build` reads back to an equal config."""
    def plain(v):
        if isinstance(v, dict):
            return {k: plain(x) for k, x in v.items()}
        if isinstance(v, (tuple, list)):
            return [plain(x) for x in v]
        return v
    return plain(dataclasses.asdict(config))


def to_yaml(config) -> str:
    return yaml.safe_dump(to_dict(config), sort_keys=True)


def require(checks: list[tuple[bool, str]]) -> None:
    """Raise ConfigError for the first (ok, message) check that failed."""
    for ok, message in checks:
        if not ok:
            raise ConfigError(f"invalid config: {message}")


class TypedConfig:
    """Mixin for a config dataclass: its plain-mapping and YAML forms."""

    def to_dict(self) -> dict:
        return to_dict(self)

    def to_yaml(self) -> str:
        return to_yaml(self)
