"""Signed unsubscribe tokens (pure): a key id, the message id and an HMAC, in base32 so the same
token fits a URL path and a case-insensitive mailto local part.

``<kid>.<base32(message id + HMAC-SHA256(key, "unsubscribe" kid message id)[:12])>``; as a
mailto local part, ``unsub-<token>`` is at most 60 octets. Only the one canonical base32 spelling
of the bytes is accepted (the last character carries unused bits). Several
keys may be configured; the first signs, all verify, so keys can be rotated without breaking
links already in mailboxes. Comparison uses :func:`hmac.compare_digest`.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import uuid

from engine.link_keys import KID, LinkKeys

MAILTO_PREFIX = "unsub-"
_MAC_BYTES = 12  # 96 bits; keeps the mailto local part within RFC 5321's 64 octets
MAX_TOKEN = 80


class BadToken(ValueError):
    """The token is malformed, signed by an unknown key, or its signature does not match."""


def _mac(secret: bytes, kid: str, message_id: uuid.UUID) -> bytes:
    data = b"unsubscribe\0" + kid.encode() + b"\0" + message_id.bytes
    return hmac.new(secret, data, hashlib.sha256).digest()[:_MAC_BYTES]


def unsubscribe_token(keys: LinkKeys, message_id: uuid.UUID) -> str:
    raw = message_id.bytes + _mac(keys.secrets[keys.current], keys.current, message_id)
    return f"{keys.current}.{base64.b32encode(raw).decode().rstrip('=').lower()}"


def read_unsubscribe_token(keys: LinkKeys, token: str) -> uuid.UUID:
    """The message id a token names; raises BadToken for anything not signed by our keys."""
    if not isinstance(token, str) or len(token) > MAX_TOKEN or not token.isascii():
        raise BadToken("malformed unsubscribe token")
    kid, sep, body = token.lower().partition(".")
    if not sep or not KID.match(kid):
        raise BadToken("malformed unsubscribe token")
    secret = keys.secrets.get(kid)
    if secret is None:
        raise BadToken("unsubscribe token signed by an unknown key")
    try:
        raw = base64.b32decode(body.upper() + "=" * (-len(body) % 8))
    except (binascii.Error, ValueError):
        raise BadToken("malformed unsubscribe token") from None
    if len(raw) != 16 + _MAC_BYTES:
        raise BadToken("malformed unsubscribe token")
    if base64.b32encode(raw).decode().rstrip("=").lower() != body:
        raise BadToken("unsubscribe token is not in canonical form")
    message_id = uuid.UUID(bytes=raw[:16])
    if not hmac.compare_digest(raw[16:], _mac(secret, kid, message_id)):
        raise BadToken("unsubscribe token signature does not match")
    return message_id


def unsubscribe_url(public_url: str, keys: LinkKeys, message_id: uuid.UUID) -> str:
    return f"{public_url.rstrip('/')}/v1/unsubscribe/{unsubscribe_token(keys, message_id)}"


def unsubscribe_mailto(bounce_domain: str, keys: LinkKeys, message_id: uuid.UUID) -> str:
    return f"mailto:{MAILTO_PREFIX}{unsubscribe_token(keys, message_id)}@{bounce_domain}"


def token_from_mailto_address(address: str) -> str | None:
    """The token in an ``unsub-<token>@...`` recipient, or None if it is not one."""
    local = address.rpartition("@")[0].lower()
    return local[len(MAILTO_PREFIX):] if local.startswith(MAILTO_PREFIX) else None
