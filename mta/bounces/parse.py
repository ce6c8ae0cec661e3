"""``parse_report``: one returned message (bytes as received) to a ``Report``. The one entry
point of the bounce parsers; never raises on any input.

Order matters: an ARF complaint or a JMRP report first, then an RFC 3464 DSN, then an auto-reply
known by its headers (Postfix marks its bounces ``Auto-Submitted: auto-replied`` too, so DSNs go
first), then the plain-text bounce formats, and last an auto-reply known only by its subject.
"""

from __future__ import annotations

import logging

from mta.bounces.arf import parse_arf
from mta.bounces.auto_reply import is_auto_reply, parse_auto_reply
from mta.bounces.dsn import parse_dsn
from mta.bounces.legacy import guess_paragraphs, parse_legacy
from mta.bounces.mime import load
from mta.bounces.report import UNKNOWN, Report

log = logging.getLogger(__name__)


def parse_report(raw: bytes) -> Report:
    """What ``raw`` reports; kind "unknown" with no recipients when it is none of a bounce, a
    complaint or an auto-reply, or cannot be read (truncated, garbage, absurd nesting)."""
    try:
        return _parse(raw)
    except (RecursionError, MemoryError):
        return UNKNOWN
    except Exception:  # a parser bug on hostile input must not stop the inbound pipeline
        log.warning("bounce parser failed on a %d-byte message", len(raw), exc_info=True)
        return UNKNOWN


def _parse(raw: bytes) -> Report:
    if not isinstance(raw, (bytes, bytearray)) or not raw.strip():
        return UNKNOWN
    message = load(bytes(raw))
    complaint = parse_arf(message)
    if complaint is not None:
        return complaint
    dsn = parse_dsn(message, guess_paragraphs(message))
    if dsn is not None:
        return dsn
    if is_auto_reply(message):
        return parse_auto_reply(message)
    bounce = parse_legacy(message)
    if bounce is not None:
        return bounce
    if is_auto_reply(message, weak=True):
        return parse_auto_reply(message)
    return UNKNOWN
