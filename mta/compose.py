"""Build RFC 5322 messages from the injection API's JSON, or check submitted raw MIME (pure).

Generated messages are 7-bit clean (quoted-printable / base64 as the stdlib chooses), CRLF, and
no line exceeds 998 octets. Every header value a user supplies is checked first, so nothing can
inject a header or an SMTP command.
"""

from __future__ import annotations

import email.policy
import functools
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from email.charset import QP, Charset
from email.header import Header
from email.message import Message
from email.mime.multipart import MIMEMultipart
from email.mime.text import MIMEText
from email.parser import BytesHeaderParser
from email.utils import format_datetime, getaddresses, make_msgid
from typing import Any

from engine.addresses import Address, AddressError, parse_address
from engine.mailboxes import HeaderError, check_header_value, format_mailbox, parse_mailbox
from mta.errors import InvalidMessage
from mta.mime_writer import date_value, header_field, message_id, text_message

MAX_LINE = 998
# Headers Herald writes itself, or that would change the message's structure or routing.
RESERVED_HEADERS = frozenset({
    "from", "to", "cc", "bcc", "subject", "date", "message-id", "mime-version", "content-type",
    "content-transfer-encoding", "dkim-signature", "return-path", "received", "sender",
})
# Headers only receiving systems write (their verdicts on SPF, DKIM, DMARC and ARC), and
# DKIM-Signature: Herald signs with its [[mta.dkim]] keys, and a signature made elsewhere would
# let a sender replay someone else's verdicts. Refused in raw MIME and in ``headers``.
RECEIVER_HEADERS = frozenset({"authentication-results", "received-spf", "dkim-signature",
                              "return-path"})
RECEIVER_HEADER_PREFIXES = ("arc-",)
# Removed from raw MIME: a Bcc header would show the hidden recipients to the one it reaches.
STRIPPED_HEADERS = frozenset({"bcc"})
MAX_EXTRA_HEADERS = 50
MAX_TAGS = 20
TAG_PATTERN = "^[A-Za-z0-9_.:\\-]{1,64}$"
_TAG = re.compile(TAG_PATTERN.replace("$", "\\Z"))
_WIRE = email.policy.compat32.clone(linesep="\r\n", max_line_length=78)
_QP_UTF8 = Charset("utf-8")
_QP_UTF8.body_encoding = QP


@dataclass(frozen=True, slots=True)
class ComposedMessage:
    header_from: Address
    recipient: Address
    body: bytes  # CRLF line endings, unsigned
    sender: Address | None = None  # a raw message's Sender header


def _field(message: str, where: str) -> InvalidMessage:
    return InvalidMessage(f"{where}: {message}")


def _mailbox(value: Any, where: str) -> tuple[str | None, Address]:
    if not isinstance(value, str):
        raise _field("must be a string like 'Name <user@example.com>'", where)
    try:
        return parse_mailbox(value)
    except AddressError as exc:
        raise _field(str(exc), where) from None


def _sender(value: Any) -> tuple[str | None, Address, bytes]:
    """The From mailbox: display name, address and its header field."""
    if not isinstance(value, str):
        raise _field("must be a string like 'Name <user@example.com>'", "from")
    return _parsed_sender(value)


@functools.lru_cache(maxsize=256)
def _parsed_sender(value: str) -> tuple[str | None, Address, bytes]:
    """Parsed and written once per value: senders are few, and their every message repeats
    them."""
    name, address = _mailbox(value, "from")
    return name, address, header_field("From", format_mailbox(name, address))


def _extra_headers(value: Any) -> list[tuple[str, str]]:
    if value is None:
        return []
    if not isinstance(value, dict):
        raise _field("must be an object of header names to string values", "headers")
    if len(value) > MAX_EXTRA_HEADERS:
        raise _field(f"at most {MAX_EXTRA_HEADERS} headers", "headers")
    headers = []
    for name, text in value.items():
        if not isinstance(text, str):
            raise _field("must be a string", f"headers.{name}")
        refused = _refused_name(name)
        if refused is not None:
            raise _field(refused, f"headers.{name}")
        try:
            check_header_value(name, text)
        except HeaderError as exc:
            raise _field(str(exc), f"headers.{name}") from None
        headers.append((name, text))
    return headers


