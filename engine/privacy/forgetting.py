"""The in-process caches that may hold personal data (parsed addresses, rendered lines, link
decisions), forgotten together when a contact is erased (pure: no I/O).

A module that keeps such a cache registers its clearing function with
:func:`remembers_personal_data`; :func:`forget_personal_data` runs them all. The process that
erases calls it at once (:class:`engine.privacy.service.Privacy`); every other serving process
hears the erasure through :mod:`engine.privacy.erasure_listener`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TypeVar

log = logging.getLogger("herald.privacy")

Forget = TypeVar("Forget", bound=Callable[[], None])

_FORGETTERS: list[Callable[[], None]] = []


def remembers_personal_data(forget: Forget) -> Forget:
    """Register ``forget`` (a function that empties one cache); returns it unchanged, so it
    can decorate the function."""
    if forget not in _FORGETTERS:
        _FORGETTERS.append(forget)
    return forget


def forget_personal_data() -> None:
    """Empty every registered cache (one failing does not keep the others)."""
    for forget in list(_FORGETTERS):
        try:
            forget()
        except Exception:
            log.exception("a cache could not be emptied", extra={"cache": repr(forget)})
