"""HTTP: ``GET /v1/workflows/{name}/stats`` (funnel, attribution and A/B arms of one
workflow), read from the incrementally kept counters, never from the log."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from automation.loading.catalog import Catalog
from automation.stats.query import UnknownWorkflow, workflow_stats
from automation.stats.settings import StatsSettings
from automation.stats.since import HELP, parse_since
from engine.http.endpoint import HttpContext, endpoint
from engine.http.errors import ApiError, OrjsonResponse
from engine.http.openapi import error_responses
from engine.http.paths import path_param
from engine.http.query import query_params

PARAMETERS = frozenset({"since"})


def routes(context: HttpContext, catalog: Catalog, settings: StatsSettings) -> list[Route]:
    @endpoint("/v1/workflows/{name}/stats")
    async def stats(request: Request) -> Response:
        await context.auth.require(request, "workflows:read")
        name = path_param(request, "name")
        params = query_params(request, PARAMETERS)
        since = None
        if "since" in params:
            try:
                since = parse_since(params["since"], datetime.now(UTC).date())
            except ValueError as exc:
                raise ApiError(422, "invalid_parameter", f"since: {exc}") from None
        async with context.database.connection() as connection:
            try:
                body = await workflow_stats(connection, catalog, name, since,
                                            settings.ab_metric)
            except UnknownWorkflow as exc:
                raise ApiError(404, "not_found", str(exc)) from None
        return OrjsonResponse(body)

    return [Route("/v1/workflows/{name}/stats", stats, methods=["GET"])]


_COUNT = {"type": "integer", "minimum": 0}
_RATE = {"type": ["number", "null"], "minimum": 0}
COUNTERS = {
    "entered": _COUNT, "sent": _COUNT, "delivered": _COUNT, "bounced": _COUNT,
    "opened": {**_COUNT, "description": "unique human opens (one per message)"},
    "clicked": {**_COUNT, "description": "unique human clicks (one per message)"},
    "unsubscribed": _COUNT, "complained": _COUNT,
    "converted": {**_COUNT, "description": "goal events credited by last human click"},
    "revenue": {"type": "number", "description": "sum of the credited goal values"},
}
RATES = {name: _RATE for name in ("delivery_rate", "bounce_rate", "open_rate", "click_rate",
                                  "conversion_rate")}
STATS_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["workflow", "since", "bucket", "totals", "steps", "splits", "counted_until"],
    "properties": {
        "workflow": {"type": "string"},
        "version": {"type": ["string", "null"]},
        "since": {"type": ["string", "null"], "format": "date"},
        "bucket": {"type": "string", "description": "counters are kept per UTC day"},
        "counted_until": {"type": ["string", "null"], "format": "date-time",
                          "description": "when the counters last caught up with the logs"},
        "totals": {"type": "object", "properties": {**COUNTERS, **RATES}},
        "steps": {"type": "array", "items": {"type": "object", "properties": {
            "step": {"type": "string"}, "template": {"type": ["string", "null"]},
            "in_definition": {"type": "boolean"},
            **COUNTERS, **RATES,
            "previous": {"type": ["string", "null"],
                         "description": "the send step before it on every path, or entered"},
            "drop_off": {"type": ["number", "null"],
                         "description": "1 - sent / the previous figure"}}}},
        "splits": {"type": "array", "items": {"type": "object", "properties": {
            "step": {"type": "string"},
            "metric": {"type": "string", "enum": ["clicks", "conversions"]},
            "rate": {"type": "string"},
            "holdout_percent": {"type": "number"},
            "arms": {"type": "array", "items": {"type": "object", "properties": {
                "name": {"type": "string"}, "weight": {"type": "integer"},
                "steps": {"type": "array", "items": {"type": "string"}},
                **COUNTERS, "rate": _RATE,
                "vs": {"type": "string", "description": "the control arm (the first)"},
                "z": {"type": ["number", "null"]},
                "p_value": {"type": ["number", "null"],
                            "description": "two-sided, two-proportion z-test"},
                "reliable": {"type": "boolean",
                             "description": "each arm has at least 5 successes and 5 "
                                            "failures"}}}}}}},
    },
}


def openapi_paths() -> dict[str, Any]:
    return {"/v1/workflows/{name}/stats": {"get": {
        "summary": "A workflow's funnel, attribution and A/B results",
        "description": "Per step: entered, sent, delivered, bounced, unique human opens and "
                       "clicks, unsubscribed, complained, converted (goal events credited by "
                       "last human click within the attribution window) and revenue, with the "
                       "drop-off between steps; each split's arms with a two-proportion "
                       "z-test. Read from counters kept per UTC day.",
        "operationId": "workflowStats", "security": [{"bearer": ["workflows:read"]}],
        "parameters": [
            {"name": "name", "in": "path", "required": True, "schema": {"type": "string"}},
            {"name": "since", "in": "query", "required": False,
             "schema": {"type": "string"}, "description": "the first day counted: " + HELP}],
        "responses": {"200": {"description": "The stats", "content": {"application/json": {
            "schema": STATS_SCHEMA}}},
            **error_responses(401, 403, 404, 422, 503)}}}}
