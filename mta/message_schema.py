"""The JSON Schemas of ``POST /v1/messages`` and ``GET /v1/messages/{id}`` (pure).

One definition serves twice: the OpenAPI document publishes these dicts as they are, and
:func:`check_schema` validates every accepted request body against :data:`REQUEST_SCHEMA`
(after the checks in :mod:`mta.message_request` that give field-by-field messages), so the
server never accepts what the document refuses.
"""

from __future__ import annotations

import functools
from typing import Any

import jsonschema

from engine.http.openapi import JSON_DESCRIPTION, PRINTABLE_ID
from mta.attachments import ATTACHMENT_SCHEMA, MAX_ATTACHMENTS
from mta.compose import MAX_EXTRA_HEADERS, MAX_TAGS, TAG_PATTERN
from mta.errors import InvalidMessage

MAX_RECIPIENTS = 1000
IDEMPOTENCY_KEY_MAX = 255
MESSAGE_KEYS = frozenset({"from", "to", "recipients", "subject", "text", "html", "headers",
                          "attachments", "content", "raw", "contact_id", "tags", "metadata",
                          "send_at", "idempotency_key", "track"})
RECIPIENT_KEYS = frozenset({"to", "substitutions", "contact_id", "metadata"})
_COMPOSE_ONLY = ("from", "subject", "text", "html", "headers", "attachments", "track")
UUID = {"type": "string", "format": "uuid"}
TIME = {"type": "string", "format": "date-time"}

RECIPIENT_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["to"],
    "additionalProperties": False,
    "properties": {
        "to": {"type": "string", "description": "'Name <user@example.com>' or an address"},
        "substitutions": {"type": "object",
                          "description": "values for {{ name }} in subject, text and html "
                                         "(Jinja2 sandbox: output, {% if %} and a few "
                                         "filters). " + JSON_DESCRIPTION},
        "contact_id": {"type": "string", "pattern": PRINTABLE_ID},
        "metadata": {"type": "object", "description": "merged over the request's metadata. "
                                                      + JSON_DESCRIPTION},
    },
}

REQUEST_SCHEMA: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "allOf": [
        # one recipient, or many (contact_id then per recipient)
        {"oneOf": [
            {"required": ["to"], "not": {"required": ["recipients"]}},
            {"required": ["recipients"],
             "not": {"anyOf": [{"required": ["to"]}, {"required": ["contact_id"]}]}},
        ]},
        # composed, or raw MIME as content (or its older name raw; not both). No
        # substitutions with raw MIME: they apply to subject, text and html.
        {"oneOf": [
            {"required": ["from", "subject"],
             "anyOf": [{"required": ["text"]}, {"required": ["html"]}],
             "not": {"anyOf": [{"required": ["raw"]}, {"required": ["content"]}]}},
            {"oneOf": [{"required": ["content"]}, {"required": ["raw"]}],
             "not": {"anyOf": [{"required": [name]} for name in _COMPOSE_ONLY]},
             "properties": {"recipients": {"items": {
                 "not": {"required": ["substitutions"]}}}}},
        ]},
    ],
    "properties": {
        "from": {"type": "string", "description": "'Name <user@example.com>', in one of the "
                                                  "key's sender domains (else 403)"},
        "to": {"type": "string", "description": "the one recipient"},
        "recipients": {"type": "array", "minItems": 1, "maxItems": MAX_RECIPIENTS,
                       "items": RECIPIENT_SCHEMA,
                       "description": "one message each; the answer is per recipient"},
        "subject": {"type": "string"},
        "text": {"type": "string"},
        "html": {"type": "string", "description": "substituted values are HTML-escaped"},
        "headers": {"type": "object", "maxProperties": MAX_EXTRA_HEADERS,
                    "additionalProperties": {"type": "string"}},
        "attachments": {"type": "array", "maxItems": MAX_ATTACHMENTS,
                        "items": ATTACHMENT_SCHEMA},
        "content": {"type": "string", "description": "raw MIME: an RFC 5322 message; Bcc is "
                                                     "removed, To or Cc must name each "
                                                     "recipient"},
        "raw": {"type": "string", "description": "the older name of content (give one)"},
        "contact_id": {"type": "string", "pattern": PRINTABLE_ID},
        "tags": {"type": "array", "maxItems": MAX_TAGS,
                 "items": {"type": "string", "pattern": TAG_PATTERN}},
        "metadata": {"type": "object", "description": JSON_DESCRIPTION},
        "send_at": {**TIME, "description": "at most 366 days ahead; the message expires "
                                           "[mta] expire after it"},
        "track": {"type": "boolean",
                  "description": "rewrite the HTML part's http(s) links to tracked "
                                 "{public_url}/t/c/... links and add an open pixel: opens and "
                                 "clicks are recorded as email_opened / email_clicked events "
                                 "(not with raw)"},
        "idempotency_key": {"type": "string", "minLength": 1,
                            "maxLength": IDEMPOTENCY_KEY_MAX,
                            "description": "also the Idempotency-Key header; with recipients, "
                                           "each copy's key is KEY:INDEX"},
    },
}

