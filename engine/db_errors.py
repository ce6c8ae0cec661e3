"""Translation of asyncpg (and socket) errors into :mod:`engine.errors`, by SQLSTATE class.

* unavailable: the server is not there or cannot answer now (connection errors, too many
  connections, admin/crash shutdown, statement timeouts and cancels, lock timeouts,
  serialization failures and deadlocks, our own timeouts) -> 503 + Retry-After, or a retry;
* rejected: a value the caller sent cannot be stored (class 22 data exceptions such as invalid
  text representation, numeric out of range, characters not in the repertoire; class 54
  program limits such as nesting depth; integrity violations) -> 4xx, never retried;
* fault: anything else (undefined column, syntax error, internal error) -> 500, logged.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager

import asyncpg

from engine.errors import (
    DatabaseConflict,
    DatabaseContention,
    DatabaseError,
    DatabaseFault,
    DatabaseRejected,
    DatabaseUnavailable,
)

# SQLSTATE classes (first two characters) and codes.
_UNAVAILABLE_CLASSES = frozenset({"08", "53", "57", "58"})
_UNAVAILABLE_CODES = frozenset({"55P03", "25P03", "40003"})  # lock timeout, idle timeout, ...
_CONTENTION_CODES = frozenset({"40001", "40P01"})  # serialization failure, deadlock
_REJECTED_CLASSES = frozenset({"22", "23", "54"})
_UNIQUE_VIOLATION = "23505"

# Client-side encoding failures: "invalid input for query argument $1: <value> (<reason>)".
_ARGUMENT_ERROR = re.compile(r"invalid input for query argument \$\d+:.*\((?P<reason>[^()]*)\)\s*$",
                             re.DOTALL)
_FRIENDLY_REASONS = {
    "Recursion limit reached": "JSON nested too deeply to be stored",
    "Integer exceeds 64-bit range": "an integer is outside the 64-bit range",
}
MAX_REASON = 200


def describe(exc: BaseException) -> str:
    """A one-line description of a database error that never includes credentials."""
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return text[:300]


def reason(exc: BaseException) -> str:
    """What was wrong with a refused value, short and without echoing a whole argument."""
    text = str(getattr(exc, "message", None) or exc).strip()
    match = _ARGUMENT_ERROR.match(text)
    if match:
        text = match.group("reason").strip()
        text = _FRIENDLY_REASONS.get(text, text)
    text = text.splitlines()[0] if text else type(exc).__name__
    return text if len(text) <= MAX_REASON else text[:MAX_REASON - 1] + "…"


def classify(exc: BaseException) -> DatabaseError | None:
    """The engine error for ``exc``, or None when it is not a database error."""
    if isinstance(exc, DatabaseError):
        return exc
    if isinstance(exc, (OSError, TimeoutError, asyncpg.InterfaceError)):
        return DatabaseUnavailable(f"database unavailable: {describe(exc)}")
    if not isinstance(exc, asyncpg.PostgresError):
        return None
    state = str(getattr(exc, "sqlstate", "") or "")
    if state in _CONTENTION_CODES:
        return DatabaseContention(f"transaction conflict: {describe(exc)}")
    if state[:2] in _UNAVAILABLE_CLASSES or state in _UNAVAILABLE_CODES or state[:2] == "40":
        return DatabaseUnavailable(f"database unavailable: {describe(exc)}")
    if state == _UNIQUE_VIOLATION:
        return DatabaseConflict(reason(exc))
    if state[:2] in _REJECTED_CLASSES:
        return DatabaseRejected(reason(exc))
    return DatabaseFault(f"database error {state or '?'}: {describe(exc)}")


def translate(exc: BaseException) -> BaseException:
    """``exc`` as an engine error (with the original chained), or unchanged."""
    translated = classify(exc)
    if translated is None or translated is exc:
        return exc
    translated.__cause__ = exc
    return translated


@contextmanager
def database_errors() -> Iterator[None]:
    """Translate database errors raised in the block (sync or async code alike)."""
    try:
        yield
    except (asyncpg.PostgresError, asyncpg.InterfaceError, OSError, TimeoutError) as exc:
        translated = translate(exc)
        if translated is exc:
            raise
        raise translated from exc


__all__ = ["DatabaseError", "classify", "database_errors", "describe", "reason", "translate"]
