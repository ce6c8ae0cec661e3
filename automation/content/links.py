"""Links in automation mail (pure): a send step's message id is derived from its run and step,
so the unsubscribe link rendered into the message can name the very message it is in (the
one-click endpoint finds the recipient and category from it)."""

from __future__ import annotations

import functools
import hashlib
import uuid

from engine.link_keys import LinkKeys
from mta.suppression.tokens import unsubscribe_mailto, unsubscribe_url

_NAMESPACE = uuid.UUID("6f1d2a8e-52c4-4d0b-9a57-8d0f6d1b7c11")


_NAMESPACE_BYTES = _NAMESPACE.bytes


@functools.lru_cache(maxsize=1024)  # a send names it twice: in its unsubscribe link and its row
def send_message_id(run_id: int, step_id: str) -> uuid.UUID:
    """The outbound message id of a run's send step (stable: a retried transition reuses it):
    ``uuid.uuid5(_NAMESPACE, f"run:{run_id}:{step_id}")``, with the namespace's bytes taken
    once."""
    digest = hashlib.sha1(_NAMESPACE_BYTES + f"run:{run_id}:{step_id}".encode(),
                          usedforsecurity=False).digest()
    return uuid.UUID(bytes=digest[:16], version=5)


def list_unsubscribe(public_url: str, bounce_domain: str, keys: LinkKeys,
                     message_id: uuid.UUID) -> dict[str, str]:
    """The RFC 2369 / RFC 8058 headers for a message (both are DKIM-signed)."""
    return {"List-Unsubscribe": f"<{unsubscribe_url(public_url, keys, message_id)}>, "
                                f"<{unsubscribe_mailto(bounce_domain, keys, message_id)}>",
            "List-Unsubscribe-Post": "List-Unsubscribe=One-Click"}


__all__ = ["list_unsubscribe", "send_message_id", "unsubscribe_url"]
