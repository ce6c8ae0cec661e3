"""One normal form for suppressed addresses (pure), used everywhere an address is suppressed or
looked up, so a person cannot be suppressed under one spelling and mailed under another.

The local part is NFC-normalised and lower-cased (mailbox providers treat it case-insensitively
in practice; suppressing ``Ann@`` must stop mail to ``ann@``); the domain is IDNA 2008 (UTS #46
mapped) in ASCII, lower case.
"""

from __future__ import annotations

import unicodedata

from engine.addresses import AddressError, parse_address


def normalise(text: str) -> str:
    """The suppression key of an address; raises AddressError for something that is not one."""
    if not isinstance(text, str):
        raise AddressError("address must be a string")
    address = parse_address(text.strip())
    local = unicodedata.normalize("NFC", address.local).lower()
    return f"{local}@{address.ascii_domain.lower()}"


def normalise_lenient(text: str) -> str:
    """:func:`normalise`, or a best effort for stored addresses that no longer parse."""
    try:
        return normalise(text)
    except AddressError:
        return unicodedata.normalize("NFC", text.strip()).lower()
