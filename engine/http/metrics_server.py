"""``/metrics`` on ``[metrics] listen``: one small HTTP server per process, whatever its roles,
on the process's own event loop (a scrape reads in-memory values only)."""

from __future__ import annotations

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route

from engine.http.server import HttpServer
from engine.metrics import REGISTRY
from engine.values import HostPort


def metrics_app() -> Starlette:
    async def metrics(request: Request) -> Response:
        return Response(generate_latest(REGISTRY), media_type=CONTENT_TYPE_LATEST)

    async def healthz(request: Request) -> Response:
        return PlainTextResponse("ok\n")

    return Starlette(routes=[Route("/metrics", metrics, methods=["GET"]),
                             Route("/healthz", healthz, methods=["GET"])])


class MetricsServer:
    def __init__(self, listen: HostPort) -> None:
        self.listen = listen
        self._server = HttpServer(metrics_app(), listen, graceful_timeout=1.0)
        self.port = self._server.port

    async def start(self) -> None:
        await self._server.start()

    async def stop(self) -> None:
        await self._server.stop()
