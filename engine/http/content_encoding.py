"""Compressed request bodies (``Content-Encoding: gzip``), inflated within a size bound.

The bound applies to the inflated size, so a small body that inflates past it (a zip bomb)
costs at most ``limit`` bytes of memory before it is refused with 413.
"""

from __future__ import annotations

import zlib

from starlette.requests import Request

from engine.http.errors import ApiError

_GZIP = 16 + zlib.MAX_WBITS  # wbits for the gzip container
_CHUNK = 64 * 1024


def inflate(body: bytes, encoding: str, limit: int) -> bytes:
    """``body`` decoded per its Content-Encoding (``identity`` or ``gzip``), at most ``limit``
    bytes: 413 past it, 400 for a corrupt stream, 415 for another encoding."""
    encoding = encoding.strip().lower()
    if encoding in ("", "identity"):
        return body
    if encoding not in ("gzip", "x-gzip"):
        raise ApiError(415, "unsupported_encoding",
                       f"Content-Encoding {encoding[:40]!r} is not supported (gzip is)")
    decompressor = zlib.decompressobj(_GZIP)
    out: list[bytes] = []
    size = 0
    data = body
    try:
        while True:
            chunk = decompressor.decompress(data, min(_CHUNK, limit + 1 - size))
            size += len(chunk)
            if size > limit:
                raise ApiError(413, "body_too_large",
                               f"the body inflates to more than {limit} bytes")
            out.append(chunk)
            data = decompressor.unconsumed_tail
            if decompressor.eof:
                break
            if not data and not chunk:
                raise ApiError(400, "invalid_encoding", "the gzip body is truncated")
    except zlib.error as exc:
        raise ApiError(400, "invalid_encoding", f"the gzip body is corrupt: {exc}") from None
    return b"".join(out)


def content_encoding(request: Request) -> str:
    return request.headers.get("content-encoding", "")
