"""Configuration read once from the environment, failing fast at start-up.

A service declares its settings as a frozen dataclass whose fields carry the environment
variable name in their metadata (see `setting`). `load_config` parses each value by the field's
type, collects every problem before raising, and `describe` renders the effective config for the
start-up log with secrets masked.
"""
from __future__ import annotations

import dataclasses
import os
import typing
from collections.abc import Mapping
from typing import Any, TypeVar

REQUIRED: Any = dataclasses.MISSING

C = TypeVar("C")


class ConfigError(RuntimeError):
    """The environment does not describe a runnable service."""


def setting(env: str, default: Any = REQUIRED, *, secret: bool = False, help: str = "") -> Any:
    """A config field read from the environment variable `env`."""
    metadata = {"env": env, "secret": secret, "help": help}
    if default is REQUIRED:
        return dataclasses.field(metadata=metadata)
    if isinstance(default, (list, dict, set)):
        raise TypeError("mutable defaults are not allowed; use a tuple")
    return dataclasses.field(default=default, metadata=metadata)


def _parse(raw: str, kind: Any) -> Any:
    if kind is bool:
        lowered = raw.strip().lower()
        if lowered in ("1", "true", "yes", "on"):
            return True
        if lowered in ("0", "false", "no", "off", ""):
            return False
        raise ValueError(f"expected a boolean, got {raw!r}")
    if kind is int:
        return int(raw.strip())
    if kind is float:
        return float(raw.strip())
    if typing.get_origin(kind) is tuple:
        return tuple(item.strip() for item in raw.split(",") if item.strip())
    return raw


def load_config(cls: type[C], environ: Mapping[str, str] | None = None, **overrides: Any) -> C:
    """Build `cls` from `environ` (default: os.environ); keyword overrides win (for tests)."""
    environ = os.environ if environ is None else environ
    hints = typing.get_type_hints(cls)
    values: dict[str, Any] = {}
    problems: list[str] = []
    for field in dataclasses.fields(cls):
        if field.name in overrides:
            values[field.name] = overrides.pop(field.name)
            continue
        env = field.metadata.get("env")
        if env is None:
            continue
        kind = hints[field.name]
        if typing.get_origin(kind) is typing.Union:  # Optional[X]: empty means None
            kind = next(arg for arg in typing.get_args(kind) if arg is not type(None))
            if environ.get(env, "") == "":
                if field.default is REQUIRED:
                    values[field.name] = None
                continue
        if env in environ:
            try:
                values[field.name] = _parse(environ[env], kind)
            except ValueError as exc:
                problems.append(f"{env}: {exc}")
        elif field.default is REQUIRED and field.default_factory is dataclasses.MISSING:
            problems.append(f"{env} is required")
    if overrides:
        raise TypeError(f"unknown config overrides: {sorted(overrides)}")
    if problems:
        raise ConfigError("invalid configuration: " + "; ".join(problems))
    config = cls(**values)
    validate = getattr(config, "validate", None)
    if validate is not None:
        validate()
    return config


def describe(config: Any) -> dict[str, Any]:
    """The effective configuration keyed by environment variable, secrets masked."""
    described: dict[str, Any] = {}
    for field in dataclasses.fields(config):
        env = field.metadata.get("env", field.name)
        value = getattr(config, field.name)
        if field.metadata.get("secret") and value:
            value = "***"
        elif isinstance(value, tuple):
            value = list(value)
        described[env] = value
    return described
