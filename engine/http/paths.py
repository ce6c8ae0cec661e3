"""Path parameters that may hold ``/`` or ``%`` (contact ids, e-mail addresses).

An ASGI server percent-decodes the path before routing, so ``/v1/contacts/a%2Fb`` arrives as
``/v1/contacts/a/b`` and no ``{contact_id}`` route matches it. :func:`keep_separators_encoded`
re-decodes the raw path leaving ``%2F`` and ``%25`` as they were: a route's segments are then
the client's segments, and :func:`path_param` decodes a parameter exactly once.
"""

from __future__ import annotations

import re
from urllib.parse import unquote

from starlette.requests import Request
from starlette.types import Scope

from engine.http.errors import ApiError

_KEPT = re.compile(r"(%2[fF]|%25)")


def keep_separators_encoded(scope: Scope) -> None:
    """Rewrite ``scope["path"]`` from ``raw_path``, decoding all but ``%2F`` and ``%25``."""
    raw = scope.get("raw_path")
    if not raw or b"%" not in raw:
        return
    text = raw.decode("latin-1")
    parts = _KEPT.split(text)
    scope["path"] = "".join(part if index % 2 else unquote(part)
                            for index, part in enumerate(parts))


def path_param(request: Request, name: str) -> str:
    """A path parameter, percent-decoded once (see :func:`keep_separators_encoded`). Nothing
    stored holds U+0000 (Postgres text cannot), so such a parameter names nothing: 404."""
    value = unquote(request.path_params[name])
    if "\x00" in value:
        raise ApiError(404, "not_found", f"{name}: no such {name} (it holds U+0000)")
    return value
