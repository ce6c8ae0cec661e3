"""One recipient's failure, from whatever a report gives (an enhanced status, a diagnostic text
quoting the remote server's reply, a DSN action) to a ``RecipientResult``. The hard/soft decision
is ``smtp_replies.classify_reply``'s, so a bounce that arrives later is judged exactly like the
same reply received during delivery. Pure."""

from __future__ import annotations

import re

from mta.bounces.mime import find_addresses, one_line
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
# enhanced status that names the address (x.1.x). Sendmail's transcripts show the reply to
# the DATA command after ">>> DATA", so the same holds there, ...
_MAIL_PHASE = re.compile(r"after mail from|in reply to mail from|>>> mail from", re.I)
_DATA_PHASE = re.compile(
    r"in reply to (?:the )?(?:end of )?data\b|after (?:end of )?data\b|>>> data <<<"
    r"|smtp command\W*data\b|after the data command", re.I)
# ... unless the DATA command itself was refused for want of recipients: then every RCPT had
# been refused, and a per-recipient reply shown after DATA was a pipelined RCPT reply (Sendmail:
# ">>> DATA", "<<< 550 ... Invalid recipient", "<<< 554 5.5.1 Error: no valid recipients").
_NO_RECIPIENTS_AT_DATA = re.compile(r"<<< (?:50[35]|554)[ -].{0,40}?(?:need (?:rcpt|recipient)"
                                    r"|no valid recipients)", re.I)
# ... or the reply is Yahoo's recipient check, which Yahoo makes at DATA ("554 delivery error:
# dd This user doesn't have a yahoo.com account"): an explicit statement about the account, not
# the bare "user unknown" that filters hide behind.
_ACCOUNT_ABSENT = re.compile(r"(?:doesn't|does not) have an? [\w.-]+ account", re.I)
# Japanese mobile carriers answer mail their reception filters refuse (the recipient takes mail
# only from chosen domains, or refuses mail from PCs) with "user unknown", the same words as for
# an address that does not exist: NTT docomo "550 Unknown user <address>" at DATA, au (KDDI)
# "550 : User unknown" after DATA, and relays that report neither phase pass on only the words.
# To these domains a "user unknown" is a dead address only with an x.1.x status or when the
# report shows it was the reply to RCPT.
_FILTERING_CARRIERS = re.compile(
    r"@(?:[\w-]+\.)*(?:docomo\.ne\.jp|ezweb\.ne\.jp|au\.com|softbank\.ne\.jp|i\.softbank\.jp"
    r"|[a-z]\.vodafone\.ne\.jp|disney\.ne\.jp|ymobile\.ne\.jp|y-mobile\.ne\.jp|emnet\.ne\.jp"
    r"|pdx\.ne\.jp|willcom\.com)$", re.I)
_RCPT_PHASE = re.compile(
    r"(?:after|in reply to|following) (?:the )?rcpt\b|>>> rcpt to|rcpt to command"
    r"|remote smtp server has rejected address", re.I)  # the last: Oracle Messaging Server's


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
    reported = status
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
        address_status = (status or "").startswith(("5.1.", "4.1."))
        if _MAIL_PHASE.search(phase_text):
            return RecipientResult(address, status, code, False, "sender_rejected")
        if (_DATA_PHASE.search(phase_text) and not address_status
                and not _NO_RECIPIENTS_AT_DATA.search(phase_text)
                and not _ACCOUNT_ABSENT.search(reply)):
            return RecipientResult(address, status, code, False, "rejected_after_data")
        if (address and _FILTERING_CARRIERS.search(address) and not address_status
                and not _RCPT_PHASE.search(f"{phase_text} {reported or ''}")):
            return RecipientResult(address, status, code, False, "carrier_filter")
        if _names_only_others(reply, address):
            return RecipientResult(address, status, code, False, "other_address")
    return RecipientResult(address, status, code, hard, classification.reason)


def _names_only_others(reply: str, address: str | None) -> bool:
    """Whether the reply names addresses and none of them is the recipient's: a rejection of
    another address (an alias's or a forwarding target, the sender) says nothing about this one.
    Case and a "+tag" are ignored."""
    named = find_addresses(reply)
    if not address or not named:
        return False
    return all(_mailbox(other) != _mailbox(address) for other in named)


def _mailbox(address: str) -> str:
    local, _, domain = address.lower().rpartition("@")
    return f"{local.partition('+')[0]}@{domain}"


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
