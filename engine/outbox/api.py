"""The outbox and outcome webhooks over HTTP.

``GET /v1/outbox`` (``?state=pending|delivered|dead&limit=&cursor=``), ``GET /v1/outbox/{id}``,
``POST /v1/outbox/{id}/retry`` (a dead row pending again); ``POST/GET /v1/webhooks``,
``DELETE /v1/webhooks/{id}``, ``POST /v1/webhooks/{id}/test``. Scopes ``webhooks:read`` and
``webhooks:write``.
"""

from __future__ import annotations

import re
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from engine.http.body import read_json
from engine.http.endpoint import HttpContext, endpoint
from engine.http.errors import ApiError, OrjsonResponse
from engine.http.openapi import error_responses
from engine.http.paths import path_param
from engine.http.query import query_params
from engine.outbox import admin, store, subscriptions
from engine.outbox.events import EVENT_TYPES
from engine.outbox.subscriptions import InvalidSubscription, parse_subscription

MAX_PAGE = 1000
MAX_BODY = 16 * 1024
_ROW_ID = re.compile(r"[1-9][0-9]{0,17}\Z")
_LIMIT = re.compile(r"[0-9]{1,4}\Z")
SUBSCRIPTION_KEYS = frozenset({"url", "events", "secret"})


def _row_id(request: Request) -> int:
    query_params(request, frozenset())
    text = path_param(request, "id")
    if not _ROW_ID.match(text):
        raise ApiError(404, "not_found", f"no outbox row with id {text!r}")
    return int(text)


def routes(context: HttpContext, vetter: admin.Vetter) -> list[Route]:
    database = context.database

    @endpoint("/v1/outbox")
    async def list_outbox(request: Request) -> Response:
        await context.auth.require(request, "webhooks:read")
        params = query_params(request, frozenset({"state", "limit", "cursor"}))
        state = params.get("state")
        if state is not None and state not in store.STATES:
            raise ApiError(422, "invalid_parameter",
                           f"state: one of {', '.join(store.STATES)}")
        limit_text = params.get("limit", "100")
        if not _LIMIT.match(limit_text) or not 1 <= int(limit_text) <= MAX_PAGE:
            raise ApiError(422, "invalid_parameter", f"limit: must be 1 to {MAX_PAGE}")
        cursor = params.get("cursor")
        if cursor is not None and not _ROW_ID.match(cursor):
            raise ApiError(422, "invalid_parameter", "cursor: use the 'next_cursor' of a page")
        limit = int(limit_text)
        async with database.connection() as connection:
            rows = await store.list_rows(connection, state, limit + 1,
                                         int(cursor) if cursor else None)
        page = rows[:limit]
        return OrjsonResponse({"rows": [store.row_json(row) for row in page],
                               "next_cursor": str(page[-1]["id"]) if len(rows) > limit
                               else None})

    @endpoint("/v1/outbox/{id}")
    async def get_outbox_row(request: Request) -> Response:
        await context.auth.require(request, "webhooks:read")
        row_id = _row_id(request)
        async with database.connection() as connection:
            row = await store.get_row(connection, row_id)
        if row is None:
            raise ApiError(404, "not_found", f"no outbox row with id {row_id}")
        return OrjsonResponse({"row": store.row_json(row)})

    @endpoint("/v1/outbox/{id}/retry")
    async def retry_outbox_row(request: Request) -> Response:
        await context.auth.require(request, "webhooks:write")
        row_id = _row_id(request)
        try:
            async with database.connection() as connection:
                row = await admin.retry(connection, row_id)
        except admin.NotFound as exc:
            raise ApiError(404, "not_found", str(exc)) from None
        except admin.NotDead as exc:
            raise ApiError(409, "not_dead", str(exc)) from None
        return OrjsonResponse({"row": row})

    @endpoint("/v1/webhooks")
    async def post_webhook(request: Request) -> Response:
        await context.auth.require(request, "webhooks:write")
        query_params(request, frozenset())
        document = await read_json(request, MAX_BODY)
        if not isinstance(document, dict):
            raise ApiError(422, "invalid_webhook", "body: must be a JSON object")
        unknown = sorted(set(document) - SUBSCRIPTION_KEYS)
        if unknown:
            raise ApiError(422, "invalid_webhook", f"{unknown[0]}: unknown field (fields: "
                           "url, events, secret)")
        try:
            new = parse_subscription(document.get("url"), document.get("events"),
                                     document.get("secret"))
            async with database.connection() as connection:
                created = await admin.add(connection, new, vetter)
        except InvalidSubscription as exc:
            raise ApiError(422, "invalid_webhook", str(exc)) from None
        return OrjsonResponse({"webhook": created}, status_code=201)

    @endpoint("/v1/webhooks")
    async def list_webhooks(request: Request) -> Response:
        await context.auth.require(request, "webhooks:read")
        query_params(request, frozenset())
        async with database.connection() as connection:
            rows = await subscriptions.list_all(connection)
        return OrjsonResponse({"webhooks": [subscriptions.subscription_json(r) for r in rows]})

    @endpoint("/v1/webhooks/{id}")
    async def delete_webhook(request: Request) -> Response:
        await context.auth.require(request, "webhooks:write")
        query_params(request, frozenset())
        try:
            async with database.connection() as connection:
                await admin.remove(connection, path_param(request, "id"))
        except admin.NotFound as exc:
            raise ApiError(404, "not_found", str(exc)) from None
        return Response(status_code=204)

    @endpoint("/v1/webhooks/{id}/test")
    async def test_webhook(request: Request) -> Response:
        await context.auth.require(request, "webhooks:write")
        query_params(request, frozenset())
        try:
            async with database.transaction() as connection:
                row = await admin.send_test(connection, path_param(request, "id"))
        except admin.NotFound as exc:
            raise ApiError(404, "not_found", str(exc)) from None
        return OrjsonResponse({"row": row}, status_code=202)

    return [
        Route("/v1/outbox", list_outbox, methods=["GET"]),
        Route("/v1/outbox/{id}", get_outbox_row, methods=["GET"]),
        Route("/v1/outbox/{id}/retry", retry_outbox_row, methods=["POST"]),
        Route("/v1/webhooks", post_webhook, methods=["POST"]),
        Route("/v1/webhooks", list_webhooks, methods=["GET"]),
        Route("/v1/webhooks/{id}", delete_webhook, methods=["DELETE"]),
        Route("/v1/webhooks/{id}/test", test_webhook, methods=["POST"]),
    ]


