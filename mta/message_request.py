"""``POST /v1/messages`` bodies -> the messages to queue (pure).

Two forms: one recipient (``to``: the answer is the message's id), or up to
:data:`MAX_RECIPIENTS` (``recipients``: each with its own ``substitutions``, ``contact_id`` and
``metadata``; the answer is per recipient). The content is composed (``from``, ``subject``,
``text``/``html``, ``headers``, ``attachments``; the three parts rendered per recipient by
:mod:`mta.substitutions`) or raw MIME (``content``, or its older name ``raw``; checked by
:func:`mta.compose.check_raw`).

What concerns the whole request (shape, From, a template, an attachment, raw MIME) refuses
it (:class:`~mta.errors.InvalidMessage`, 400); what concerns one recipient (its address, a
substitution it lacks, its copy's size) refuses only that recipient (:class:`Refusal`).
After the checks, the body must also satisfy :data:`mta.message_schema.REQUEST_SCHEMA`, the
schema the OpenAPI document publishes, so server and document cannot disagree.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from engine.contacts import CONTACT_ID
from engine.timestamps import parse_rfc3339
from mta.attachments import parse_attachments
from mta.compose import ComposedMessage, check_raw, compose, parse_tags
from mta.errors import InvalidMessage
from mta.message_schema import (
    IDEMPOTENCY_KEY_MAX,
    MAX_RECIPIENTS,
    MESSAGE_KEYS,
    RECIPIENT_KEYS,
    check_schema,
)
from mta.queue.enqueue import OutboundMessage
from mta.substitutions import SubstitutionError, Template, compile_part
from mta.tracking.rewrite import Tracker

MAX_SCHEDULE = timedelta(days=366)
MAX_TOTAL_BYTES = 64 * 1024 * 1024  # all copies of one request together


@dataclass(frozen=True, slots=True)
class Refusal:
    """One recipient that will not be queued, and why."""

    to: str
    error: str  # invalid_recipient, substitution_failed, too_large
    message: str


@dataclass(frozen=True, slots=True)
class ParsedRequest:
    single: bool  # the ``to`` form
    copies: list[tuple[str, OutboundMessage | Refusal]]  # (the request's 'to', the result)


def _contact_id(value: Any, where: str) -> str | None:
    if value is not None and (not isinstance(value, str) or not CONTACT_ID.match(value)):
        raise InvalidMessage(f"{where}: must be a string of 1-255 printable characters")
    return value


def _object(value: Any, where: str) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):  # [] or null would come back as {}
        raise InvalidMessage(f"{where}: must be an object")
    return value


def _send_at(body: dict[str, Any], now: datetime) -> datetime | None:
    if body.get("send_at") is None:
        return None
    if not isinstance(body["send_at"], str):
        raise InvalidMessage("send_at: must be an RFC 3339 string")
    try:
        send_at = parse_rfc3339(body["send_at"])
    except ValueError as exc:
        raise InvalidMessage(f"send_at: {exc}") from None
    if send_at > now + MAX_SCHEDULE:
        raise InvalidMessage(f"send_at: at most {MAX_SCHEDULE.days} days ahead")
    return send_at


def idempotency_key(body: dict[str, Any], header: str | None) -> str | None:
    """The body's ``idempotency_key`` or the ``Idempotency-Key`` header (the same if both)."""
    key = body.get("idempotency_key")
    if key is not None and (not isinstance(key, str)
                            or not 1 <= len(key) <= IDEMPOTENCY_KEY_MAX):
        raise InvalidMessage(f"idempotency_key: must be a string of 1-{IDEMPOTENCY_KEY_MAX} "
                             "characters")
    if header is not None:
        if not 1 <= len(header) <= IDEMPOTENCY_KEY_MAX or not header.isprintable():
            raise InvalidMessage(f"Idempotency-Key: 1-{IDEMPOTENCY_KEY_MAX} printable "
                                 "characters")
        if key is not None and key != header:
            raise InvalidMessage("Idempotency-Key: differs from the body's idempotency_key")
        key = header
    return key


def parse_message_request(body: Any, max_size: int, now: datetime | None = None,
                          idempotency_header: str | None = None,
                          tracker: Tracker | None = None) -> ParsedRequest:
    """The request's copies; InvalidMessage for what refuses the whole request. ``send_at``
    may lie up to :data:`MAX_SCHEDULE` ahead (the message expires ``[mta] expire`` after it).
    ``track: true`` rewrites each copy's HTML links with ``tracker`` (None: not available)."""
    now = now or datetime.now(UTC)
    if not isinstance(body, dict):
        raise InvalidMessage("body: must be a JSON object")
    unknown = set(body) - MESSAGE_KEYS
    if unknown:
        raise InvalidMessage(f"{sorted(unknown)[0]}: unknown field")
    for name, value in body.items():
        if value is None:  # the document has no nullable field: leave it out instead
            raise InvalidMessage(f"{name}: must not be null (leave the field out)")
    if ("to" in body) == ("recipients" in body):
        raise InvalidMessage("to: give either 'to' (one recipient) or 'recipients' (many)")
    single = "to" in body
    recipients = [{"to": body["to"]}] if single else _recipients(body)
    if not single and "contact_id" in body:
        raise InvalidMessage("contact_id: give it per recipient in 'recipients'")
    metadata = _object(body.get("metadata"), "metadata")
    tags = tuple(parse_tags(body.get("tags")))
    send_at = _send_at(body, now)
    key = idempotency_key(body, idempotency_header)
    track = body.get("track", False)
    if not isinstance(track, bool):
        raise InvalidMessage("track: must be true or false")
    if track and tracker is None:
        raise InvalidMessage("track: open and click tracking is not available on this server "
                             "(it needs [http] public_url and [tracking] enabled)")
    mime_field = _mime_field(body)
    build = _raw_builder(body, mime_field) if mime_field else _compose_builder(
        body, now, tracker if track else None)
    copies: list[tuple[str, OutboundMessage | Refusal]] = []
    total = 0
    for index, recipient in enumerate(recipients):
        to = recipient["to"]
        result: OutboundMessage | Refusal
        message_id = uuid.uuid4() if track else None  # a tracked body names its message
        try:
            composed, links = build(recipient, message_id)
            if len(composed.body) > max_size:
                raise InvalidMessage(f"message: {len(composed.body)} octets; the limit is "
                                     f"{max_size}")
        except _RecipientError as exc:
            if single:
                raise InvalidMessage(exc.message) from None
            result = Refusal(to, exc.error, exc.message)
        except InvalidMessage as exc:
            if single:
                raise
            result = Refusal(to, "too_large", str(exc))
        else:
            total += len(composed.body)
            if total > MAX_TOTAL_BYTES:
                raise InvalidMessage(f"recipients: the copies exceed {MAX_TOTAL_BYTES} octets "
                                     "together; split the request")
            where = "contact_id" if single else f"recipients[{index}].contact_id"
            contact = _contact_id(body.get("contact_id") if single
                                  else recipient.get("contact_id"), where)
            own = {} if single else _object(recipient.get("metadata"),
                                            f"recipients[{index}].metadata")
            result = OutboundMessage(
                composed.header_from, composed.recipient, composed.body, contact, tags,
                {**metadata, **own}, "api",
                key if single or key is None else f"{key}:{index}", send_at,
                id=message_id, sender=composed.sender, tracked_links=links)
        copies.append((to, result))
    check_schema(body)
    return ParsedRequest(single, copies)


