"""Bare CR and bare LF in a received or submitted message (pure).

RFC 5321 §2.3.8: in SMTP, CR and LF appear only together as CRLF. A server that accepts a bare
LF (or CR) as a line ending can be made to see the end of one message where another server saw
none, and to accept a second, smuggled message (SMTP smuggling). aiosmtpd 1.4.6 ends DATA only
at ``CRLF . CRLF``, so ``LF . LF`` never ends a message there; but it keeps bare LFs and CRs
inside the data. Herald's SMTP servers refuse any message that has one, so a smuggled second
message is never accepted: it is part of the refused first one.
"""

from __future__ import annotations

import re

_BARE = re.compile(rb"\r(?!\n)|(?<!\r)\n")

REPLY = ("554 5.6.0 Message refused: bare CR or LF line ending (RFC 5321 section 2.3.8); "
         "lines must end with CRLF")


def first_bare_line_ending(data: bytes) -> int | None:
    """The offset of the first CR not followed by LF or LF not preceded by CR, or None."""
    match = _BARE.search(data)
    return match.start() if match else None
