"""What every settings section shares: the naming of variables, the sources, secret files."""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, model_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource

ENV_PREFIX = "BRIDGE_"
NESTED_DELIMITER = "__"
# `BRIDGE_KAFKA__SASL_PASSWORD_FILE=/path` stands for `BRIDGE_KAFKA__SASL_PASSWORD`
# with the file's contents: how Kubernetes and Docker hand secrets to a process.
FILE_SUFFIX = "_file"


def env_name(path: tuple[str | int, ...]) -> str:
    """``("kafka", "group_id")`` -> ``BRIDGE_KAFKA__GROUP_ID``."""
    return ENV_PREFIX + NESTED_DELIMITER.join(str(part).upper() for part in path)


class Section(BaseModel):
    """One ``BRIDGE_<SECTION>__*`` group of settings.

    A section names its secrets in ``secret_fields``; each of them may instead be
    given as ``<name>_file``, a path whose contents are read at load (a trailing
    newline dropped, as files written by editors and ``echo`` end with one).
    """

    model_config = ConfigDict(frozen=True, extra="forbid")
    # The variables' prefix, for messages: these checks run inside the section.
    env_prefix: ClassVar[str] = ENV_PREFIX
    secret_fields: ClassVar[tuple[str, ...]] = ()

    @model_validator(mode="before")
    @classmethod
    def _read_secret_files(cls, data: Any) -> Any:
        if not isinstance(data, dict) or not cls.secret_fields:
            return data
        data = dict(data)
        for name in cls.secret_fields:
            path = data.pop(name + FILE_SUFFIX, None)
            if path is None:
                continue
            variable = cls.env_prefix + (name + FILE_SUFFIX).upper()
            if data.get(name) is not None:
                raise ValueError(f"set {variable} or {cls.env_prefix}{name.upper()}, not both")
            data[name] = read_secret_file(Path(path), variable)
        return data


def read_secret_file(path: Path, variable: str) -> str:
    # The message names the variable and the path, never what the file holds.
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as exc:
        why = getattr(exc, "strerror", None) or type(exc).__name__
        raise ValueError(f"{variable}: cannot read {path}: {why}") from None
    value = text.removesuffix("\n").removesuffix("\r")
    if not value:
        raise ValueError(f"{variable}: {path} is empty")
    return value


class FromEnvAndFile(BaseSettings):
    """``BRIDGE_*`` variables over the TOML file's values (passed as init values)."""

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (env_settings, init_settings)
