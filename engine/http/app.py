"""Assemble the Starlette app from route lists, with health, readiness, metrics and OpenAPI."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route
from starlette.types import ASGIApp, Receive, Scope, Send

from engine.database import Database
from engine.http.endpoint import JsonEndpoint
from engine.http.errors import OrjsonResponse, error_response
from engine.http.paths import keep_separators_encoded
from engine.metrics import REGISTRY

Handler = Callable[[Request], Awaitable[Response]]


class FastPaths:
    """Serve a few hot (method, path) pairs without Starlette's middleware and routing.

    A handler is either wrapped by :func:`engine.http.endpoint.endpoint` (request in, response
    out) or is a bare ASGI app (:class:`engine.http.endpoint.JsonEndpoint`); both already turn
    every error into a JSON response, so nothing the skipped middleware does is lost.
    """

    def __init__(self, app: Starlette, paths: dict[tuple[str, str], Handler | ASGIApp]) -> None:
        self.app = app
        self.paths: dict[tuple[str, str], ASGIApp] = {
            key: handler if isinstance(handler, JsonEndpoint) else _serve(handler)
            for key, handler in paths.items()}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            app = self.paths.get((scope["method"], scope["path"]))
            if app is not None:
                await app(scope, receive, send)
                return
            keep_separators_encoded(scope)  # so /v1/contacts/a%2Fb routes as one segment
        await self.app(scope, receive, send)


def _serve(handler: Any) -> ASGIApp:
    """A request-to-response handler as an ASGI app."""
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        response = await handler(Request(scope, receive))
        await response(scope, receive, send)

    return app


def build_app(database: Database, routes: Sequence[BaseRoute],
              openapi: dict[str, Any]) -> Starlette:
    async def healthz(request: Request) -> Response:
        return OrjsonResponse({"status": "ok"})

    async def readyz(request: Request) -> Response:
        if await database.ping():
            return OrjsonResponse({"status": "ready"})
        return error_response(503, "database_unavailable", "the database is unreachable")

    async def metrics(request: Request) -> Response:
        return Response(generate_latest(REGISTRY), media_type=CONTENT_TYPE_LATEST)

    async def openapi_json(request: Request) -> Response:
        return OrjsonResponse(openapi)

    async def http_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
        return error_response(exc.status_code, code, f"{request.method} {request.url.path}: "
                              f"{exc.detail}", dict(exc.headers or {}))

    return Starlette(
        routes=[
            *routes,
            Route("/healthz", healthz, methods=["GET"]),
            Route("/readyz", readyz, methods=["GET"]),
            Route("/metrics", metrics, methods=["GET"]),
            Route("/openapi.json", openapi_json, methods=["GET"]),
        ],
        exception_handlers={HTTPException: http_error},
    )
