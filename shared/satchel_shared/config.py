"""Configuration read once from the environment, failing fast at start-up.

A config class is a frozen dataclass whose fields carry the environment variable name in their
metadata (see `setting`). `load_config` parses each value by the field's type, collects every
problem before raising, then asks the config for the problems only its values together show
(`Settings.problems`); `describe` renders the effective config for the start-up log with secrets
masked.

The settings more than one program reads are declared here once, with their checks:
`ServiceConfig` (every service) and `FileThreads` (the file service and the devstack that starts
its gunicorn), so that a variable means the same thing, default and checks included, everywhere.
"""
from __future__ import annotations

import dataclasses
import os
import types
import typing
from collections.abc import Mapping
from typing import Any, TypeVar

REQUIRED: Any = dataclasses.MISSING
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")  # what LOG_LEVEL accepts

C = TypeVar("C")


class ConfigError(RuntimeError):
    """The environment does not describe a runnable service."""

    @classmethod
    def from_problems(cls, problems: list[str]) -> ConfigError:
        return cls("invalid configuration: " + "; ".join(problems))


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
    if kind in (int, float):
        try:
            return kind(raw.strip())
        except ValueError:
            expected = "a whole number" if kind is int else "a number"
            raise ValueError(f"expected {expected}, got {raw!r}") from None
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
        if typing.get_origin(kind) in (typing.Union, types.UnionType):  # Optional: empty is None
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
        raise ConfigError.from_problems(problems)
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


class Settings:
    """A config class's checks of its parsed values; every class in a hierarchy adds its own."""

    def problems(self) -> list[str]:
        """What is wrong, one message per problem, each naming its variable.

        An override starts from `super().problems()`, so the checks of every base still run.
        """
        return []

    def validate(self) -> None:
        problems = self.problems()
        if problems:
            raise ConfigError.from_problems(problems)


@dataclasses.dataclass(frozen=True, kw_only=True)
class ServiceConfig(Settings):
    """What every Satchel service reads: its database, its log level, the tokens it trusts and
    the proxies in front of it. A service subclasses it, giving `mongo_db` its default."""

    mongo_uri: str = setting("MONGO_URI", "mongodb://127.0.0.1:27017", secret=True,
                             help="MongoDB connection string (may hold credentials)")
    mongo_db: str = setting("MONGO_DB", help="the service's own database")
    log_level: str = setting("LOG_LEVEL", "INFO")
    jwt_issuer: str = setting("JWT_ISSUER", "satchel-auth", help="`iss` of every token")
    jwt_audience: str = setting("JWT_AUDIENCE", "satchel", help="`aud` of every access token")
    trusted_proxy_count: int = setting(
        "TRUSTED_PROXY_COUNT", 0,
        help="proxies in front whose X-Forwarded-For is trusted (1 behind the gateway)")

    def problems(self) -> list[str]:
        problems = super().problems()
        if self.log_level.upper() not in LOG_LEVELS:
            problems.append(f"LOG_LEVEL must be one of {', '.join(LOG_LEVELS)}, "
                            f"got {self.log_level!r}")
        if self.trusted_proxy_count < 0:
            problems.append("TRUSTED_PROXY_COUNT must not be negative")
        return problems


@dataclasses.dataclass(frozen=True, kw_only=True)
class FileThreads(Settings):
    """FILE_THREADS, read by the file service (it holds long-polls below it) and by the devstack
    (it starts the file service's gunicorn with that many threads)."""

    file_threads: int = setting("FILE_THREADS", 32,
                                help="gthread threads per file-service gunicorn worker")

    def problems(self) -> list[str]:
        problems = super().problems()
        if self.file_threads < 2:
            problems.append("FILE_THREADS must be at least 2")
        return problems
