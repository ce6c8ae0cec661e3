"""A lean HTTP/1.1 keep-alive load client on asyncio streams (the load must not be the limit).

Only what the benchmarks need: POST/GET with a fixed header set, Content-Length bodies.
Each request body comes with a tag (what it carries, e.g. its event ids); the tags of the
requests answered with an accepting status are returned, so a bench can check exactly what
was acknowledged.
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


class HttpConnection:
    def __init__(self, host: str, port: int, headers: dict[str, str]) -> None:
        self.host = host
        self.port = port
        self._header_block = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None

    async def connect(self) -> None:
        self._reader, self._writer = await asyncio.open_connection(self.host, self.port)

    async def request(self, method: str, path: str, body: bytes = b"") -> tuple[int, bytes]:
        if self._writer is None:
            await self.connect()
        assert self._reader is not None and self._writer is not None
        head = (f"{method} {path} HTTP/1.1\r\nHost: {self.host}\r\n{self._header_block}"
                f"Content-Length: {len(body)}\r\n\r\n").encode()
        self._writer.write(head + body)
        status_line = await self._reader.readline()
        if not status_line:
            self.close()
            raise ConnectionError("server closed the connection")
        status = int(status_line.split(b" ", 2)[1])
        length = 0
        close = False
        while True:
            line = await self._reader.readline()
            if line in (b"\r\n", b""):
                break
            name, _, value = line.partition(b":")
            lowered = name.strip().lower()
            if lowered == b"content-length":
                length = int(value)
            elif lowered == b"connection" and value.strip().lower() == b"close":
                close = True
        payload = await self._reader.readexactly(length) if length else b""
        if close:
            self.close()
        return status, payload

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
        self._reader = self._writer = None


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
                except (OSError, ConnectionError, asyncio.IncompleteReadError, ValueError):
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
