"""Reading a bare ASGI scope (for the hot routes served without a Starlette Request)."""

from __future__ import annotations

from starlette.types import Scope


def header(scope: Scope, name: bytes) -> str | None:
    """The first value of header ``name`` (lower case), decoded as Latin-1 like Starlette."""
    for key, value in scope["headers"]:
        if key == name:
            return str(value.decode("latin-1"))
    return None


def client_host(scope: Scope) -> str | None:
    client = scope.get("client")
    return str(client[0]) if client else None
