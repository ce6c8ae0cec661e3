"""DKIM relaxed canonicalization (RFC 6376 3.4.2, 3.4.4) and header parsing, in one pass over
bytes: pure functions, equal to dkimpy's ``rfc822_parse`` and ``Relaxed`` on every input
(property-tested against them), without their per-line regex calls.

The header section is split into fields once; the body is never split into lines: bare LFs
become CRLF with one ``replace`` and whitespace runs are only rewritten when a tab or a double
space occurs, which generated mail seldom has.
"""

from __future__ import annotations

import functools
import itertools
import re
from typing import Final

from engine.privacy.forgetting import remembers_personal_data

Header = tuple[bytes, bytes]

_HEADER_END: Final = re.compile(rb"\n(?:\r?\n|\Z)")
_LINE_BREAK: Final = re.compile(rb"\r?\n")
_FIELD_NAME: Final = re.compile(rb"([\x21-\x7e]+?):")
# A whole field of a CRLF-only header section: name, colon, its line, continuation lines.
_CRLF_FIELD: Final = re.compile(rb"([\x21-\x7e]+?):([^\n]*\n(?:[ \t][^\n]*\n)*)")
# Bytes tested for as ints: ``9 in data`` is one memchr, while ``b"\t" in data`` first tries
# the needle as an int and raises and clears a TypeError inside CPython (3x slower on a short
# value); substrings are looked for with ``find`` for the same reason.
TAB: Final = 0x09
LF: Final = 0x0A
CR: Final = 0x0D

#: Runs of WSP that are not already one space.
WSP_RUN: Final = re.compile(rb"\t[\t ]*| [\t ]+")
# The body's checks, each a literal search by ``re``: on CPython 3.11 it scans a 3 KB body in
# about half the time ``bytes.find`` takes for these 2-3 byte needles, and a bare LF is found
# in one pass where comparing ``count(b"\n")`` with ``count(b"\r\n")`` takes two
# (docs/PERFORMANCE.md, "DKIM signing").
_BARE_LF: Final = re.compile(rb"\n(?<!\r\n)").search
_DOUBLE_SPACE: Final = re.compile(b"  ").search
_SPACE_BEFORE_CRLF: Final = re.compile(b" \r\n").search


class HeaderSyntaxError(ValueError):
    """A header line that is neither a field, a continuation nor an mbox ``From `` line."""


def split_message(message: bytes) -> tuple[list[Header], bytes]:
    """``(fields, body)`` as ``dkim.rfc822_parse`` returns them: each field's value keeps its
    folding with every line ending as CRLF; the body has bare LFs turned into CRLF.
    HeaderSyntaxError for a line that is no field (IndexError-free: a leading continuation
    line is an error too)."""
    if message.startswith((b"\n", b"\r\n")):
        head, body = b"", message[message.index(b"\n") + 1:]
    elif (end := _HEADER_END.search(message)) is not None:
        head, body = message[: end.start() + 1], message[end.end():]
    else:
        head, body = message, b""
    return parse_header_section(head), crlf_body(body)


def crlf_body(body: bytes) -> bytes:
    """The body with its bare LFs turned into CRLF (as dkimpy reads a message)."""
    if _BARE_LF(body) is not None:
        return body.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")
    return body


def parse_header_section(head: bytes) -> list[Header]:
    """The fields of a header section (which ends with its last line's line ending)."""
    if head.count(b"\n") == head.count(b"\r\n"):
        fields = _crlf_fields(head)
        if fields is not None:
            return fields
    return _fields_line_by_line(head)


def _crlf_fields(head: bytes) -> list[Header] | None:
    """The common case in one regex pass: a CRLF-only section made only of fields (each
    value is then a slice of the section); None when anything else occurs (the fields found
    then do not cover the whole section)."""
    fields: list[Header] = _CRLF_FIELD.findall(head)
    covered = sum(map(len, itertools.chain.from_iterable(fields))) + len(fields)
    return fields if covered == len(head) else None


def _fields_line_by_line(head: bytes) -> list[Header]:
    """dkimpy's algorithm: any line ending, mbox ``From `` lines skipped."""
    fields: list[list[bytes]] = []
    lines = _LINE_BREAK.split(head)
    if lines and lines[-1] == b"":
        lines.pop()
    for line in lines:
        if not line:
            break
        if line[0] in (0x09, 0x20):
            if not fields:
                raise HeaderSyntaxError("the message starts with a folded line")
            fields[-1][1] += line + b"\r\n"
            continue
        match = _FIELD_NAME.match(line)
        if match is not None:
            fields.append([match.group(1), line[match.end():] + b"\r\n"])
        elif not line.startswith(b"From "):
            raise HeaderSyntaxError(f"Unexpected characters in RFC822 header: {line!r}")
    return [(name, value) for name, value in fields]


def relaxed_field(name: bytes, value: bytes) -> bytes:
    """One field in relaxed canonical form, ``name:value`` with no line ending: the name in
    lower case, the value unfolded, WSP runs as one space, trimmed."""
    if LF in value:
        value = value.replace(b"\r\n", b"").replace(b"\n", b"")
    if TAB in value or value.find(b"  ") >= 0:
        value = WSP_RUN.sub(b" ", value)
    return name.lower().rstrip() + b":" + value.strip()


#: :func:`relaxed_field`, cached: most fields of a campaign's messages (From, Subject, Date,
#: MIME headers) repeat.
relaxed_header: Final = functools.lru_cache(maxsize=4096)(relaxed_field)
remembers_personal_data(relaxed_header.cache_clear)  # To and Subject may name people


def relaxed_body(body: bytes) -> bytes:
    """Relaxed body canonicalization of a CRLF body: WSP runs become one space, WSP at line
    ends goes, empty lines at the end go, and a non-empty body ends with one CRLF."""
    if TAB in body or _DOUBLE_SPACE(body) is not None:
        body = WSP_RUN.sub(b" ", body)
    if _SPACE_BEFORE_CRLF(body) is not None:
        body = body.replace(b" \r\n", b"\r\n")
    end = len(body)
    while body.endswith(b"\r\n", 0, end):
        end -= 2
    if end == 0:  # empty, or only empty lines: the empty body
        return b""
    return body + b"\r\n" if end == len(body) else body[: end + 2]
