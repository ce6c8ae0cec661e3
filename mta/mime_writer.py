"""A text message's bytes written directly (pure): what the ``email`` package's compat32
generator writes for a text/plain, text/html or multipart/alternative message, without building
and walking ``email.message`` objects (about a tenth of the cost).

Header fields are folded exactly as compat32 folds them at 78 columns (:func:`header_field`: a
plain ASCII value by a port of its algorithm, anything else by compat32 itself), so every header
line is byte for byte what the ``email`` package writes. Bodies are UTF-8 quoted-printable from
:func:`binascii.b2a_qp` (C) with CRLF line ends and lines of at most 76 octets; its spelling
differs from the ``email`` package's pure-Python encoder in two places only (a lone ``.`` line
is written ``=2E``; trailing white space before a soft line break is encoded), and what a reader
decodes is the same.
"""

from __future__ import annotations

import binascii
import email.policy
import os
import random
import re
import sys
import time
from datetime import datetime
from email.utils import format_datetime
from typing import cast

from engine.privacy.forgetting import remembers_personal_data

MAX_COLUMNS = 78  # compat32's folding width (RFC 5322 2.1.1's recommendation)
_WIRE = email.policy.compat32.clone(linesep="\r\n", max_line_length=MAX_COLUMNS)
# Printable ASCII words separated by single spaces: the values :func:`_fold_plain` folds.
_PLAIN = re.compile(r"[!-~]+(?: [!-~]+)*\Z")
# compat32's preference order for folding points: after ';', after ',', then at a space (tabs
# never occur here)
_SPLIT_AFTER = ";,"
_BOUNDARY_DIGITS = len(repr(sys.maxsize - 1))
_QP_LINE = 76  # RFC 2045 6.7: encoded lines of at most 76 characters
_EQUALS = ord("=")

_PART_HEADERS = {
    subtype: (f'Content-Type: text/{subtype}; charset="utf-8"\r\nMIME-Version: 1.0\r\n'
              "Content-Transfer-Encoding: quoted-printable\r\n").encode()
    for subtype in ("plain", "html")
}


def header_field(name: str, value: str) -> bytes:
    """``name: value`` as compat32 writes it at 78 columns with CRLF, folded, CRLF-terminated.
    The caller has checked the value (:func:`engine.mailboxes.check_header_value`); non-ASCII
    values must already be RFC 2047 words or are encoded by compat32 as before."""
    if value.isascii() and _PLAIN.match(value):
        return _fold_plain(name, value).encode("ascii")
    return _WIRE.fold_binary(name, value)


def _fold_plain(name: str, value: str) -> str:
    """compat32's ``Header(value, header_name=name).encode(maxlinelen=78)`` for a plain value
    (``email.header._ValueFormatter``: words are added to the line; one that takes it past 78
    columns splits it after the last word ending in ';', else ',', else before the last word;
    a first word too long for the line after the field name starts on the next line)."""
    if len(name) + 2 + len(value) <= MAX_COLUMNS:
        return f"{name}: {value}\r\n"
    lines: list[str] = []
    # the line's pieces: each word with the folding white space before it (the value's first
    # word has none); words are never empty (single spaces between printable words)
    line: list[str] = []
    initial = len(name) + 2  # the field name and ": " on the first line
    length = initial
    space = ""
    for word in value.split(" "):
        piece = space + word
        space = " "
        line.append(piece)
        length += len(piece)
        if length <= MAX_COLUMNS:
            continue
        split = _split_point(line)
        if split is None:  # one word on the line: it stays over long
            if initial:  # the field name alone on the first line, the word on the next
                line.pop()
                lines.append("".join(line))
                piece = " " + word
                line, initial = [piece], 0
                length = len(piece)
            continue
        lines.append("".join(line[:split]))
        line, initial = line[split:], 0
        length = sum(map(len, line))
    if line or initial:
        lines.append("".join(line))
    return f"{name}: " + "\r\n".join(lines) + "\r\n"


def _split_point(line: list[str]) -> int | None:
    """Where compat32 splits an over-long line: after the last piece ending in ';', else ',',
    else before the last piece (every piece but the first follows a space); None for one."""
    for char in _SPLIT_AFTER:
        for index in range(len(line) - 1, 0, -1):
            if line[index - 1].endswith(char):
                return index
    return len(line) - 1 if len(line) > 1 else None


