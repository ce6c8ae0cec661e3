"""RFC 3464 delivery status notifications (and RFC 6533's global ones): the per-recipient
blocks of the message/delivery-status part, each judged from its Status, Diagnostic-Code and
Action; the human-readable part explains a recipient whose block gives no diagnostic. Pure."""

from __future__ import annotations

import re
from email.message import Message

from mta.bounces.diagnosis import judge
from mta.bounces.fields import Fields, blocks_from_part, blocks_from_text, original_of
from mta.bounces.mime import address_in, text_of, walk
from mta.bounces.report import RecipientResult, Report

MAX_RECIPIENTS = 100
STATUS_TYPES = ("message/delivery-status", "message/global-delivery-status")
_FAILED_ACTIONS = ("failed", "delayed")
_DSN_FIELDS = re.compile(r"^(?:final|original)-recipient\s*:", re.I | re.M)
_STATUS_COMMENT = re.compile(r"\((.*)\)")


def status_part(message: Message) -> tuple[Message, str] | None:
    """The delivery-status part and its text: by type, or a text part of a
    ``report-type=delivery-status`` report that carries the fields under the wrong type."""
    fallback = None
    for part in walk(message):
        content_type = part.get_content_type()
        if content_type in STATUS_TYPES:
            return part, text_of(part)
        if fallback is None and content_type == "text/plain":
            text = text_of(part)
            if _DSN_FIELDS.search(text):
                fallback = (part, text)
    return fallback


def recipient_blocks(blocks: list[Fields]) -> list[Fields]:
    return [block for block in blocks
            if "final-recipient" in block or "original-recipient" in block][:MAX_RECIPIENTS]


def parse_dsn(message: Message, explain: dict[str, str] | None = None) -> Report | None:
    """The report of a DSN, or None when the message holds no per-recipient DSN fields.
    ``explain`` maps addresses to the human-readable part's paragraph about them."""
    found = status_part(message)
    if found is None:
        return None
    part, text = found
    blocks = recipient_blocks(blocks_from_part(part, text)) or recipient_blocks(
        blocks_from_text(text))
    if not blocks:
        return None
    per_message = blocks_from_text(text)[:1]
    recipients = tuple(_recipient(block, explain or {}) for block in blocks)
    original = original_of(message)
    return_path = original.return_path or (
        address_in(per_message[0].get("x-postfix-sender")) if per_message else None)
    kind = "bounce" if any(r.reason != "delivered" for r in recipients) else "unknown"
    return Report(kind, recipients, None, original.message_id, return_path,
                  original.recipient)


def _recipient(block: Fields, explain: dict[str, str]) -> RecipientResult:
    address = (address_in(block.get("original-recipient"))
               or address_in(block.get("final-recipient"))
               or address_in(block.get("x-actual-recipient")))
    status_field = block.get("status", "")
    diagnostic = block.get("diagnostic-code", "")
    if not diagnostic:
        comment = _STATUS_COMMENT.search(status_field)
        diagnostic = comment.group(1) if comment else ""
    context = explain.get(address.lower(), "") if address else ""
    return judge(address, status_field or None, diagnostic or context, block.get("action"),
                 context)
