"""GDPR export and erase, and the double opt-in confirm link.

- ``GET /v1/contacts/{id}/export`` (scope ``privacy``): everything held about the contact as
  one JSON document, streamed (:mod:`engine.privacy.service`);
- ``DELETE /v1/contacts/{id}`` (scope ``privacy``): erase; again: 200 saying it was done;
- ``GET /v1/consent/confirm/{token}``: a page with a button, changing nothing (so link
  scanners that fetch it confirm nothing); ``POST`` confirms: consent ``opted_in`` (source
  ``double_opt_in``) and its ``consent_given`` event, which a double opt-in workflow waits for.
  A tampered, foreign, malformed or expired token gets a 400 page and changes nothing.
"""

from __future__ import annotations

import html
import logging
from datetime import UTC, datetime
from typing import Any

from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

from engine.http.endpoint import HttpContext, endpoint
from engine.http.errors import ApiError, OrjsonResponse
from engine.http.openapi import error_responses
from engine.http.pages import page
from engine.http.paths import path_param
from engine.link_keys import LinkKeys
from engine.privacy.consent import OPTED_IN, Consent
from engine.privacy.consent_store import record_consent
from engine.privacy.consent_tokens import BadConsentToken, read_consent_token
from engine.privacy.service import Privacy
from engine.privacy.settings import PrivacySettings

log = logging.getLogger("herald.privacy")

SCOPE = "privacy"
CONFIRM_SOURCE = "double_opt_in"


def routes(context: HttpContext, privacy: Privacy, keys: LinkKeys,
           settings: PrivacySettings) -> list[Route]:
    database = context.database

    @endpoint("/v1/contacts/{contact_id}/export")
    async def export(request: Request) -> Response:
        key = await context.auth.require(request, SCOPE)
        contact_id = path_param(request, "contact_id")
        now = datetime.now(UTC)
        async with database.transaction() as connection:
            subject = await privacy.open_export(connection, contact_id, key.key_id, now)
        if subject is None:
            raise ApiError(404, "not_found", f"no contact with contact_id {contact_id!r}")
        log.info("contact exported", extra={"contact_hash": subject.contact_hash,
                                            "key_id": key.key_id})
        return StreamingResponse(privacy.export_chunks(database.connection, subject, now),
                                 media_type="application/json",
                                 headers={"Cache-Control": "no-store"})

    @endpoint("contact_erase")
    async def erase(request: Request) -> Response:
        key = await context.auth.require(request, SCOPE)
        contact_id = path_param(request, "contact_id")
        async with database.connection() as connection:
            erased = await privacy.erase(connection, contact_id, key.key_id, datetime.now(UTC))
        if erased is None:
            raise ApiError(404, "not_found", f"no contact with contact_id {contact_id!r}")
        log.info("contact erased", extra={"contact_hash": erased.contact_hash,
                                          "key_id": key.key_id,
                                          "already_erased": erased.already_erased})
        return OrjsonResponse(erased.to_json())

    def contact_of(request: Request, now: datetime) -> str | Response:
        try:
            return read_consent_token(keys, request.path_params["token"], now,
                                      settings.confirm_ttl)
        except BadConsentToken as exc:
            return page(400, "This confirmation link is not valid",
                        f"<p>{html.escape(str(exc))}. Nothing was changed.</p>")

    @endpoint("consent_confirm_page")
    async def confirm_page(request: Request) -> Response:
        contact_id = contact_of(request, datetime.now(UTC))
        if isinstance(contact_id, Response):
            return contact_id
        async with database.connection() as connection:
            row = await connection.fetchrow(
                "SELECT email, consent_state FROM contacts WHERE contact_id = $1", contact_id)
        if row is None:
            return _unknown()
        if row["consent_state"] == OPTED_IN:
            return page(200, "Already confirmed", "<p>Your subscription is confirmed.</p>")
        address = html.escape(row["email"] or "this address")
        return page(200, "Confirm your subscription",
                    f"<p>Confirm that <strong>{address}</strong> wants our mail?</p>"
                    '<form method="post"><button type="submit">Yes, subscribe me</button>'
                    "</form>")

    @endpoint("consent_confirm")
    async def confirm(request: Request) -> Response:
        now = datetime.now(UTC)
        contact_id = contact_of(request, now)
        if isinstance(contact_id, Response):
            return contact_id
        async with database.transaction() as connection:
            row = await connection.fetchrow(
                "SELECT email, consent_state FROM contacts WHERE contact_id = $1 FOR UPDATE",
                contact_id)
            if row is None:
                return _unknown()
            if row["consent_state"] != OPTED_IN:
                await record_consent(connection, contact_id, row["email"],
                                     Consent(OPTED_IN, now, CONFIRM_SOURCE), now)
        return page(200, "Subscription confirmed",
                    "<p>Thank you: your subscription is confirmed.</p>")

    return [Route("/v1/contacts/{contact_id}/export", export, methods=["GET"]),
            Route("/v1/contacts/{contact_id}", erase, methods=["DELETE"]),
            Route("/v1/consent/confirm/{token}", confirm_page, methods=["GET"]),
            Route("/v1/consent/confirm/{token}", confirm, methods=["POST"])]


