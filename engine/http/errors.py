"""JSON error bodies: ``{"error": "<code>", "message": "<what is wrong>"}``."""

from __future__ import annotations

from typing import Any

import orjson
from starlette.responses import Response


class OrjsonResponse(Response):
    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        return orjson.dumps(content)


class ApiError(Exception):
    """Raised by handlers; the app turns it into a JSON error response."""

    def __init__(self, status: int, code: str, message: str,
                 headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.headers = headers or {}

    def response(self) -> Response:
        return error_response(self.status, self.code, self.message, self.headers)


def error_response(status: int, code: str, message: str,
                   headers: dict[str, str] | None = None) -> Response:
    body = {"error": code, "message": message}
    if headers and "X-Request-Id" in headers:
        body["request_id"] = headers["X-Request-Id"]
    return OrjsonResponse(body, status_code=status, headers=headers)
