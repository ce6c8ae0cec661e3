"""Reading a returned message without trusting it: a bounded parse (size, parts, depth) with the
``compat32`` policy, which never raises on bad headers, and lenient text and header access that
turns unknown charsets and undecodable bytes into replacement characters. Pure."""

from __future__ import annotations

import re
from collections.abc import Iterator
from email import message_from_bytes
from email.message import Message
from email.policy import compat32

MAX_BYTES = 1 << 20  # parse at most the first MiB: the reports sit before any attached original
MAX_PARTS = 64  # parts visited per message
MAX_DEPTH = 8  # multipart / message nesting followed
MAX_TEXT_CHARS = 64_000  # text taken from one part

_ADDRESS = re.compile(
    r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~.-]{1,64}@(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)+"
    r"[A-Za-z][A-Za-z0-9-]{0,62}"
)
_SPACES = re.compile(r"\s+")


def load(raw: bytes) -> Message:
    """The parsed message (the first ``MAX_BYTES`` of it). May raise on pathological input
    (deep nesting): ``parse_report`` turns that into an "unknown" report."""
    return message_from_bytes(raw[:MAX_BYTES], policy=compat32)


def walk(message: Message) -> Iterator[Message]:
    """Depth-first parts, like ``Message.walk`` but bounded in count and depth, and without
    recursion (a hostile message can nest thousands of levels)."""
    stack: list[tuple[Message, int]] = [(message, 0)]
    seen = 0
    while stack and seen < MAX_PARTS:
        part, depth = stack.pop()
        seen += 1
        yield part
        if depth >= MAX_DEPTH or not part.is_multipart():
            continue
        payload = part.get_payload()
        if isinstance(payload, list):
            children = [child for child in payload[:MAX_PARTS] if isinstance(child, Message)]
            stack.extend((child, depth + 1) for child in reversed(children))


def header(message: Message, name: str) -> str | None:
    """A header's value as one clean line, or None. Raw 8-bit bytes become U+FFFD."""
    value = message.get(name)
    if value is None:
        return None
    text = clean(str(value))
    return " ".join(text.split()) or None


def headers(message: Message, name: str) -> list[str]:
    values = message.get_all(name) or []
    return [" ".join(clean(str(value)).split()) for value in values]


def text_of(part: Message) -> str:
    """The decoded text of a leaf part (transfer encoding and charset undone, leniently); for a
    message/* part, the text of its headers and body as found."""
    payload = part.get_payload()
    if isinstance(payload, list):
        return "\n\n".join(_as_text(child) for child in payload[:MAX_PARTS]
                           if isinstance(child, Message))[:MAX_TEXT_CHARS]
    data = part.get_payload(decode=True)
    if not isinstance(data, bytes):
        return clean(str(payload or ""))[:MAX_TEXT_CHARS]
    charset = part.get_content_charset() or "utf-8"
    try:
        text = data[: MAX_TEXT_CHARS * 4].decode(charset, errors="replace")
    except (LookupError, ValueError):
        text = data[: MAX_TEXT_CHARS * 4].decode("utf-8", errors="replace")
    return text[:MAX_TEXT_CHARS].replace("\r\n", "\n")


def clean(text: str) -> str:
    """Replace surrogate escapes (undecodable bytes kept by the parser) with U+FFFD."""
    return text.encode("utf-8", errors="replace").decode("utf-8")


def one_line(text: str) -> str:
    return _SPACES.sub(" ", text).strip()


def find_addresses(text: str) -> list[str]:
    return [match.group(0).strip(".") for match in _ADDRESS.finditer(text)]


def address_in(text: str | None) -> str | None:
    """The first address in a field like ``rfc822; <user@example.com>``, or None."""
    if not text:
        return None
    kind, separator, rest = text.partition(";")
    found = find_addresses(rest if separator and "@" not in kind else text)
    return found[0] if found else None


def _as_text(message: Message) -> str:
    """Headers (and a leaf body) of a parsed block or message, as text."""
    lines = [f"{name}: {clean(str(value))}" for name, value in message.items()]
    if not message.is_multipart():
        body = message.get_payload()
        if isinstance(body, str) and body:
            lines.extend(("", clean(body)))
    return "\n".join(lines)


def headers_block(part: Message) -> Message | None:
    """The header block of an attached original: the first message inside a message/rfc822
    part, or a text/rfc822-headers part parsed as headers."""
    payload = part.get_payload()
    if isinstance(payload, list):
        inner = payload[0] if payload else None
        return inner if isinstance(inner, Message) else None
    text = text_of(part)
    if not text.strip():
        return None
    return message_from_bytes(text.encode("utf-8", errors="replace")[:MAX_BYTES],
                              policy=compat32)
