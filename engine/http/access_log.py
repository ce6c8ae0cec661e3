"""The optional HTTP access log (``[http] access_log``): one JSON line per request on the
``herald.http.access`` logger, with the route template (``/v1/unsubscribe/{token}``), never the
raw path or query string, which can carry tokens; no headers, no bodies."""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence

from starlette.routing import BaseRoute, Match, Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

log = logging.getLogger("herald.http.access")


def route_template(routes: Sequence[BaseRoute], scope: Scope) -> str:
    """The path template of the route that serves ``scope``; "-" when none does."""
    for route in routes:
        if isinstance(route, Route):
            match, _ = route.matches(scope)
            if match is not Match.NONE:
                return route.path
    return "-"


class AccessLog:
    """ASGI middleware around the whole app (fast paths included)."""

    def __init__(self, app: ASGIApp, routes: Sequence[BaseRoute]) -> None:
        self.app = app
        self.routes = routes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 0
        sent = 0

        async def send_wrapper(message: Message) -> None:
            nonlocal status, sent
            if message["type"] == "http.response.start":
                status = message["status"]
            elif message["type"] == "http.response.body":
                sent += len(message.get("body", b""))
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            client = scope.get("client")
            log_request(scope["method"], route_template(self.routes, scope), status or 500,
                        sent, started, client[0] if client else None)


def log_request(method: str, route: str, status: int, sent: int, started: float,
                client: str | None) -> None:
    """One access log line; ``started``: ``time.perf_counter()`` when the request was in."""
    log.info("request", extra={
        "method": method, "route": route, "status": status, "bytes": sent,
        "duration_ms": round((time.perf_counter() - started) * 1000, 2), "client": client})
