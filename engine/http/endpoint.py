"""Wrap handlers: translate errors into JSON bodies and record request metrics."""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from starlette.requests import Request
from starlette.responses import Response

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


def endpoint(route: str) -> Callable[[Handler], Handler]:
    """Errors a caller can cause become JSON bodies; anything else is a logged 500."""

    def wrap(handler: Handler) -> Handler:
        latency = HTTP_LATENCY.labels(route)
        counters: dict[int, object] = {}

        async def wrapped(request: Request) -> Response:
            started = time.perf_counter()
            try:
                response = await handler(request)
            except ApiError as exc:
                response = exc.response()
            except DatabaseUnavailable:
                response = error_response(503, "database_unavailable",
                                          "the database is unreachable; retry later",
                                          {"Retry-After": "1"})
            except DatabaseConflict as exc:
                response = error_response(409, "conflict", str(exc))
            except DatabaseRejected as exc:
                response = error_response(422, "invalid_value",
                                          str(exc) if exc.field else
                                          f"the database refused a value: {exc.reason}")
            except Exception:  # a bug, including DatabaseFault
                response = internal_error(route)
            latency.observe(time.perf_counter() - started)
            status = response.status_code
            counter = counters.get(status)
            if counter is None:
                counter = counters[status] = HTTP_REQUESTS.labels(route, str(status))
            counter.inc()  # type: ignore[attr-defined]
            return response

        wrapped.__name__ = handler.__name__
        return wrapped

    return wrap


def internal_error(route: str) -> Response:
    """Log the current exception with a fresh request id and answer 500 with the same id."""
    request_id = uuid.uuid4().hex
    log.exception("unhandled error", extra={"route": route, "request_id": request_id})
    response = error_response(500, "internal_error", "an internal error occurred; it has "
                              f"been logged with request id {request_id}",
                              {"X-Request-Id": request_id})
    return response