ROW_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "id": {"type": "integer"},
        "webhook_id": {"type": "string", "description": "The webhook-id header: the same on "
                                                        "every retry"},
        "kind": {"type": "string", "enum": ["step", "outcome", "test"]},
        "subscription_id": {"type": ["string", "null"]},
        "event_type": {"type": ["string", "null"]},
        "url": {"type": "string"},
        "state": {"type": "string", "enum": list(store.STATES)},
        "attempts": {"type": "integer"},
        "max_attempts": {"type": ["integer", "null"],
                         "description": "null: [webhooks] max_attempts"},
        "next_attempt_at": {"type": ["string", "null"], "format": "date-time"},
        "in_flight": {"type": "boolean"},
        "last_status": {"type": ["integer", "null"]},
        "last_error": {"type": ["string", "null"]},
        "created_at": {"type": "string", "format": "date-time"},
        "updated_at": {"type": "string", "format": "date-time"},
    },
}
WEBHOOK_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "id": {"type": "string"},
        "url": {"type": "string"},
        "events": {"type": "array", "items": {"type": "string", "enum": list(EVENT_TYPES)}},
        "created_at": {"type": "string", "format": "date-time"},
        "secret": {"type": "string", "description": "Only in the answer to POST (shown once)"},
    },
}


def _json(schema: dict[str, Any]) -> dict[str, Any]:
    return {"application/json": {"schema": schema}}


