"""What every stage config shares: frozen pydantic dataclasses and one way to read a TOML table.

Stage configs are pydantic *dataclasses* (not ``BaseModel``): they stay real dataclasses, so
``dataclasses.replace``/``asdict`` keep working for callers, while pydantic checks every field's
type and refuses unknown keys. Python callers get lax coercion (``"out"`` becomes ``Path("out")``);
files are read strictly (``simplify = 1`` is not a bool), through :func:`validate_table`.
"""

from __future__ import annotations

import dataclasses
import datetime
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TypeVar

from pydantic import ConfigDict, TypeAdapter, ValidationError

from trt_pipeline.errors import ConfigError

#: pydantic settings of every stage config: unknown keys are errors.
STAGE_CONFIG = ConfigDict(extra="forbid")

T = TypeVar("T")


def _json_value(value: Any) -> Any:
    if isinstance(value, (datetime.date, datetime.time)):
        raise TypeError(f"a TOML date/time ({value}) is not a valid value here")
    raise TypeError(f"unsupported value {value!r}")


def _expected(cls: type, key: str) -> str:
    """The declared type of ``key`` as written in the dataclass (``int | None``)."""
    field = getattr(cls, "__dataclass_fields__", {}).get(key)
    hint = field.type if field is not None else "a valid value"
    return hint if isinstance(hint, str) else getattr(hint, "__name__", str(hint))


def config_error(error: ValidationError, cls: type | None = None, *, section: str | None = None,
                 source: Path | str | None = None, values: Mapping[str, Any] | None = None) -> ConfigError:
    """One :class:`ConfigError` for a pydantic ``ValidationError``: the key, its value, the file, the expected type.

    ``cls`` None: the error came from constructing a config in code (its class is ``error.title``).
    """
    name = cls.__name__ if cls is not None else error.title
    where = f"section [{section}] of {source}" if section else name
    fields = [f.name for f in dataclasses.fields(cls)] if cls is not None and dataclasses.is_dataclass(cls) else []
    first = error.errors(include_url=False)[0]
    if not first["loc"]:  # a check across fields, not one key
        where = f"[{section}] in {source}" if section else name
        return ConfigError(f"{where}: {first['msg']}.", path=source)
    key = str(first["loc"][0])
    if first["type"] == "unexpected_keyword_argument":
        return ConfigError(f"unknown key {key!r} in {where}.", path=source,
                           hint=f"valid keys of [{section or name}]: {', '.join(fields)}." if fields else None)
    value = values[key] if values is not None and key in values else first.get("input")
    label = f"[{section}] {key}" if section else f"{name}.{key}"
    suffix = f" in {source}" if source is not None else ""
    expected = f"expected {_expected(cls, key)} ({first['msg'].lower()})" if cls is not None else first["msg"].lower()
    return ConfigError(f"{label} = {value!r}{suffix}: {expected}.", path=source)


def validate_table(cls: type[T], table: Mapping[str, Any], *, section: str, source: Path | str,
                   defaults: Mapping[str, Any] | None = None) -> T:
    """Build ``cls`` from a parsed TOML table over ``defaults``, strictly typed.

    Strict JSON-mode validation: TOML's arrays become tuples and strings become paths, but a
    string is never an int and ``1`` is never a bool. Every failure names the key and the file.
    """
    data = {**(defaults or {}), **table}
    try:
        text = json.dumps(data, default=_json_value)
    except TypeError as error:
        raise ConfigError(f"[{section}] in {source}: {error}.", path=source) from None
    try:
        return TypeAdapter(cls).validate_json(text, strict=True)
    except ValidationError as error:
        raise config_error(error, cls, section=section, source=source, values=table) from None
    except ConfigError as error:  # a stage config's own range checks
        raise ConfigError(f"[{section}] in {source}: {error.message}", path=source, hint=error.hint) from None


def to_dict(cfg: Any) -> dict[str, Any]:
    """``dataclasses.asdict`` with paths as strings: the JSON form hashed into stage manifests."""
    return {k: str(v) if isinstance(v, Path) else v for k, v in dataclasses.asdict(cfg).items()}
