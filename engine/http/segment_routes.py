"""The Segment tracking API on Herald's HTTP server: ``POST /v1/batch``, ``/v1/track``,
``/v1/identify``, ``/v1/page``, ``/v1/screen``, ``/v1/group``, ``/v1/alias``.

Authentication as the SDKs send it: HTTP Basic with the write key (a Herald secret key with
``events:write``) as the user name and an empty password; a Bearer key or the body's
``writeKey`` also work. Bodies may be gzip-compressed (inflated within ``[http] max_body``).
The answer is Segment's: 200 ``{"success": true}`` once the events are committed (plus
``rejected``: the messages set aside and why), 400 for a body that is not JSON, 422 for one
that is no message or batch, 413 past the size limit, 401/403 for the key, 503 + Retry-After
when the database is unavailable (the SDKs retry; ``messageId`` makes a retry a duplicate,
never a second event).
"""

from __future__ import annotations

import base64
import binascii
import logging
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from engine.http.body import decode_json, read_body
from engine.http.content_encoding import content_encoding, inflate
from engine.http.endpoint import HttpContext, endpoint
from engine.http.errors import ApiError, OrjsonResponse
from engine.intake.segment.messages import InvalidBody, Rejected, parse_body
from engine.intake.validation import EventIn
from engine.intake.writer import EventsRejected, IntakeOverloaded, WriterStopped
from engine.metrics import SEGMENT_MESSAGES_REJECTED
from engine.sources import SEGMENT

log = logging.getLogger("herald.http.segment")

PATHS = {"/v1/batch": None, "/v1/track": "track", "/v1/identify": "identify",
         "/v1/page": "page", "/v1/screen": "screen", "/v1/group": "group",
         "/v1/alias": "alias"}
SCOPE = "events:write"
CHALLENGE = 'Basic realm="herald"'
# A request the database refuses is retried without the refused message this many times.
MAX_REFUSED = 5


