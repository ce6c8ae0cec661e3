"""Signed double opt-in links (pure): ``{public_url}/v1/consent/confirm/{token}``.

``<kid>.<base64url(issued seconds, 8 bytes big-endian + contact id UTF-8)>.<base64url(MAC)>``
with MAC = HMAC-SHA256(key, "consent" kid payload) cut to 16 bytes, signed with the ``[http]
link_keys`` (the first signs, all verify: the unsubscribe links' keys). Only the canonical
unpadded spelling is accepted; a token past its time to live is refused too.
"""

from __future__ import annotations

import base64
import binascii
import hmac
from datetime import UTC, datetime

from engine.hmac_sha256 import hmac_sha256
from engine.link_keys import KID, LinkKeys

_MAC_BYTES = 16
MAX_TOKEN = 1600  # a 255-character contact id is at most 1020 bytes of UTF-8


class BadConsentToken(ValueError):
    """Malformed, signed by an unknown key, tampered with or expired."""


def _mac(secret: bytes, kid: str, payload: bytes) -> bytes:
    return hmac_sha256(secret, b"consent\0" + kid.encode() + b"\0" + payload)[:_MAC_BYTES]


def _encode(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _decode(text: str) -> bytes:
    if not text or not text.isascii():
        raise BadConsentToken("malformed consent token")
    try:
        raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError):
        raise BadConsentToken("malformed consent token") from None
    if _encode(raw) != text:
        raise BadConsentToken("consent token is not in canonical form")
    return raw


def consent_token(keys: LinkKeys, contact_id: str, now: datetime) -> str:
    payload = int(now.timestamp()).to_bytes(8, "big") + contact_id.encode()
    mac = _mac(keys.secrets[keys.current], keys.current, payload)
    return f"{keys.current}.{_encode(payload)}.{_encode(mac)}"


def read_consent_token(keys: LinkKeys, token: str, now: datetime, ttl: float) -> str:
    """The contact id a token names; raises BadConsentToken for anything we did not sign in
    the last ``ttl`` seconds."""
    if not isinstance(token, str) or len(token) > MAX_TOKEN:
        raise BadConsentToken("malformed consent token")
    parts = token.split(".")
    if len(parts) != 3 or not KID.match(parts[0]):
        raise BadConsentToken("malformed consent token")
    kid, body, mac_text = parts
    secret = keys.secrets.get(kid)
    if secret is None:
        raise BadConsentToken("consent token signed by an unknown key")
    payload, mac = _decode(body), _decode(mac_text)
    if len(payload) < 9 or not hmac.compare_digest(mac, _mac(secret, kid, payload)):
        raise BadConsentToken("consent token signature does not match")
    issued = datetime.fromtimestamp(int.from_bytes(payload[:8], "big"), UTC)
    if (now - issued).total_seconds() > ttl:
        raise BadConsentToken("this confirmation link has expired")
    try:
        return payload[8:].decode()
    except UnicodeDecodeError:
        raise BadConsentToken("malformed consent token") from None


def confirm_url(public_url: str, keys: LinkKeys, contact_id: str, now: datetime) -> str:
    return (f"{public_url.rstrip('/')}/v1/consent/confirm/"
            f"{consent_token(keys, contact_id, now)}")
