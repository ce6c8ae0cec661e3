"""RFC 8058 one-click unsubscribe: ``POST /v1/unsubscribe/{token}`` with the form body
``List-Unsubscribe=One-Click`` suppresses at once and answers 200 (no redirect, no cookies, no
authentication); ``GET`` shows a small page that explains what will happen and changes nothing.

A tampered, foreign or malformed token gets a 4xx page and changes nothing.
"""

from __future__ import annotations

import html
import logging
from datetime import UTC, datetime

from starlette.datastructures import FormData
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from engine.http.body import read_body
from engine.http.endpoint import HttpContext, endpoint
from engine.http.errors import ApiError
from engine.http.pages import page
from engine.link_keys import LinkKeys
from mta.suppression.tokens import BadToken, read_unsubscribe_token
from mta.suppression.unsubscribe import MessageRef, message_ref, unsubscribe

log = logging.getLogger("herald.unsubscribe")

MAX_FORM_BYTES = 8192


def _choices(message: MessageRef) -> str:
    if not message.category:
        return ('<input type="hidden" name="scope" value="all">'
                "<p>You will receive no more mail from us at this address.</p>")
    category = html.escape(message.category)
    return (f'<p><label><input type="radio" name="scope" value="category" checked> '
            f'Only stop &ldquo;{category}&rdquo; mail</label><br>'
            '<label><input type="radio" name="scope" value="all"> Stop all mail from us'
            '</label></p>')


def routes(context: HttpContext, keys: LinkKeys) -> list[Route]:
    async def resolve(request: Request) -> MessageRef | Response:
        try:
            message_id = read_unsubscribe_token(keys, request.path_params["token"])
        except BadToken as exc:
            return page(400, "This unsubscribe link is not valid",
                        f"<p>{html.escape(str(exc))}. Nothing was changed.</p>")
        async with context.database.connection() as connection:
            message = await message_ref(connection, message_id)
        if message is None:
            return page(404, "This unsubscribe link has expired",
                        "<p>The message it belongs to is no longer known. Nothing was "
                        "changed; please reply to the message or contact the sender.</p>")
        return message

    @endpoint("unsubscribe_page")
    async def show(request: Request) -> Response:
        message = await resolve(request)
        if isinstance(message, Response):
            return message
        address = html.escape(message.recipient)
        return page(200, "Unsubscribe",
                    f"<p>Unsubscribe <strong>{address}</strong>?</p>"
                    '<form method="post">'
                    '<input type="hidden" name="List-Unsubscribe" value="One-Click">'
                    f'{_choices(message)}<button type="submit">Unsubscribe</button></form>')

    @endpoint("unsubscribe")
    async def one_click(request: Request) -> Response:
        message = await resolve(request)
        if isinstance(message, Response):
            return message
        form = await _form(request)
        if isinstance(form, Response):
            return form
        if form.get("List-Unsubscribe") != "One-Click":
            return page(400, "Not unsubscribed", "<p>The request did not carry "
                        "<code>List-Unsubscribe=One-Click</code>. Nothing was changed.</p>")
        scope = form.get("scope", "category")
        if scope not in ("category", "all"):
            return page(400, "Not unsubscribed", "<p>Unknown choice. Nothing was changed.</p>")
        async with context.database.transaction() as connection:
            category = await unsubscribe(connection, message, all_mail=scope == "all",
                                         source="one_click", now=datetime.now(UTC))
        log.info("unsubscribed", extra={"message_id": str(message.id),
                                        "category": category or "all"})
        what = f"&ldquo;{html.escape(category)}&rdquo; mail" if category else "any more mail"
        return page(200, "You are unsubscribed",
                    f"<p>{html.escape(message.recipient)} will not receive {what} from us.</p>")

    return [Route("/v1/unsubscribe/{token}", show, methods=["GET"]),
            Route("/v1/unsubscribe/{token}", one_click, methods=["POST"])]


async def _form(request: Request) -> FormData | Response:
    try:
        body = await read_body(request, MAX_FORM_BYTES)
    except ApiError as exc:
        return page(exc.status, "Not unsubscribed", f"<p>{html.escape(exc.message)}</p>")
    request._body = body  # request.form() parses this bounded copy, not the stream
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if kind not in ("application/x-www-form-urlencoded", "multipart/form-data"):
        return page(415, "Not unsubscribed", "<p>Send the form as "
                    "application/x-www-form-urlencoded or multipart/form-data.</p>")
    try:
        return await request.form(max_files=0, max_fields=8, max_part_size=MAX_FORM_BYTES)
    except Exception as exc:  # starlette raises its HTTPException / multipart errors
        return page(400, "Not unsubscribed",
                    f"<p>The form could not be read ({html.escape(type(exc).__name__)}).</p>")
