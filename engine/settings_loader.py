"""Load typed, frozen settings from one TOML file plus ``HERALD_<SECTION>_<KEY>`` overrides.

Each package declares its own section as a frozen dataclass; the composition root names the
sections and calls :func:`load_sections`. Values are converted by the field's type (and, for
durations and sizes, by the field's metadata), so a bad value fails at start-up with a message
that names the key, e.g. ``http.listen: 'localhost' has no port; expected HOST:PORT``.
A string or path value ``credential:NAME`` is read from a systemd credential (engine.credentials).
"""

from __future__ import annotations

import dataclasses
import json
import os
import tomllib
import types
import typing
from collections.abc import Mapping
from contextvars import ContextVar
from pathlib import Path
from typing import Any, TypeVar

from engine.credentials import credential_path, is_reference, read_credential
from engine.errors import ConfigError
from engine.values import HostPort, parse_duration, parse_size

T = TypeVar("T")

_KIND = "herald_kind"
# Where ``credential:NAME`` values are found when $CREDENTIALS_DIRECTORY is not set.
_CREDENTIALS_FALLBACK: ContextVar[Path | None] = ContextVar("credentials_fallback", default=None)


def duration(default: float | str) -> Any:
    """A dataclass field holding seconds, written in config as ``"5m"``, ``"4h"``, ``30``..."""
    return dataclasses.field(default=parse_duration(default), metadata={_KIND: "duration"})


def size(default: int | str) -> Any:
    """A dataclass field holding bytes, written in config as ``"1MiB"`` or a number."""
    return dataclasses.field(default=parse_size(default), metadata={_KIND: "size"})


def env_key(section: str, key: str) -> str:
    return f"HERALD_{section}_{key}".upper().replace(".", "_").replace("-", "_")


def load_sections(
    sections: Mapping[str, type[Any]],
    config_path: Path | None,
    environ: Mapping[str, str] | None = None,
    aliases: Mapping[str, tuple[str, str]] | None = None,
) -> dict[str, Any]:
    """Build one frozen dataclass per section from the TOML file and the environment.

    ``aliases`` maps extra environment variables (``HERALD_DATABASE_URL``) to a section and key.
    """
    environ = os.environ if environ is None else environ
    raw = _read_toml(config_path) if config_path else {}
    unknown = sorted(set(raw) - set(sections))
    if unknown:
        raise ConfigError(f"{unknown[0]}: unknown section in {config_path} "
                          f"(known: {', '.join(sorted(sections))})")
    overrides: dict[tuple[str, str], str] = {}
    for section, cls in sections.items():
        for field in dataclasses.fields(cls):
            name = env_key(section, field.name)
            if name in environ:
                overrides[(section, field.name)] = environ[name]
    for variable, target in (aliases or {}).items():
        if variable in environ:
            overrides[target] = environ[variable]

    result: dict[str, Any] = {}
    fallback = config_path.parent / "credentials" if config_path else None
    token = _CREDENTIALS_FALLBACK.set(fallback)
    try:
        for section, cls in sections.items():
            table = raw.get(section, {})
            if not isinstance(table, dict):
                raise ConfigError(f"{section}: expected a table [{section}]")
            section_overrides = {key: text for (sec, key), text in overrides.items()
                                 if sec == section}
            result[section] = build_dataclass(cls, table, section, section_overrides)
    finally:
        _CREDENTIALS_FALLBACK.reset(token)
    return result


def build_dataclass(
    cls: type[T], table: Mapping[str, Any], where: str, env_text: Mapping[str, str] | None = None
) -> T:
    """Convert a TOML table (plus raw environment strings) into ``cls``; errors name the key."""
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(set(table) - set(fields))
    if unknown:
        raise ConfigError(f"{where}.{unknown[0]}: unknown key (known: {', '.join(sorted(fields))})")
    values: dict[str, Any] = {}
    for name, field in fields.items():
        key = f"{where}.{name}"
        kind = field.metadata.get(_KIND)
        try:
            if env_text and name in env_text:
                values[name] = _convert_env(env_text[name], hints[name], kind, key)
            elif name in table:
                values[name] = _convert(table[name], hints[name], kind, key)
        except ConfigError:
            raise
        except (ValueError, TypeError) as exc:
            raise ConfigError(f"{key}: {exc}") from None
    try:
        return cls(**values)
    except ConfigError:
        raise
    except (ValueError, TypeError) as exc:
        raise ConfigError(f"{where}: {exc}") from None


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as handle:
            return tomllib.load(handle)
    except FileNotFoundError:
        raise ConfigError(f"config file {path} does not exist") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config file {path} is not valid TOML: {exc}") from None
    except OSError as exc:
        raise ConfigError(f"config file {path} cannot be read: {exc.strerror}") from None


