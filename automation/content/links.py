"""Signed per-contact links in automation mail (pure). The unsubscribe token is the contact id
and an HMAC over it, so the (later) one-click unsubscribe endpoint can trust it."""

from __future__ import annotations

import base64
import hashlib
import hmac


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def unsubscribe_token(secret: bytes, contact_id: str) -> str:
    mac = hmac.new(secret, b"unsubscribe\0" + contact_id.encode(), hashlib.sha256).digest()
    return f"{_b64(contact_id.encode())}.{_b64(mac[:16])}"


def unsubscribe_url(public_url: str, secret: bytes, contact_id: str) -> str:
    return f"{public_url.rstrip('/')}/v1/unsubscribe/{unsubscribe_token(secret, contact_id)}"