def quoted_printable(text: str) -> bytes:
    """UTF-8 quoted-printable with CRLF line ends and lines of at most 76 octets (CR, LF and
    CRLF in ``text`` are line ends, as for the ``email`` package); raises UnicodeEncodeError
    for a lone surrogate.

    Encoded line by line, each line as :func:`binascii.b2a_qp` encodes it inside the whole text
    (its encoding of a line depends on that line alone, and on whether a line end follows); the
    lines of the templates repeat in every message, so their encodings are remembered
    (:data:`_QP_LINES`)."""
    data = text.encode("utf-8")
    if b"\r" in data:
        data = data.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
    lines = data.split(b"\n")
    last = lines.pop()
    cache = _qp_lines
    out: list[bytes | None] = list(map(cache.get, lines))
    if None in out:
        for index, encoded in enumerate(out):
            if encoded is None:
                line = lines[index]
                # a line end follows: its own CRLF dropped
                encoded = out[index] = _qp_line(line + b"\n")[:-2]
                if len(cache) >= _QP_LINES:
                    cache.clear()
                cache[line] = encoded
    out.append(_qp_line(last))
    return b"\r\n".join(cast(list[bytes], out))  # no None is left


# Encoded lines remembered (cleared when full, and by :func:`forget_cached_lines`): a template's
# constant lines are encoded once, not in every message.
_QP_LINES = 4096
_qp_lines: dict[bytes, bytes] = {}


@remembers_personal_data
def forget_cached_lines() -> None:
    """Drop the remembered encodings (a contact was erased, and lines may name people)."""
    _qp_lines.clear()


def _qp_line(data: bytes) -> bytes:
    """One line of text (and its line end, if any) as CRLF-terminated quoted-printable lines
    (b2a_qp's soft line breaks included)."""
    lines = binascii.b2a_qp(data, istext=True).split(b"\n")
    if max(map(len, lines)) > _QP_LINE:  # b2a_qp's escaped white space ending a line
        _soft_breaks(lines)
    return b"\r\n".join(lines)


def _soft_breaks(lines: list[bytes]) -> None:
    """Lines longer than 76 octets cut into 75 octets and a soft break ('='), never inside an
    ``=XX`` escape (in a line that long every '=' starts one; soft breaks end shorter ones)."""
    for index, line in enumerate(lines):
        if len(line) <= _QP_LINE:
            continue
        pieces = []
        while len(line) > _QP_LINE:
            cut = _QP_LINE - 1
            if line[cut - 1] == _EQUALS:
                cut -= 1
            elif line[cut - 2] == _EQUALS:
                cut -= 2
            pieces.append(line[:cut])
            line = line[cut:]
        pieces.append(line)
        lines[index] = b"=\r\n".join(pieces)


_dates: tuple[datetime, str] | None = None
# The last datetime asked for and its value (datetimes are immutable: the same object, the same
# text).
_last_date: tuple[datetime | None, str] = (None, "")


def date_value(now: datetime) -> str:
    """The Date header's value for ``now`` (``email.utils.format_datetime``; the last one is
    kept, since many messages of the same second share it)."""
    global _dates, _last_date
    last = _last_date
    if last[0] is now:  # the very datetime again (a group's messages share their clock reading)
        return last[1]
    second = now.replace(microsecond=0)
    cached = _dates
    if cached is not None and cached[0] == second and cached[0].tzinfo is second.tzinfo:
        text = cached[1]
    else:
        text = format_datetime(second)
        _dates = (second, text)
    _last_date = (now, text)
    return text


_pid = os.getpid()


def _forked() -> None:
    global _pid
    _pid = os.getpid()


os.register_at_fork(after_in_child=_forked)


def message_id(domain: str) -> str:
    """A Message-ID value as ``email.utils.make_msgid(domain=...)`` makes it (the process id
    read once, and again in a forked child, instead of a system call per message)."""
    return f"<{int(time.time() * 100)}.{_pid}.{random.getrandbits(64)}@{domain}>"


def text_message(headers: bytes, text: str | None, html: str | None) -> bytes:
    """The whole message: ``headers`` (the fields after the MIME ones, each CRLF-terminated),
    then the text and/or HTML part; both make a multipart/alternative. The boundary cannot occur
    in the parts: a quoted-printable line never holds two '=' in a row."""
    if text is not None and html is not None:
        boundary = "=" * 15 + str(random.randrange(sys.maxsize)).zfill(_BOUNDARY_DIGITS) + "=="
        delimiter = f"\r\n--{boundary}\r\n".encode()
        return b"".join((
            f'Content-Type: multipart/alternative;\r\n boundary="{boundary}"\r\n'
            "MIME-Version: 1.0\r\n".encode(), headers, b"\r\n", delimiter[2:],
            _PART_HEADERS["plain"], b"\r\n", quoted_printable(text), delimiter,
            _PART_HEADERS["html"], b"\r\n", quoted_printable(html),
            f"\r\n--{boundary}--\r\n".encode()))
    subtype, body = ("plain", text) if text is not None else ("html", html or "")
    return b"".join((_PART_HEADERS[subtype], headers, b"\r\n", quoted_printable(body)))
