"""Mailboxes (``"Name" <a@b.c>``) and header values, on top of :mod:`engine.addresses` (pure).

A display name is a quoted string or a phrase of atoms, checked like any address text and at
most :data:`MAX_DISPLAY_NAME_CHARS` characters; written into a header it is quoted when needed
and RFC 2047-encoded when non-ASCII. A header value is one line of at most 998 octets.
"""

from __future__ import annotations

import re
import unicodedata
from email.charset import Charset
from email.utils import formataddr

from engine.addresses import (
    ATEXT,
    LINE_BREAKS,
    MAX_INPUT_CHARS,
    Address,
    AddressError,
    check_text,
    parse_address,
    reject_line_breaks,
)
from engine.errors import HeraldError

MAX_LINE_OCTETS = 998  # RFC 5322 2.1.1
MAX_DISPLAY_NAME_CHARS = 100  # worst case (4-octet characters, encoded) still fits one line
_ENCODED_WORD_OCTETS = 45  # UTF-8 octets per RFC 2047 word: base64 60 + 12 overhead <= 75
_HEADER_NAME = re.compile(r"[\x21-\x39\x3b-\x7e]+\Z")  # printable ASCII except ':'
# Characters email.utils.formataddr would quote, plus "=?" handled separately (encoded words).
_NEEDS_QUOTING = re.compile(r'[][\\()<>@,:;".]')
_PLAIN_VALUE = re.compile(r"[\t\x20-\x7e]*\Z")  # printable ASCII and tabs: nothing to check


class HeaderError(HeraldError, ValueError):
    """A header name or value cannot be written safely; the message says why."""


def parse_mailbox(text: str) -> tuple[str | None, Address]:
    """Parse a From/To/Reply-To value: ``"Name" <a@b.c>``, ``Name <a@b.c>`` or ``a@b.c``.

    Returns the display name (None when absent or empty) and the address. Raises AddressError."""
    if not isinstance(text, str):
        raise AddressError("mailbox must be a string")
    reject_line_breaks(text, "mailbox")
    if len(text) > MAX_INPUT_CHARS:
        raise AddressError(f"mailbox longer than {MAX_INPUT_CHARS} characters")
    text = text.strip()
    if not text.endswith(">"):
        return None, parse_address(text)
    opening = _angle_start(text)
    name_text, spec = text[:opening].strip(), text[opening + 1 : -1]
    name = _parse_display_name(name_text) if name_text else None
    return (name or None), parse_address(spec)


def format_mailbox(display_name: str | None, address: Address) -> str:
    """Render a mailbox for a header: the name quoted when needed and RFC 2047-encoded when
    non-ASCII (or when it looks like an encoded word). The address uses A-labels unless the local
    part is non-ASCII, in which case the message must go out with SMTPUTF8 anyway (RFC 6532)."""
    spec = str(address) if address.needs_smtputf8 else address.for_smtp
    if not display_name:
        return spec
    _check_display_name(display_name)
    if display_name.isspace():
        return spec
    if display_name.isascii() and "=?" not in display_name:
        if address.needs_smtputf8:
            name = display_name.replace("\\", "\\\\").replace('"', '\\"')
            quoted = f'"{name}"' if _NEEDS_QUOTING.search(display_name) else name
            return f"{quoted} <{spec}>"
        return formataddr((display_name, spec))
    return f"{_encoded_words(display_name)} <{spec}>"


def check_header_value(name: str, value: str) -> None:
    """Raise HeaderError unless ``name: value`` is one safe header line (RFC 5322 field name, no
    line breaks or control characters in the value, at most 998 octets)."""
    if not name or not _HEADER_NAME.match(name):
        raise HeaderError(f"header name {name!r} must be printable ASCII without ':' or spaces")
    for char in "" if _PLAIN_VALUE.match(value) else value:
        if char in LINE_BREAKS:
            raise HeaderError(f"header {name} contains a line break or NUL")
        if char != "\t" and unicodedata.category(char) in ("Cc", "Cs"):
            raise HeaderError(f"header {name} contains a control character")
    octets = len(name) + 2 + len(value.encode("utf-8"))
    if octets > MAX_LINE_OCTETS:
        raise HeaderError(f"header {name} is {octets} octets long; the limit is {MAX_LINE_OCTETS}")


def _angle_start(text: str) -> int:
    """Index of the '<' that opens the angle-addr ending text, skipping quoted display names."""
    in_quotes = escaped = False
    opening = -1
    for index, char in enumerate(text[:-1]):
        if escaped:
            escaped = False
        elif in_quotes and char == "\\":
            escaped = True
        elif char == '"':
            in_quotes = not in_quotes
        elif char == "<" and not in_quotes:
            if opening >= 0:
                raise AddressError("mailbox has more than one '<'")
            opening = index
    if in_quotes:
        raise AddressError("display name has an unterminated quote")
    if opening < 0:
        raise AddressError("mailbox ends with '>' but has no matching '<'")
    return opening


def _parse_display_name(text: str) -> str:
    """Decode a quoted display name or validate an unquoted phrase (atoms, spaces and dots)."""
    if text.startswith('"'):
        if len(text) < 2 or not text.endswith('"') or _odd_escape(text):
            raise AddressError("display name has an unterminated quote")
        chars: list[str] = []
        escaped = False
        for char in text[1:-1]:
            if escaped:
                chars.append(char)
                escaped = False
            elif char == "\\":
                escaped = True
            elif char == '"':
                raise AddressError("display name has a '\"' inside quotes; escape it as \\\"")
            else:
                chars.append(char)
        name = "".join(chars)
    else:
        for char in text:
            if char in ATEXT or char in " ." or not char.isascii():
                continue
            raise AddressError(f"display name contains {char!r}; put the name in double quotes")
        name = text
    _check_display_name(name)
    return name


def _encoded_words(text: str) -> str:
    """RFC 2047 encoded words of at most 75 characters each, separated by spaces (which decoders
    drop between encoded words), never splitting a character."""
    charset = Charset("utf-8")
    words: list[str] = []
    chunk: list[str] = []
    size = 0
    for char in text:
        octets = len(char.encode("utf-8"))
        if size + octets > _ENCODED_WORD_OCTETS:
            words.append(charset.header_encode("".join(chunk)))
            chunk, size = [], 0
        chunk.append(char)
        size += octets
    words.append(charset.header_encode("".join(chunk)))
    return " ".join(words)


def _odd_escape(text: str) -> bool:
    """True when the closing quote of text is itself escaped (an odd run of backslashes)."""
    run = len(text) - 1 - len(text[:-1].rstrip("\\"))
    return run % 2 == 1


def _check_display_name(name: str) -> None:
    check_text(name, "display name")
    if len(name) > MAX_DISPLAY_NAME_CHARS:
        raise AddressError(f"display name longer than {MAX_DISPLAY_NAME_CHARS} characters")
