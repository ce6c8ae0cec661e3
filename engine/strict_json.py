"""Decode JSON that Herald can store and give back unchanged, or say which field cannot (pure).

orjson alone would keep the last of duplicate keys, turn integers past 64 bits into floats
(silently losing digits) and accept nesting that Postgres and orjson itself cannot write back.
So a body is refused when it has:

* a key twice in one object,
* an integer outside the signed 64-bit range (what jsonb, orjson and Postgres ``bigint``
  all keep exactly),
* more than :data:`MAX_DEPTH` levels of nesting.

The common body has none of these and pays for a few byte counts, one regex scan and one
``orjson.dumps``: the slow, exact path (the stdlib decoder with hooks, or a walk of the
value) runs only when a cheap test says one of them is possible:

* duplicates: without them, the body and the value re-encoded by orjson hold the same number
  of ``:`` (key separators, plus colons inside strings, which survive re-encoding), unless
  the body spells a colon as ``\\u003a``; those are counted as colons too. A duplicate key
  drops a key and its separator, so the counts differ;
* big integers: an integer past 64 bits has 19 digits or more; a run of 19 digits anywhere
  (even inside a string) sends the body to the exact path;
* depth: a body with at most :data:`MAX_DEPTH` ``{`` and ``[`` cannot nest deeper (counted
  only in bodies of a few KB: a batch has more, and wrapping costs less than counting); others are
  wrapped in enough lists that orjson's own depth limit (found once at import) falls at
  :data:`MAX_DEPTH`, and only a value it refuses is walked to name the field.
"""

from __future__ import annotations

import json
import re
from typing import Any

import orjson

MAX_DEPTH = 32
INT_MIN = -(2**63)
INT_MAX = 2**63 - 1
# Digits to "0", all else to "x": a run of 19 digits is then a plain substring search (about
# ten times faster than a regular expression over a 40 KB batch).
_DIGITS_AS_ZERO = bytes(0x30 if 0x30 <= octet <= 0x39 else 0x78 for octet in range(256))
_LONG_DIGITS = b"0" * 19


class JsonRefused(ValueError):
    """The body is valid JSON that would not round-trip; the message names the field."""


class _BigInt(int):
    """An integer the exact decoder found out of range (kept to name its field)."""


def _orjson_max_depth() -> int:
    """How deep orjson.dumps nests before it refuses (254 in orjson 3.x), found once."""
    low, high = 1, 4096  # low nests, high does not
    while high - low > 1:
        middle = (low + high) // 2
        value: Any = 0
        for _ in range(middle):
            value = [value]
        try:
            orjson.dumps(value)
        except orjson.JSONEncodeError:
            high = middle
        else:
            low = middle
    return low


# Wrapped in this many lists, a value orjson can encode nests at most MAX_DEPTH levels.
_WRAP = _orjson_max_depth() - MAX_DEPTH
# Past this size a body is wrapped without counting its brackets first.
_COUNT_MAX_BYTES = 4096


def loads(body: bytes) -> Any:
    """Decode ``body``; raises ``orjson.JSONDecodeError`` for invalid JSON and
    :class:`JsonRefused` for JSON that would not come back unchanged."""
    value = orjson.loads(body)
    if not isinstance(value, dict | list):
        return value
    wrapped = value
    # Counting brackets costs more than wrapping past a few KB (a batch always has more).
    if len(body) > _COUNT_MAX_BYTES or body.count(b"{") + body.count(b"[") > MAX_DEPTH:
        for _ in range(_WRAP):
            wrapped = [wrapped]
    try:
        encoded = orjson.dumps(wrapped)  # refuses past its depth limit: ours, when wrapped
    except orjson.JSONEncodeError:
        _check_depth(value)
        raise
    colons = body.count(b":")
    if b"\\" in body and b"\\u" in body:  # one byte: memchr, ~40x faster on a batch
        colons += body.count(b"\\u003a") + body.count(b"\\u003A")
    if colons != encoded.count(b":") or _LONG_DIGITS in body.translate(_DIGITS_AS_ZERO):
        return _exact(body)
    return value


def _exact(body: bytes) -> Any:
    """The stdlib decoder, which reports every key and every integer literal to us."""
    found_big = False

    def pairs(items: list[tuple[str, Any]]) -> dict[str, Any]:
        result: dict[str, Any] = {}
        for name, item in items:
            if name in result:
                raise JsonRefused(f"{_show(name)}: the key appears twice in one object")
            result[name] = item
        return result

    def integer(text: str) -> int:
        nonlocal found_big
        number = int(text)
        if INT_MIN <= number <= INT_MAX:
            return number
        found_big = True
        return _BigInt(number)

    value = json.loads(body, object_pairs_hook=pairs, parse_int=integer)
    if found_big:
        path = _find(value, lambda item: isinstance(item, _BigInt)) or ()
        raise JsonRefused(f"{_format(path, 8)}: integers must be between -2^63 and 2^63-1 "
                          "(send larger numbers as strings)")
    return value


def _check_depth(value: Any) -> None:
    path = _too_deep(value, 1, ())
    if path is not None:
        raise JsonRefused(f"{_format(path)}: nests deeper than {MAX_DEPTH} levels")


Path = tuple[str | int, ...]


def _too_deep(value: Any, depth: int, path: Path) -> Path | None:
    """The path of the first container below ``MAX_DEPTH`` levels, or None."""
    if depth > MAX_DEPTH:
        return path
    items = value.items() if isinstance(value, dict) else enumerate(value)
    for name, item in items:
        if isinstance(item, dict | list):
            found = _too_deep(item, depth + 1, (*path, name))
            if found is not None:
                return found
    return None


def _find(value: Any, wanted: Any, path: Path = ()) -> Path | None:
    if wanted(value):
        return path
    items = (value.items() if isinstance(value, dict)
             else enumerate(value) if isinstance(value, list) else ())
    for name, item in items:
        found = _find(item, wanted, (*path, name))
        if found is not None:
            return found
    return None


def _format(path: Path, segments: int = 4) -> str:
    """``events[0].properties.a…``: a field's path, its first few segments."""
    text = ""
    for segment in path[:segments]:
        text += f"[{segment}]" if isinstance(segment, int) else (
            f".{_show(segment)}" if text else _show(segment))
    return (text or "body") + ("…" if len(path) > segments else "")


def _show(name: str) -> str:
    return name if re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]{0,63}", name) else repr(name[:64])
