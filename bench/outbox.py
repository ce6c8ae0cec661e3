"""``herald bench outbox``: outbound webhook requests/s delivered by ``herald run --role outbox``.

N rows are committed in one transaction to a running outbox role (against a temporary embedded
Postgres or ``--database-url``); the time is until the loopback receiver (Starlette on uvicorn,
in this process) has answered all N; after a clean stop every row must be ``delivered``. Each
request is signed, sent to the vetted address on a fresh connection, and its outcome written
back. Anchors in the
same run, same receiver, same concurrency and body: httpx posting N unsigned requests with
keep-alive connections, and without keep-alive (a fresh connection per request, as the outbox
dials), i.e. what HTTP alone costs with no database, leases or signatures.

Prints a summary on stderr and one JSON line on stdout.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import orjson
import uvloop
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from bench.databases import migrated_database
from bench.herald_process import HeraldProcess
from engine.database import connect_one
from engine.http.server import HttpServer
from engine.outbox import store
from engine.values import HostPort

BODY = orjson.dumps({"type": "email_delivered", "timestamp": "2026-01-01T00:00:00.000Z",
                     "data": {"contact_id": "c1", "email": "ann@example.com",
                              "properties": {"message_id": "m" * 36}}})


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="herald bench outbox", description=__doc__)
    parser.add_argument("--rows", type=int, default=2000, help="requests to deliver")
    parser.add_argument("--concurrency", type=int, default=32,
                        help="requests in flight (outbox concurrency = endpoint_concurrency)")
    parser.add_argument("--database-url", help="use this Postgres (default: embedded, temporary)")
    parser.add_argument("--log", type=Path, help="write the engine's log here")
    return parser.parse_args(argv)


class Receiver:
    def __init__(self) -> None:
        self.count = 0
        self.target = 0
        self.done = asyncio.Event()

    async def handle(self, request: Request) -> Response:
        await request.body()
        self.count += 1
        if self.count >= self.target:
            self.done.set()
        return Response(status_code=204)

    def expect(self, n: int) -> None:
        self.count, self.target = 0, n
        self.done.clear()


async def measure_herald(url: str, receiver: Receiver, port: int, rows: int) -> float:
    connection = await connect_one(url)
    try:
        receiver.expect(rows)
        endpoint = f"http://127.0.0.1:{port}"
        started = time.perf_counter()
        async with connection.transaction():
            await store.enqueue(connection, [store.NewRow("test", f"{endpoint}/hook", endpoint,
                                                          BODY) for _ in range(rows)])
        await asyncio.wait_for(receiver.done.wait(), 600)
        return time.perf_counter() - started
    finally:
        await connection.close()


async def measure_anchor(receiver: Receiver, port: int, rows: int, concurrency: int,
                         keep_alive: bool) -> float:
    limits = httpx.Limits(max_connections=concurrency,
                          max_keepalive_connections=concurrency if keep_alive else 0)
    receiver.expect(rows)
    queue: asyncio.Queue[int] = asyncio.Queue()
    for i in range(rows):
        queue.put_nowait(i)
    async with httpx.AsyncClient(limits=limits, timeout=30, trust_env=False) as client:
        async def worker() -> None:
            while not queue.empty():
                queue.get_nowait()
                await client.post(f"http://127.0.0.1:{port}/hook", content=BODY,
                                  headers={"content-type": "application/json"})

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        return time.perf_counter() - started


async def _delivered(url: str) -> int:
    connection = await connect_one(url)
    try:
        return int(await connection.fetchval(
            "SELECT count(*) FROM outbox WHERE state = 'delivered'"))
    finally:
        await connection.close()


async def run(url: str, args: argparse.Namespace) -> dict[str, Any]:
    receiver = Receiver()
    app = Starlette(routes=[Route("/hook", receiver.handle, methods=["POST"])])
    server = HttpServer(app, HostPort("127.0.0.1", 0), graceful_timeout=1.0)
    await server.start()
    env = {"HERALD_DATABASE_URL": url, "HERALD_ENGINE_LOG_LEVEL": "warning",
           "HERALD_WEBHOOKS_ALLOW": f"127.0.0.1:{server.port}",
           "HERALD_WEBHOOKS_CONCURRENCY": str(args.concurrency),
           "HERALD_WEBHOOKS_ENDPOINT_CONCURRENCY": str(args.concurrency)}
    engine = HeraldProcess(["run", "--role", "outbox"], env, args.log)
    delivered_before = await _delivered(url)
    try:
        await asyncio.to_thread(engine.start)
        herald = await measure_herald(url, receiver, server.port, args.rows)
    finally:
        await asyncio.to_thread(engine.stop)  # a clean stop writes the last outcomes
    delivered = await _delivered(url) - delivered_before
    keep_alive = await measure_anchor(receiver, server.port, args.rows, args.concurrency, True)
    fresh = await measure_anchor(receiver, server.port, args.rows, args.concurrency, False)
    await server.stop()
    return {"bench": "outbox", "rows": args.rows, "delivered": delivered,
            "concurrency": args.concurrency,
            "herald_per_second": round(args.rows / herald, 1),
            "anchor_keepalive_per_second": round(args.rows / keep_alive, 1),
            "anchor_fresh_connection_per_second": round(args.rows / fresh, 1),
            "ratio_to_fresh_connection_anchor": round(fresh / herald, 3)}


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    workdir = Path(tempfile.mkdtemp(prefix="herald-bench-outbox-"))
    with migrated_database(args.database_url, workdir) as url:
        result = uvloop.run(run(url, args))
    print(f"outbox: {result['herald_per_second']}/s delivered; anchors (httpx, same receiver): "
          f"{result['anchor_keepalive_per_second']}/s keep-alive, "
          f"{result['anchor_fresh_connection_per_second']}/s fresh connections",
          file=sys.stderr)
    print(orjson.dumps(result).decode())
    return 0
