"""The suppression list over HTTP: ``GET/POST /v1/suppressions`` (JSON, or CSV with
``Content-Type: text/csv`` / ``?format=csv``), ``GET/DELETE /v1/suppressions/{email}``."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

from engine.addresses import AddressError
from engine.http.body import decode_json, read_body
from engine.http.endpoint import HttpContext, endpoint
from engine.http.errors import ApiError, OrjsonResponse
from engine.http.openapi import CURSOR_SCHEMA, error_responses
from engine.http.paths import path_param
from engine.http.query import query_params
from mta.suppression import store
from mta.suppression.addresses import normalise, normalise_lenient
from mta.suppression.csv_format import (
    CsvError,
    CsvValueError,
    export_header,
    export_rows,
    parse_import,
)
from mta.suppression.rules import MANUAL, REASONS, UNSUBSCRIBE, Suppression

MAX_PAGE = 1000
MAX_BATCH = 1000
MAX_IMPORT_BYTES = 16 * 1024 * 1024
ENTRY_KEYS = frozenset({"email", "reason", "category", "detail"})
_DIGITS = re.compile(r"[0-9]{1,18}\Z")
LIST_PARAMETERS = frozenset({"reason", "limit", "cursor", "format"})


def parse_entry(item: Any, where: str, source: str) -> Suppression:
    if not isinstance(item, dict):
        raise ApiError(422, "invalid_suppression", f"{where}: must be an object")
    unknown = set(item) - ENTRY_KEYS
    if unknown:
        raise ApiError(422, "invalid_suppression", f"{where}.{sorted(unknown)[0]}: unknown field")
    try:
        email = normalise(item.get("email"))  # type: ignore[arg-type]
    except AddressError as exc:
        raise ApiError(422, "invalid_suppression", f"{where}.email: {exc}") from None
    for key in ("reason", "category", "detail"):
        if key in item and not isinstance(item[key], str):
            raise ApiError(422, "invalid_suppression", f"{where}.{key}: must be a string")
    if "\x00" in item.get("detail", ""):
        raise ApiError(422, "invalid_suppression", f"{where}.detail: must not contain U+0000")
    try:
        return Suppression(email, item.get("reason", MANUAL), item.get("category", ""), source,
                           detail=item.get("detail", "")[:1000])
    except ValueError as exc:
        raise ApiError(422, "invalid_suppression", f"{where}: {exc}") from None


def routes(context: HttpContext) -> list[Route]:
    database = context.database

    @endpoint("/v1/suppressions")
    async def list_or_export(request: Request) -> Response:
        await context.auth.require(request, "suppressions:read")
        params = query_params(request, LIST_PARAMETERS)
        reason = params.get("reason")
        if reason is not None and reason not in REASONS:
            raise ApiError(422, "invalid_parameter", f"reason: must be one of {', '.join(REASONS)}")
        limit_text = params.get("limit", "100")
        if not _DIGITS.match(limit_text) or not 1 <= int(limit_text) <= MAX_PAGE:
            raise ApiError(422, "invalid_parameter", f"limit: must be 1 to {MAX_PAGE}")
        cursor = params.get("cursor", "0")
        if not _DIGITS.match(cursor):
            raise ApiError(422, "invalid_parameter", "cursor: use the 'next_cursor' of a page")
        export = params.get("format", "json")
        if export not in ("json", "csv"):
            raise ApiError(422, "invalid_parameter", "format: 'json' or 'csv'")
        if export == "csv":
            return StreamingResponse(_export(reason), media_type="text/csv; charset=utf-8",
                                     headers={"Content-Disposition":
                                              'attachment; filename="suppressions.csv"'})
        limit = int(limit_text)
        async with database.connection() as connection:
            entries = await store.page(connection, int(cursor), limit + 1, reason)
        shown = entries[:limit]
        return OrjsonResponse({
            "suppressions": [e.to_json() for e in shown],
            "next_cursor": str(shown[-1].id) if len(entries) > limit else None})

    async def _export(reason: str | None) -> AsyncIterator[str]:
        yield export_header()
        after = 0
        while True:
            async with database.connection() as connection:
                entries = await store.page(connection, after, MAX_PAGE, reason)
            if not entries:
                return
            yield "".join(export_rows(entries))
            after = entries[-1].id

    @endpoint("/v1/suppressions")
    async def add(request: Request) -> Response:
        await context.auth.require(request, "suppressions:write")
        kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
        body = await read_body(request, MAX_IMPORT_BYTES)
        if kind == "text/csv":
            try:
                entries = parse_import(body.decode("utf-8-sig"), "import")
            except UnicodeDecodeError:
                raise ApiError(400, "invalid_csv", "the CSV is not valid UTF-8") from None
            except CsvValueError as exc:
                raise ApiError(422, "invalid_suppression", str(exc)) from None
            except CsvError as exc:
                raise ApiError(400, "invalid_csv", str(exc)) from None
        else:
            data = decode_json(body)
            if isinstance(data, dict) and "suppressions" in data:
                items = data["suppressions"]
                if set(data) != {"suppressions"} or not isinstance(items, list) \
                        or not 1 <= len(items) <= MAX_BATCH:
                    raise ApiError(422, "invalid_suppression",
                                   f"suppressions: must be a list of 1 to {MAX_BATCH} objects")
                entries = [parse_entry(item, f"suppressions[{i}]", "api")
                           for i, item in enumerate(items)]
            else:
                entries = [parse_entry(data, "body", "api")]
        async with database.transaction() as connection:
            added = await store.add(connection, entries, datetime.now(UTC))
        return OrjsonResponse({"received": len(entries), "added": len(added)}, status_code=200)

    def _address(request: Request) -> str:
        try:
            return normalise(path_param(request, "email"))
        except AddressError as exc:
            raise ApiError(422, "invalid_parameter", f"email: {exc}") from None

    @endpoint("/v1/suppressions/{email}")
    async def show(request: Request) -> Response:
        await context.auth.require(request, "suppressions:read")
        email = _address(request)
        async with database.connection() as connection:
            entries = await store.entries_for(connection, email)
            erased = await store.is_erased(connection, email)
        return OrjsonResponse({"email": email, "suppressed": bool(entries) or erased,
                               "erased": erased,
                               "suppressions": [e.to_json() for e in entries]})

    @endpoint("/v1/suppressions/{email}")
    async def delete(request: Request) -> Response:
        await context.auth.require(request, "suppressions:write")
        email = _address(request)
        category = request.query_params.get("category")
        async with database.transaction() as connection:
            removed = await store.remove(connection, email, category, "api", datetime.now(UTC))
        if not removed:
            raise ApiError(404, "not_found", f"{email} is not suppressed"
                           + (f" for category {category!r}" if category is not None else ""))
        return OrjsonResponse({"email": email, "removed": len(removed)})

    return [Route("/v1/suppressions", list_or_export, methods=["GET"]),
            Route("/v1/suppressions", add, methods=["POST"]),
            Route("/v1/suppressions/{email}", show, methods=["GET"]),
            Route("/v1/suppressions/{email}", delete, methods=["DELETE"])]


def openapi_paths() -> dict[str, Any]:
    json_body = {"application/json": {"schema": {"type": "object"}}}
    entry = {"type": "object", "required": ["email"], "additionalProperties": False,
             "properties": {"email": {"type": "string"},
                            "reason": {"type": "string", "enum": list(REASONS)},
                            "category": {"type": "string"}, "detail": {"type": "string"}}}
    email_param = {"name": "email", "in": "path", "required": True, "schema": {"type": "string"}}
    return {
        "/v1/suppressions": {
            "get": {"summary": "The suppression list, oldest first (cursor pages), or CSV",
                    "operationId": "listSuppressions",
                    "security": [{"bearer": ["suppressions:read"]}],
                    "parameters": [
                        {"name": "cursor", "in": "query", "schema": CURSOR_SCHEMA},
                        {"name": "limit", "in": "query",
                         "schema": {"type": "integer", "minimum": 1, "maximum": MAX_PAGE}},
                        {"name": "reason", "in": "query",
                         "schema": {"type": "string", "enum": list(REASONS)}},
                        {"name": "format", "in": "query",
                         "schema": {"type": "string", "enum": ["json", "csv"]}}],
                    "responses": {"200": {"description": "A page", "content": {
                        **json_body, "text/csv": {"schema": {"type": "string"}}}},
                        **error_responses(401, 403, 422, 503)}},
            "post": {"summary": "Add entries (JSON object, {suppressions: [...]}, or text/csv)",
                     "operationId": "addSuppressions",
                     "security": [{"bearer": ["suppressions:write"]}],
                     "requestBody": {"required": True, "content": {
                         "application/json": {"schema": {"oneOf": [entry, {
                             "type": "object", "required": ["suppressions"],
                             "properties": {"suppressions": {
                                 "type": "array", "items": entry, "minItems": 1,
                                 "maxItems": MAX_BATCH}}}]}},
                         "text/csv": {"schema": {"type": "string"}}}},
                     "responses": {"200": {"description": "Added", "content": json_body},
                                   **error_responses(400, 401, 403, 413, 422, 503)}}},
        "/v1/suppressions/{email}": {
            "get": {"summary": "An address's entries, and whether an erasure blocks it",
                    "operationId": "getSuppression",
                    "security": [{"bearer": ["suppressions:read"]}],
                    "parameters": [email_param],
                    "responses": {"200": {"description": "Entries", "content": json_body},
                                  **error_responses(401, 403, 422, 503)}},
            "delete": {"summary": "Remove an address (one category with ?category=); "
                                  "without a category this also lifts an erasure's block",
                       "operationId": "deleteSuppression",
                       "security": [{"bearer": ["suppressions:write"]}],
                       "parameters": [email_param, {"name": "category", "in": "query",
                                                    "schema": {"type": "string"}}],
                       "responses": {"200": {"description": "Removed", "content": json_body},
                                     **error_responses(401, 403, 404, 422, 503)}}},
        "/v1/unsubscribe/{token}": {
            "get": {"summary": "The unsubscribe page (changes nothing)",
                    "operationId": "unsubscribePage",
                    "parameters": [{"name": "token", "in": "path", "required": True,
                                    "schema": {"type": "string"}}],
                    "responses": {"200": {"description": "HTML page"},
                                  "400": {"description": "Invalid token"},
                                  "404": {"description": "Unknown message"}}},
            "post": {"summary": "RFC 8058 one-click unsubscribe",
                     "operationId": "unsubscribeOneClick",
                     "parameters": [{"name": "token", "in": "path", "required": True,
                                     "schema": {"type": "string"}}],
                     "requestBody": {"required": True, "content": {
                         "application/x-www-form-urlencoded": {"schema": {
                             "type": "object", "required": ["List-Unsubscribe"],
                             "properties": {"List-Unsubscribe": {"type": "string",
                                                                 "enum": ["One-Click"]},
                                            "scope": {"type": "string",
                                                      "enum": ["category", "all"]}}}}}},
                     "responses": {"200": {"description": "Unsubscribed (HTML)"},
                                   "400": {"description": "Invalid token or form"},
                                   "404": {"description": "Unknown message"}}}},
    }


async def contact_suppression(connection: Any, contact: Any) -> dict[str, Any]:
    """For ``GET /v1/contacts/{id}``: whether the contact's address is suppressed or
    unsubscribed, and why."""
    email = contact["email"]
    entries = await store.entries_for(connection, normalise_lenient(email)) if email else []
    hard = [e for e in entries if e.reason != UNSUBSCRIBE]
    unsubscribed = [e for e in entries if e.reason == UNSUBSCRIBE]
    return {"suppressed": bool(hard),
            "unsubscribed": sorted(e.category or "all" for e in unsubscribed),
            "suppressions": [e.to_json() for e in entries]}
