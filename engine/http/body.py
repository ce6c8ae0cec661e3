"""Read and decode JSON request bodies within a size bound, with clear errors."""

from __future__ import annotations

import re
from typing import Any

import orjson
from starlette.requests import ClientDisconnect, Request
from starlette.types import Receive

from engine import strict_json
from engine.http.errors import ApiError
from engine.values import ASCII_DIGITS

# nginx's code for "the client closed the connection": the answer goes nowhere, and it is
# neither a server error nor worth an error log line.
CLIENT_CLOSED = 499


def _check_declared(declared: str | None, limit: int) -> None:
    if declared is not None:
        if not ASCII_DIGITS.match(declared):
            raise ApiError(400, "invalid_request", "Content-Length is not a number")
        if int(declared) > limit:
            raise ApiError(413, "body_too_large", f"the body is larger than {limit} bytes")


def _too_large(limit: int) -> ApiError:
    return ApiError(413, "body_too_large", f"the body is larger than {limit} bytes")


def client_closed() -> ApiError:
    return ApiError(CLIENT_CLOSED, "client_closed",
                    "the client closed the connection before the body was complete")


async def read_body(request: Request, limit: int) -> bytes:
    _check_declared(request.headers.get("content-length"), limit)
    chunks: list[bytes] = []
    size = 0
    try:
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise _too_large(limit)
            chunks.append(chunk)
    except ClientDisconnect:
        raise client_closed() from None
    return b"".join(chunks)


async def receive_body(receive: Receive, declared: str | None, limit: int) -> bytes:
    """:func:`read_body` on a bare ASGI ``receive``; ``declared``: the Content-Length."""
    _check_declared(declared, limit)
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] != "http.request":  # http.disconnect
            raise client_closed()
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise _too_large(limit)
        chunks.append(chunk)
        if not message.get("more_body", False):
            return chunks[0] if len(chunks) == 1 else b"".join(chunks)


def decode_json(body: bytes) -> Any:
    if not body.strip():
        raise ApiError(400, "invalid_json", "the body is empty; send a JSON object")
    try:
        return strict_json.loads(body)  # validates UTF-8 itself
    except strict_json.JsonRefused as exc:
        raise ApiError(400, "invalid_json", str(exc)) from None
    except orjson.JSONDecodeError as exc:
        try:
            body.decode("utf-8")
        except UnicodeDecodeError as bad:
            raise ApiError(400, "invalid_encoding",
                           f"the body is not valid UTF-8 (byte {bad.start})") from None
        raise ApiError(400, "invalid_json", f"the body is not valid JSON: {exc}") from None


async def read_json(request: Request, limit: int) -> Any:
    return decode_json(await read_body(request, limit))


# An escaped NUL in JSON text: "\u0000" preceded by an even number of backslashes.
_ESCAPED_NUL = re.compile(rb"(?:^|[^\\])(?:\\\\)*\\u0000")


def has_nul(value: Any, raw: bytes | None = None) -> bool:
    """Postgres text and jsonb cannot hold U+0000: such input is refused up front. ``raw``:
    the JSON text ``value`` was decoded from; JSON can only spell U+0000 as ``\\u0000``, so
    without that in it there is nothing to look for."""
    if raw is not None and b"\\u0000" not in raw:
        return False
    encoded = orjson.dumps(value)
    return b"\\u0000" in encoded and _ESCAPED_NUL.search(encoded) is not None
