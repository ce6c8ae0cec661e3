"""Which recipients the inbound server accepts, and what each one is (pure).

Only three kinds, all at ``[mta] bounce_domain`` except the configured feedback addresses:

- ``bounce``: a signed per-message return path ``b-<token>@<bounce_domain>`` (DSNs,
  auto-replies, and complaints some providers send to the return path);
- ``feedback``: a configured feedback-loop / abuse address (ARF reports);
- ``unsubscribe``: a signed ``unsub-<token>@<bounce_domain>`` from ``List-Unsubscribe``.

Anything else is refused with a 550 and a reply text that says why: the server is never a
relay, and a forged or tampered token is told apart from an unknown mailbox.
"""

from __future__ import annotations

import base64
import uuid
from dataclasses import dataclass

from engine.addresses import AddressError
from engine.link_keys import LinkKeys
from mta.queue.return_paths import PREFIX as BOUNCE_PREFIX
from mta.queue.return_paths import BadReturnPath, message_id_from
from mta.suppression.addresses import normalise, normalise_lenient
from mta.suppression.tokens import MAILTO_PREFIX, BadToken, read_unsubscribe_token

BOUNCE = "bounce"
FEEDBACK = "feedback"
UNSUBSCRIBE = "unsubscribe"

RELAY_DENIED = "550 5.7.1 Relaying denied: this server only takes mail for its bounce domain"
NO_MAILBOX = "550 5.1.1 No such mailbox here"
BAD_ADDRESS = "550 5.1.3 Malformed recipient address"
NOT_CANONICAL = "550 5.7.1 Invalid address: token is not in canonical form"


@dataclass(frozen=True, slots=True)
class Recipient:
    """An accepted recipient: its kind and, for signed addresses, the message it names."""

    address: str  # normalised
    kind: str  # bounce | feedback | unsubscribe
    message_id: uuid.UUID | None = None

    def to_json(self) -> list[str | None]:
        return [self.address, self.kind, str(self.message_id) if self.message_id else None]


class Refused(ValueError):
    """The recipient is not accepted; ``reply`` is the full SMTP reply to send."""

    def __init__(self, reply: str) -> None:
        super().__init__(reply)
        self.reply = reply


@dataclass(frozen=True, slots=True)
class RecipientPolicy:
    bounce_domain: str  # normalised (lower-case ASCII)
    bounce_secret: bytes
    link_keys: LinkKeys
    feedback: frozenset[str]  # normalised feedback addresses

    @classmethod
    def build(cls, bounce_domain: str, bounce_secret: bytes, link_keys: LinkKeys,
              feedback: frozenset[str]) -> RecipientPolicy:
        # lenient: a test setup may use a one-label bounce domain such as "localhost"
        domain = normalise_lenient(f"postmaster@{bounce_domain}").partition("@")[2]
        return cls(domain, bounce_secret, link_keys, feedback)

    def classify(self, address: str) -> Recipient:
        """The accepted recipient ``address`` is; raises :class:`Refused` with the reply."""
        if "@" not in address or address.startswith("@"):
            raise Refused(BAD_ADDRESS)
        try:
            normalised = normalise(address)
        except AddressError:
            # Herald's own unsubscribe addresses have a local part longer than RFC 5321's 64
            # octets; the signature checks below decide for them. Anything else fails there.
            normalised = normalise_lenient(address)
        if normalised in self.feedback:
            return Recipient(normalised, FEEDBACK)
        local, _, domain = normalised.rpartition("@")
        if domain != self.bounce_domain:
            raise Refused(RELAY_DENIED)
        if local.startswith(BOUNCE_PREFIX):
            try:
                message_id = message_id_from(self.bounce_secret, normalised)
            except BadReturnPath as exc:
                raise Refused(f"550 5.7.1 Invalid bounce address: {exc}") from None
            if not canonical_base32(local[len(BOUNCE_PREFIX):]):
                raise Refused(NOT_CANONICAL)
            return Recipient(normalised, BOUNCE, message_id)
        if local.startswith(MAILTO_PREFIX):
            try:
                message_id = read_unsubscribe_token(self.link_keys,
                                                    local[len(MAILTO_PREFIX):])
            except BadToken as exc:
                raise Refused(f"550 5.7.1 Invalid unsubscribe address: {exc}") from None
            if not canonical_base32(local[len(MAILTO_PREFIX):].partition(".")[2]):
                raise Refused(NOT_CANONICAL)
            return Recipient(normalised, UNSUBSCRIBE, message_id)
        raise Refused(NO_MAILBOX)


def canonical_base32(token: str) -> bool:
    """True when ``token`` is the one unpadded lower-case base32 spelling of its bytes. The
    last character of such a token carries unused bits: without this check several spellings
    would decode to the same signed bytes, and a tampered address would be accepted."""
    if not token or not token.isascii():
        return False
    try:
        raw = base64.b32decode(token.upper() + "=" * (-len(token) % 8))
    except ValueError:  # binascii.Error is a ValueError
        return False
    return base64.b32encode(raw).decode().rstrip("=").lower() == token
