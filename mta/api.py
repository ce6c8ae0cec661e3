"""The injection API: ``POST /v1/messages`` and ``GET /v1/messages/{id}``."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from engine.contacts import CONTACT_ID
from engine.http.body import has_nul, read_json
from engine.http.endpoint import HttpContext, endpoint
from engine.http.errors import ApiError, OrjsonResponse
from engine.http.openapi import JSON_DESCRIPTION, PRINTABLE_ID, error_responses
from engine.timestamps import format_rfc3339, parse_rfc3339
from mta.compose import MAX_EXTRA_HEADERS, MAX_TAGS, TAG_PATTERN, check_raw, compose, parse_tags
from mta.errors import InvalidMessage
from mta.queue.enqueue import OutboundMessage, QueueIdentity, enqueue
from mta.senders import SenderPolicy

MAX_SCHEDULE = timedelta(days=366)
MESSAGE_KEYS = frozenset({"from", "to", "subject", "text", "html", "headers", "raw",
                          "contact_id", "tags", "metadata", "send_at", "idempotency_key"})


def parse_message_request(body: Any, max_size: int,
                          now: datetime | None = None) -> OutboundMessage:
    """A validated message; ``send_at`` may lie up to :data:`MAX_SCHEDULE` ahead (the
    message expires ``[mta] expire`` after it, see :func:`mta.queue.enqueue.enqueue`)."""
    now = now or datetime.now(UTC)
    if not isinstance(body, dict):
        raise InvalidMessage("body: must be a JSON object")
    unknown = set(body) - MESSAGE_KEYS
    if unknown:
        raise InvalidMessage(f"{sorted(unknown)[0]}: unknown field")
    for name, value in body.items():
        if value is None:  # the document has no nullable field: leave it out instead
            raise InvalidMessage(f"{name}: must not be null (leave the field out)")
    if body.get("raw") is not None:
        raw = body["raw"]
        if not isinstance(raw, str):
            raise InvalidMessage("raw: must be the MIME message as a string")
        for name in ("subject", "text", "html", "headers", "from"):
            if name in body:
                raise InvalidMessage(f"{name}: not allowed together with raw")
        composed = check_raw(raw.encode("utf-8"), body.get("to"))
    else:
        composed = compose(body)
    if len(composed.body) > max_size:
        raise InvalidMessage(f"message: {len(composed.body)} octets; the limit is {max_size}")
    contact_id = body.get("contact_id")
    if contact_id is not None and (not isinstance(contact_id, str)
                                   or not CONTACT_ID.match(contact_id)):
        raise InvalidMessage("contact_id: must be a string of 1-255 printable characters")
    metadata = body.get("metadata", {})
    if not isinstance(metadata, dict):  # [] or null would come back as {}
        raise InvalidMessage("metadata: must be an object")
    send_at = None
    if body.get("send_at") is not None:
        if not isinstance(body["send_at"], str):
            raise InvalidMessage("send_at: must be an RFC 3339 string")
        try:
            send_at = parse_rfc3339(body["send_at"])
        except ValueError as exc:
            raise InvalidMessage(f"send_at: {exc}") from None
        if send_at > now + MAX_SCHEDULE:
            raise InvalidMessage(f"send_at: at most {MAX_SCHEDULE.days} days ahead")
    key = body.get("idempotency_key")
    if key is not None and (not isinstance(key, str) or not 1 <= len(key) <= 255):
        raise InvalidMessage("idempotency_key: must be a string of 1-255 characters")
    return OutboundMessage(composed.header_from, composed.recipient, composed.body,
                           contact_id, tuple(parse_tags(body.get("tags"))), metadata, "api",
                           key, send_at, sender=composed.sender)


def routes(context: HttpContext, identity: QueueIdentity, max_size: int,
           senders: SenderPolicy | None = None) -> list[Route]:
    senders = senders or SenderPolicy(frozenset())

    @endpoint("/v1/messages")
    async def post_message(request: Request) -> Response:
        key = await context.auth.require(request, "messages:write")
        body = await read_json(request, 2 * max_size + 64 * 1024)  # JSON escaping inflates
        try:
            message = parse_message_request(body, max_size)
        except InvalidMessage as exc:
            raise ApiError(400, "invalid_message", str(exc)) from None
        for field, address in (("from", message.header_from), ("raw.Sender", message.sender)):
            refusal = address and senders.refusal(key.from_domains, address)
            if refusal:
                raise ApiError(403, "sender_not_allowed", f"{field}: {refusal}")
        if has_nul(body):
            raise ApiError(400, "invalid_message", "strings must not contain U+0000")
        async with context.database.transaction() as connection:
            queued = await enqueue(connection, identity, message)
        return OrjsonResponse({"id": str(queued.id), "duplicate": queued.duplicate},
                              status_code=202)

    @endpoint("/v1/messages/{id}")
    async def get_message(request: Request) -> Response:
        await context.auth.require(request, "messages:read")
        try:
            message_id = uuid.UUID(request.path_params["id"])
        except ValueError:
            raise ApiError(404, "not_found", "no such message") from None
        async with context.database.connection() as connection:
            row = await connection.fetchrow(
                "SELECT id, state, header_from, recipient, contact_id, tags, metadata, "
                "attempts, created_at, next_attempt_at, expires_at, last_code, last_reply, "
                "finished_at FROM outbound_messages WHERE id = $1", message_id)
            attempts = await connection.fetch(
                "SELECT attempt, at, outcome, remote_host, code, enhanced, reply, category, "
                "tls_policy FROM delivery_attempts WHERE message_id = $1 ORDER BY attempt",
                message_id)
        if row is None:
            raise ApiError(404, "not_found", "no such message")
        return OrjsonResponse(message_json(row, attempts))

    return [Route("/v1/messages", post_message, methods=["POST"]),
            Route("/v1/messages/{id}", get_message, methods=["GET"])]


def message_json(row: Any, attempts: list[Any]) -> dict[str, Any]:
    final = row["state"] in ("delivered", "bounced", "expired", "suppressed", "purged")
    return {
        "id": str(row["id"]),
        "state": row["state"],
        "from": row["header_from"],
        "to": row["recipient"],
        "contact_id": row["contact_id"],
        "tags": row["tags"],
        "metadata": row["metadata"],
        "created_at": format_rfc3339(row["created_at"]),
        "next_attempt_at": None if final else format_rfc3339(row["next_attempt_at"]),
        "expires_at": format_rfc3339(row["expires_at"]),
        "finished_at": format_rfc3339(row["finished_at"]) if row["finished_at"] else None,
        "last_reply": row["last_reply"],
        "attempts": [{
            "attempt": a["attempt"], "at": format_rfc3339(a["at"]), "outcome": a["outcome"],
            "remote_host": a["remote_host"], "code": a["code"], "enhanced": a["enhanced"],
            "reply": a["reply"], "category": a["category"], "tls_policy": a["tls_policy"],
        } for a in attempts],
    }


def openapi_paths() -> dict[str, Any]:
    json_body = {"application/json": {"schema": {"type": "object"}}}
    return {
        "/v1/messages": {"post": {
            "summary": "Queue one message for delivery (answers after commit)",
            "operationId": "postMessage",
            "security": [{"bearer": ["messages:write"]}],
            "description": "Either a message to compose (from, to, subject, text and/or html, "
                           "headers) or raw MIME (raw, to). From must be in one of the key's "
                           "sender domains (else 403). Addresses, header values and raw MIME "
                           "are checked beyond what the schema says (400 names the field).",
            "requestBody": {"required": True, "content": {"application/json": {"schema": {
                "type": "object",
                "oneOf": [
                    {"required": ["from", "to", "subject"],
                     "anyOf": [{"required": ["text"]}, {"required": ["html"]}],
                     "not": {"required": ["raw"]}},
                    {"required": ["raw", "to"],
                     "not": {"anyOf": [{"required": [name]} for name in
                                       ("from", "subject", "text", "html", "headers")]}},
                ],
                "additionalProperties": False,
                "properties": {
                    "from": {"type": "string", "description": "'Name <user@example.com>'"},
                    "to": {"type": "string"},
                    "subject": {"type": "string"}, "text": {"type": "string"},
                    "html": {"type": "string"},
                    "raw": {"type": "string", "description": "RFC 5322 message; Bcc is removed"},
                    "headers": {"type": "object", "maxProperties": MAX_EXTRA_HEADERS,
                                "additionalProperties": {"type": "string"}},
                    "contact_id": {"type": "string", "pattern": PRINTABLE_ID},
                    "tags": {"type": "array", "maxItems": MAX_TAGS,
                             "items": {"type": "string", "pattern": TAG_PATTERN}},
                    "metadata": {"type": "object", "description": JSON_DESCRIPTION},
                    "send_at": {"type": "string", "format": "date-time",
                                "description": "at most 366 days ahead; the message expires "
                                               "[mta] expire after it"},
                    "idempotency_key": {"type": "string", "minLength": 1, "maxLength": 255},
                }}}}},
            "responses": {"202": {"description": "Queued", "content": json_body},
                          **error_responses(400, 401, 403, 413, 429, 503)},
        }},
        "/v1/messages/{id}": {"get": {
            "summary": "A message's state and every delivery attempt",
            "operationId": "getMessage",
            "security": [{"bearer": ["messages:read"]}],
            "parameters": [{"name": "id", "in": "path", "required": True,
                            "schema": {"type": "string", "format": "uuid"}}],
            "responses": {"200": {"description": "The message", "content": json_body},
                          **error_responses(401, 403, 404, 503)},
        }},
    }


