"""A webhook endpoint on loopback for tests: a Starlette app served by uvicorn that records each
request and answers with a scripted status; it can hold requests open until released."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

import orjson
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from engine.http.server import HttpServer
from engine.values import HostPort

WAIT_LIMIT = 20.0


@dataclass(frozen=True)
class Received:
    headers: dict[str, str]
    body: bytes

    @property
    def webhook_id(self) -> str:
        return self.headers["webhook-id"]

    def json(self) -> object:
        return orjson.loads(self.body)


class WebhookReceiver:
    """``statuses``: the answers in order (the last one repeats). ``hold``: while cleared, each
    request waits (counted in ``waiting``) until it is set."""

    def __init__(self, statuses: list[int] | None = None) -> None:
        self.statuses = statuses or [200]
        self.received: list[Received] = []
        self.hold = asyncio.Event()
        self.hold.set()
        self.waiting = 0
        self.most_waiting = 0
        self.port = 0
        self._seen = asyncio.Event()

    async def handle(self, request: Request) -> Response:
        body = await request.body()
        self.received.append(Received({k.lower(): v for k, v in request.headers.items()},
                                      body))
        self._seen.set()
        self.waiting += 1
        self.most_waiting = max(self.most_waiting, self.waiting)
        try:
            await self.hold.wait()
        finally:
            self.waiting -= 1
        status = self.statuses[min(len(self.received) - 1, len(self.statuses) - 1)]
        return Response(status_code=status)

    async def wait_for(self, count: int, timeout: float = WAIT_LIMIT) -> None:
        """Until ``count`` requests arrived in all."""
        async with asyncio.timeout(timeout):
            while True:
                self._seen.clear()
                if len(self.received) >= count:
                    return
                await self._seen.wait()

    async def wait_for_waiting(self, count: int, timeout: float = WAIT_LIMIT) -> None:
        async with asyncio.timeout(timeout):
            while True:
                self._seen.clear()
                if self.waiting >= count:
                    return
                await self._seen.wait()

    def per_id(self) -> Counter[str]:
        return Counter(item.webhook_id for item in self.received)

    def url(self, host: str = "127.0.0.1", path: str = "/hook") -> str:
        return f"http://{host}:{self.port}{path}"


@asynccontextmanager
async def webhook_receiver(statuses: list[int] | None = None
                           ) -> AsyncIterator[WebhookReceiver]:
    receiver = WebhookReceiver(statuses)
    app = Starlette(routes=[Route("/{path:path}", receiver.handle, methods=["POST"])])
    server = HttpServer(app, HostPort("127.0.0.1", 0), graceful_timeout=1.0)
    receiver.port = server.port
    await server.start()
    try:
        yield receiver
    finally:
        receiver.hold.set()
        await server.stop()
