"""Contact tokens: how a sender's backend vouches for who a browser event is about (pure).

A browser holds only the public site key, so it cannot be trusted to name a contact. The
sender's backend, which knows who is logged in, signs a short-lived token with the contact-token
secret of its publishable key (shown once by ``herald keys create --publishable``), puts it in
the page, and the pixel sends it as ``contact_token=...``::

    v1.<key id>.<base64url(contact id)>.<expires, Unix seconds>.<base64url(signature)>
    signature = HMAC-SHA256(secret as UTF-8, "v1.<key id>.<base64url(contact id)>.<expires>")

base64url is without padding. The key id names the key (and so the secret) that signed it: a
site rotates by creating a new publishable key, minting with its secret, then revoking the old
key. A token is accepted only by the pixel key it names, before it expires.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re
from dataclasses import dataclass

VERSION = "v1"
MAX_TOKEN_LENGTH = 600
MAX_CONTACT_ID_LENGTH = 255
_KEY_ID = re.compile(r"^[0-9a-f]{1,32}$")
_EXPIRES = re.compile(r"^[0-9]{1,12}$")


class ContactTokenError(ValueError):
    """A token is refused; ``reason`` is a short metric label (malformed, foreign_key,
    bad_signature, expired)."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


@dataclass(frozen=True, slots=True)
class ContactToken:
    key_id: str
    contact_id: str
    expires_at: int  # Unix seconds


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    if not re.fullmatch(r"[A-Za-z0-9_-]*", text):
        raise ValueError("not base64url")
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _signature(secret: str, payload: str) -> bytes:
    return hmac.new(secret.encode(), payload.encode(), hashlib.sha256).digest()


def mint(key_id: str, secret: str, contact_id: str, expires_at: int) -> str:
    """A token for ``contact_id`` valid until ``expires_at`` (Unix seconds)."""
    if not _KEY_ID.match(key_id):
        raise ValueError("not a key id")
    if not contact_id or len(contact_id) > MAX_CONTACT_ID_LENGTH or not contact_id.isprintable():
        raise ValueError(f"a contact id is 1 to {MAX_CONTACT_ID_LENGTH} printable characters")
    if expires_at < 0:
        raise ValueError("expires_at cannot be negative")
    payload = f"{VERSION}.{key_id}.{_b64(contact_id.encode())}.{expires_at}"
    return f"{payload}.{_b64(_signature(secret, payload))}"


def parse(token: str) -> tuple[ContactToken, str, bytes]:
    """(claims, signed payload, signature) of a well-formed token; nothing is verified yet."""
    if len(token) > MAX_TOKEN_LENGTH:
        raise ContactTokenError("malformed", "the contact token is too long")
    parts = token.split(".")
    if len(parts) != 5 or parts[0] != VERSION or not _KEY_ID.match(parts[1]) \
            or not _EXPIRES.match(parts[3]):
        raise ContactTokenError("malformed", "not a contact token")
    try:
        contact_id = _unb64(parts[2]).decode("utf-8")
        signature = _unb64(parts[4])
    except (ValueError, binascii.Error, UnicodeDecodeError):
        raise ContactTokenError("malformed", "not a contact token") from None
    if not contact_id or len(contact_id) > MAX_CONTACT_ID_LENGTH \
            or not contact_id.isprintable():
        raise ContactTokenError("malformed", "the contact token names no valid contact id")
    return (ContactToken(parts[1], contact_id, int(parts[3])), ".".join(parts[:4]), signature)


def verify(token: str, *, key_id: str, secret: str | None, now: float) -> ContactToken:
    """The claims of ``token`` if it was signed with ``secret`` for the pixel key ``key_id``
    and has not expired at ``now`` (Unix seconds); else :class:`ContactTokenError`."""
    claims, payload, signature = parse(token)
    if claims.key_id != key_id:
        raise ContactTokenError("foreign_key", "the contact token was made for another key")
    if secret is None:
        raise ContactTokenError("foreign_key", "this key has no contact-token secret")
    if not hmac.compare_digest(signature, _signature(secret, payload)):
        raise ContactTokenError("bad_signature", "the contact token's signature is wrong")
    if claims.expires_at <= now:
        raise ContactTokenError("expired", "the contact token has expired")
    return claims
