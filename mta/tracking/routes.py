"""``GET /t/o/{token}`` (the open pixel) and ``GET /t/c/{token}`` (a tracked link): public, no
authentication, and they do nothing but record an ``email_opened`` / ``email_clicked`` event
(through the intake's group commit) before answering.

A click answers 302 to the URL stored for that message and position, never to anything the
request carries: a malformed, forged or tampered token is 422, a query string 422 (nothing can
ride along, e.g. ``?url=``), an unknown message or position 404 (JSON bodies, never a redirect).
An open answers a 1x1 GIF with ``Cache-Control: no-store`` (a bad token: 422 JSON).

Recording never stands between a person and their link: past the per-client rate, or when the
event log cannot take the event, the redirect and the pixel are still served and the miss is
counted (``herald_tracking_hits_total{kind,outcome}``). Machine hits (:mod:`.machine`) are
recorded with ``machine: true`` and a ``machine_reason``.
"""

from __future__ import annotations

import logging
import time
import uuid
from datetime import UTC, datetime
from typing import Any

from prometheus_client import Counter
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route

from engine.errors import DatabaseError
from engine.http.endpoint import HttpContext, endpoint
from engine.http.errors import ApiError
from engine.http.events_routes import GIF, PIXEL_HEADERS
from engine.http.openapi import error_responses
from engine.http.ratelimit import RateLimiter, client_key
from engine.intake.validation import EventIn
from engine.intake.writer import EventsRejected, IntakeOverloaded, WriterStopped
from engine.link_keys import LinkKeys
from engine.metrics import REGISTRY
from mta.tracking.lookups import GroupedLookup
from mta.tracking.machine import Hit, RecentClicks, classify
from mta.tracking.settings import TrackingSettings
from mta.tracking.store import MessageCache, TrackedMessage, tracked_messages
from mta.tracking.tokens import BadToken, Kind, TrackingRef, read_tracking_token

log = logging.getLogger("herald.tracking")

SOURCE = "tracking"
OPENED, CLICKED = "email_opened", "email_clicked"
HITS = Counter("herald_tracking_hits", "Tracking hits by kind (open, click) and outcome "
               "(recorded, machine, rate_limited, unavailable)", ["kind", "outcome"],
               registry=REGISTRY)
NO_STORE = {"Cache-Control": "no-store, max-age=0", "Referrer-Policy": "no-referrer",
            "X-Content-Type-Options": "nosniff"}
METADATA_PROPERTIES = ("workflow", "step", "run_id")


def event_properties(message: TrackedMessage, kind: Kind, position: int,
                     machine_reason: str | None) -> dict[str, Any]:
    """The event's properties (a contract shared with funnels and stats: keep the names)."""
    properties: dict[str, Any] = {"message_id": str(message.id)}
    for name in METADATA_PROPERTIES:
        if name in message.metadata:
            properties[name] = message.metadata[name]
    properties["machine"] = machine_reason is not None
    if machine_reason is not None:
        properties["machine_reason"] = machine_reason
    if kind == "click":
        properties["url"] = message.url(position)
        properties["link"] = position
    return properties


def routes(context: HttpContext, keys: LinkKeys, settings: TrackingSettings) -> list[Route]:
    limiter = RateLimiter(settings.client_rate_per_second, settings.client_rate_burst)
    recent = RecentClicks(settings.machine_burst_window)
    cache = MessageCache()
    rules = settings.machine_rules

    def read(request: Request, kind: Kind) -> TrackingRef:
        if request.url.query:
            raise ApiError(422, "invalid_tracking_link",
                           "tracking links take no query string")
        try:
            return read_tracking_token(keys, kind, request.path_params["token"])
        except BadToken as exc:
            raise ApiError(422, "invalid_tracking_link", str(exc)) from None

    async def record(request: Request, ref: TrackingRef, message: TrackedMessage) -> None:
        """Append the event; never raises (the person gets their link or pixel regardless)."""
        client = request.client.host if request.client is not None else None
        if limiter.acquire(client_key(client), time.monotonic()) > 0:
            HITS.labels(ref.kind, "rate_limited").inc()
            return
        now = datetime.now(UTC)
        since = None if message.delivered_at is None else \
            (now - message.delivered_at).total_seconds()
        earlier = recent.note(message.id, ref.position, time.monotonic()) \
            if ref.kind == "click" else []
        reason = classify(Hit(ref.kind, request.method, request.headers.get("user-agent"),
                              since, ref.position, earlier), rules)
        event = EventIn(CLICKED if ref.kind == "click" else OPENED, message.contact_id, None,
                        event_properties(message, ref.kind, ref.position, reason), now, None)
        try:
            await context.writer.store([event], source=SOURCE)
        except (DatabaseError, EventsRejected, IntakeOverloaded, WriterStopped) as exc:
            HITS.labels(ref.kind, "unavailable").inc()
            log.warning("tracking hit not recorded", extra={
                "message_id": str(message.id), "kind": ref.kind, "reason": type(exc).__name__})
            return
        HITS.labels(ref.kind, "machine" if reason else "recorded").inc()

    async def fetch(message_ids: list[uuid.UUID]) -> dict[uuid.UUID, TrackedMessage]:
        async with context.database.connection() as connection:
            return await tracked_messages(connection, message_ids)

    lookups = GroupedLookup(fetch)

    async def find(ref: TrackingRef) -> TrackedMessage:
        message = cache.get(ref.message_id)
        if message is None:
            message = await lookups.get(ref.message_id)
            if message is None:
                raise ApiError(404, "unknown_message", "this link's message is no longer known")
            cache.put(message)
        return message

    @endpoint("tracking_click")
    async def click(request: Request) -> Response:
        ref = read(request, "click")
        message = await find(ref)
        url = message.url(ref.position)
        if url is None:
            raise ApiError(404, "unknown_link", "this message has no tracked link there")
        await record(request, ref, message)
        return RedirectResponse(url, status_code=302, headers=NO_STORE)

    @endpoint("tracking_open")
    async def opened(request: Request) -> Response:
        ref = read(request, "open")
        message = await find(ref)
        await record(request, ref, message)
        return Response(GIF, headers={**PIXEL_HEADERS, **NO_STORE})

    return [Route("/t/c/{token}", click, methods=["GET", "HEAD"]),
            Route("/t/o/{token}", opened, methods=["GET", "HEAD"])]


def openapi_paths() -> dict[str, Any]:
    token = {"name": "token", "in": "path", "required": True,
             "schema": {"type": "string", "minLength": 1, "maxLength": 80}}
    errors = error_responses(404, 422, 503)
    return {
        "/t/c/{token}": {"get": {
            "summary": "Follow a tracked link: records email_clicked, then redirects to the "
                       "message's own link at the token's position (public, no key). A bad "
                       "token or any query string is 422, never a redirect",
            "operationId": "trackClick", "tags": ["tracking"], "security": [],
            "parameters": [token],
            "responses": {"302": {"description": "To the link stored for the message",
                                  "headers": {"Location": {"schema": {"type": "string"}}}},
                          **errors}}},
        "/t/o/{token}": {"get": {
            "summary": "The open pixel: records email_opened (public, no key)",
            "operationId": "trackOpen", "tags": ["tracking"], "security": [],
            "parameters": [token],
            "responses": {"200": {"description": "A 1x1 GIF, Cache-Control: no-store",
                                  "content": {"image/gif": {"schema": {
                                      "type": "string", "format": "binary"}}}},
                          **errors}}},
    }