def basic_user(header: str) -> str | None:
    """The user name of ``Authorization: Basic base64(user:password)``, or None."""
    scheme, _, encoded = header.partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        decoded = base64.b64decode(encoded.strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        return None
    user, _, _password = decoded.partition(":")
    return user or None


def _token(request: Request, body: Any) -> tuple[str, bool]:
    """(the presented key, whether it came as Basic/Bearer)."""
    header = request.headers.get("authorization", "")
    user = basic_user(header)
    if user is not None:
        return user, True
    scheme, _, token = header.partition(" ")
    if scheme.lower() == "bearer" and token.strip():
        return token.strip(), True
    write_key = body.get("writeKey") if isinstance(body, dict) else None
    if isinstance(write_key, str) and write_key:
        return write_key, False
    raise ApiError(401, "unauthorized", "send the write key as the user name of HTTP Basic "
                   "authentication ('Authorization: Basic base64(KEY:)')",
                   {"WWW-Authenticate": CHALLENGE})


def routes(context: HttpContext) -> list[Route]:
    settings = context.settings

    def handler(path: str, path_type: str | None) -> Callable[[Request], Awaitable[Response]]:
        @endpoint(path)
        async def post_segment(request: Request) -> Response:
            client = request.client.host if request.client else None
            header = request.headers.get("authorization", "")
            if header:  # a wrong key is refused before the body is read
                token, _ = _token(request, None)
                await context.auth.require_token(token, SCOPE, CHALLENGE, client)
            raw = await read_body(request, settings.max_body)
            body = decode_json(inflate(raw, content_encoding(request), settings.max_body))
            if not header:
                token, _ = _token(request, body)
                await context.auth.require_token(token, SCOPE, CHALLENGE, client)
            try:
                parsed = parse_body(body, path_type, datetime.now(UTC),
                                    settings.max_batch_events)
            except InvalidBody as exc:
                raise ApiError(422, "invalid_body", str(exc)) from None
            rejected = await _store(context, parsed.events, list(parsed.rejected))
            answer: dict[str, Any] = {"success": True}
            if rejected:
                SEGMENT_MESSAGES_REJECTED.inc(len(rejected))
                log.info("segment messages set aside", extra={
                    "rejected": len(rejected), "first_error": rejected[0].error[:200]})
                answer["rejected"] = [item.json() for item in
                                      sorted(rejected, key=lambda r: r.index)]
            return OrjsonResponse(answer)

        post_segment.__name__ = f"segment_{path_type or 'batch'}"
        return post_segment

    return [Route(path, handler(path, path_type), methods=["POST"])
            for path, path_type in PATHS.items()]


async def _store(context: HttpContext, events: list[EventIn],
                 rejected: list[Rejected]) -> list[Rejected]:
    """Commit ``events``; a message the database refuses is set aside and the rest retried."""
    positions = [index for index in range(len(events) + len(rejected))
                 if index not in {item.index for item in rejected}]
    for _ in range(MAX_REFUSED + 1):
        if not events:
            return rejected
        try:
            await context.writer.store(events, source=SEGMENT)
            return rejected
        except (IntakeOverloaded, WriterStopped) as exc:
            raise ApiError(503, "overloaded", str(exc), {"Retry-After": "1"}) from None
        except EventsRejected as exc:
            if exc.index is None:
                raise ApiError(422, "invalid_event", f"the database refused the batch: "
                               f"{exc.reason}") from None
            event = events.pop(exc.index)
            message_id = event.event_id.split(":", 1)[1] if event.event_id else None
            rejected.append(Rejected(positions.pop(exc.index), message_id,
                                     f"the database refused it: {exc.reason}"))
    raise ApiError(422, "invalid_event", "the database refused too many messages of this batch")


MESSAGE_SCHEMA: dict[str, Any] = {
    "type": "object",
    "description": "A Segment Spec message: userId and/or anonymousId; track needs event, "
                   "group groupId, alias previousId and userId. Other keys are ignored.",
    "properties": {
        "type": {"type": "string", "enum": ["track", "identify", "page", "screen", "group",
                                            "alias"]},
        "messageId": {"type": "string", "maxLength": 200},
        "userId": {"type": ["string", "number"]},
        "anonymousId": {"type": ["string", "number"]},
        "event": {"type": "string", "maxLength": 128},
        "name": {"type": "string"}, "category": {"type": "string"},
        "groupId": {"type": ["string", "number"]},
        "previousId": {"type": ["string", "number"]},
        "properties": {"type": "object"}, "traits": {"type": "object"},
        "context": {"type": "object"},
        "timestamp": {"type": "string", "format": "date-time"},
        "originalTimestamp": {"type": "string", "format": "date-time"},
        "sentAt": {"type": "string", "format": "date-time"},
    },
}


def openapi_paths() -> dict[str, Any]:
    success = {"200": {"description": "Committed (messages set aside are listed)",
                       "content": {"application/json": {"schema": {
                           "type": "object", "required": ["success"],
                           "properties": {"success": {"type": "boolean"},
                                          "rejected": {"type": "array", "items": {
                                              "type": "object", "properties": {
                                                  "index": {"type": "integer"},
                                                  "messageId": {"type": ["string", "null"]},
                                                  "error": {"type": "string"}}}}}}}}}}
    errors = {str(code): {"description": text, "content": {"application/json": {
        "schema": {"$ref": "#/components/schemas/Error"}}}}
        for code, text in ((400, "Not JSON, or a corrupt gzip body"),
                           (422, "Not a Segment message or batch"),
                           (401, "Missing or invalid write key"),
                           (403, "The key lacks events:write"), (413, "Body too large"),
                           (415, "Unsupported Content-Encoding"),
                           (429, "Rate limited; see Retry-After"),
                           (503, "Database unreachable or overloaded"))}
    paths: dict[str, Any] = {}
    for path, path_type in PATHS.items():
        schema = ({"type": "object", "required": ["batch"], "properties": {
            "batch": {"type": "array", "items": MESSAGE_SCHEMA},
            "sentAt": {"type": "string", "format": "date-time"}}}
            if path_type is None else MESSAGE_SCHEMA)
        paths[path] = {"post": {
            "summary": f"Segment tracking API: {path_type or 'batch'}",
            "operationId": f"segment{(path_type or 'batch').title()}",
            "security": [{"segmentWriteKey": []}, {"bearer": ["events:write"]}],
            "requestBody": {"required": True, "content": {"application/json": {
                "schema": schema}}},
            "responses": {**success, **errors},
        }}
    return paths
