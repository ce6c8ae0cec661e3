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
    """A path parameter, percent-decoded once (see :func:`keep_separators_encoded`)."""
    return unquote(request.path_params[name])
