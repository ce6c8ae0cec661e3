"""Signed unsubscribe tokens (pure): a key id, the message id and an HMAC, in base32 so the same
token fits a URL path and a case-insensitive mailto local part.

``<kid>.<base32(message id + HMAC-SHA256(key, "unsubscribe" kid message id)[:12])>``; as a
mailto local part, ``unsub-<token>`` is at most 60 octets. Only the one canonical base32 spelling
of the bytes is accepted (the last character carries unused bits). Several
keys may be configured; the first signs, all verify, so keys can be rotated without breaking
links already in mailboxes. Comparison uses :func:`hmac.compare_digest`. The format is
:func:`engine.link_keys.sign_token`'s, shared with the tracking links.
"""

from __future__ import annotations

import uuid

from engine.link_keys import BadToken, LinkKeys, read_token, sign_token

MAILTO_PREFIX = "unsub-"
_MAC_BYTES = 12  # 96 bits; keeps the mailto local part within RFC 5321's 64 octets
_PURPOSE = b"unsubscribe"
MAX_TOKEN = 80


# Recent tokens: a message names its own unsubscribe link three times (in its body, and as the
# URL and the mailto of List-Unsubscribe), so one signature serves all three.
_recent: dict[tuple[str, bytes, uuid.UUID], str] = {}
_RECENT = 256


def unsubscribe_token(keys: LinkKeys, message_id: uuid.UUID) -> str:
    key = (keys.current, keys.secrets[keys.current], message_id)
    token = _recent.get(key)
    if token is None:
        if len(_recent) >= _RECENT:
            _recent.clear()
        token = _recent[key] = sign_token(keys, _PURPOSE, message_id.bytes, _MAC_BYTES)
    return token


def read_unsubscribe_token(keys: LinkKeys, token: str) -> uuid.UUID:
    """The message id a token names; raises BadToken for anything not signed by our keys."""
    return uuid.UUID(bytes=read_token(keys, token, _PURPOSE, 16, _MAC_BYTES,
                                      "unsubscribe token", MAX_TOKEN))


def unsubscribe_url(public_url: str, keys: LinkKeys, message_id: uuid.UUID) -> str:
    return f"{public_url.rstrip('/')}/v1/unsubscribe/{unsubscribe_token(keys, message_id)}"


def unsubscribe_mailto(bounce_domain: str, keys: LinkKeys, message_id: uuid.UUID) -> str:
    return f"mailto:{MAILTO_PREFIX}{unsubscribe_token(keys, message_id)}@{bounce_domain}"


def token_from_mailto_address(address: str) -> str | None:
    """The token in an ``unsub-<token>@...`` recipient, or None if it is not one."""
    local = address.rpartition("@")[0].lower()
    return local[len(MAILTO_PREFIX):] if local.startswith(MAILTO_PREFIX) else None


__all__ = ["MAILTO_PREFIX", "BadToken", "read_unsubscribe_token", "token_from_mailto_address",
           "unsubscribe_mailto", "unsubscribe_token", "unsubscribe_url"]