QUEUED_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["id", "duplicate"],
    "additionalProperties": False,
    "properties": {"id": UUID, "duplicate": {
        "type": "boolean", "description": "the idempotency key was seen before: the first "
                                          "message's id"}},
}

RECIPIENT_RESULT_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["to", "accepted"],
    "additionalProperties": False,
    "properties": {
        "to": {"type": "string", "description": "as given in the request"},
        "accepted": {"type": "boolean", "description": "queued for delivery"},
        "id": {**UUID, "description": "the message (also when suppressed)"},
        "duplicate": {"type": "boolean"},
        "error": {"type": "string", "enum": ["invalid_recipient", "substitution_failed",
                                             "too_large", "suppressed"]},
        "message": {"type": "string", "description": "why it was not accepted"},
    },
}

RECIPIENTS_RESULT_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["accepted", "recipients"],
    "additionalProperties": False,
    "properties": {
        "accepted": {"type": "integer", "minimum": 0},
        "recipients": {"type": "array", "items": RECIPIENT_RESULT_SCHEMA,
                       "description": "in the request's order"},
    },
}

_NULLABLE_TEXT = {"type": ["string", "null"]}
_NULLABLE_INT = {"type": ["integer", "null"]}
MESSAGE_SCHEMA: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "required": ["id", "state", "from", "to", "contact_id", "tags", "metadata", "created_at",
                 "next_attempt_at", "expires_at", "finished_at", "last_reply", "attempts"],
    "properties": {
        "id": UUID,
        "state": {"type": "string", "enum": ["queued", "deferred", "delivered", "bounced",
                                             "expired", "suppressed"]},
        "from": {"type": "string"}, "to": {"type": "string"},
        "contact_id": {"type": "string"},
        "tags": {"type": "array", "items": {"type": "string"}},
        "metadata": {"type": "object"},
        "created_at": TIME, "expires_at": TIME,
        "next_attempt_at": {"type": ["string", "null"], "format": "date-time"},
        "finished_at": {"type": ["string", "null"], "format": "date-time"},
        "body_dropped_at": {"type": ["string", "null"], "format": "date-time",
                            "description": "when retention dropped the body ([retention] "
                                           "message_bodies); the row stays"},
        "last_reply": _NULLABLE_TEXT,
        "attempts": {"type": "array", "items": {
            "type": "object", "additionalProperties": False,
            "required": ["attempt", "at", "outcome", "remote_host", "code", "enhanced",
                         "reply", "category", "tls_policy"],
            "properties": {
                "attempt": {"type": "integer"}, "at": TIME, "outcome": {"type": "string"},
                "remote_host": _NULLABLE_TEXT, "code": _NULLABLE_INT,
                "enhanced": _NULLABLE_TEXT, "reply": _NULLABLE_TEXT,
                "category": _NULLABLE_TEXT, "tls_policy": _NULLABLE_TEXT,
            }}},
    },
}


@functools.cache
def _validator() -> jsonschema.Draft202012Validator:
    return jsonschema.Draft202012Validator(REQUEST_SCHEMA)


def check_schema(body: Any) -> None:
    """InvalidMessage naming where ``body`` breaks :data:`REQUEST_SCHEMA`."""
    error = jsonschema.exceptions.best_match(_validator().iter_errors(body))
    if error is not None:
        where = ".".join(str(part) for part in error.absolute_path) or "body"
        raise InvalidMessage(f"{where}: {error.message[:300]}")