def openapi_paths() -> dict[str, Any]:
    row_id = {"name": "id", "in": "path", "required": True,
              "schema": {"type": "integer", "minimum": 1}}
    webhook_id = {"name": "id", "in": "path", "required": True, "schema": {"type": "string"}}
    row = _json({"type": "object", "properties": {"row": ROW_SCHEMA}})
    return {
        "/v1/outbox": {"get": {
            "summary": "Outbound HTTP requests (webhook steps, outcome webhooks), oldest first",
            "operationId": "listOutbox",
            "security": [{"bearer": ["webhooks:read"]}],
            "parameters": [
                {"name": "state", "in": "query",
                 "schema": {"type": "string", "enum": list(store.STATES)}},
                {"name": "limit", "in": "query",
                 "schema": {"type": "integer", "minimum": 1, "maximum": MAX_PAGE}},
                {"name": "cursor", "in": "query",
                 "schema": {"type": "integer", "minimum": 1, "maximum": 10**18 - 1,
                            "description": "the next_cursor of the previous page"}},
            ],
            "responses": {"200": {"description": "A page of rows", "content": _json({
                "type": "object", "properties": {
                    "rows": {"type": "array", "items": ROW_SCHEMA},
                    "next_cursor": {"type": ["string", "null"]}}})},
                **error_responses(401, 403, 422, 503)},
        }},
        "/v1/outbox/{id}": {"get": {
            "summary": "One outbox row",
            "operationId": "getOutboxRow",
            "security": [{"bearer": ["webhooks:read"]}],
            "parameters": [row_id],
            "responses": {"200": {"description": "The row", "content": row},
                          **error_responses(401, 403, 404, 422, 503)},
        }},
        "/v1/outbox/{id}/retry": {"post": {
            "summary": "Send a dead-lettered row again (attempts start over; same webhook-id)",
            "operationId": "retryOutboxRow",
            "security": [{"bearer": ["webhooks:write"]}],
            "parameters": [row_id],
            "responses": {"200": {"description": "The row, pending again", "content": row},
                          "409": {"description": "The row is not dead",
                                  "content": _json({"$ref": "#/components/schemas/Error"})},
                          **error_responses(401, 403, 404, 422, 503)},
        }},
        "/v1/webhooks": {
            "post": {
                "summary": "Subscribe a URL to outcome and workflow events",
                "description": "The URL must resolve to public addresses unless its host is in "
                               "[webhooks] allow. Without a secret one is generated; the "
                               "answer shows it this once.",
                "operationId": "createWebhook",
                "security": [{"bearer": ["webhooks:write"]}],
                "requestBody": {"required": True, "content": _json({
                    "type": "object", "required": ["url", "events"],
                    "additionalProperties": False,
                    "properties": {
                        "url": {"type": "string", "maxLength": 2048},
                        "events": {"type": "array", "minItems": 1,
                                   "items": {"type": "string", "enum": list(EVENT_TYPES)}},
                        "secret": {"type": "string", "pattern": "^whsec_",
                                   "description": "whsec_<base64 of 24-64 bytes>"}}})},
                "responses": {"201": {"description": "Created (with its secret)",
                                      "content": _json({"type": "object", "properties": {
                                          "webhook": WEBHOOK_SCHEMA}})},
                              **error_responses(400, 401, 403, 413, 422, 503)},
            },
            "get": {
                "summary": "The webhook subscriptions (never their secrets)",
                "operationId": "listWebhooks",
                "security": [{"bearer": ["webhooks:read"]}],
                "responses": {"200": {"description": "Every subscription", "content": _json({
                    "type": "object", "properties": {
                        "webhooks": {"type": "array", "items": WEBHOOK_SCHEMA}}})},
                    **error_responses(401, 403, 422, 503)},
            },
        },
        "/v1/webhooks/{id}": {"delete": {
            "summary": "Remove a subscription (requests already queued are still sent)",
            "operationId": "deleteWebhook",
            "security": [{"bearer": ["webhooks:write"]}],
            "parameters": [webhook_id],
            "responses": {"204": {"description": "Removed"},
                          **error_responses(401, 403, 404, 422, 503)},
        }},
        "/v1/webhooks/{id}/test": {"post": {
            "summary": "Queue a signed webhook_test request to the subscription",
            "operationId": "testWebhook",
            "security": [{"bearer": ["webhooks:write"]}],
            "parameters": [webhook_id],
            "responses": {"202": {"description": "Queued: the outbox row", "content": row},
                          **error_responses(401, 403, 404, 422, 503)},
        }},
    }
