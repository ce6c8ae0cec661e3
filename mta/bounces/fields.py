"""RFC 3464 / RFC 5965 style field blocks ("Name: value" lines, folded continuations, blocks
separated by blank lines), from text or from the blocks the email package already parsed, and
the original message's identifiers (Message-ID, Return-Path, To) from an attached copy. Pure."""

from __future__ import annotations

import re
from dataclasses import dataclass
from email.message import Message

from mta.bounces.mime import address_in, clean, header, headers_block, one_line, walk

MAX_BLOCKS = 200
MAX_FIELD_CHARS = 4000

Fields = dict[str, str]  # lower-case field name -> value (the first occurrence), unfolded

_FIELD = re.compile(r"^([A-Za-z][A-Za-z0-9-]{0,76})\s*:\s?(.*)$")
ORIGINAL_TYPES = ("message/rfc822", "text/rfc822-headers", "message/rfc822-headers",
                  "message/global", "message/global-headers")


def blocks_from_text(text: str) -> list[Fields]:
    """Field blocks of a text; lines that are not fields end nothing and are skipped."""
    blocks: list[Fields] = []
    current: Fields = {}
    last: str | None = None
    for line in text.splitlines():
        if not line.strip():
            if current:
                blocks.append(current)
                if len(blocks) >= MAX_BLOCKS:
                    return blocks
            current, last = {}, None
            continue
        if line[0] in " \t" and last is not None:
            current[last] = (current[last] + " " + line.strip())[:MAX_FIELD_CHARS]
            continue
        match = _FIELD.match(line)
        if match is None:
            last = None
            continue
        name = match.group(1).lower()
        if name not in current:
            current[name] = match.group(2).strip()[:MAX_FIELD_CHARS]
            last = name
        else:
            last = None
    if current:
        blocks.append(current)
    return blocks


def blocks_from_part(part: Message, text: str) -> list[Fields]:
    """Field blocks of a message/delivery-status or message/feedback-report part: the email
    package's parsed blocks when it made them, else ``text`` split by hand."""
    payload = part.get_payload()
    if isinstance(payload, list) and payload:
        blocks = []
        for block in payload[:MAX_BLOCKS]:
            if not isinstance(block, Message):
                continue
            fields: Fields = {}
            for name, value in block.items():
                fields.setdefault(name.lower(), one_line(clean(str(value)))[:MAX_FIELD_CHARS])
            if fields:
                blocks.append(fields)
        return blocks
    return blocks_from_text(text)


@dataclass(frozen=True, slots=True)
class Original:
    message_id: str | None = None
    return_path: str | None = None
    recipient: str | None = None


def original_of(message: Message) -> Original:
    """Identifiers of the original message from the first attached copy of it (or its
    headers), or nothing."""
    for part in walk(message):
        if part is message or part.get_content_type() not in ORIGINAL_TYPES:
            continue
        block = headers_block(part)
        if block is not None:
            return original_from_headers(block)
    return Original()


def original_from_headers(block: Message) -> Original:
    message_id = header(block, "Message-ID")
    return_path = None
    for name in ("Return-Path", "X-Original-Mail-From", "X-Envelope-From", "Envelope-From"):
        return_path = address_in(header(block, name))
        if return_path:
            break
    return Original(message_id, return_path, address_in(header(block, "To")))


def original_from_text(text: str) -> Original:
    """Identifiers from a copy of the original pasted into a plain-text bounce."""
    fields: Fields = {}
    for block in blocks_from_text(text)[:5]:
        for name in ("message-id", "return-path", "to", "x-original-mail-from"):
            if name in block:
                fields.setdefault(name, block[name])
    return_path = address_in(fields.get("return-path") or fields.get("x-original-mail-from"))
    return Original(fields.get("message-id"), return_path, address_in(fields.get("to")))
