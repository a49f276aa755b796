"""Typed configurations from YAML files, dicts or objects, with errors that name the file and
the field."""

from __future__ import annotations

from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ValidationError

from .errors import ConfigError

Config = TypeVar("Config", bound=BaseModel)


def _validated(cls: type[Config], data: Any, where: str) -> Config:
    try:
        return cls.model_validate(data)
    except ValidationError as err:
        first = err.errors()[0]
        field = ".".join(str(p) for p in first["loc"]) or None
        more = f" (and {err.error_count() - 1} more)" if err.error_count() > 1 else ""
        raise ConfigError(f"{first['msg']}{more}", where=where, field=field) from err


def load_config(cls: type[Config], value: Config | dict[str, Any] | str | Path) -> Config:
    """``value`` as a ``cls``: itself, validated from a dict, or read from a YAML file."""
    if isinstance(value, cls):
        return value
    if isinstance(value, dict):
        return _validated(cls, value, cls.__name__)
    path = Path(value)
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except OSError as err:
        raise ConfigError(f"cannot read the configuration ({err.strerror})",
                          where=str(path)) from err
    except yaml.YAMLError as err:
        raise ConfigError(f"not valid YAML ({err})", where=str(path)) from err
    return _validated(cls, data, str(path))