def _convert_env(text: str, hint: Any, kind: str | None, key: str) -> Any:
    """Environment values are strings; structured types are given as JSON."""
    origin = typing.get_origin(hint)
    inner = _strip_optional(hint)
    if inner is not hint and text.strip() == "":
        return None
    if origin in (list, tuple, dict) or typing.get_origin(inner) in (list, tuple, dict):
        stripped = text.strip()
        if stripped.startswith(("[", "{")):
            try:
                return _convert(json.loads(stripped), hint, kind, key)
            except json.JSONDecodeError as exc:
                raise ValueError(f"not valid JSON in environment variable: {exc.msg}") from None
        if typing.get_origin(inner) in (list, tuple):
            return _convert([part.strip() for part in text.split(",") if part.strip()],
                            hint, kind, key)
        raise ValueError("expected a JSON object in the environment variable")
    if inner is bool:
        lowered = text.strip().lower()
        if lowered in ("1", "true", "yes", "on"):
            return True
        if lowered in ("0", "false", "no", "off"):
            return False
        raise ValueError(f"{text!r} is not a boolean (true/false)")
    if inner in (int, float) and kind is None:
        try:
            return inner(text.strip())
        except ValueError:
            raise ValueError(f"{text!r} is not a number") from None
    return _convert(text, hint, kind, key)


def _strip_optional(hint: Any) -> Any:
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        if len(args) == 1:
            return args[0]
    return hint


def _convert(value: Any, hint: Any, kind: str | None, key: str) -> Any:
    inner = _strip_optional(hint)
    if inner is not hint and value is None:
        return None
    hint = inner
    if kind == "duration":
        return parse_duration(value)
    if kind == "size":
        return parse_size(value)
    origin = typing.get_origin(hint)
    if hint is Any:
        return value
    if hint is bool:
        if not isinstance(value, bool):
            raise ValueError(f"expected true or false, got {value!r}")
        return value
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError(f"expected a whole number, got {value!r}")
        return value
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ValueError(f"expected a number, got {value!r}")
        return float(value)
    if hint is str:
        if not isinstance(value, str):
            raise ValueError(f"expected a string, got {value!r}")
        if is_reference(value):
            return read_credential(value, _CREDENTIALS_FALLBACK.get())
        return value
    if hint is Path:
        if not isinstance(value, str):
            raise ValueError(f"expected a path string, got {value!r}")
        if is_reference(value):
            return credential_path(value, _CREDENTIALS_FALLBACK.get())
        return Path(value)
    from_setting = getattr(hint, "from_setting", None)
    if from_setting is not None:  # a type that parses its own config values
        return from_setting(value, key)
    if hint is HostPort:
        if not isinstance(value, str):
            raise ValueError(f"expected 'HOST:PORT', got {value!r}")
        return HostPort.parse(value)
    if origin in (list, tuple):
        if not isinstance(value, list):
            raise ValueError(f"expected a list, got {value!r}")
        args = typing.get_args(hint)
        item_hint = args[0] if args else Any
        items = [_convert(item, item_hint, None, f"{key}[{i}]") for i, item in enumerate(value)]
        return tuple(items) if origin is tuple else items
    if origin is dict or origin is Mapping:
        if not isinstance(value, dict):
            raise ValueError(f"expected a table, got {value!r}")
        _key_hint, value_hint = typing.get_args(hint) or (str, Any)
        return {str(k): _convert(v, value_hint, None, f"{key}.{k}") for k, v in value.items()}
    if dataclasses.is_dataclass(hint) and isinstance(hint, type):
        if not isinstance(value, dict):
            raise ValueError(f"expected a table, got {value!r}")
        return build_dataclass(hint, value, key)
    raise TypeError(f"unsupported setting type {hint!r}")
