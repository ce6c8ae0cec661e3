"""Pure SMTP protocol helpers for the delivery client: no sockets, no aiosmtplib types.

- replies: split into the basic code, the RFC 3463 enhanced status code and the text; and split
  off a byte stream that may hold several (the replies to a pipelined group, RFC 2920);
- EHLO: the keywords that change how a message is sent, as a frozen record;
- wire checks: envelope addresses (no command injection, SMTPUTF8 detection) and the message body
  (CRLF line endings, 998-octet lines, 8-bit detection, dot-stuffing) prepared once per message.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

from engine.values import ASCII_DIGITS
from mta.errors import InvalidMessage, PermanentFailure

# RFC 3463 §2: class "." subject "." detail; class is 2, 4 or 5; subject 1-3 digits, detail 1-3.
_ENHANCED_CODE = re.compile(r"([245])\.(\d{1,3})\.(\d{1,3})(?=\s|$)")
# Replies are bounded: the text kept from one reply (all lines) never exceeds this many characters.
MAX_REPLY_TEXT = 4096


@dataclass(frozen=True, slots=True)
class SmtpReply:
    """One server reply: ``code`` (e.g. 550), ``enhanced`` (e.g. "5.1.1" or None) and ``text``."""

    code: int
    enhanced: str | None
    text: str

    @property
    def positive(self) -> bool:
        return 200 <= self.code < 400

    @property
    def transient(self) -> bool:
        return 400 <= self.code < 500

    @property
    def permanent(self) -> bool:
        return 500 <= self.code < 600

    def __str__(self) -> str:
        parts = [str(self.code)]
        if self.enhanced:
            parts.append(self.enhanced)
        if self.text:
            parts.append(self.text)
        return " ".join(parts)


def parse_reply(code: int, message: str) -> SmtpReply:
    """Split the enhanced status code off a reply's text (on every line of a multi-line reply).

    ``message`` is the reply text without the code, lines joined with "\\n" (aiosmtplib's shape).
    """
    lines = message[:MAX_REPLY_TEXT].split("\n")
    match = _ENHANCED_CODE.match(lines[0])
    if match is None:
        return SmtpReply(code, None, "\n".join(line.strip() for line in lines))
    enhanced = match.group(0)
    stripped = [
        line[len(enhanced) :].strip() if line.startswith(enhanced) else line.strip()
        for line in lines
    ]
    return SmtpReply(code, enhanced, "\n".join(stripped))


# Bounds on replies read off the wire (aiosmtplib's limits): one line, one whole reply.
MAX_REPLY_LINE_OCTETS = 8192
MAX_REPLY_OCTETS = 4 * MAX_REPLY_LINE_OCTETS


class MalformedReply(ValueError):
    """Bytes from the server that are not an SMTP reply (or one too long)."""


def split_replies(buffer: bytes | bytearray) -> tuple[list[SmtpReply], int]:
    """The complete replies at the start of ``buffer`` and how many octets they take; a partial
    reply at the end is left for later. Raises ``MalformedReply``.

    Each line is ``CODE`` then ``-`` (more lines follow), a space or nothing, then text; every
    line of one reply carries the same code (RFC 5321 §4.2.1)."""
    replies: list[SmtpReply] = []
    start = offset = 0
    code: int | None = None
    lines: list[str] = []
    while True:
        end = buffer.find(b"\n", offset)
        if end == -1:
            if len(buffer) - offset > MAX_REPLY_LINE_OCTETS or len(buffer) - start > \
                    MAX_REPLY_OCTETS:
                raise MalformedReply("reply too long")
            return replies, start
        line = bytes(buffer[offset:end]).rstrip(b"\r")
        if len(line) > MAX_REPLY_LINE_OCTETS:
            raise MalformedReply("reply line too long")
        if len(line) < 3 or not line[:3].isdigit() or line[3:4] not in (b"", b" ", b"-"):
            raise MalformedReply(f"not a reply line: {line[:80]!r}")
        this = int(line[:3])
        if code is not None and this != code:
            raise MalformedReply(f"a multi-line reply changes its code ({code} to {this})")
        code = this
        lines.append(line[4:].decode("utf-8", "replace"))
        offset = end + 1
        if line[3:4] == b"-":
            if offset - start > MAX_REPLY_OCTETS:
                raise MalformedReply("reply too long")
            continue
        replies.append(parse_reply(code, "\n".join(lines)))
        start, code, lines = offset, None, []


def synthetic_reply(code: int, enhanced: str, text: str) -> SmtpReply:
    """A reply Herald makes up for a failure the server never answered (timeout, disconnect)."""
    return SmtpReply(code, enhanced, text)


@dataclass(frozen=True, slots=True)
class ServerExtensions:
    """The ESMTP extensions from one EHLO reply that change how a message is sent."""

    starttls: bool = False
    eightbitmime: bool = False
    smtputf8: bool = False
    pipelining: bool = False
    enhanced_status_codes: bool = False
    # SIZE's declared limit: None when SIZE is not offered, 0 when offered without a limit.
    size_limit: int | None = None

    @classmethod
    def from_keywords(cls, keywords: Mapping[str, str]) -> ServerExtensions:
        """Build from ``{keyword: parameters}``; keywords are matched case-insensitively."""
        lowered = {key.lower(): value for key, value in keywords.items()}
        size_limit: int | None = None
        if "size" in lowered:
            raw = lowered["size"].strip()
            size_limit = int(raw) if ASCII_DIGITS.match(raw) and len(raw) <= 18 else 0
        return cls(
            starttls="starttls" in lowered,
            eightbitmime="8bitmime" in lowered,
            smtputf8="smtputf8" in lowered,
            pipelining="pipelining" in lowered,
            enhanced_status_codes="enhancedstatuscodes" in lowered,
            size_limit=size_limit,
        )

    @classmethod
    def from_ehlo_text(cls, message: str) -> ServerExtensions:
        """Parse an EHLO reply's text (first line is the server's name, then one keyword a line)."""
        keywords: dict[str, str] = {}
        for line in message.split("\n")[1:]:
            keyword, _, params = line.strip().partition(" ")
            if keyword:
                keywords[keyword] = params
        return cls.from_keywords(keywords)


# --- envelope and message wire checks -------------------------------------------------------

UnsendableReason = Literal["bad_address", "too_many_recipients", "too_large", "line_too_long"]

MAX_LINE_OCTETS = 998  # RFC 5322 §2.1.1 / RFC 5321 §4.5.3.1.6, excluding CRLF
MAX_ADDRESS_OCTETS = 254  # RFC 5321 §4.5.3.1.3: a path is at most 256 octets with its brackets
MAX_RECIPIENTS = 1000  # RFC 5321 §4.5.3.1.8 asks servers for 100; more per message is a bug

_LINE_ENDING = re.compile(rb"\r\n|\r|\n")
# A quoted local part may hold spaces and specials; it is checked apart from the rest.
_QUOTED_LOCAL_PART = re.compile(r'"(?:[^"\\\x00-\x1f\x7f]|\\[^\x00-\x1f\x7f])*"(?=@)')
# Controls (CR, LF, NUL, ...), space, DEL and angle brackets would break or inject a command line.
_FORBIDDEN_IN_ADDRESS = re.compile(r"[\x00-\x20\x7f<>]")


class UnsendableMessage(InvalidMessage, PermanentFailure):
    """The message or its envelope cannot be put on the wire as given; ``reason`` says why."""

    def __init__(self, reason: UnsendableReason, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason: UnsendableReason = reason
        self.detail = detail


@dataclass(frozen=True, slots=True)
class PreparedMessage:
    """A message ready for DATA: ``wire`` has CRLF line endings, dot-stuffing and the final
    ".CRLF"; ``size`` counts the octets before dot-stuffing (the RFC 1870 SIZE value)."""

    wire: bytes
    size: int
    eight_bit: bool
    utf8_headers: bool = False  # unencoded UTF-8 in the header section: needs SMTPUTF8


def prepare_message(message: bytes, *, max_bytes: int) -> PreparedMessage:
    """Normalise line endings to CRLF, enforce the line and size limits, dot-stuff.

    Raises ``UnsendableMessage`` ("too_large", "line_too_long"). Written with bytes methods,
    not regular expressions, on the common path: this runs once per message at thousands/s.
    """
    if len(message) > max_bytes:
        raise UnsendableMessage("too_large", f"message is {len(message)} octets, limit {max_bytes}")
    crlf = message.count(b"\r\n")
    if message.count(b"\n") == crlf and message.count(b"\r") == crlf:
        normalized = message  # already CRLF only: the usual case
    else:
        normalized = _LINE_ENDING.sub(b"\r\n", message)
    if not normalized.endswith(b"\r\n"):
        normalized += b"\r\n"
    lines = normalized.split(b"\r\n")
    if max(map(len, lines)) > MAX_LINE_OCTETS:
        line_number = next(n for n, line in enumerate(lines, 1) if len(line) > MAX_LINE_OCTETS)
        raise UnsendableMessage(
            "line_too_long", f"line {line_number} is longer than {MAX_LINE_OCTETS} octets"
        )
    stuffed = normalized.replace(b"\r\n.", b"\r\n..")
    if stuffed.startswith(b"."):
        stuffed = b"." + stuffed
    eight_bit = not normalized.isascii()
    utf8_headers = eight_bit and not normalized.partition(b"\r\n\r\n")[0].isascii()
    return PreparedMessage(
        wire=stuffed + b".\r\n", size=len(normalized), eight_bit=eight_bit,
        utf8_headers=utf8_headers,
    )


def check_address(address: str, *, role: str) -> bool:
    """Refuse what could break the command line; return True if the address is non-ASCII."""
    try:
        octets = len(address.encode("utf-8"))
    except UnicodeEncodeError:
        raise UnsendableMessage("bad_address", f"{role} address is not valid Unicode") from None
    if octets > MAX_ADDRESS_OCTETS:
        raise UnsendableMessage(
            "bad_address", f"{role} address is longer than {MAX_ADDRESS_OCTETS} octets"
        )
    rest = _QUOTED_LOCAL_PART.sub("", address, count=1)
    if _FORBIDDEN_IN_ADDRESS.search(rest):
        raise UnsendableMessage(
            "bad_address", f"{role} address {address!r} holds a control, space or angle bracket"
        )
    return not address.isascii()


def check_envelope(mail_from: str, recipients: Sequence[str]) -> bool:
    """Validate the envelope (the null sender "" is allowed, empty recipients are not).

    Returns True when the envelope needs SMTPUTF8 (some address is non-ASCII).
    """
    if isinstance(recipients, str):
        raise TypeError("recipients must be a sequence of addresses, not one string")
    if not recipients:
        raise UnsendableMessage("bad_address", "no recipients")
    if len(recipients) > MAX_RECIPIENTS:
        raise UnsendableMessage(
            "too_many_recipients", f"{len(recipients)} recipients, limit {MAX_RECIPIENTS}"
        )
    needs_utf8 = check_address(mail_from, role="sender")
    for recipient in recipients:
        if not recipient:
            raise UnsendableMessage("bad_address", "empty recipient address")
        needs_utf8 = check_address(recipient, role="recipient") or needs_utf8
    return needs_utf8