def _unknown() -> Response:
    return page(404, "This confirmation link has expired",
                "<p>The subscription it belongs to is no longer known. Nothing was "
                "changed.</p>")


_LIST = {"type": "array", "items": {"type": "object"}}
EXPORT_SCHEMA = {
    "type": "object",
    "required": ["contact_id", "exported_at", "contact", "consent", "addresses", "identities",
                 "events", "messages", "suppressions", "workflow_runs", "workflow_log"],
    "properties": {
        "contact_id": {"type": "string"},
        "exported_at": {"type": "string", "format": "date-time"},
        "contact": {"type": ["object", "null"]},
        "consent": {"type": ["object", "null"]},
        "addresses": {"type": "array", "items": {"type": "string"}},
        "identities": _LIST, "events": _LIST, "messages": _LIST, "suppressions": _LIST,
        "workflow_runs": _LIST, "workflow_log": _LIST,
    },
}
ERASURE_SCHEMA = {
    "type": "object",
    "required": ["erased", "already_erased", "contact_hash", "erased_at", "removed"],
    "properties": {
        "erased": {"type": "boolean"},
        "already_erased": {"type": "boolean"},
        "contact_hash": {"type": "string", "description": "what the audit log names it by"},
        "erased_at": {"type": "string", "format": "date-time"},
        "removed": {"type": "object", "additionalProperties": {"type": "integer"},
                    "description": "rows removed or anonymised per table"},
    },
}


def openapi_paths() -> dict[str, Any]:
    contact_id = {"name": "contact_id", "in": "path", "required": True,
                  "schema": {"type": "string"}}
    token = {"name": "token", "in": "path", "required": True, "schema": {"type": "string"}}
    html_page = {"text/html": {"schema": {"type": "string"}}}
    return {
        "/v1/contacts/{contact_id}/export": {"get": {
            "summary": "GDPR export: everything held about a contact",
            "description": "One JSON document, streamed: contact_id, exported_at, contact, "
                           "consent, addresses, identities, events (all, oldest first), "
                           "messages (metadata and delivery attempts, no bodies), "
                           "suppressions, workflow_runs, workflow_log. Recorded in the "
                           "privacy audit log.",
            "operationId": "exportContact",
            "security": [{"bearer": ["privacy"]}],
            "parameters": [contact_id],
            "responses": {"200": {"description": "The export document",
                                  "content": {"application/json": {
                                      "schema": EXPORT_SCHEMA}}},
                          **error_responses(401, 403, 404, 503)},
        }},
        "/v1/contacts/{contact_id}": {"delete": {
            "summary": "GDPR erase: remove a contact's personal data and events",
            "description": "Deletes the contact, its events (and those of anonymous ids "
                           "joined to it), queued and sent messages, suppression entries and "
                           "decision log; anonymises its workflow runs; keeps only a hash of "
                           "each address, so the address stays suppressed. Recorded in the "
                           "privacy audit log without personal data. Erasing again answers "
                           "200 with already_erased true.",
            "operationId": "eraseContact",
            "security": [{"bearer": ["privacy"]}],
            "parameters": [contact_id],
            "responses": {"200": {"description": "Erased (now or before)",
                                  "content": {"application/json": {
                                      "schema": ERASURE_SCHEMA}}},
                          **error_responses(401, 403, 404, 503)},
        }},
        "/v1/consent/confirm/{token}": {
            "get": {
                "summary": "Double opt-in confirmation page (changes nothing)",
                "operationId": "consentConfirmPage",
                "parameters": [token],
                "responses": {"200": {"description": "A page with a confirm button",
                                      "content": html_page},
                              "400": {"description": "Malformed, tampered or expired token",
                                      "content": html_page},
                              "404": {"description": "The contact is no longer known",
                                      "content": html_page}},
            },
            "post": {
                "summary": "Confirm consent (double opt-in): opted_in, consent_given event",
                "operationId": "consentConfirm",
                "parameters": [token],
                "responses": {"200": {"description": "Confirmed (or already confirmed)",
                                      "content": html_page},
                              "400": {"description": "Malformed, tampered or expired token",
                                      "content": html_page},
                              "404": {"description": "The contact is no longer known",
                                      "content": html_page}},
            },
        },
    }
