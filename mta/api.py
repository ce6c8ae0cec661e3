"""The injection API: ``POST /v1/messages`` (one recipient or many, see
:mod:`mta.message_request`) and ``GET /v1/messages/{id}``; their schemas are
:mod:`mta.message_schema`."""

from __future__ import annotations

import uuid
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from engine.http.body import has_nul, read_json
from engine.http.endpoint import HttpContext, endpoint
from engine.http.errors import ApiError, OrjsonResponse
from engine.http.openapi import error_responses
from engine.timestamps import format_rfc3339
from mta.errors import InvalidMessage
from mta.message_request import Refusal, parse_message_request
from mta.message_schema import (
    IDEMPOTENCY_KEY_MAX,
    MESSAGE_SCHEMA,
    QUEUED_SCHEMA,
    RECIPIENTS_RESULT_SCHEMA,
    REQUEST_SCHEMA,
)
from mta.queue.enqueue import Enqueued, OutboundMessage, QueueIdentity, enqueue_many
from mta.senders import SenderPolicy
from mta.tracking.rewrite import Tracker


def routes(context: HttpContext, identity: QueueIdentity, max_size: int,
           senders: SenderPolicy | None = None, tracker: Tracker | None = None) -> list[Route]:
    """``tracker``: for ``track: true`` (None: such requests are refused with a reason)."""
    senders = senders or SenderPolicy(frozenset())

    @endpoint("/v1/messages")
    async def post_message(request: Request) -> Response:
        key = await context.auth.require(request, "messages:write")
        body = await read_json(request, 2 * max_size + 64 * 1024)  # JSON escaping inflates
        try:
            parsed = parse_message_request(body, max_size,
                                           idempotency_header=request.headers.get(
                                               "idempotency-key"), tracker=tracker)
        except InvalidMessage as exc:
            raise ApiError(422, "invalid_message", str(exc)) from None
        first = next((m for _, m in parsed.copies if isinstance(m, OutboundMessage)), None)
        if first is not None:  # every copy has the same From and Sender
            for field, address in (("from", first.header_from), ("raw.Sender", first.sender)):
                refusal = address and senders.refusal(key.from_domains, address)
                if refusal:
                    raise ApiError(403, "sender_not_allowed", f"{field}: {refusal}")
        if has_nul(body):
            raise ApiError(422, "invalid_message", "strings must not contain U+0000")
        messages = [copy for _, copy in parsed.copies if isinstance(copy, OutboundMessage)]
        async with context.database.transaction() as connection:
            enqueued = iter(await enqueue_many(connection, identity, messages))
        results = [copy if isinstance(copy, Refusal) else next(enqueued)
                   for _, copy in parsed.copies]
        if parsed.single:
            queued = results[0]
            assert isinstance(queued, Enqueued)
            return OrjsonResponse({"id": str(queued.id), "duplicate": queued.duplicate},
                                  status_code=202)
        answers = [recipient_result(to, result)
                   for (to, _), result in zip(parsed.copies, results, strict=True)]
        return OrjsonResponse({"accepted": sum(1 for a in answers if a["accepted"]),
                               "recipients": answers}, status_code=202)

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
                "finished_at, body_dropped_at FROM outbound_messages WHERE id = $1", message_id)
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
        "body_dropped_at": (format_rfc3339(row["body_dropped_at"])
                            if row["body_dropped_at"] else None),
        "last_reply": row["last_reply"],
        "attempts": [{
            "attempt": a["attempt"], "at": format_rfc3339(a["at"]), "outcome": a["outcome"],
            "remote_host": a["remote_host"], "code": a["code"], "enhanced": a["enhanced"],
            "reply": a["reply"], "category": a["category"], "tls_policy": a["tls_policy"],
        } for a in attempts],
    }


def recipient_result(to: str, result: Enqueued | Refusal) -> dict[str, Any]:
    """One recipient's answer (:data:`mta.message_schema.RECIPIENT_RESULT_SCHEMA`)."""
    if isinstance(result, Refusal):
        return {"to": to, "accepted": False, "error": result.error, "message": result.message}
    answer: dict[str, Any] = {"to": to, "accepted": result.suppressed is None,
                              "id": str(result.id), "duplicate": result.duplicate}
    if result.suppressed is not None:
        answer.update(error="suppressed", message=f"on the suppression list "
                                                  f"({result.suppressed})")
    return answer


def openapi_paths() -> dict[str, Any]:
    return {
        "/v1/messages": {"post": {
            "summary": "Queue a message for one recipient or many (answers after commit)",
            "operationId": "postMessage",
            "security": [{"bearer": ["messages:write"]}],
            "description": "Either a message to compose (from, subject, text and/or html, "
                           "headers, attachments) or raw MIME (raw), for one recipient (to) "
                           "or many (recipients, each with its own substitutions for "
                           "{{ name }} in subject, text and html). From must be in one of the "
                           "key's sender domains (else 403). Addresses, header values, "
                           "templates and raw MIME are checked beyond what the schema says "
                           "(422 names the field); with recipients, what concerns one "
                           "recipient refuses only that one (see its answer).",
            "parameters": [{"name": "Idempotency-Key", "in": "header", "required": False,
                            "schema": {"type": "string", "minLength": 1,
                                       "maxLength": IDEMPOTENCY_KEY_MAX},
                            "description": "as idempotency_key (the same if both are given)"}],
            "requestBody": {"required": True, "content": {"application/json": {
                "schema": REQUEST_SCHEMA}}},
            "responses": {"202": {
                "description": "Queued: the message (to), or an answer per recipient "
                               "(recipients)",
                "content": {"application/json": {"schema": {
                    "oneOf": [QUEUED_SCHEMA, RECIPIENTS_RESULT_SCHEMA]}}}},
                **error_responses(400, 401, 403, 413, 422, 429, 503)},
        }},
        "/v1/messages/{id}": {"get": {
            "summary": "A message's state and every delivery attempt",
            "operationId": "getMessage",
            "security": [{"bearer": ["messages:read"]}],
            "parameters": [{"name": "id", "in": "path", "required": True,
                            "schema": {"type": "string", "format": "uuid"}}],
            "responses": {"200": {"description": "The message", "content": {
                "application/json": {"schema": MESSAGE_SCHEMA}}},
                **error_responses(401, 403, 404, 503)},
        }},
    }
