"""``POST /v1/contacts``, ``GET /v1/contacts/{id}`` and ``GET /v1/contacts/{id}/events``."""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime
from typing import Any

import asyncpg
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from engine.contacts import (
    InvalidContact,
    contact_events,
    contact_json,
    get_contact,
    parse_contact,
    upsert_contact,
)
from engine.http.body import has_nul, read_json
from engine.http.endpoint import HttpContext, endpoint
from engine.http.errors import ApiError, OrjsonResponse
from engine.http.openapi import CURSOR_PATTERN
from engine.http.paths import path_param
from engine.http.query import query_params
from engine.timestamps import format_rfc3339

MAX_PAGE = 1000
LIMIT = re.compile(r"[0-9]{1,4}\Z")  # ASCII only: str.isdigit() takes '²' and '٣'
# A log position: what next_cursor holds (18 digits stay within Postgres bigint).
PAGE_PARAMETERS = frozenset({"limit", "cursor"})
CURSOR = re.compile(CURSOR_PATTERN.replace("$", "\\Z"))

# Extra facts about a contact from layers above the engine (e.g. the MTA's suppression list),
# added by the composition root: (connection, contact row) -> fields merged into the contact.
ContactFacts = Callable[[asyncpg.Connection, Any], Awaitable[dict[str, Any]]]


def routes(context: HttpContext, facts: Sequence[ContactFacts] = ()) -> list[Route]:
    settings = context.settings

    @endpoint("/v1/contacts")
    async def post_contact(request: Request) -> Response:
        await context.auth.require(request, "contacts:write")
        body = await read_json(request, settings.max_body)
        try:
            upsert = parse_contact(body)
        except InvalidContact as exc:
            raise ApiError(422, "invalid_contact", str(exc)) from None
        if has_nul(body):
            raise ApiError(422, "invalid_contact", "strings must not contain U+0000")
        async with context.database.connection() as connection:
            row, created = await upsert_contact(connection, upsert, datetime.now(UTC))
        return OrjsonResponse({"contact": contact_json(row), "created": created},
                              status_code=201 if created else 200)

    @endpoint("/v1/contacts/{contact_id}")
    async def read_contact(request: Request) -> Response:
        await context.auth.require(request, "contacts:read")
        contact_id = path_param(request, "contact_id")
        async with context.database.connection() as connection:
            row = await get_contact(connection, contact_id)
            if row is None:
                raise ApiError(404, "not_found", f"no contact with contact_id {contact_id!r}")
            contact = contact_json(row)
            for fact in facts:
                contact.update(await fact(connection, row))
        return OrjsonResponse({"contact": contact})

    @endpoint("/v1/contacts/{contact_id}/events")
    async def list_events(request: Request) -> Response:
        await context.auth.require(request, "contacts:read")
        contact_id = path_param(request, "contact_id")
        params = query_params(request, PAGE_PARAMETERS)
        limit_text = params.get("limit", str(settings.page_size))
        cursor = params.get("cursor")
        if not LIMIT.match(limit_text) or not 1 <= int(limit_text) <= MAX_PAGE:
            raise ApiError(422, "invalid_parameter", f"limit: must be 1 to {MAX_PAGE}")
        if cursor is not None and not CURSOR.match(cursor):
            raise ApiError(422, "invalid_parameter", "cursor: use the 'next_cursor' of a page")
        limit = int(limit_text)
        async with context.database.connection() as connection:
            rows = await contact_events(connection, contact_id, limit + 1,
                                        int(cursor) if cursor else None)
        page = rows[:limit]
        events = [{
            "position": row["position"],
            "id": row["event_id"],
            "type": row["type"],
            "email": row["email"],
            "properties": row["properties"],
            "timestamp": format_rfc3339(row["occurred_at"]),
            "received_at": format_rfc3339(row["received_at"]),
            "source": row["source"],
        } for row in page]
        next_cursor = str(page[-1]["position"]) if len(rows) > limit else None
        return OrjsonResponse({"events": events, "next_cursor": next_cursor})

    return [
        Route("/v1/contacts", post_contact, methods=["POST"]),
        Route("/v1/contacts/{contact_id}", read_contact, methods=["GET"]),
        Route("/v1/contacts/{contact_id}/events", list_events, methods=["GET"]),
    ]