@functools.lru_cache(maxsize=256)  # a few names (List-Unsubscribe, ...) in every message
def _refused_name(name: str) -> str | None:
    """Why a header of this name may not be given, or None."""
    if name.lower() in RESERVED_HEADERS:
        return "is set by Herald and cannot be given here"
    if _receiver_header(name):
        return "only a receiving system may add it"
    return None


def parse_tags(value: Any) -> list[str]:
    if value is None:
        return []
    if not isinstance(value, list) or len(value) > MAX_TAGS:
        raise _field(f"must be a list of at most {MAX_TAGS} tags", "tags")
    for tag in value:
        if not isinstance(tag, str) or not _TAG.match(tag):
            raise _field("each tag is 1-64 letters, digits, '_', '.', ':' or '-'", "tags")
    return list(value)


def compose(request: dict[str, Any], now: datetime | None = None,
            attachments: Sequence[Message] = ()) -> ComposedMessage:
    """Build a message from ``from``, ``to``, ``subject``, ``text``/``html``, ``headers``;
    ``attachments`` (MIME parts, :mod:`mta.attachments`) make it multipart/mixed."""
    from_name, from_address, from_field = _sender(request.get("from"))
    to_name, to_address = _mailbox(request.get("to"), "to")
    subject = request.get("subject")
    if not isinstance(subject, str):
        raise _field("is required and must be a string", "subject")
    try:
        check_header_value("Subject", subject)
    except HeaderError as exc:
        raise _field(str(exc), "subject") from None
    text, html = request.get("text"), request.get("html")
    if text is None and html is None:
        raise _field("give text and/or html (or raw)", "text")
    for name, part in (("text", text), ("html", html)):
        if part is not None and not isinstance(part, str):
            raise _field("must be a string", name)
    extra = _extra_headers(request.get("headers"))

    if attachments:
        return _compose_mime(from_name, from_address, to_name, to_address, subject, text, html,
                             extra, now, attachments)
    headers = [from_field,
               header_field("To", format_mailbox(to_name, to_address)),
               _encoded_field("Subject", subject),
               header_field("Date", date_value(now or datetime.now(UTC))),
               header_field("Message-ID", message_id(from_address.ascii_domain))]
    headers.extend(_encoded_field(name, value) for name, value in extra)
    head = b"".join(headers)
    check_line_lengths(head)  # body lines are quoted-printable: at most 76 octets
    try:
        body = text_message(head, text, html)
    except UnicodeEncodeError:
        raise _field("contains a lone surrogate (not UTF-8 text)", "text") from None
    return ComposedMessage(from_address, to_address, body)


def _encoded_field(name: str, value: str) -> bytes:
    """A checked header value: ASCII as it is, else RFC 2047-encoded (then folded as the
    ``email`` package folds it)."""
    return header_field(name, value if value.isascii() else Header(value, "utf-8").encode())


def _compose_mime(from_name: str | None, from_address: Address, to_name: str | None,
                  to_address: Address, subject: str, text: str | None, html: str | None,
                  extra: list[tuple[str, str]], now: datetime | None,
                  attachments: Sequence[Message]) -> ComposedMessage:
    """A message with attachments, built with the ``email`` package's compat32 classes (its
    text parts and headers are what :func:`mta.mime_writer.text_message` writes without
    them)."""
    message: Message
    if text is not None and html is not None:
        message = MIMEMultipart("alternative")
        message.attach(_text_part(text, "plain"))
        message.attach(_text_part(html, "html"))
    else:
        message = _text_part(text if text is not None else str(html),
                             "plain" if text is not None else "html")
    if attachments:
        mixed = MIMEMultipart("mixed")
        mixed.attach(message)
        for part in attachments:
            mixed.attach(part)
        message = mixed
    message["From"] = format_mailbox(from_name, from_address)
    message["To"] = format_mailbox(to_name, to_address)
    message["Subject"] = subject if subject.isascii() else Header(subject, "utf-8").encode()
    message["Date"] = format_datetime(now or datetime.now(UTC))
    message["Message-ID"] = make_msgid(domain=from_address.ascii_domain)
    for name, value in extra:
        message[name] = value if value.isascii() else Header(value, "utf-8").encode()
    body = message.as_bytes(policy=_WIRE)
    check_line_lengths(body)
    return ComposedMessage(from_address, to_address, body)


