"""Bounces that are not RFC 3464 reports: the human-readable formats of Postfix, Sendmail, Exim,
qmail, Exchange, Gmail, Yahoo, Amazon SES, Courier, Domino and others. Text heuristics: take the
notification's own text (not the attached original), find the recipient addresses in it, and
judge each from the paragraph that follows its first mention. Pure."""

from __future__ import annotations

import re
from email.message import Message

from mta.bounces.diagnosis import judge
from mta.bounces.fields import ORIGINAL_TYPES, Original, original_from_text, original_of
from mta.bounces.mime import MAX_PARTS, address_in, find_addresses, header, text_of
from mta.bounces.report import Report

MAX_RECIPIENTS = 50
MAX_PARAGRAPH_LINES = 16
MAX_NOTICE_CHARS = 32_000

# Where a plain-text bounce starts quoting the original message.
_ORIGINAL_MARKER = re.compile(
    r"^[ \t>]*(?:-{2,}|={2,}|\*{2,}|_{2,})?[ \t]*(?:"
    r"this is a copy of the message|below this line is a copy|original message|"
    r"the header of the original message|undelivered message (?:headers )?follow|"
    r"returned message|message headers follow|the original message headers|"
    r"headers of your message|copy of the (?:original )?message|"
    r"your message (?:reads|was)(?: \(in part\))?:|unsent message below|"
    r"received headers|original message headers|the text you sent follows|"
    r"rfc822 headers|text of the original message"
    r")|^content-type: (?:message/rfc822|text/rfc822-headers)|^return-path:\s*<|"
    r"^received: from ",
    re.I | re.M,
)
_BOUNCE_SUBJECT = re.compile(
    r"undeliver|deliver(?:y|ing)? (?:status|failure|failed|notification|problem|report|has failed)"
    r"|returned mail|failure notice|mail delivery|could not be delivered|not delivered"
    r"|non-?deliver|unable to deliver|delivery error|bounce|rejected|mail error|warning: "
    r"|delayed mail|message not delivered|error sending|send mail error|mail failure"
    r"|delivery notification|failed to deliver|permanent error|returned to sender",
    re.I,
)
_BOUNCE_SENDER = re.compile(r"mailer-daemon|postmaster|mail delivery|mail administrator|"
                            r"mailerdaemon|mdaemon|bounce|returns?@", re.I)
_BOUNCE_TEXT = re.compile(
    r"could not be delivered|delivery (?:to the following recipients? )?(?:has )?failed|"
    r"permanent(?:ly)? (?:fatal )?(?:error|fail)|undeliverable|unable to deliver|"
    r"was not delivered|were not delivered|returned to you|delivery has been delayed|"
    r"not be delivered|message delivery failed|user unknown|mailbox (?:is )?full|"
    r"remote host said|following address(?:es)? failed|smtp error|delivery status|"
    r"could not deliver|failed to deliver|unknown user|no such user",
    re.I,
)
# A line that mentions an address without naming a recipient (IDs, trace and sender lines).
_NOT_RECIPIENT_LINE = re.compile(
    r"^\s*(?:message-id|in-reply-to|references|received|from|sender|return-path|reply-to|to|cc|"
    r"x-[\w-]+|dkim-signature|date|subject|envelope-from|mail from)\s*:|envelope-from|"
    r"\bmail from:|\bsender:|message-id|\bid <", re.I)
_SERVICE_LOCAL_PART = re.compile(
    r"^(?:mailer-daemon|postmaster|mailerdaemon|daemon|noreply|no-reply|nobody|root|abuse)$", re.I)


def notice_text(message: Message) -> str:
    """The notification's own text: its text parts outside any attached message, up to the
    point where a pasted copy of the original starts."""
    texts: list[str] = []
    stack: list[tuple[Message, int]] = [(message, 0)]
    seen = 0
    while stack and seen < MAX_PARTS:
        part, depth = stack.pop()
        seen += 1
        content_type = part.get_content_type()
        if part is not message and (content_type in ORIGINAL_TYPES or depth > 6):
            continue
        payload = part.get_payload()
        if isinstance(payload, list):
            if part.get_content_maintype() == "multipart":
                stack.extend((child, depth + 1) for child in reversed(payload[:MAX_PARTS])
                             if isinstance(child, Message))
            continue
        if texts and part.get_content_disposition() == "attachment":
            continue  # an attached file (a copy of the headers, a log): not the notice's words
        if content_type == "text/plain" or (content_type == "text/html" and not texts):
            text = text_of(part)
            texts.append(_strip_html(text) if content_type == "text/html" else text)
        elif part.get_content_maintype() != "text" and part is message:
            texts.append(text_of(part))  # odd top-level types: still text at heart
    return "\n\n".join(texts)[:MAX_NOTICE_CHARS]


