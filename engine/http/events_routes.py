"""``POST /v1/events`` and the website tracking pixel ``GET /v1/pixel.gif``."""

from __future__ import annotations

import asyncio
import base64
import logging
import time
from datetime import UTC, datetime
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import Receive, Scope

from engine.errors import DatabaseError
from engine.http.asgi import client_host, header
from engine.http.auth import KeyLookupsLimited
from engine.http.body import client_closed, decode_json, has_nul, receive_body
from engine.http.direct_routes import DirectRoute, Headers, Reply, Respond
from engine.http.endpoint import (
    JSON_TYPE,
    HttpContext,
    JsonEndpoint,
    RouteMetrics,
    endpoint,
    error_response_for,
)
from engine.http.errors import ApiError
from engine.intake.browser import PixelRefused, browser_event
from engine.intake.validation import EventIn, InvalidEvent, parse_event_body
from engine.intake.writer import EventsRejected, IntakeOverloaded, StoreResult, WriterStopped
from engine.metrics import PIXEL_PROPERTIES_DROPPED, PIXEL_REJECTED

log = logging.getLogger("herald.http.events")

GIF = base64.b64decode("R0lGODlhAQABAIAAAAAAAP///yH5BAEAAAAALAAAAAABAAEAAAIBRAA7")
PIXEL_HEADERS = {"Cache-Control": "no-store, max-age=0", "Content-Type": "image/gif"}


def routes(context: HttpContext) -> list[Route]:
    settings = context.settings

    async def post_events(scope: Scope, receive: Receive) -> tuple[int, bytes]:
        await context.auth.require_header(header(scope, b"authorization") or "",
                                          "events:write", client_host(scope))
        raw = await receive_body(receive, header(scope, b"content-length"), settings.max_body)
        body, events = _events_of(raw, settings.max_batch_events)
        try:
            result = await context.writer.store(events)
        except (IntakeOverloaded, WriterStopped, EventsRejected) as exc:
            raise _store_refused(exc, body) from None
        return _accepted(result)

    @endpoint("/v1/pixel.gif")
    async def pixel(request: Request) -> Response:
        reason = await _record_pixel(context, request)
        if reason is not None:
            PIXEL_REJECTED.labels(reason).inc()
            log.info("pixel hit not recorded", extra={"reason": reason})  # never the query
        return Response(GIF, headers=PIXEL_HEADERS)

    return [
        # Served as a bare ASGI app: the intake's hot path builds no Request or Response.
        Route("/v1/events", JsonEndpoint("/v1/events", post_events), methods=["POST"]),
        Route("/v1/pixel.gif", pixel, methods=["GET"]),
    ]


def _events_of(raw: bytes, max_events: int) -> tuple[Any, list[EventIn]]:
    """The decoded body and its events (ApiError for what the caller must fix)."""
    body = decode_json(raw)
    try:
        events = parse_event_body(body, datetime.now(UTC), max_events)
    except InvalidEvent as exc:
        raise ApiError(422, "invalid_event", str(exc)) from None
    if has_nul(body, raw):
        raise ApiError(422, "invalid_event", "strings must not contain U+0000")
    return body, events


def _store_refused(exc: Exception, body: Any) -> Exception:
    """The answer to the writer's refusal ``exc`` of ``body``'s events (other errors as
    they are)."""
    if isinstance(exc, (IntakeOverloaded, WriterStopped)):
        return ApiError(503, "overloaded", str(exc), {"Retry-After": "1"})
    if isinstance(exc, EventsRejected):
        where = "event" if exc.index is None or "events" not in body \
            else f"events[{exc.index}]"
        return ApiError(422, "invalid_event", f"{where}: the database refused it: "
                        f"{exc.reason}")
    return exc


def _accepted(result: StoreResult) -> tuple[int, bytes]:
    return 202, orjson.dumps({"accepted": result.accepted, "duplicates": result.duplicates})


def direct_route(context: HttpContext) -> DirectRoute:
    """``POST /v1/events`` answered from the HTTP protocol (:mod:`engine.http.direct_routes`)
    while its key is in the authenticator's memory: the same checks, errors, metrics and
    answers as the route above, with no ASGI task; the writer's future answers it. Declined
    (served by the route above) when the key has to be read from the database."""
    settings = context.settings
    auth = context.auth
    writer = context.writer
    metrics = RouteMetrics("/v1/events")

    def serve(headers: Headers, raw: bytes, respond: Respond) -> bool:
        started = time.perf_counter()
        authorization = ""
        for name, value in headers:
            if name == b"authorization":
                authorization = value.decode("latin-1")
                break

        def answer(status: int, body: bytes) -> None:
            metrics.record(status, time.perf_counter() - started)
            respond((status, [JSON_TYPE, (b"content-length", b"%d" % len(body))], body))

        def answer_error(exc: Exception) -> None:
            respond(_error_reply(exc, metrics, started))

        try:
            if auth.verified_key(authorization, "events:write") is None:
                return False
            body, events = _events_of(raw, settings.max_batch_events)
            try:
                future = writer.submit(events)
            except (IntakeOverloaded, WriterStopped) as exc:
                raise _store_refused(exc, body) from None
        except Exception as exc:
            answer_error(exc)
            return True

        def committed(done: asyncio.Future[StoreResult]) -> None:
            try:
                status, answer_body = _accepted(done.result())
            except Exception as exc:
                answer_error(_store_refused(exc, body))
            else:
                answer(status, answer_body)

        future.add_done_callback(committed)
        return True

    def gone(started: float, respond: Respond) -> None:
        respond(_error_reply(client_closed(), metrics, started))

    return DirectRoute(b"POST", b"/v1/events", settings.max_body, serve, gone)


def _error_reply(exc: Exception, metrics: RouteMetrics, started: float) -> Reply:
    """The app's answer to ``exc`` (error_response_for: call it where ``exc`` is handled),
    recorded in the route's metrics."""
    response = error_response_for(exc, metrics.route)
    metrics.record(response.status_code, time.perf_counter() - started)
    return response.status_code, response.raw_headers, bytes(response.body)


async def _record_pixel(context: HttpContext, request: Request) -> str | None:
    """Record a pixel hit; returns why it was not recorded, or None. Never raises."""
    params = request.query_params
    token = params.get("key", "")
    client = request.client.host if request.client is not None else None
    try:
        key = await context.auth.lookup(token, client) if token else None
    except DatabaseError:
        return "database_unavailable"
    except KeyLookupsLimited:
        return "client_rate_limited"
    if key is None or not key.publishable:
        return "bad_key"
    # The visitor's own budget first, so one visitor cannot spend everyone's key budget.
    if not context.auth.client_allowed(key.key_id, client):
        return "client_rate_limited"
    try:
        context.auth.check_rate(key.key_id)
    except ApiError:
        return "rate_limited"
    try:
        hit = browser_event(params.multi_items(), key, datetime.now(UTC))
    except PixelRefused as exc:
        return exc.reason
    if hit.dropped:
        PIXEL_PROPERTIES_DROPPED.inc(len(hit.dropped))
    try:
        await context.writer.store([hit.event], source=hit.source)
    except EventsRejected:
        return "rejected"
    except (DatabaseError, IntakeOverloaded, WriterStopped):
        return "unavailable"
    return None
