"""``POST /v1/events`` and the website tracking pixel ``GET /v1/pixel.gif``."""

from __future__ import annotations

import base64
import logging
from datetime import UTC, datetime

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from engine.errors import DatabaseUnavailable
from engine.http.body import has_nul, read_json
from engine.http.endpoint import HttpContext, endpoint
from engine.http.errors import ApiError, OrjsonResponse
from engine.intake.validation import InvalidEvent, parse_event, parse_event_body
from engine.intake.writer import IntakeOverloaded, WriterStopped
from engine.metrics import PIXEL_REJECTED

log = logging.getLogger("herald.http.events")

GIF = base64.b64decode("R0lGODlhAQABAIAAAAAAAP///yH5BAEAAAAALAAAAAABAAEAAAIBRAA7")
PIXEL_HEADERS = {"Cache-Control": "no-store, max-age=0", "Content-Type": "image/gif"}
PIXEL_RESERVED = frozenset({"key", "type", "contact_id", "email", "id", "timestamp"})
MAX_PIXEL_PROPERTIES = 50
PIXEL_EVENT_FIELDS = ("type", "contact_id", "email", "id", "timestamp")


def routes(context: HttpContext) -> list[Route]:
    settings = context.settings

    @endpoint("/v1/events")
    async def post_events(request: Request) -> Response:
        await context.auth.require(request, "events:write")
        body = await read_json(request, settings.max_body)
        try:
            events = parse_event_body(body, datetime.now(UTC), settings.max_batch_events)
        except InvalidEvent as exc:
            raise ApiError(422, "invalid_event", str(exc)) from None
        if has_nul(body):
            raise ApiError(422, "invalid_event", "strings must not contain U+0000")
        try:
            result = await context.writer.store(events)
        except (IntakeOverloaded, WriterStopped) as exc:
            raise ApiError(503, "overloaded", str(exc), {"Retry-After": "1"}) from None
        return OrjsonResponse({"accepted": result.accepted, "duplicates": result.duplicates},
                              status_code=202)

    @endpoint("/v1/pixel.gif")
    async def pixel(request: Request) -> Response:
        reason = await _record_pixel(context, request)
        if reason is not None:
            PIXEL_REJECTED.labels(reason).inc()
            log.info("pixel hit not recorded", extra={"reason": reason})
        return Response(GIF, headers=PIXEL_HEADERS)

    return [
        Route("/v1/events", post_events, methods=["POST"]),
        Route("/v1/pixel.gif", pixel, methods=["GET"]),
    ]


async def _record_pixel(context: HttpContext, request: Request) -> str | None:
    """Record a pixel hit; returns why it was not recorded, or None. Never raises."""
    params = request.query_params
    token = params.get("key", "")
    try:
        key = await context.auth.lookup(token) if token else None
    except DatabaseUnavailable:
        return "database_unavailable"
    if key is None or not key.publishable:
        return "bad_key"
    try:
        context.auth.check_rate(key.key_id)
    except ApiError:
        return "rate_limited"
    event_type = params.get("type", "")
    if event_type not in key.event_types:
        return "event_type_not_allowed"
    properties = {name: value for name, value in params.items() if name not in PIXEL_RESERVED}
    if len(properties) > MAX_PIXEL_PROPERTIES:
        return "too_many_properties"
    item: dict[str, object] = {name: params[name] for name in PIXEL_EVENT_FIELDS
                               if name in params}
    item["properties"] = properties
    try:
        event = parse_event(item, "pixel", datetime.now(UTC))
    except InvalidEvent:
        return "invalid_event"
    if has_nul(item):
        return "invalid_event"
    try:
        await context.writer.store([event], source="pixel")
    except (DatabaseUnavailable, IntakeOverloaded, WriterStopped):
        return "unavailable"
    return None
