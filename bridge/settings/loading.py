"""Loading the settings (environment over an optional TOML file), reporting what is
wrong by variable name, and describing every setting for ``--help`` and the README."""

from __future__ import annotations

import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError
from pydantic_settings import BaseSettings

from bridge.settings.base import FILE_SUFFIX, FromEnvAndFile, Section, env_name
from bridge.settings.root import OpsSettings, Settings


class SettingsError(Exception):
    """Invalid or missing settings; the message names each offending variable."""


_S = TypeVar("_S", bound=FromEnvAndFile)


def load_settings(config_file: Path | None = None) -> Settings:
    """Build the settings from the environment and an optional TOML file."""
    return _load(Settings, config_file)


def load_ops_settings(config_file: Path | None = None) -> OpsSettings:
    """The operator commands' settings, from the same environment and file as the service's."""
    return _load(OpsSettings, config_file)


def _load(cls: type[_S], config_file: Path | None) -> _S:
    file_values: dict[str, Any] = {}
    if config_file is not None:
        try:
            file_values = tomllib.loads(config_file.read_text())
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise SettingsError(f"cannot read config file {config_file}: {exc}") from exc
    try:
        return cls(**file_values)
    except ValidationError as exc:
        problems: list[str] = []
        for error in exc.errors():
            path = tuple(p for p in error["loc"] if isinstance(p, str))
            problems.extend(f"{name}: {error['msg']}" for name in _missing_names(cls, path, error))
        raise SettingsError("invalid settings:\n  " + "\n  ".join(problems)) from exc


def _missing_names(cls: type[BaseSettings], path: tuple[str, ...], error: Any) -> list[str]:
    """A whole missing section is reported as the required settings inside it."""
    if error["type"] == "missing" and len(path) == 1:
        section = cls.model_fields[path[0]].annotation
        if isinstance(section, type) and issubclass(section, Section):
            required = [n for n, f in section.model_fields.items() if f.is_required()]
            if required:
                return [env_name((*path, name)) for name in required]
    return [env_name(path)]


def describe_settings() -> Iterator[tuple[str, str, str]]:
    """Every setting as (environment variable, default, description), for --help and README."""
    yield from _describe(Settings, ())


def _describe(model: type[BaseModel], path: tuple[str, ...]) -> Iterator[tuple[str, str, str]]:
    for name, field in model.model_fields.items():
        annotation = field.annotation
        if isinstance(annotation, type) and issubclass(annotation, Section):
            yield from _describe(annotation, (*path, name))
            continue
        if field.is_required():
            default = "(required)"
        elif field.default_factory is not None:
            default = repr(field.default_factory())  # type: ignore[call-arg]
        else:
            default = "unset" if field.default is None else str(field.default)
        yield env_name((*path, name)), default, field.description or ""
        if issubclass(model, Section) and name in model.secret_fields:
            variable = env_name((*path, name + FILE_SUFFIX))
            yield variable, "unset", f"File holding {name.upper()} (a mounted Secret)"
