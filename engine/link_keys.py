"""Keys that sign the links Herald puts in mail (unsubscribe, open and click tracking): a key id
and a secret each; the first signs, all verify, so a key can be rotated while old links still
work. Also the one token format those links share (:func:`sign_token`, :func:`read_token`).
"""

from __future__ import annotations

import base64
import binascii
import hmac
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from engine.base32 import b32_lower
from engine.hmac_sha256 import hmac_sha256

KID = re.compile(r"^[a-z0-9]{1,8}$")


@dataclass(frozen=True, slots=True)
class LinkKeys:
    current: str
    secrets: Mapping[str, bytes]

    @classmethod
    def parse(cls, items: Sequence[str]) -> LinkKeys:
        """``["kid:secret", ...]`` (the first signs); raises ValueError naming the problem."""
        secrets: dict[str, bytes] = {}
        for item in items:
            kid, sep, secret = item.partition(":")
            if not sep or not KID.match(kid):
                raise ValueError("each entry must be 'KID:SECRET' with KID of 1-8 lower-case "
                                 "letters or digits")
            if len(secret) < 16:
                raise ValueError(f"the secret of key {kid!r} must be at least 16 characters")
            if kid in secrets:
                raise ValueError(f"key id {kid!r} is listed twice")
            secrets[kid] = secret.encode()
        if not secrets:
            raise ValueError("at least one key is needed")
        return cls(next(iter(secrets)), secrets)


class BadToken(ValueError):
    """The token is malformed, signed by an unknown key, or its signature does not match."""


def _mac(secret: bytes, purpose: bytes, kid: str, payload: bytes, size: int) -> bytes:
    data = purpose + b"\0" + kid.encode() + b"\0" + payload
    return hmac_sha256(secret, data)[:size]


def sign_token(keys: LinkKeys, purpose: bytes, payload: bytes, mac_bytes: int) -> str:
    """``<kid>.<base32(payload + HMAC-SHA256(key, purpose kid payload)[:mac_bytes])>``, lower
    case without padding, so one token fits a URL path and a case-insensitive mailto local
    part. ``purpose`` keeps the tokens of different uses apart (one key signs them all)."""
    raw = payload + _mac(keys.secrets[keys.current], purpose, keys.current, payload, mac_bytes)
    return f"{keys.current}.{b32_lower(raw)}"


def read_token(keys: LinkKeys, token: str, purpose: bytes, payload_bytes: int, mac_bytes: int,
               name: str, max_length: int) -> bytes:
    """The payload of a token made by :func:`sign_token`; raises :class:`BadToken` (its text
    starts ``malformed <name>``, ``<name> signed by an unknown key``, ...) for anything else.
    Only the one canonical base32 spelling is accepted; comparison is constant-time."""
    if not isinstance(token, str) or len(token) > max_length or not token.isascii():
        raise BadToken(f"malformed {name}")
    kid, sep, body = token.lower().partition(".")
    if not sep or not KID.match(kid):
        raise BadToken(f"malformed {name}")
    secret = keys.secrets.get(kid)
    if secret is None:
        raise BadToken(f"{name} signed by an unknown key")
    try:
        raw = base64.b32decode(body.upper() + "=" * (-len(body) % 8))
    except (binascii.Error, ValueError):
        raise BadToken(f"malformed {name}") from None
    if len(raw) != payload_bytes + mac_bytes:
        raise BadToken(f"malformed {name}")
    if base64.b32encode(raw).decode().rstrip("=").lower() != body:
        raise BadToken(f"{name} is not in canonical form")
    payload = raw[:payload_bytes]
    if not hmac.compare_digest(raw[payload_bytes:],
                               _mac(secret, purpose, kid, payload, mac_bytes)):
        raise BadToken(f"{name} signature does not match")
    return payload
