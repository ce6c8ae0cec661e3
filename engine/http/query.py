"""Query strings held to what the OpenAPI document lists: an unknown or repeated parameter is
a 422 naming it, as an unknown field in a JSON body is."""

from __future__ import annotations

from starlette.requests import Request

from engine.http.errors import ApiError


def query_params(request: Request, allowed: frozenset[str]) -> dict[str, str]:
    params: dict[str, str] = {}
    for name, value in request.query_params.multi_items():
        if name not in allowed:
            raise ApiError(422, "invalid_parameter", f"{name}: unknown query parameter "
                           f"(allowed: {', '.join(sorted(allowed)) or 'none'})")
        if name in params:
            raise ApiError(422, "invalid_parameter", f"{name}: given more than once")
        params[name] = value
    return params
