"""HTTP: ``GET /v1/contacts/{id}/explain``, ``GET /v1/workflows`` and
``POST /v1/workflows/{name}/simulate`` (a dry run of one workflow over stored history)."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from automation.loading.catalog import Catalog
from automation.settings import AutomationSettings
from automation.tools.explain import describe_trigger, explain
from automation.tools.simulate import ContactLine, EventLine, Line
from automation.tools.simulation_pool import SimulationBusy, SimulationJob, SimulationPool
from engine.http.body import read_json
from engine.http.endpoint import HttpContext, endpoint
from engine.http.errors import ApiError, OrjsonResponse
from engine.http.openapi import error_responses
from engine.http.paths import path_param
from engine.timestamps import parse_rfc3339
from engine.values import parse_duration

MAX_HORIZON = timedelta(days=400)


def routes(context: HttpContext, catalog: Catalog, settings: AutomationSettings,
           simulations: SimulationPool) -> list[Route]:
    @endpoint("/v1/contacts/{contact_id}/explain")
    async def explain_contact(request: Request) -> Response:
        await context.auth.require(request, "contacts:read")
        async with context.database.connection() as connection:
            report = await explain(connection, catalog, path_param(request, "contact_id"))
        return OrjsonResponse(report)

    @endpoint("/v1/workflows")
    async def list_workflows(request: Request) -> Response:
        await context.auth.require(request, "workflows:read")
        return OrjsonResponse({"workflows": [{
            "name": w.name, "version": w.version, "enabled": w.enabled, "priority": w.priority,
            "trigger": describe_trigger(w.trigger, w.accept_browser_events),
            "description": w.description,
        } for w in catalog.ordered()]})

    @endpoint("/v1/workflows/{name}/simulate")
    async def simulate(request: Request) -> Response:
        await context.auth.require(request, "workflows:read")
        name = path_param(request, "name")
        workflow = catalog.current.get(name)
        if workflow is None:
            raise ApiError(404, "not_found", f"no workflow named {name!r}")
        body = await read_json(request, context.settings.max_body)
        if not isinstance(body, dict):
            raise ApiError(422, "invalid_request", "body: must be a JSON object")
        horizon, contacts, since = _simulation_options(body, settings)
        source = catalog.sources.get((name, workflow.version))
        if source is None:
            raise ApiError(503, "not_simulable", f"workflow {name!r} was not loaded from a "
                           "file, so it cannot be simulated here")
        lines, events = await _history(context, contacts, since, settings)
        job = SimulationJob(name, source, catalog.templates.sources, settings, lines, horizon)
        try:
            results = await simulations.run(job)  # in a worker process, never on this loop
        except SimulationBusy as exc:
            raise ApiError(503, "busy", str(exc), {"Retry-After": "5"}) from None
        return OrjsonResponse({"workflow": name, "events": events, "results": results})

    return [Route("/v1/contacts/{contact_id}/explain", explain_contact, methods=["GET"]),
            Route("/v1/workflows", list_workflows, methods=["GET"]),
            Route("/v1/workflows/{name}/simulate", simulate, methods=["POST"])]


def _simulation_options(body: dict[str, Any], settings: AutomationSettings
                        ) -> tuple[timedelta, list[str] | None, Any]:
    unknown = sorted(set(body) - {"horizon", "contact_ids", "since"})
    if unknown:
        raise ApiError(422, "invalid_request", f"{unknown[0]}: unknown field")
    try:
        horizon = timedelta(seconds=parse_duration(body.get("horizon", "30d")))
    except (ValueError, TypeError):
        raise ApiError(422, "invalid_request", "horizon: a duration like '30d'") from None
    if horizon > MAX_HORIZON:
        raise ApiError(422, "invalid_request", "horizon: at most 400d")
    contacts = body.get("contact_ids")
    limit = settings.simulation_max_contacts
    if contacts is not None and (not isinstance(contacts, list) or len(contacts) > limit
                                 or not all(isinstance(c, str) for c in contacts)):
        raise ApiError(422, "invalid_request", f"contact_ids: a list of up to {limit} strings")
    since = None
    if body.get("since") is not None:
        try:
            since = parse_rfc3339(str(body["since"]))
        except ValueError as exc:
            raise ApiError(422, "invalid_request", f"since: {exc}") from None
    return horizon, contacts, since


async def _history(context: HttpContext, contacts: list[str] | None, since: Any,
                   settings: AutomationSettings) -> tuple[list[Line], int]:
    """The contacts and events to simulate (bounded: past a limit, 422 says how to narrow)."""
    max_contacts, max_events = settings.simulation_max_contacts, settings.simulation_max_events
    async with context.database.connection() as connection:
        contact_rows = await connection.fetch(
            "SELECT contact_id, email, attributes, timezone FROM contacts "
            "WHERE ($1::text[] IS NULL OR contact_id = ANY($1::text[])) LIMIT $2",
            contacts, max_contacts + 1)
        if len(contact_rows) > max_contacts:
            raise ApiError(422, "too_much_history", f"more than {max_contacts} contacts; "
                           f"choose up to {max_contacts} with contact_ids")
        rows = await connection.fetch(
            "SELECT contact_id, email, type, properties, occurred_at FROM events "
            "WHERE ($1::text[] IS NULL OR contact_id = ANY($1::text[])) "
            "AND ($2::timestamptz IS NULL OR occurred_at >= $2) AND type <> 'contact_updated' "
            "ORDER BY occurred_at, position LIMIT $3", contacts, since, max_events + 1)
    if len(rows) > max_events:
        raise ApiError(422, "too_much_history", f"more than {max_events} events; "
                       "narrow it with contact_ids or since")
    lines: list[Line] = [ContactLine(None, r["contact_id"], r["email"], dict(r["attributes"]),
                                     r["timezone"]) for r in contact_rows]
    lines += [EventLine(r["occurred_at"], r["contact_id"], r["email"], r["type"],
                        dict(r["properties"])) for r in rows]
    return lines, len(lines)


def openapi_paths() -> dict[str, Any]:
    json_body = {"application/json": {"schema": {"type": "object"}}}
    return {
        "/v1/contacts/{contact_id}/explain": {"get": {
            "summary": "What each workflow did or did not do for a contact, and why",
            "operationId": "explainContact", "security": [{"bearer": ["contacts:read"]}],
            "parameters": [{"name": "contact_id", "in": "path", "required": True,
                            "schema": {"type": "string"}}],
            "responses": {"200": {"description": "The report", "content": json_body},
                          **error_responses(401, 403, 503)}}},
        "/v1/workflows": {"get": {
            "summary": "The loaded workflows", "operationId": "listWorkflows",
            "security": [{"bearer": ["workflows:read"]}],
            "responses": {"200": {"description": "Workflows", "content": json_body},
                          **error_responses(401, 403)}}},
        "/v1/workflows/{name}/simulate": {"post": {
            "summary": "Dry-run one workflow over stored history on a virtual clock",
            "operationId": "simulateWorkflow", "security": [{"bearer": ["workflows:read"]}],
            "parameters": [{"name": "name", "in": "path", "required": True,
                            "schema": {"type": "string"}}],
            "requestBody": {"content": {"application/json": {"schema": {
                "type": "object", "properties": {
                    "horizon": {"type": ["string", "number"], "minimum": 0,
                                "description": "'30d', '12h' or seconds; at most 400d"},
                    "since": {"type": "string",
                                                             "format": "date-time"},
                    "contact_ids": {"type": "array", "items": {"type": "string"}}}}}}},
            "responses": {"200": {"description": "Sends and skips", "content": json_body},
                          **error_responses(401, 403, 404, 422, 503)}}},
    }
