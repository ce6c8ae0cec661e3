"""``POST /v1/events`` and the website tracking pixel ``GET /v1/pixel.gif``."""

from __future__ import annotations

import base64
import logging
from datetime import UTC, datetime

import orjson
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import Receive, Scope

from engine.errors import DatabaseError
from engine.http.asgi import client_host, header
from engine.http.auth import KeyLookupsLimited
from engine.http.body import decode_json, has_nul, receive_body
from engine.http.endpoint import HttpContext, JsonEndpoint, endpoint
from engine.http.errors import ApiError
from engine.intake.browser import PixelRefused, browser_event
from engine.intake.validation import InvalidEvent, parse_event_body
from engine.intake.writer import EventsRejected, IntakeOverloaded, WriterStopped
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
        body = decode_json(raw)
        try:
            events = parse_event_body(body, datetime.now(UTC), settings.max_batch_events)
        except InvalidEvent as exc:
            raise ApiError(422, "invalid_event", str(exc)) from None
        if has_nul(body, raw):
            raise ApiError(422, "invalid_event", "strings must not contain U+0000")
        try:
            result = await context.writer.store(events)
        except (IntakeOverloaded, WriterStopped) as exc:
            raise ApiError(503, "overloaded", str(exc), {"Retry-After": "1"}) from None
        except EventsRejected as exc:
            where = "event" if exc.index is None or "events" not in body \
                else f"events[{exc.index}]"
            raise ApiError(422, "invalid_event", f"{where}: the database refused it: "
                           f"{exc.reason}") from None
        return 202, orjson.dumps({"accepted": result.accepted, "duplicates": result.duplicates})

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
