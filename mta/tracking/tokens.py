"""Signed tracking tokens (pure): which message, and for a click which link position.

``<kid>.<base32(message id + position (2 octets) + HMAC-SHA256(key, purpose kid payload)[:12])>``
in the format the unsubscribe links use (:func:`engine.link_keys.sign_token`). Opens and clicks
sign with different purposes, so an open token is no click token. The token never carries the
target URL: a click redirects only to the link stored for that message and position.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Literal

from engine.link_keys import BadToken, LinkKeys, read_token, sign_token

MAX_TOKEN = 80
MAX_POSITION = 0xFFFF
_MAC_BYTES = 12
_PURPOSES = {"open": b"track-open", "click": b"track-click"}
OPEN_PATH = "/t/o/"
CLICK_PATH = "/t/c/"

Kind = Literal["open", "click"]


@dataclass(frozen=True, slots=True)
class TrackingRef:
    kind: Kind
    message_id: uuid.UUID
    position: int  # the link's position in the message (0 for an open)


def tracking_token(keys: LinkKeys, kind: Kind, message_id: uuid.UUID, position: int = 0) -> str:
    if not 0 <= position <= MAX_POSITION:
        raise ValueError(f"link position {position} out of range")
    return sign_token(keys, _PURPOSES[kind], message_id.bytes + position.to_bytes(2, "big"),
                      _MAC_BYTES)


def read_tracking_token(keys: LinkKeys, kind: Kind, token: str) -> TrackingRef:
    """What a token names; raises :class:`BadToken` for anything we did not sign for ``kind``."""
    payload = read_token(keys, token, _PURPOSES[kind], 18, _MAC_BYTES, f"{kind} tracking token",
                         MAX_TOKEN)
    return TrackingRef(kind, uuid.UUID(bytes=payload[:16]), int.from_bytes(payload[16:], "big"))


def open_url(public_url: str, keys: LinkKeys, message_id: uuid.UUID) -> str:
    return f"{public_url.rstrip('/')}{OPEN_PATH}{tracking_token(keys, 'open', message_id)}"


def click_url(public_url: str, keys: LinkKeys, message_id: uuid.UUID, position: int) -> str:
    return (f"{public_url.rstrip('/')}{CLICK_PATH}"
            f"{tracking_token(keys, 'click', message_id, position)}")


__all__ = ["CLICK_PATH", "MAX_POSITION", "OPEN_PATH", "BadToken", "TrackingRef", "click_url",
           "open_url", "read_tracking_token", "tracking_token"]
