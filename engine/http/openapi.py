"""The OpenAPI 3.1 document for the engine's endpoints; other packages add their paths."""

from __future__ import annotations

from typing import Any

CURSOR_PATTERN = "^(0|[1-9][0-9]{0,17})$"  # a log position (what next_cursor holds)
# A query value is text either way; as an integer, schema-violating cursors are unambiguous.
CURSOR_SCHEMA = {"type": "integer", "minimum": 0, "maximum": 10**18 - 1,
                 "description": "the next_cursor of the previous page"}

ERROR_SCHEMA = {
    "type": "object",
    "required": ["error", "message"],
    "properties": {"error": {"type": "string"}, "message": {"type": "string"}},
}


def error_responses(*codes: int) -> dict[str, Any]:
    text = {400: "Malformed request", 401: "Missing or invalid API key",
            403: "The key lacks the scope", 404: "Not found", 413: "Body too large",
            422: "Validation failed; the message names the field",
            429: "Rate limited; see Retry-After", 503: "Database unreachable or overloaded"}
    return {str(code): {"description": text[code],
                        "content": {"application/json": {
                            "schema": {"$ref": "#/components/schemas/Error"}}}}
            for code in codes}


# Printable: no C0 or C1 control characters, no line or paragraph separators.
PRINTABLE_ID = "^[^\\u0000-\\u001f\\u007f-\\u009f\\u2028\\u2029]{1,255}$"
JSON_DESCRIPTION = ("Any JSON object, nesting at most 32 levels, integers within "
                    "-2^63..2^63-1, no key twice in one object (else 400)")

EVENT_SCHEMA = {
    "type": "object",
    "required": ["type"],
    "anyOf": [{"required": ["contact_id"]}, {"required": ["email"]}],
    "additionalProperties": False,
    "properties": {
        "type": {"type": "string", "pattern": "^[A-Za-z0-9][A-Za-z0-9_.:\\-]{0,127}$"},
        "contact_id": {"type": "string", "pattern": PRINTABLE_ID},
        "email": {"type": "string", "format": "email",
                  "description": "An RFC 5321 address (else 422)"},
        "properties": {"type": "object", "description": JSON_DESCRIPTION},
        "timestamp": {"type": "string", "format": "date-time",
                      "description": "RFC 3339 with an offset, at most 24 h ahead (else 422)"},
        "id": {"type": "string", "pattern": PRINTABLE_ID,
               "description": "Idempotency key: an id seen before is not stored again"},
    },
    "description": "contact_id and/or email is required; a field is a string or left out "
                   "(null is refused)",
}

CONTACT_SCHEMA = {
    "type": "object",
    "required": ["contact_id"],
    "additionalProperties": False,
    "properties": {
        "contact_id": {"type": "string", "pattern": PRINTABLE_ID},
        "email": {"type": ["string", "null"], "format": "email"},
        "attributes": {"type": "object",
                       "description": "Merged into the stored attributes; null removes one. "
                                      + JSON_DESCRIPTION},
        "timezone": {"type": ["string", "null"], "description": "IANA name, e.g. Europe/Paris"},
        "consent": {
            "description": "Records the contact's consent (logged as consent_requested, "
                           "consent_given or consent_withdrawn): a state, or {state, source, "
                           "at}; source defaults to 'api', at to now",
            "oneOf": [
                {"type": "string", "enum": ["pending", "opted_in", "opted_out"]},
                {"type": "object", "required": ["state"], "additionalProperties": False,
                 "properties": {
                     "state": {"type": "string", "enum": ["pending", "opted_in", "opted_out"]},
                     "source": {"type": "string",
                                "pattern": "^[A-Za-z0-9][A-Za-z0-9_.:\\-]{0,99}$"},
                     "at": {"type": "string", "format": "date-time",
                            "description": "RFC 3339, at most 24 h ahead (else 422)"}}},
            ],
        },
    },
}