def _text_part(body: str, subtype: str) -> MIMEText:
    """A UTF-8, quoted-printable text part (MIMEText accepts a Charset; typeshed says str)."""
    return MIMEText(body, subtype, _QP_UTF8)  # type: ignore[arg-type]


def _receiver_header(name: str) -> bool:
    lowered = name.lower()
    return lowered in RECEIVER_HEADERS or lowered.startswith(RECEIVER_HEADER_PREFIXES)


def check_raw(raw: bytes, recipient_text: Any, now: datetime | None = None, *,
              envelope_recipients: bool = False) -> ComposedMessage:
    """Accept submitted MIME: CRLF-normalised, lines <= 998 octets, a valid From header (and
    Sender, if any), To or Cc naming the envelope recipient (a To is added when neither is
    given), no header that only receivers write; Bcc removed; Date and Message-ID added when
    missing. The envelope recipient comes from ``to``.

    ``envelope_recipients`` (SMTP submission): the recipients are those of the SMTP envelope,
    so one need not be named in To or Cc (a Bcc recipient is not), and no To is added."""
    _to_name, recipient = _mailbox(recipient_text, "to")
    body = normalise_line_endings(raw)
    check_line_lengths(body)
    head, separator, rest = body.partition(b"\r\n\r\n")
    if not separator:
        raise _field("has no blank line between header and body", "raw")
    fields = _header_fields(head)
    try:
        headers = BytesHeaderParser(policy=email.policy.compat32).parsebytes(head + b"\r\n\r\n")
    except Exception as exc:  # the stdlib parser is lenient; anything it raises is bad input
        raise _field(f"cannot be parsed: {exc}", "raw") from None
    for name in headers.keys():
        if _receiver_header(name):
            raise _field("only a receiving system may add it", f"raw.{name}")
    from_values = headers.get_all("From") or []
    if len(from_values) != 1:
        raise _field("must have exactly one From header", "raw")
    _name, from_address = _mailbox(str(from_values[0]).strip(), "raw.From")
    senders = headers.get_all("Sender") or []
    if len(senders) > 1:
        raise _field("must have at most one Sender header", "raw")
    sender = _mailbox(str(senders[0]).strip(), "raw.Sender")[1] if senders else None
    named = _addresses(headers, ("To", "Cc"))
    added = b""
    if envelope_recipients:
        pass
    elif not named:
        added += f"To: {format_mailbox(None, recipient)}\r\n".encode()
    elif recipient.for_smtp.lower() not in named:
        raise _field(f"To or Cc must name the recipient given in 'to' ({recipient})", "raw.To")
    if headers.get("Date") is None:
        added += f"Date: {format_datetime(now or datetime.now(UTC))}\r\n".encode()
    if headers.get("Message-ID") is None:
        added += f"Message-ID: {make_msgid(domain=from_address.ascii_domain)}\r\n".encode()
    kept = [field for field in fields if _field_name(field) not in STRIPPED_HEADERS]
    return ComposedMessage(from_address, recipient,
                           added + b"\r\n".join(kept) + b"\r\n\r\n" + rest, sender)


def _header_fields(head: bytes) -> list[bytes]:
    """The header section's fields, each with its continuation lines."""
    fields: list[bytes] = []
    for line in head.split(b"\r\n"):
        if line[:1] in (b" ", b"\t") and fields:
            fields[-1] += b"\r\n" + line
        else:
            fields.append(line)
    return fields


def _field_name(field: bytes) -> str:
    return field.partition(b":")[0].strip().decode("latin-1").lower()


def _addresses(headers: Message, names: tuple[str, ...]) -> set[str]:
    """The addresses (in SMTP form, lower case) in the headers ``names``; unparsable ones are
    skipped (they cannot name the recipient)."""
    found: set[str] = set()
    for name in names:
        for _display, text in getaddresses([str(value) for value in
                                            headers.get_all(name) or []]):
            try:
                found.add(parse_address(text).for_smtp.lower())
            except AddressError:
                continue
    return found


def normalise_line_endings(data: bytes) -> bytes:
    return data.replace(b"\r\n", b"\n").replace(b"\r", b"\n").replace(b"\n", b"\r\n")


def check_line_lengths(data: bytes) -> None:
    for number, line in enumerate(data.split(b"\r\n"), start=1):
        if len(line) > MAX_LINE:
            raise _field(f"line {number} is {len(line)} octets; the limit is {MAX_LINE}",
                         "message")
