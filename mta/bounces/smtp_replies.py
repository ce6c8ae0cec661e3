"""Bounce classification: an SMTP reply (code, enhanced status, text) or a non-reply delivery
outcome -> a category the scheduler and the suppression list act on. Pure and table-driven.

Three ordered tables, first match wins:

1. ``TEXT_RULES``: phrases real receivers use. They come first because the text is more specific
   than the codes (Gmail sends ``550 5.7.1`` for spam, Microsoft ``550 5.4.1`` for unknown users,
   ``552 5.2.2`` is a full mailbox, not a dead one). Within the table, sender-side, blocklist,
   authentication, throttling and content rules precede the "recipient does not exist" rules, so
   a policy rejection that happens to say "mailbox unavailable" is never taken for a dead address;
   and "mailbox full" precedes "unknown", since wrongly suppressing a live address costs more
   than one more attempt at a dead one.
2. ``ENHANCED_RULES``: RFC 3463 ``subject.detail`` (plus the IANA registry), each with a category
   for a permanent and for a temporary reply.
3. ``CODE_RULES``: the bare reply code. 550, 551, 553 and 554 map to UNKNOWN rather than HARD:
   receivers use them for policy rejections as often as for unknown users, and only HARD
   suppresses the address.

Whatever the table says, a 4xx reply never suppresses: HARD becomes SOFT (the server itself says
"try again"); and ``permanent`` always follows the reply code class, never the enhanced code.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import StrEnum
from functools import lru_cache


class BounceCategory(StrEnum):
    HARD = "hard"  # the address or its domain does not exist: suppress it
    SOFT = "soft"  # mailbox full, greylisting, temporary trouble: retry
    BLOCK = "block"  # policy, reputation, content, blocklists, SPF/DKIM/DMARC: fix the sender
    THROTTLE = "throttle"  # rate limiting: back the whole site off
    UNKNOWN = "unknown"  # a permanent failure nothing more specific explains


@dataclass(frozen=True, slots=True)
class Classification:
    category: BounceCategory
    permanent: bool  # 5xx: this message bounces; 4xx: it is retried
    suppress: bool  # only for a permanent HARD failure: stop mailing the address
    reason: str  # short machine-readable rule name, e.g. "mailbox_unknown"


_HARD, _SOFT, _BLOCK = BounceCategory.HARD, BounceCategory.SOFT, BounceCategory.BLOCK
_THROTTLE, _UNKNOWN = BounceCategory.THROTTLE, BounceCategory.UNKNOWN

# (status pattern, text pattern, category, reason). The status pattern is searched in
# "<code> <enhanced or ->", e.g. "550 5.4.1"; None matches any. Text patterns ignore case and
# see the reply text with whitespace collapsed and continuation prefixes ("550-5.7.1 ") removed.
# fmt: off
_TEXT_TABLE: tuple[tuple[str | None, str, BounceCategory, str], ...] = (
    # Microsoft 365 directory-based edge blocking: "550 5.4.1 Recipient address rejected: Access
    # denied" means the recipient does not exist in the tenant.
    (r"^5\d\d 5\.4\.1$", r"recipient address rejected: access denied", _HARD, "mailbox_unknown"),
    # RFC 3463 x.1.7 / x.1.8: the *sender's* address or domain is bad, whatever the text says
    # ("Domain of sender address ... does not exist" must not suppress the recipient).
    (r" [45]\.1\.[78]$", r".", _BLOCK, "sender_rejected"),
    # --- blocklists and IP reputation ------------------------------------------------------
    (None, r"blocked using|black ?list|block ?list|dnsbl|\brbl\b|spamhaus|spamcop|barracuda"
     r"|sorbs|proofpoint|cloudmark|banned sending ip|banned sender|traffic not accepted from"
     r"|client host (?:\[[^\]]*\] )?blocked|comcast block|ip address (?:is )?blocked"
     r"|permanently deferred|\(bl\)|\[bl\]", _BLOCK, "blocklisted"),
    # --- authentication ------------------------------------------------------------------
    (None, r"dmarc", _BLOCK, "dmarc_fail"),
    (None, r"unauthenticated|not authenticated|authentication (?:is )?required|must authenticate"
     r"|authrequired|auth(?:entication)? fail", _BLOCK, "auth_fail"),
    (None, r"\bspf\b|sender policy framework", _BLOCK, "spf_fail"),
    (None, r"\bdkim\b|domainkeys", _BLOCK, "dkim_fail"),
    # --- our envelope sender or our setup, never the recipient ------------------------------
    (None, r"sender verif\w* failed|verification failed for|domain of sender address"
     r"|sender (?:address |domain )?(?:is )?(?:rejected|invalid|unknown|not (?:valid|allowed))"
     r"|sender address has null mx|email address is not verified", _BLOCK, "sender_rejected"),
    (None, r"relay(?:ing)? (?:access )?(?:denied|not permitted|prohibited|not allowed)"
     r"|not configured to relay|unable to relay|rcpthosts", _BLOCK, "relay_denied"),
    # --- per-recipient or transient conditions that are not the site throttling us ---------
    (None, r"receiving mail (?:at a rate|too quickly)", _SOFT, "recipient_rate_limited"),
    (None, r"gr[ae]y ?list", _SOFT, "greylisted"),
    (None, r"insufficient (?:system )?(?:storage|disk space)|disk (?:is )?full", _SOFT,
     "server_full"),
    # --- throttling: the site wants less from us ----------------------------------------
    (None, r"too many (?:recipients|rcpt)", _THROTTLE, "too_many_recipients"),
    (None, r"too many (?:concurrent |simultaneous )?(?:connections|sessions|smtp)"
     r"|maximum number of (?:concurrent )?(?:server )?connections|connection (?:rate )?limit",
     _THROTTLE, "too_many_connections"),
    (None, r"rate.?limit|unusual rate|unexpected volume|due to volume|too many (?:messages|mails"
     r"|emails)|too much (?:mail|traffic)|sending rate|exceeded.{0,30}(?:rate|frequency)"
     r"|\[ts0\d\]|throttl|mail flood", _THROTTLE, "rate_limited"),
    (r"^421 |^4\d\d 4\.7\.", r"try (?:again )?later|temporarily deferred|please try later"
     r"|service refused", _THROTTLE, "rate_limited"),
    # --- content -------------------------------------------------------------------------
    (None, r"virus|malware|infected|phish", _BLOCK, "virus_detected"),
    (None, r"unsolicited|\bspam\b|\bube\b|\buce\b|content rejected|message content|junk"
     r"|bulk mail|suspicious", _BLOCK, "spam_content"),
    # --- the sending host's DNS --------------------------------------------------------
    (None, r"\bptr\b|reverse (?:dns|lookup)|\brdns\b|cannot find your hostname|mismatches "
     r"client ip|does not resolve to", _BLOCK, "no_ptr"),
    (None, r"\bhelo\b|\behlo\b", _BLOCK, "bad_helo"),
    # --- the mailbox exists but cannot take mail now --------------------------------------
    (None, r"mailbox (?:is )?full|over quota|quota exceeded|exceed\w* (?:its |the |their )?"
     r"(?:storage|quota)|storage allocation|(?:mailbox|boite).{0,40}pleine|out of storage"
     r"|mailbox size limit|quotaexceeded|user is over", _SOFT, "mailbox_full"),
    # --- DNS trouble on the way (Postfix: "Name service error ... Malformed or unexpected name
    # server reply", with 5.4.4): not proof that the domain is gone.
    (None, r"malformed or unexpected name server reply|name server (?:failure|timeout)"
     r"|servfail|temporary failure in name resolution", _SOFT, "dns_error"),
    # --- the address or its domain does not exist -------------------------------------
    (None, r"null ?mx|domain [\w.-]+ does not accept mail", _HARD, "null_mx"),
    (None, r"domain (?:name )?not found|host or domain name not found|host unknown|no such domain"
     r"|unknown host\b|unknown domain\b"
     r"|domain (?:does not|doesn't) exist|unrouteable domain|nonexistent domain",
     _HARD, "domain_unknown"),
    (None, r"no longer (?:on (?:this )?server|available|active)|mailbox (?:has )?moved",
     _HARD, "mailbox_moved"),
    # A disabled, suspended or inactive account is not a dead one: it may come back. It bounces
    # and counts as a soft bounce (repeated soft bounces suppress), never suppresses at once.
    (None, r"(?:account|mailbox|user|address)(?: that you tried to reach)? (?:is|has been) "
     r"(?:disabled|deactivated|suspended|frozen|inactive)|inactive (?:email )?(?:address"
     r"|account|mailbox)", _SOFT, "mailbox_disabled"),
    (None, r"(?:account|mailbox|user|address) (?:is|has been) (?:closed|terminated|deleted)",
     _HARD, "mailbox_closed"),
    (None, r"(?:user|recipient|mailbox|account|address|alias)s?\W{0,3}(?:is )?(?:unknown"
     r"|not found|invalid|not valid)|unknown (?:or illegal )?(?:user|recipient|mailbox|alias"
     r"|address)|no such (?:user|mailbox|recipient|address|account)|(?:invalid|bad|unknown"
     r"|non-?existent) (?:recipient|mailbox|address|user)|does ?n[o']t exist|(?:doesn't|does"
     r" not) have an? [\w.-]+ account|destinataire invalide|unrouteable address|recip\w*notfound"
     r"|not our customer|user not found|not a valid (?:recipient|mailbox|user)|no mailbox"
     r"|not listed in (?:the )?(?:domino |public )?(?:directory|name)"
     r"|recipient address rejected\W*$|(?:recipient|user|mailbox)(?: name)? is not recognized"
     r"|no valid recipients?\b", _HARD, "mailbox_unknown"),
    # --- generic policy, then the weakest "not here" wording, then size ----------------------
    (None, r"policy|access denied|administrative prohibition|not allowed|prohibited|not authori"
     r"[sz]ed|denied|refused|blocked|rejected by|reject(?:ed)? due to|not accepted", _BLOCK,
     "policy"),
    # The RFC 5321 wording for 550; Outlook.com and GMX send it alone for unknown users. With a
    # x.7.x enhanced code it is a policy rejection, left to the enhanced table.
    (r"^\d+ (?:-|[245]\.[0-689]\.)", r"mailbox unavailable|mailbox not found", _HARD,
     "mailbox_unavailable"),
    (None, r"too (?:large|big)|size (?:exceeds|limit)|message size|exceeds.{0,30}size",
     _UNKNOWN, "message_too_large"),
)
# fmt: on

# RFC 3463 subject.detail -> (category when permanent, category when temporary, reason).
# A key "7" (subject only) is the default for the whole subject.
ENHANCED_RULES: dict[str, tuple[BounceCategory, BounceCategory, str]] = {
    "1.1": (_HARD, _SOFT, "mailbox_unknown"),  # bad destination mailbox address
    "1.2": (_HARD, _SOFT, "domain_unknown"),  # bad destination system address
    "1.3": (_HARD, _SOFT, "bad_address_syntax"),  # bad destination mailbox address syntax
    "1.6": (_HARD, _SOFT, "mailbox_moved"),  # destination mailbox has moved
    "1.7": (_BLOCK, _BLOCK, "sender_rejected"),  # bad sender's mailbox address syntax
    "1.8": (_BLOCK, _BLOCK, "sender_rejected"),  # bad sender's system address
    "1.10": (_HARD, _SOFT, "null_mx"),  # RFC 7505 (Microsoft: recipient not found)
    "1": (_UNKNOWN, _SOFT, "address_rejected"),
    "2.1": (_SOFT, _SOFT, "mailbox_disabled"),  # mailbox disabled: may come back, not dead
    "2.2": (_SOFT, _SOFT, "mailbox_full"),
    "2.3": (_UNKNOWN, _SOFT, "message_too_large"),  # exceeds the mailbox's size limit
    "2": (_SOFT, _SOFT, "mailbox_unavailable"),
    "3.1": (_SOFT, _SOFT, "server_full"),
    "3.4": (_UNKNOWN, _SOFT, "message_too_large"),
    "3": (_UNKNOWN, _SOFT, "system_error"),
    "4.4": (_HARD, _SOFT, "domain_unroutable"),  # no route / no MX: the domain takes no mail
    "4.5": (_THROTTLE, _THROTTLE, "congestion"),
    "4.6": (_UNKNOWN, _SOFT, "routing_loop"),
    "4.7": (_UNKNOWN, _SOFT, "expired"),
    "4": (_UNKNOWN, _SOFT, "network_error"),
    "5.3": (_THROTTLE, _THROTTLE, "too_many_recipients"),
    "5": (_UNKNOWN, _SOFT, "protocol_error"),
    "6": (_UNKNOWN, _SOFT, "content_error"),
    "7.13": (_SOFT, _SOFT, "mailbox_disabled"),  # user account disabled: may come back
    "7.20": (_BLOCK, _BLOCK, "dkim_fail"),  # RFC 7372: no passing DKIM signature
    "7.21": (_BLOCK, _BLOCK, "dkim_fail"),
    "7.22": (_BLOCK, _BLOCK, "dkim_fail"),
    "7.23": (_BLOCK, _BLOCK, "spf_fail"),
    "7.24": (_BLOCK, _BLOCK, "spf_fail"),
    "7.25": (_BLOCK, _BLOCK, "no_ptr"),  # reverse DNS validation failed
    "7.26": (_BLOCK, _BLOCK, "auth_fail"),  # multiple authentication checks failed
    "7.27": (_BLOCK, _BLOCK, "sender_rejected"),  # sender address has null MX
    "7.28": (_THROTTLE, _THROTTLE, "rate_limited"),  # mail flood detected
    "7": (_BLOCK, _BLOCK, "policy"),  # security or policy status
}

# Bare reply codes (RFC 5321 4.2.2 / RFC 7504) -> (category, reason).
CODE_RULES: dict[int, tuple[BounceCategory, str]] = {
    421: (_SOFT, "service_unavailable"),
    450: (_SOFT, "mailbox_unavailable"),
    451: (_SOFT, "local_error"),
    452: (_SOFT, "insufficient_storage"),
    521: (_HARD, "domain_no_mail"),  # RFC 7504: this host does not accept mail
    530: (_BLOCK, "auth_fail"),
    550: (_UNKNOWN, "mailbox_unavailable"),  # unknown user as often as policy: don't guess
    551: (_UNKNOWN, "user_not_local"),
    552: (_SOFT, "mailbox_full"),  # "exceeded storage allocation"
    553: (_UNKNOWN, "mailbox_name_not_allowed"),
    554: (_UNKNOWN, "transaction_failed"),
    556: (_HARD, "null_mx"),  # RFC 7504: the domain does not accept mail
}


@dataclass(frozen=True, slots=True)
class TextRule:
    status: re.Pattern[str] | None
    text: re.Pattern[str]
    category: BounceCategory
    reason: str


TEXT_RULES: tuple[TextRule, ...] = tuple(
    TextRule(re.compile(status) if status else None, re.compile(text, re.I), category, reason)
    for status, text, category, reason in _TEXT_TABLE
)

# Non-reply outcomes of a delivery attempt -> (category, permanent, reason).
FAILURE_RULES: dict[str, tuple[BounceCategory, bool, str]] = {
    "connection_refused": (_SOFT, False, "connection_refused"),
    "timeout": (_SOFT, False, "timeout"),
    "tls_required_unavailable": (_SOFT, False, "tls_unavailable"),
    "tls_policy": (_SOFT, False, "tls_policy"),  # MTA-STS / DANE refused every host
    "dns_nxdomain": (_HARD, True, "domain_unknown"),
    "dns_null_mx": (_HARD, True, "null_mx"),
    "dns_servfail": (_SOFT, False, "dns_error"),
    "expired": (_SOFT, True, "expired"),  # retries exhausted: bounce, but the address may live
}

MAX_TEXT_CHARS = 4096  # a reply is a few lines; never run the table over more than this
_ENHANCED = re.compile(r"([245])\.(\d{1,3})\.(\d{1,3})(?=\s|[.,;:]?\s|[.,;:]?$)")
_SPACES = re.compile(r"\s+")


def parse_reply_text(text: str) -> tuple[str | None, str]:
    """Split an RFC 3463 enhanced status code (``class.subject.detail``) off the front of a
    reply text: ``"5.1.1 User unknown"`` -> ``("5.1.1", "User unknown")``."""
    stripped = text.lstrip()
    match = _ENHANCED.match(stripped)
    if match is None:
        return None, text.strip()
    return match.group(0), stripped[match.end() :].lstrip(" .,;:\t").strip()


def classify_reply(code: int, enhanced: str | None, text: str) -> Classification:
    """Classify a 4xx/5xx SMTP reply. ``enhanced`` may be None, in which case it is taken from the
    front of ``text`` when there. A code outside 400-599 is a peer's protocol error: temporary."""
    if 200 <= code < 400:
        raise ValueError(f"reply code {code} is not a failure")
    if not 400 <= code < 600:
        return Classification(_SOFT, False, False, "protocol_error")
    permanent = code >= 500
    if enhanced is None:
        enhanced, text = parse_reply_text(text)
    elif not _ENHANCED.fullmatch(enhanced):
        enhanced = None
    text = _normalize_text(text[:MAX_TEXT_CHARS], code)
    status = f"{code} {enhanced or '-'}"
    for rule in TEXT_RULES:
        if rule.status is not None and not rule.status.search(status):
            continue
        if rule.text.search(text):
            return _result(rule.category, permanent, rule.reason)
    if enhanced is not None:
        _, subject, detail = enhanced.split(".")
        subject, detail = str(int(subject)), str(int(detail))
        rule_ = ENHANCED_RULES.get(f"{subject}.{detail}") or ENHANCED_RULES.get(subject)
        if rule_ is not None:
            return _result(rule_[0] if permanent else rule_[1], permanent, rule_[2])
    if code in CODE_RULES:
        category, reason = CODE_RULES[code]
        return _result(category, permanent, reason)
    if permanent:
        return _result(_UNKNOWN, True, "permanent_failure")
    return _result(_SOFT, False, "temporary_failure")


def classify_failure(kind: str) -> Classification:
    """Classify an outcome that is not an SMTP reply (DNS, connection, TLS, queue expiry)."""
    try:
        category, permanent, reason = FAILURE_RULES[kind]
    except KeyError:
        known = ", ".join(sorted(FAILURE_RULES))
        raise ValueError(f"unknown failure kind {kind!r}; expected one of {known}") from None
    return _result(category, permanent, reason)


def _result(category: BounceCategory, permanent: bool, reason: str) -> Classification:
    if not permanent and category in (_HARD, _UNKNOWN):
        category = _SOFT  # the server said "try again": nothing is proven dead yet
    return Classification(category, permanent, category is _HARD and permanent, reason)


def _normalize_text(text: str, code: int) -> str:
    """Collapse a (possibly multi-line, joined) reply text into one spaced line without the
    "550-5.7.1 " prefixes that continuation lines repeat."""
    return _SPACES.sub(" ", _continuation(code).sub(" ", text)).strip()


@lru_cache(maxsize=256)
def _continuation(code: int) -> re.Pattern[str]:
    return re.compile(rf"(?:^|\s){code}[ -](?:[245]\.\d{{1,3}}\.\d{{1,3}}\s+)?")