def _recipients(body: dict[str, Any]) -> list[dict[str, Any]]:
    value = body["recipients"]
    if not isinstance(value, list) or not 1 <= len(value) <= MAX_RECIPIENTS:
        raise InvalidMessage(f"recipients: a list of 1-{MAX_RECIPIENTS} recipients")
    for index, item in enumerate(value):
        where = f"recipients[{index}]"
        if not isinstance(item, dict) or not isinstance(item.get("to"), str):
            raise InvalidMessage(f"{where}: an object with 'to' (an address)")
        unknown = set(item) - RECIPIENT_KEYS
        if unknown:
            raise InvalidMessage(f"{where}.{sorted(unknown)[0]}: unknown field")
        if "substitutions" in item and not isinstance(item["substitutions"], dict):
            raise InvalidMessage(f"{where}.substitutions: must be an object")
    return value


class _RecipientError(Exception):
    def __init__(self, error: str, message: str) -> None:
        super().__init__(message)
        self.error = error
        self.message = message


def _compose_builder(body: dict[str, Any], now: datetime, tracker: Tracker | None) -> Any:
    attachments = [a.part() for a in parse_attachments(body.get("attachments"))]
    parts: dict[str, Template] = {}
    for name in ("subject", "text", "html"):
        source = body.get(name)
        if isinstance(source, str):
            try:
                parts[name] = compile_part(source, html=name == "html")
            except SubstitutionError as exc:
                raise InvalidMessage(f"{name}: {exc}") from None
    if "recipients" in body:  # the shared fields are checked once, before any recipient
        compose({**body, "to": "check@example.com"}, now, attachments)

    def build(recipient: dict[str, Any], message_id: uuid.UUID | None
              ) -> tuple[ComposedMessage, tuple[str, ...]]:
        values = recipient.get("substitutions", {})
        request = {**body, "to": recipient["to"]}
        for name, template in parts.items():
            try:
                request[name] = template.render(values)
            except SubstitutionError as exc:
                raise _RecipientError("substitution_failed", f"{name}: {exc}") from None
        links: tuple[str, ...] = ()
        if tracker is not None and message_id is not None and isinstance(
                request.get("html"), str):
            tracked = tracker(request["html"], message_id)
            request["html"], links = tracked.html, tracked.links
        try:
            return compose(request, now, attachments), links
        except InvalidMessage as exc:
            raise _RecipientError("invalid_recipient", str(exc)) from None

    return build


def _mime_field(body: dict[str, Any]) -> str | None:
    """Which field holds raw MIME: ``content`` (the documented name), ``raw`` (its older
    name, still accepted), or neither for a message to compose."""
    if "content" in body and "raw" in body:
        raise InvalidMessage("content: give the MIME message as content or as raw, not both")
    return "content" if "content" in body else "raw" if "raw" in body else None


def _raw_builder(body: dict[str, Any], field: str) -> Any:
    raw = body[field]
    if not isinstance(raw, str):
        raise InvalidMessage(f"{field}: must be the MIME message as a string")
    for name in ("subject", "text", "html", "headers", "from", "attachments", "track"):
        if name in body:
            raise InvalidMessage(f"{name}: not allowed together with {field}")
    if any("substitutions" in r for r in body.get("recipients", [])):
        raise InvalidMessage("recipients: substitutions apply to subject, text and html, "
                             f"not to {field}")
    data = raw.encode("utf-8")

    def build(recipient: dict[str, Any], _message_id: uuid.UUID | None
              ) -> tuple[ComposedMessage, tuple[str, ...]]:
        try:
            return check_raw(data, recipient["to"]), ()
        except InvalidMessage as exc:
            message = _in_field(str(exc), field)
            if message.startswith(("to:", f"{field}.To:")):
                raise _RecipientError("invalid_recipient", message) from None
            raise InvalidMessage(message) from None

    return build


def _in_field(message: str, field: str) -> str:
    """check_raw names what it checks ``raw...``; say the field the request used."""
    if field != "raw" and message.startswith("raw"):
        return field + message[len("raw"):]
    return message
