"""Rewriting a message's HTML part for tracking (pure).

Each ``<a href>`` to an absolute http(s) URL becomes ``{public_url}/t/c/{token}`` (the token names
the message and the link's position, 0, 1, ... in document order) and the original URL is
returned in that order, to be stored with the message; a 1x1 open pixel
``{public_url}/t/o/{token}`` goes before ``</body>`` (or at the end).

Only the value of the first ``href`` attribute of ``<a>`` tags changes; every other byte of the
HTML is kept, so nothing else about the document can break. Left alone: comments (Outlook's
conditional blocks included), ``mailto:``/``tel:``/relative links and ``#anchors``, links with
whitespace or control characters inside, URLs longer than :data:`MAX_URL`, links past
:data:`MAX_LINKS`, and links ``skip`` rejects (the unsubscribe links, links already tracked).
The text part is never touched.
"""

from __future__ import annotations

import functools
import html as html_text
import os
import re
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import urlsplit

from engine.link_keys import LinkKeys
from engine.privacy.forgetting import remembers_personal_data
from mta.tracking.tokens import CLICK_PATH, OPEN_PATH, click_url, open_url

MAX_LINKS = 500
MAX_URL = 2000
UNSUBSCRIBE_PATH = "/v1/unsubscribe/"

# A comment, or an <a ...> start tag whose quoted attribute values may hold '>'.
# (Possessive runs: a long unterminated tag is given up at once, never backtracked through.)
_TOKEN = re.compile(r"""<!--.*?(?:-->|\Z)|<a(?=[\s>/])(?:[^>"']++|"[^"]*+"|'[^']*+')*+>""",
                    re.IGNORECASE | re.DOTALL)
_HREF = re.compile(r"""(?<=[\s"'/])href\s*=\s*(?:"([^"]*)"|'([^']*)'|([^\s"'=<>`]+))""",
                   re.IGNORECASE)
_BAD_CHARACTER = re.compile(r"[\x00-\x20\x7f]")
_BODY_END = re.compile(r"</body\s*>", re.IGNORECASE)


@dataclass(frozen=True, slots=True)
class TrackedHtml:
    html: str
    links: tuple[str, ...]  # the original URLs by position


# A message's HTML and id -> the tracked HTML (see :func:`tracker`).
Tracker = Callable[[str, uuid.UUID], TrackedHtml]


@remembers_personal_data
def forget_cached_links() -> None:
    """Drop the remembered link decisions (a contact was erased, and links may name people)."""
    trackable.cache_clear()
    _link_of.cache_clear()


@functools.lru_cache(maxsize=1024)  # a template's links repeat in every message it makes
def trackable(url: str) -> bool:
    """An absolute http(s) URL with a host, no whitespace or control characters, not too long."""
    if len(url) > MAX_URL or _BAD_CHARACTER.search(url):
        return False
    try:
        parts = urlsplit(url)
    except ValueError:
        return False
    return parts.scheme.lower() in ("http", "https") and bool(parts.hostname)


@functools.lru_cache(maxsize=1024)  # a template's <a> tags repeat in every message it makes
def _link_of(text: str) -> tuple[str, str, str] | None:
    """An ``<a>`` tag with a trackable first ``href``: the text before its ``href=...``, the URL
    (unescaped) and the text after; None for any other tag."""
    link = _href_of(text)
    if link is None or not trackable(link[1]):
        return None
    return link


def _href_of(text: str) -> tuple[str, str, str] | None:
    """An ``<a>`` tag's first ``href``: the text before it, the URL (unescaped) and the text
    after; None if it has none."""
    href = _HREF.search(text)
    if href is None:
        return None
    raw = next(group for group in href.groups() if group is not None)
    return text[:href.start()], html_text.unescape(raw).strip(), text[href.end():]


def rewrite_links(document: str, click: Callable[[int], str], pixel: str | None,
                  own: tuple[str, ...] = ()) -> TrackedHtml:
    """``click(position)`` gives the tracking URL of a link; ``pixel`` the open pixel's URL
    (None: no pixel). Links starting with one of the ``own`` prefixes (Herald's own links)
    stay as they are; a tag that spells one out is judged without being remembered (its link
    is one message's own, an unsubscribe link, so remembering it would only push the
    template's links out)."""
    links: list[str] = []
    hint = _common_prefix(own)

    def tag(match: re.Match[str]) -> str:
        text = match.group(0)
        if text.startswith("<!--") or len(links) >= MAX_LINKS:
            return text
        if hint and hint in text:
            href = _href_of(text)
            if href is None or href[1].startswith(own):
                return text
        link = _link_of(text)
        if link is None or link[1].startswith(own):  # (an own link spelled with entities)
            return text
        before, url, after = link
        replacement = f'href="{html_text.escape(click(len(links)), quote=True)}"'
        links.append(url)
        return before + replacement + after

    rewritten = _TOKEN.sub(tag, document)
    if pixel is not None:
        image = (f'<img src="{html_text.escape(pixel, quote=True)}" width="1" height="1" alt="" '
                 'style="display:block;width:1px;height:1px;border:0;">')
        ends = list(_BODY_END.finditer(rewritten))
        if ends:
            at = ends[-1].start()
            rewritten = rewritten[:at] + image + rewritten[at:]
        else:
            rewritten += image
    return TrackedHtml(rewritten, tuple(links))


@functools.lru_cache(maxsize=16)  # the same few prefixes for every message
def _common_prefix(own: tuple[str, ...]) -> str:
    """Text that every own link spells out: one substring test per tag (empty: none); the
    common prefix of the strings, character by character, is what is meant here."""
    return os.path.commonprefix(own) if own else ""  # noqa: RUF071


def track_html(document: str, public_url: str, keys: LinkKeys,
               message_id: uuid.UUID) -> TrackedHtml:
    """Herald's own links (unsubscribe, tracking) under ``public_url`` stay as they are."""
    base, own = _own_links(public_url)
    return rewrite_links(document, lambda position: click_url(base, keys, message_id, position),
                         open_url(base, keys, message_id), own)


@functools.lru_cache(maxsize=16)
def _own_links(public_url: str) -> tuple[str, tuple[str, ...]]:
    """The base URL and the prefixes of Herald's own links under it."""
    base = public_url.rstrip("/")
    return base, tuple(base + path for path in (UNSUBSCRIBE_PATH, CLICK_PATH, OPEN_PATH))


def tracker(public_url: str, keys: LinkKeys) -> Tracker:
    return lambda document, message_id: track_html(document, public_url, keys, message_id)