def engine_paths() -> dict[str, Any]:
    json_body = {"application/json": {"schema": {"type": "object"}}}
    return {
        "/v1/events": {"post": {
            "summary": "Record one event or a batch of events",
            "operationId": "postEvents",
            "security": [{"bearer": ["events:write"]}],
            "requestBody": {"required": True, "content": {"application/json": {"schema": {
                "oneOf": [
                    {"$ref": "#/components/schemas/Event"},
                    {"type": "object", "required": ["events"], "additionalProperties": False,
                     "properties": {"events": {"type": "array", "minItems": 1,
                                               "maxItems": 1000,
                                               "items": {"$ref": "#/components/schemas/Event"}}}},
                ]}}}},
            "responses": {"202": {"description": "Committed to the event log",
                                  "content": {"application/json": {"schema": {
                                      "type": "object",
                                      "properties": {"accepted": {"type": "integer"},
                                                     "duplicates": {"type": "integer"}}}}}},
                          **error_responses(400, 401, 403, 413, 422, 429, 503)},
        }},
        "/v1/pixel.gif": {"get": {
            "summary": "Website tracking pixel (publishable site key)",
            "description": "Records one event as the browser: identified only by a "
                           "`contact_token` the sender's backend signed, else anonymous "
                           "(`anonymous_id`); `email`/`contact_id` are refused, `timestamp` is "
                           "ignored, `id` is namespaced, and only the properties the key lists "
                           "are kept (other query parameters).",
            "operationId": "pixel",
            "parameters": [
                {"name": name, "in": "query", "required": name in ("key", "type"),
                 "schema": {"type": "string"}}
                for name in ("key", "type", "contact_token", "anonymous_id", "id")],
            "responses": {"200": {"description": "Always a 1x1 GIF",
                                  "content": {"image/gif": {}}}},
        }},
        "/v1/contacts": {"post": {
            "summary": "Create or update a contact",
            "operationId": "upsertContact",
            "security": [{"bearer": ["contacts:write"]}],
            "requestBody": {"required": True, "content": {"application/json": {
                "schema": {"$ref": "#/components/schemas/Contact"}}}},
            "responses": {"200": {"description": "Updated", "content": json_body},
                          "201": {"description": "Created", "content": json_body},
                          **error_responses(400, 401, 403, 413, 422, 503)},
        }},
        "/v1/contacts/{contact_id}": {"get": {
            "summary": "Read a contact",
            "operationId": "getContact",
            "security": [{"bearer": ["contacts:read"]}],
            "parameters": [{"name": "contact_id", "in": "path", "required": True,
                            "schema": {"type": "string"}}],
            "responses": {"200": {"description": "The contact", "content": json_body},
                          **error_responses(401, 403, 404, 503)},
        }},
        "/v1/contacts/{contact_id}/events": {"get": {
            "summary": "A contact's events, newest first, paginated",
            "operationId": "listContactEvents",
            "security": [{"bearer": ["contacts:read"]}],
            "parameters": [
                {"name": "contact_id", "in": "path", "required": True,
                 "schema": {"type": "string"}},
                {"name": "limit", "in": "query", "schema": {"type": "integer", "minimum": 1,
                                                            "maximum": 1000}},
                {"name": "cursor", "in": "query", "schema": CURSOR_SCHEMA},
            ],
            "responses": {"200": {"description": "A page of events", "content": json_body},
                          **error_responses(401, 403, 422, 503)},
        }},
        "/healthz": {"get": {"summary": "Liveness", "operationId": "healthz",
                             "responses": {"200": {"description": "The process is up"}}}},
        "/readyz": {"get": {"summary": "Readiness: the database is reachable",
                            "operationId": "readyz",
                            "responses": {"200": {"description": "Ready"},
                                          "503": {"description": "Database unreachable"}}}},
        "/metrics": {"get": {"summary": "Prometheus metrics", "operationId": "metrics",
                             "responses": {"200": {"description": "Text exposition format"}}}},
    }


def merge_paths(*documents: dict[str, Any]) -> dict[str, Any]:
    """Path items from several packages; operations on one path (GET and DELETE) combine."""
    merged: dict[str, Any] = {}
    for paths in documents:
        for path, item in paths.items():
            merged[path] = {**merged.get(path, {}), **item}
    return merged


def build_document(paths: dict[str, Any], version: str) -> dict[str, Any]:
    return {
        "openapi": "3.1.0",
        "info": {"title": "Herald", "version": version,
                 "description": "Behavioural events in, personalised mail out."},
        "paths": paths,
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"},
                                # the Segment dialect: the write key as the Basic user name
                                "segmentWriteKey": {"type": "http", "scheme": "basic"}},
            "schemas": {"Error": ERROR_SCHEMA, "Event": EVENT_SCHEMA, "Contact": CONTACT_SCHEMA},
        },
    }
