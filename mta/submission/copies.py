"""One submitted SMTP transaction -> one outbound message per envelope recipient (pure).

The message goes through the same checks as raw MIME posted to ``POST /v1/messages``
(:func:`mta.compose.check_raw`: line lengths, one valid From, no receivers' headers, Bcc
removed, Date and Message-ID added when missing) and the same sender rule
(:class:`mta.senders.SenderPolicy` on From and Sender), except that the recipients are the
envelope's: one need not appear in To or Cc (a Bcc recipient does not).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import format_datetime

from engine.addresses import Address, AddressError, parse_address
from mta.compose import check_raw
from mta.errors import InvalidMessage
from mta.queue.enqueue import OutboundMessage
from mta.senders import SenderPolicy

SOURCE = "submission"  # outbound_messages.source


class Refused(Exception):
    """The transaction cannot be accepted; ``reply`` is the SMTP reply to send."""

    def __init__(self, reply: str) -> None:
        super().__init__(reply)
        self.reply = reply


def envelope_address(text: str, smtputf8: bool) -> Address:
    """A MAIL FROM / RCPT TO address; Refused with the reply when it is not usable."""
    try:
        address = parse_address(text)
    except AddressError as exc:
        raise Refused(f"553 5.1.3 Bad address syntax: {exc}") from None
    if address.needs_smtputf8 and not smtputf8:
        raise Refused("553 5.6.7 A non-ASCII address needs the SMTPUTF8 parameter on MAIL")
    return address


def sender_refusal(policy: SenderPolicy, key_domains: frozenset[str], field: str,
                   address: Address) -> Refused | None:
    refusal = policy.refusal(key_domains, address)
    return Refused(f"550 5.7.1 {field}: {refusal}") if refusal else None


def received_header(hostname: str, helo: str | None, queue_id: str,
                    now: datetime | None = None) -> bytes:
    """The trace field RFC 5321 asks of a receiving server; the client's address is left out
    (submission clients are people's machines)."""
    helo_text = "".join(c for c in (helo or "unknown") if 32 < ord(c) < 127)[:100] or "unknown"
    stamp = format_datetime(now or datetime.now(UTC))
    return (f"Received: from {helo_text}\r\n\tby {hostname} (Herald) with ESMTPSA id "
            f"{queue_id};\r\n\t{stamp}\r\n").encode()


@dataclass(frozen=True, slots=True)
class Transaction:
    key_domains: frozenset[str]  # the authenticated key's sender domains
    recipients: tuple[Address, ...]
    data: bytes  # CRLF, no bare CR or LF (checked before)
    trace: bytes = b""  # a Received field to put first


def build_copies(transaction: Transaction, policy: SenderPolicy,
                 max_size: int) -> list[OutboundMessage]:
    """The messages to queue, one per recipient; Refused (5xx) when the message is not
    acceptable for any of them."""
    messages = []
    for recipient in transaction.recipients:
        try:
            composed = check_raw(transaction.data, recipient.for_smtp,
                                 envelope_recipients=True)
        except InvalidMessage as exc:
            raise Refused(f"550 5.6.0 Message refused: {exc}") from None
        for field, address in (("From", composed.header_from), ("Sender", composed.sender)):
            refused = address and sender_refusal(policy, transaction.key_domains, field,
                                                 address)
            if refused:
                raise refused
        body = transaction.trace + composed.body
        if len(body) > max_size:
            raise Refused(f"552 5.3.4 Message is {len(body)} octets; the limit is {max_size}")
        messages.append(OutboundMessage(composed.header_from, recipient, body,
                                        source=SOURCE, sender=composed.sender))
    return messages