def looks_like_bounce(message: Message, text: str) -> bool:
    if _BOUNCE_SENDER.search(header(message, "From") or ""):
        return True
    if _BOUNCE_SUBJECT.search(header(message, "Subject") or ""):
        return True
    return bool(_BOUNCE_TEXT.search(text[:8000]))


def parse_legacy(message: Message) -> Report | None:
    """The report of a plain-text bounce, or None when the message does not look like one."""
    full = notice_text(message)
    if not full.strip() or not looks_like_bounce(message, full):
        return None
    marker = _ORIGINAL_MARKER.search(full, 1)
    notice = full[: marker.start()] if marker else full
    original = original_of(message)
    if original == Original() and marker is not None:
        original = original_from_text(full[marker.start():])
    excluded = _sender_side(message, original)
    paragraphs = recipient_paragraphs(notice, excluded)
    if paragraphs:
        recipients = tuple(judge(address, None, paragraph, None, paragraph)
                           for address, paragraph in paragraphs[:MAX_RECIPIENTS])
    else:  # nothing named: the original's recipient, judged from the whole notice
        recipients = (judge(original.recipient, None, notice, None, notice),)
    return Report("bounce", recipients, None, original.message_id, original.return_path,
                  original.recipient)


def recipient_paragraphs(text: str, excluded: set[str],
                         service: bool = False) -> list[tuple[str, str]]:
    """(address, the text from its first mention to the next other address's) for each
    recipient address, in order of appearance. The first one's paragraph starts where its
    block does (Domino and Sendmail put the reason or the transcript before the address).
    ``service`` admits postmaster and the like, which are skipped otherwise."""
    lines = text.splitlines()
    mentions: list[tuple[int, str]] = []  # (line index, address) where a new address appears
    for index, line in enumerate(lines):
        if _NOT_RECIPIENT_LINE.search(line):
            continue
        for address in find_addresses(line):
            key = address.lower()
            if key in excluded or (
                    not service and _SERVICE_LOCAL_PART.match(key.partition("@")[0])):
                continue
            if not any(seen.lower() == key for _, seen in mentions):
                mentions.append((index, address))
            break
    paragraphs = []
    for number, (start, address) in enumerate(mentions):
        end = mentions[number + 1][0] if number + 1 < len(mentions) else len(lines)
        end = min(end, start + MAX_PARAGRAPH_LINES)
        if number == 0:
            while start > 0 and lines[start - 1].strip() and mentions[0][0] - start < 6:
                start -= 1
        paragraphs.append((address, "\n".join(lines[start:end])))
    return paragraphs


def guess_paragraphs(message: Message) -> dict[str, str]:
    """Address (lower case) -> the human-readable paragraph about it, to explain DSN blocks
    that carry no diagnostic of their own."""
    full = notice_text(message)
    marker = _ORIGINAL_MARKER.search(full, 1)
    notice = full[: marker.start()] if marker else full
    return {address.lower(): paragraph
            for address, paragraph in recipient_paragraphs(notice, set(), service=True)}


def _sender_side(message: Message, original: Original) -> set[str]:
    """Addresses of the bounce's own envelope and headers: never the failed recipient."""
    found = {address_in(header(message, name))
             for name in ("From", "To", "Return-Path", "Reply-To", "Sender", "Delivered-To")}
    found.add(original.return_path)
    return {address.lower() for address in found if address}


_TAG = re.compile(r"</?[A-Za-z!][\w-]{0,30}(?:\s[^<>]{0,300})?/?>")


def _strip_html(text: str) -> str:
    text = text[:MAX_NOTICE_CHARS]
    text = re.sub(r"(?i)<br\s*/?>|</p>|</div>|</tr>", "\n", text)
    return _TAG.sub(" ", text).replace("&lt;", "<").replace("&gt;", ">").replace("&nbsp;", " ")
