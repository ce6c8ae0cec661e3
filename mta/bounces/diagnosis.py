"""One recipient's failure, from whatever a report gives (an enhanced status, a diagnostic text
quoting the remote server's reply, a DSN action) to a ``RecipientResult``. The hard/soft decision
is ``smtp_replies.classify_reply``'s, so a bounce that arrives later is judged exactly like the
same reply received during delivery. Pure."""

from __future__ import annotations

import re

from mta.bounces.mime import one_line
from mta.bounces.report import RecipientResult
from mta.bounces.smtp_replies import BounceCategory, classify_reply

MAX_DIAGNOSTIC_CHARS = 2000

# A reply code: three digits not part of a number, an IP address or a version, followed by a
# space, a dash (continuation line) or the end; optionally its enhanced status.
_REPLY = re.compile(
    r"(?<![\w.:/+-])([45][0-5]\d)(?:[ -]+\1)?(?:[ -]+|$)"
    r"(?:[('\"]?([45]\.\d{1,3}\.\d{1,3})(?![\d]|\.\d)\)?)?"
)
_STATUS = re.compile(r"(?<![\w.])([245]\.\d{1,3}\.\d{1,3})(?![\d]|\.\d)")
_DSN_TYPE = re.compile(r"^\s*(?:smtp|x-[\w-]+|x-unix|x-local)\s*;\s*", re.I)
_DONE_ACTIONS = ("delivered", "relayed", "expanded", "deliverable")
# The SMTP phase a rejection came in. A refusal of MAIL FROM is about our sender; a "user
# unknown" after DATA (the recipient was accepted at RCPT) is a content filter's disguise often
# enough (Japanese carriers answer every filtered message so) that it suppresses only with an
# enhanced status that names the address (x.1.x). Sendmail's transcripts show the pipelined
# RCPT replies after ">>> DATA", so the same holds there.
_MAIL_PHASE = re.compile(r"after mail from|in reply to mail from|>>> mail from", re.I)
_DATA_PHASE = re.compile(
    r"in reply to (?:the )?(?:end of )?data\b|after (?:end of )?data\b|>>> data <<<"
    r"|smtp command\W*data\b|after the data command", re.I)


def find_status(text: str) -> str | None:
    match = _STATUS.search(text)
    return match.group(1) if match else None


def find_reply(text: str) -> tuple[int | None, str | None, str]:
    """(reply code, enhanced status, text from the code on) of the SMTP reply a diagnostic
    quotes. Without a reply code, the enhanced status found anywhere and the whole text."""
    match = _REPLY.search(text)
    if match is None:
        return None, find_status(text), text
    return int(match.group(1)), match.group(2), text[match.start():]


def judge(address: str | None, status: str | None, diagnostic: str,
          action: str | None = None, context: str = "") -> RecipientResult:
    """Classify one recipient. ``status`` is the report's own (DSN Status), ``diagnostic`` the
    text explaining the failure (Diagnostic-Code, or a paragraph of a human-readable bounce),
    ``context`` more text about this recipient (a session transcript) read only for the phase."""
    text = one_line(_DSN_TYPE.sub("", diagnostic[:MAX_DIAGNOSTIC_CHARS]))
    code, quoted_status, reply = find_reply(text)
    status = _best_status(status, quoted_status)
    action = (action or "").strip().lower() or None
    if action in _DONE_ACTIONS:
        return RecipientResult(address, status, code, False, "delivered")
    if code is None and status is None and not text:
        return RecipientResult(address, None, None, False, "unknown")
    temporary = action == "delayed" or (status or "").startswith("4")
    # Without a quoted reply, a stand-in code of the status's class (never reported).
    effective = code if code is not None else (450 if temporary else 550)
    # The quoted reply first; the whole text when the reply alone says nothing specific
    # ("554 Service unavailable" after "mail.local: unknown user").
    classification = classify_reply(effective, status, reply)
    if classification.category is BounceCategory.UNKNOWN and reply is not text:
        wider = classify_reply(effective, status, text)
        if wider.category is not BounceCategory.UNKNOWN:
            classification = wider
    hard = classification.suppress and not temporary
    if hard:
        phase_text = one_line(f"{text} {context[:MAX_DIAGNOSTIC_CHARS]}")
        if _MAIL_PHASE.search(phase_text):
            return RecipientResult(address, status, code, False, "sender_rejected")
        if _DATA_PHASE.search(phase_text) and not (status or "").startswith(("5.1.", "4.1.")):
            return RecipientResult(address, status, code, False, "rejected_after_data")
    return RecipientResult(address, status, code, hard, classification.reason)


def _best_status(reported: str | None, quoted: str | None) -> str | None:
    """The status the remote server's quoted reply gives, when of the same class as the
    report's (which is often the reporting MTA's own summary: 5.0.0, 4.4.7 for expiry)."""
    if reported is not None and not _STATUS.fullmatch(reported):
        reported = find_status(reported)
    if reported is None:
        return quoted
    if quoted and quoted[0] == reported[0]:
        return quoted
    return reported
