"""Queue control over HTTP: ``GET /v1/queue``, ``GET /v1/queue/explain`` (``queue:read``) and
``POST /v1/queue/{hold|release|retry|purge}`` (``queue:write``), the same functions as
``herald queue``."""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from engine.http.body import read_json
from engine.http.endpoint import HttpContext, endpoint
from engine.http.errors import ApiError, OrjsonResponse
from engine.http.openapi import error_responses
from mta.queue import control, overview
from mta.queue.control import ACTIONS, QueueSelectionError, Selector
from mta.shaping.rules import ShapingRule

SELECTOR_KEYS = ("site", "domain", "workflow", "contact", "message")
MAX_BODY = 4096
MAX_ROWS_PER_REQUEST = 100_000


def selection_error(exc: QueueSelectionError) -> ApiError:
    return ApiError(404 if exc.unknown else 422,
                    "not_found" if exc.unknown else "invalid_selector", str(exc))


def parse_selector(body: Any) -> tuple[Selector, bool]:
    """A POST body: selector keys and ``all`` (for hold, release and retry with no selector)."""
    if not isinstance(body, dict):
        raise QueueSelectionError("body: must be a JSON object")
    unknown = set(body) - {*SELECTOR_KEYS, "all"}
    if unknown:
        raise QueueSelectionError(f"{sorted(unknown)[0]}: unknown field (selectors: "
                                  f"{', '.join(SELECTOR_KEYS)}; or all)")
    everything = body.get("all", False)
    if not isinstance(everything, bool):
        raise QueueSelectionError("all: must be true or false")
    return Selector.parse(**{key: body.get(key) for key in SELECTOR_KEYS}), everything


def routes(context: HttpContext, rules: tuple[ShapingRule, ...],
           defaults: overview.LimitDefaults) -> list[Route]:
    @endpoint("/v1/queue")
    async def get_queue(request: Request) -> Response:
        await context.auth.require(request, "queue:read")
        async with context.database.connection() as connection:
            return OrjsonResponse(await overview.summary(connection))

    @endpoint("/v1/queue/explain")
    async def get_explain(request: Request) -> Response:
        await context.auth.require(request, "queue:read")
        params = request.query_params
        try:
            selector = Selector.parse(site=params.get("site"), domain=params.get("domain"))
            async with context.database.connection() as connection:
                report = await overview.explain(connection, site=selector.site,
                                                domain=selector.domain, rules=rules,
                                                defaults=defaults)
        except QueueSelectionError as exc:
            raise selection_error(exc) from None
        return OrjsonResponse(report)

    @endpoint("/v1/queue/{action}")
    async def post_action(request: Request) -> Response:
        key = await context.auth.require(request, "queue:write")
        action = request.path_params["action"]
        if action not in ACTIONS:
            raise ApiError(404, "not_found", f"no queue action {action!r} "
                           f"(one of {', '.join(ACTIONS)})")
        try:
            selector, everything = parse_selector(await read_json(request, MAX_BODY))
            async with context.database.connection() as connection:
                result = await control.apply(connection, action, selector, f"key:{key.key_id}",
                                             MAX_ROWS_PER_REQUEST, everything)
        except QueueSelectionError as exc:
            raise selection_error(exc) from None
        return OrjsonResponse(result.as_dict())

    return [Route("/v1/queue", get_queue, methods=["GET"]),
            Route("/v1/queue/explain", get_explain, methods=["GET"]),
            Route("/v1/queue/{action}", post_action, methods=["POST"])]


def openapi_paths() -> dict[str, Any]:
    json_body = {"application/json": {"schema": {"type": "object"}}}
    selector = {key: {"type": "string"} for key in SELECTOR_KEYS}
    return {
        "/v1/queue": {"get": {
            "summary": "Depth, oldest age, next retry and attempts per minute per site",
            "operationId": "getQueue",
            "security": [{"bearer": ["queue:read"]}],
            "responses": {"200": {"description": "The queue per site", "content": json_body},
                          **error_responses(401, 403, 503)},
        }},
        "/v1/queue/explain": {"get": {
            "summary": "Why a site is slow or paused: limits and their source, live state, "
                       "last replies, next retry",
            "operationId": "explainQueue",
            "security": [{"bearer": ["queue:read"]}],
            "parameters": [{"name": name, "in": "query", "required": False,
                            "schema": {"type": "string"}} for name in ("site", "domain")],
            "responses": {"200": {"description": "The report", "content": json_body},
                          **error_responses(401, 403, 404, 422, 503)},
        }},
        "/v1/queue/{action}": {"post": {
            "summary": "Hold, release, retry now or purge the selected messages (each change "
                       "is logged as a queue_* event)",
            "operationId": "queueAction",
            "security": [{"bearer": ["queue:write"]}],
            "parameters": [{"name": "action", "in": "path", "required": True,
                            "schema": {"type": "string", "enum": list(ACTIONS)}}],
            "requestBody": {"required": True, "content": {"application/json": {"schema": {
                "type": "object", "properties": {**selector, "all": {"type": "boolean"}}}}}},
            "responses": {"200": {"description": "How many messages changed",
                                  "content": json_body},
                          **error_responses(400, 401, 403, 404, 422, 503)},
        }},
    }
