"""Standard Webhooks signatures (https://www.standardwebhooks.com), pure.

``webhook-signature: v1,<base64 HMAC-SHA256(secret, "<id>.<timestamp>.<body>")>``; the secret is
written ``whsec_<base64 of 24-64 random bytes>``. The id stays the same across retries, so a
receiver can drop a delivery it has seen; the timestamp is the attempt's.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import secrets

SECRET_PREFIX = "whsec_"
SECRET_BYTES = 32
MIN_SECRET_BYTES = 24
MAX_SECRET_BYTES = 64


class InvalidSecret(ValueError):
    pass


def new_secret() -> str:
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(SECRET_BYTES)).decode("ascii")


def parse_secret(secret: str) -> bytes:
    """The key bytes of ``whsec_<base64>``; anything else raises :class:`InvalidSecret`."""
    if not secret.startswith(SECRET_PREFIX):
        raise InvalidSecret("a webhook secret is written whsec_<base64>")
    try:
        key = base64.b64decode(secret[len(SECRET_PREFIX):], validate=True)
    except (binascii.Error, ValueError):
        raise InvalidSecret("a webhook secret is written whsec_<base64> (the rest is not "
                            "base64)") from None
    if not MIN_SECRET_BYTES <= len(key) <= MAX_SECRET_BYTES:
        raise InvalidSecret(f"a webhook secret holds {MIN_SECRET_BYTES} to {MAX_SECRET_BYTES} "
                            f"bytes (this one {len(key)})")
    return key


def signature(key: bytes, message_id: str, timestamp: int, body: bytes) -> str:
    signed = f"{message_id}.{timestamp}.".encode() + body
    digest = hmac.new(key, signed, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode("ascii")


def signed_headers(key: bytes, message_id: str, timestamp: int, body: bytes) -> dict[str, str]:
    return {"webhook-id": message_id, "webhook-timestamp": str(timestamp),
            "webhook-signature": signature(key, message_id, timestamp, body)}


def verify(key: bytes, headers: dict[str, str], body: bytes) -> bool:
    """Our own check (tests compare it with the ``standardwebhooks`` package's)."""
    lowered = {name.lower(): value for name, value in headers.items()}
    try:
        expected = signature(key, lowered["webhook-id"], int(lowered["webhook-timestamp"]),
                             body)
    except (KeyError, ValueError):
        return False
    return any(hmac.compare_digest(expected, given)
               for given in lowered.get("webhook-signature", "").split())
