"""Feedback-loop complaints: RFC 5965 ARF reports (``multipart/report;
report-type=feedback-report``) and Microsoft's JMRP/SNDS format (the complained-about message
attached with an ``X-HmXmrOriginalRecipient`` header). Pure."""

from __future__ import annotations

import re
from collections.abc import Iterable
from email.message import Message

from mta.bounces.fields import ORIGINAL_TYPES, Original, blocks_from_part, original_of
from mta.bounces.mime import address_in, find_addresses, header, headers_block, text_of, walk
from mta.bounces.report import RecipientResult, Report

MAX_RECIPIENTS = 100
FEEDBACK_TYPES = ("abuse", "fraud", "virus", "other", "not-spam", "auth-failure", "opt-out",
                  "dmarc")
_RCPT_TO = re.compile(r"^(?:original-rcpt-to|removal-recipient)\s*:\s*(.+)$", re.I | re.M)
_JMRP_HEADER = "X-HmXmrOriginalRecipient"


def feedback_part(message: Message) -> Message | None:
    for part in walk(message):
        if part.get_content_type() == "message/feedback-report":
            return part
    return None


def parse_arf(message: Message) -> Report | None:
    """The complaint an ARF or JMRP report carries, or None when the message is neither."""
    part = feedback_part(message)
    if part is None:
        return _parse_jmrp(message)
    text = text_of(part)
    blocks = blocks_from_part(part, text)
    fields = blocks[0] if blocks else {}
    feedback_type = (fields.get("feedback-type") or "").strip().lower() or "other"
    original = original_of(message)
    addresses = _unique(address for line in _RCPT_TO.findall(text)
                        for address in find_addresses(line))
    if not addresses and original.recipient:
        addresses = [original.recipient]
    return_path = address_in(fields.get("original-mail-from")) or original.return_path
    return _complaint(feedback_type, addresses, original, return_path)


def _parse_jmrp(message: Message) -> Report | None:
    for part in walk(message):
        if part is message or part.get_content_type() not in ORIGINAL_TYPES:
            continue
        block = headers_block(part)
        if block is None or header(block, _JMRP_HEADER) is None:
            continue
        original = original_of(message)
        address = address_in(header(block, _JMRP_HEADER)) or original.recipient
        return _complaint("abuse", [address] if address else [], original,
                          original.return_path)
    return None


def _complaint(feedback_type: str, addresses: list[str], original: Original,
               return_path: str | None) -> Report:
    recipients = tuple(RecipientResult(address, None, None, False, "complaint")
                       for address in addresses[:MAX_RECIPIENTS])
    if not recipients:  # the reporter hid the address: the return path still finds it
        recipients = (RecipientResult(None, None, None, False, "complaint"),)
    return Report("complaint", recipients, feedback_type, original.message_id, return_path,
                  addresses[0] if addresses else original.recipient)


def _unique(addresses: Iterable[str]) -> list[str]:
    seen: dict[str, None] = {}
    for address in addresses:
        seen.setdefault(address, None)
    return list(seen)
