"""RFC 3834 automatic replies (out of office, vacation, autoresponders): not bounces, the
address is alive. Recognised by their headers (Auto-Submitted: auto-replied, X-Autoreply,
Precedence: auto_reply, ...) or, failing those, by the usual subjects. Pure."""

from __future__ import annotations

import re
from email.message import Message

from mta.bounces.fields import original_of
from mta.bounces.mime import address_in, header
from mta.bounces.report import RecipientResult, Report

_HEADERS: tuple[tuple[str, re.Pattern[str]], ...] = (
    ("Auto-Submitted", re.compile(r"^\s*auto-replied", re.I)),
    ("X-Autoreply", re.compile(r".")),
    ("X-Autorespond", re.compile(r".")),
    ("X-Autoresponder", re.compile(r".")),
    ("Precedence", re.compile(r"^\s*auto[_-]reply", re.I)),
    ("X-Apple-Action", re.compile(r"vacation", re.I)),
    ("X-Vacation", re.compile(r".")),
)
_SUBJECT = re.compile(
    r"^\s*(?:out of (?:the )?office|auto(?:matic|matische)?[ -]?(?:reply|response|antwort|"
    r"réponse)|away from|on vacation|vacation reply|abwesenheit|absence|i am away|i'm away|"
    r"réponse automatique|respuesta automática|risposta automatica)",
    re.I,
)
_BOUNCE_SENDER = re.compile(r"mailer-daemon|postmaster|mail delivery", re.I)


def is_auto_reply(message: Message, weak: bool = False) -> bool:
    """True for an automatic reply by its headers; with ``weak``, by its subject too (used only
    after the bounce parsers found nothing). A message from a mailer daemon never is."""
    if _BOUNCE_SENDER.search(header(message, "From") or ""):
        return False
    for name, pattern in _HEADERS:
        value = header(message, name)
        if value is not None and pattern.search(value):
            return True
    return weak and bool(_SUBJECT.search(header(message, "Subject") or ""))


def parse_auto_reply(message: Message) -> Report:
    """The auto-reply's sender as its one recipient: the address we mailed, alive."""
    original = original_of(message)
    address = address_in(header(message, "From")) or address_in(header(message, "Reply-To"))
    recipient = RecipientResult(address, None, None, False, "auto_reply")
    return Report("auto_reply", (recipient,), None,
                  original.message_id or header(message, "In-Reply-To"),
                  original.return_path or address_in(header(message, "To")),
                  original.recipient or address)
