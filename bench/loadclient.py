"""A lean HTTP/1.1 keep-alive load client (the load must not be the limit).

Only what the benchmarks need: requests with a fixed header set and Content-Length bodies,
answers with a Content-Length body (a chunked answer is an error). Each request body comes
with a tag (what it carries, e.g. its event ids); the tags of the requests answered with an
accepting status are returned, so a bench can check exactly what was acknowledged.

On these 2-core machines the load client shares the CPU with what it measures, so it is an
``asyncio.Protocol`` rather than a stream reader: one write per request, the answer parsed
from the received bytes in one pass (``docs/PERFORMANCE.md``, "Twelfth pass": ~6 µs less CPU
per request than asyncio's stream reader, CPU the server and Postgres get back).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Collection
from dataclasses import dataclass, field
from typing import Any


@dataclass
class LoadResult:
    latencies: list[float] = field(default_factory=list)
    statuses: dict[int, int] = field(default_factory=dict)
    errors: int = 0
    acknowledged: list[Any] = field(default_factory=list)  # tags of accepted requests


class _AnswerReader(asyncio.Protocol):
    """Collects one answer at a time: (status, body), or an error, into ``waiting``."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.waiting: asyncio.Future[tuple[int, bytes, bool]] | None = None
        self._buffer = bytearray()
        self._lost: Exception | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        buffer = self._buffer
        buffer += data
        try:
            answer = take_answer(buffer)
            if answer is None:
                return
            status, close = _status_and_close(answer[0])
        except ValueError as exc:
            self._fail(exc)
            return
        waiting, self.waiting = self.waiting, None
        if waiting is None or waiting.done():
            self._fail(ValueError("an answer to no request"))
        else:
            waiting.set_result((status, answer[1], close))

    def connection_lost(self, exc: Exception | None) -> None:
        self._lost = ConnectionError("server closed the connection")
        self._fail(self._lost)

    def _fail(self, exc: Exception) -> None:
        waiting, self.waiting = self.waiting, None
        if waiting is not None and not waiting.done():
            waiting.set_exception(exc)
        if self.transport is not None:
            self.transport.close()

    def expect(self) -> asyncio.Future[tuple[int, bytes, bool]]:
        if self._lost is not None:
            raise self._lost
        self.waiting = asyncio.get_running_loop().create_future()
        return self.waiting


def take_answer(buffer: bytearray) -> tuple[bytes, bytes] | None:
    """The first complete answer in ``buffer``, taken out of it: its head, lower-cased, and
    its body; None while it is incomplete. Content-Length framing only: ValueError for a
    chunked answer."""
    end = buffer.find(b"\r\n\r\n")
    if end < 0:
        return None
    head = bytes(buffer[:end]).lower()
    at = head.find(b"\r\ncontent-length:")
    if at >= 0:
        length = int(head[at + 17:].split(b"\r\n", 1)[0])
    elif b"\r\ntransfer-encoding:" in head:
        raise ValueError("a chunked answer: the load client reads Content-Length only")
    else:
        length = 0
    if len(buffer) < end + 4 + length:
        return None
    body = bytes(buffer[end + 4:end + 4 + length])
    del buffer[:end + 4 + length]
    return head, body


def _status_and_close(head: bytes) -> tuple[int, bool]:
    """The status of a lower-cased head, and whether the server closes after it."""
    version, _, rest = head.partition(b" ")
    status = rest[:3]
    if not version.startswith(b"http/1.") or not status.isdigit():
        status_line = head.split(b"\r\n", 1)[0]
        raise ValueError(f"not an HTTP/1.x status line: {status_line!r}")
    if version == b"http/1.0":
        return int(status), b"\r\nconnection: keep-alive" not in head
    return int(status), b"\r\nconnection: close" in head


class HttpConnection:
    def __init__(self, host: str, port: int, headers: dict[str, str]) -> None:
        self.host = host
        self.port = port
        self._header_block = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
        self._heads: dict[tuple[str, str], bytes] = {}
        self._reader: _AnswerReader | None = None

    async def connect(self) -> None:
        _, self._reader = await asyncio.get_running_loop().create_connection(
            _AnswerReader, self.host, self.port)

    async def request(self, method: str, path: str, body: bytes = b"") -> tuple[int, bytes]:
        if self._reader is None:
            await self.connect()
        reader = self._reader
        assert reader is not None and reader.transport is not None
        head = self._heads.get((method, path))
        if head is None:
            head = self._heads[method, path] = (
                f"{method} {path} HTTP/1.1\r\nHost: {self.host}\r\n{self._header_block}"
                f"Content-Length: ").encode()
        answer = reader.expect()
        reader.transport.write(b"%s%d\r\n\r\n%s" % (head, len(body), body))
        status, payload, close = await answer
        if close:
            self.close()
        return status, payload

    def close(self) -> None:
        if self._reader is not None and self._reader.transport is not None:
            self._reader.transport.close()
        self._reader = None


async def run_load(host: str, port: int, headers: dict[str, str], concurrency: int,
                   duration: float, make_body: Callable[[int], tuple[bytes, Any]], path: str,
                   max_requests: int | None = None,
                   accepting: Collection[int] = (202,)) -> tuple[LoadResult, float]:
    """``concurrency`` connections each send requests back to back for ``duration`` seconds.

    Every connection is open before the clock starts; the elapsed time returned runs from the
    first request to the last answer. ``make_body(worker)`` gives a body and its tag; the tags
    of requests answered with a status in ``accepting`` are in ``acknowledged``."""
    result = LoadResult()
    issued = 0
    connections = [HttpConnection(host, port, headers) for _ in range(concurrency)]
    await asyncio.gather(*(connection.connect() for connection in connections))
    deadline = 0.0

    async def worker(index: int, connection: HttpConnection) -> None:
        nonlocal issued
        try:
            while time.perf_counter() < deadline:
                if max_requests is not None and issued >= max_requests:
                    return
                issued += 1
                body, tag = make_body(index)
                started = time.perf_counter()
                try:
                    status, _ = await connection.request("POST", path, body)
                except (OSError, ConnectionError, ValueError):
                    result.errors += 1
                    connection.close()
                    continue
                result.latencies.append(time.perf_counter() - started)
                result.statuses[status] = result.statuses.get(status, 0) + 1
                if status in accepting:
                    result.acknowledged.append(tag)
        finally:
            connection.close()

    started = time.perf_counter()
    deadline = started + duration
    await asyncio.gather(*(worker(i, c) for i, c in enumerate(connections)))
    return result, time.perf_counter() - started


def percentile(values: list[float], fraction: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(fraction * (len(ordered) - 1))))
    return ordered[index]
