"""A lean HTTP/1.1 keep-alive load client on asyncio streams (the load must not be the limit).

Only what the benchmarks need: POST/GET with a fixed header set, Content-Length bodies.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass, field


@dataclass
class LoadResult:
    latencies: list[float] = field(default_factory=list)
    statuses: dict[int, int] = field(default_factory=dict)
    errors: int = 0


class HttpConnection:
    def __init__(self, host: str, port: int, headers: dict[str, str]) -> None:
        self.host = host
        self.port = port
        self._header_block = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None

    async def _connect(self) -> None:
        self._reader, self._writer = await asyncio.open_connection(self.host, self.port)

    async def request(self, method: str, path: str, body: bytes = b"") -> tuple[int, bytes]:
        if self._writer is None:
            await self._connect()
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
                   duration: float, make_body: Callable[[int], bytes], path: str,
                   max_requests: int | None = None) -> tuple[LoadResult, float]:
    """``concurrency`` connections each send requests back to back for ``duration`` seconds."""
    result = LoadResult()
    deadline = time.perf_counter() + duration
    issued = 0

    async def worker(index: int) -> None:
        nonlocal issued
        connection = HttpConnection(host, port, headers)
        try:
            while time.perf_counter() < deadline:
                if max_requests is not None and issued >= max_requests:
                    return
                issued += 1
                body = make_body(index)
                started = time.perf_counter()
                try:
                    status, _ = await connection.request("POST", path, body)
                except (OSError, ConnectionError, asyncio.IncompleteReadError, ValueError):
                    result.errors += 1
                    connection.close()
                    continue
                result.latencies.append(time.perf_counter() - started)
                result.statuses[status] = result.statuses.get(status, 0) + 1
        finally:
            connection.close()

    started = time.perf_counter()
    await asyncio.gather(*(worker(i) for i in range(concurrency)))
    return result, time.perf_counter() - started


def percentile(values: list[float], fraction: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(fraction * (len(ordered) - 1))))
    return ordered[index]
