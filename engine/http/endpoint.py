"""Wrap handlers: translate errors into JSON bodies and record request metrics.

:func:`endpoint` wraps a Starlette handler (request in, response out). :class:`JsonEndpoint`
serves a hot route as a bare ASGI app: its handler gets the ASGI scope and ``receive`` and
returns the status and the JSON body, which are sent without building a Request or a Response;
errors take the same path as :func:`endpoint`'s.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from engine.config import HttpSettings
from engine.database import Database
from engine.errors import DatabaseConflict, DatabaseRejected, DatabaseUnavailable
from engine.http.auth import Authenticator
from engine.http.errors import ApiError, error_response
from engine.intake.writer import EventWriter
from engine.metrics import HTTP_LATENCY, HTTP_REQUESTS

log = logging.getLogger("herald.http")

Handler = Callable[[Request], Awaitable[Response]]


@dataclass(frozen=True, slots=True)
class HttpContext:
    """What route handlers need, built once by the app factory."""

    settings: HttpSettings
    database: Database
    writer: EventWriter
    auth: Authenticator


def error_response_for(exc: Exception, route: str) -> Response:
    """The response to an error a handler raised (call it in the ``except`` block): errors a
    caller can cause become JSON bodies; anything else is a logged 500."""
    if isinstance(exc, ApiError):
        return exc.response()
    if isinstance(exc, DatabaseUnavailable):
        return error_response(503, "database_unavailable",
                              "the database is unreachable; retry later", {"Retry-After": "1"})
    if isinstance(exc, DatabaseConflict):
        return error_response(409, "conflict", str(exc))
    if isinstance(exc, DatabaseRejected):
        return error_response(422, "invalid_value", str(exc) if exc.field else
                              f"the database refused a value: {exc.reason}")
    return internal_error(route)  # a bug, including DatabaseFault


class RouteMetrics:
    """Latency and answers by status of one route (label children looked up once)."""

    def __init__(self, route: str) -> None:
        self.route = route
        self.latency = HTTP_LATENCY.labels(route)
        self.counters: dict[int, Any] = {}

    def record(self, status: int, seconds: float) -> None:
        self.latency.observe(seconds)
        counter = self.counters.get(status)
        if counter is None:
            counter = self.counters[status] = HTTP_REQUESTS.labels(self.route, str(status))
        counter.inc()


def endpoint(route: str) -> Callable[[Handler], Handler]:
    """Errors a caller can cause become JSON bodies; anything else is a logged 500."""

    def wrap(handler: Handler) -> Handler:
        metrics = RouteMetrics(route)

        async def wrapped(request: Request) -> Response:
            started = time.perf_counter()
            try:
                response = await handler(request)
            except Exception as exc:
                response = error_response_for(exc, route)
            metrics.record(response.status_code, time.perf_counter() - started)
            return response

        wrapped.__name__ = handler.__name__
        return wrapped

    return wrap


JsonHandler = Callable[[Scope, Receive], Awaitable[tuple[int, bytes]]]
JSON_TYPE = (b"content-type", b"application/json")


class JsonEndpoint:
    """A hot route as a bare ASGI app (a Starlette ``Route`` serves an instance as one)."""

    def __init__(self, route: str, handler: JsonHandler) -> None:
        self.handler = handler
        self._metrics = RouteMetrics(route)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        started = time.perf_counter()
        try:
            status, body = await self.handler(scope, receive)
        except Exception as exc:
            response = error_response_for(exc, self._metrics.route)
            await response(scope, receive, send)
            status = response.status_code
        else:
            await send({"type": "http.response.start", "status": status,
                        "headers": [JSON_TYPE, (b"content-length", b"%d" % len(body))]})
            await send({"type": "http.response.body", "body": body})
        self._metrics.record(status, time.perf_counter() - started)


def internal_error(route: str) -> Response:
    """Log the current exception with a fresh request id and answer 500 with the same id."""
    request_id = uuid.uuid4().hex
    log.exception("unhandled error", extra={"route": route, "request_id": request_id})
    response = error_response(500, "internal_error", "an internal error occurred; it has "
                              f"been logged with request id {request_id}",
                              {"X-Request-Id": request_id})
    return response
