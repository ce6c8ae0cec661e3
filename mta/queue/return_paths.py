"""Per-message bounce addresses (VERP) carrying an HMAC-signed message id (pure).

``b-<token>@<bounce_domain>``: the token is base32 of the 16-byte message id followed by the
first 10 bytes of HMAC-SHA256(secret, id). The inbound bounce handler decodes it to find the
message without trusting anything else in the bounce.
"""

from __future__ import annotations

import base64
import hmac
import uuid

from engine.base32 import b32_lower
from engine.hmac_sha256 import hmac_sha256

PREFIX = "b-"
_MAC_BYTES = 10


class BadReturnPath(ValueError):
    """The address is not one of ours, or its signature does not match."""


def _mac(secret: bytes, message_id: uuid.UUID) -> bytes:
    return hmac_sha256(secret, message_id.bytes)[:_MAC_BYTES]


def bounce_address(secret: bytes, message_id: uuid.UUID, bounce_domain: str) -> str:
    return f"{PREFIX}{b32_lower(message_id.bytes + _mac(secret, message_id))}@{bounce_domain}"


def message_id_from(secret: bytes, address: str) -> uuid.UUID:
    """The message id carried by a bounce address; raises BadReturnPath if forged."""
    local, _, _domain = address.rpartition("@")
    if not local.lower().startswith(PREFIX):
        raise BadReturnPath("not a Herald bounce address")
    token = local[len(PREFIX):].upper()
    try:
        raw = base64.b32decode(token + "=" * (-len(token) % 8))
    except ValueError as exc:  # binascii.Error is a ValueError
        raise BadReturnPath("malformed bounce token") from exc
    if len(raw) != 16 + _MAC_BYTES:
        raise BadReturnPath("malformed bounce token")
    if base64.b32encode(raw).decode().rstrip("=") != token:
        raise BadReturnPath("bounce token is not in canonical form")
    message_id = uuid.UUID(bytes=raw[:16])
    if not hmac.compare_digest(raw[16:], _mac(secret, message_id)):
        raise BadReturnPath("bounce token signature does not match")
    return message_id
