"""Links that come from event data reach a message only if they point at the sender's own sites
(``[automation] link_domains``) (pure).

Event properties are data the sender (or, through the pixel, a browser) chose, and a template
that prints ``{{ event.url }}`` into a button would otherwise send readers anywhere. So before a
message is rendered, every *link-like* string in the trigger event and the recommendations is
checked (:func:`screen_links`):

* link-like: the key ends in ``url``, ``uri``, ``href``, ``link``, ``src`` or ``image`` (or a
  plural), or the
  value contains ``://``, starts with ``//`` or ``www.``, or starts with a scheme such as
  ``https:``, ``javascript:`` or ``data:``;
* kept only if it is a clean ``http(s)`` URL (no spaces, backslashes or user info) whose host is a
  listed domain or a subdomain of one (``shop.example.com`` allows ``img.shop.example.com``).

A value that fails is replaced (the caller says with what: templates use an undefined value, so
``| default(...)`` and ``{% if %}`` fall back) and reported as a :class:`DroppedLink`, which the
runtime logs for ``herald explain``. Template authors need do nothing but give links a fallback.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from engine.addresses import AddressError, ascii_host

LINK_KEY_SUFFIXES = ("url", "urls", "uri", "href", "link", "links", "src", "image", "images")
LINK_SCHEMES = frozenset({"http", "https", "javascript", "data", "vbscript", "file", "ftp",
                          "blob"})
MAX_DEPTH = 32
MAX_SHOWN = 200  # characters of a dropped value in its report
_SCHEME = re.compile(r"^([a-z][a-z0-9+.\-]*):")
_DOMAIN = re.compile(r"^(?=.{1,253}$)([a-z0-9]([a-z0-9\-]{0,61}[a-z0-9])?)(\.[a-z0-9]([a-z0-9\-]"
                     r"{0,61}[a-z0-9])?)*$")
_UNCLEAN = re.compile(r"[\s\\\x00-\x1f\x7f]")
_SCALARS = frozenset({int, float, bool, type(None)})


@dataclass(frozen=True, slots=True)
class DroppedLink:
    path: str  # e.g. event.items[0].image_url
    value: str  # the start of the dropped value
    reason: str

    def describe(self) -> str:
        return f"{self.path} ({self.value!r}): {self.reason}"


def _ascii_host(host: str) -> str:
    """Lower case, no trailing dot, IDNA 2008 A-labels as everywhere else
    (:func:`engine.addresses.ascii_host`); ValueError when it is not a host name."""
    try:
        return ascii_host(host)
    except AddressError:
        raise ValueError(f"{host!r} is not a host name") from None


def normalize_domains(domains: Iterable[str]) -> tuple[str, ...]:
    """The allow-list as ASCII host names; ValueError names a bad entry."""
    normalized = []
    for domain in domains:
        try:
            ascii_domain = _ascii_host(domain) if isinstance(domain, str) else ""
        except ValueError:
            ascii_domain = ""
        if not _DOMAIN.match(ascii_domain):
            raise ValueError(f"link_domains: {domain!r} is not a domain name "
                             "(e.g. 'shop.example.com'; no scheme, path or wildcard)")
        normalized.append(ascii_domain)
    return tuple(dict.fromkeys(normalized))


def host_allowed(host: str, domains: tuple[str, ...]) -> bool:
    """``host`` is one of ``domains`` (normalised) or a subdomain of one."""
    return any(host == domain or host.endswith("." + domain) for domain in domains)


def looks_like_link(key: str | None, value: str) -> bool:
    lowered = value.strip().lower()
    if key is not None and key.lower().endswith(LINK_KEY_SUFFIXES):
        return True
    if "://" in lowered or lowered.startswith(("//", "www.")):
        return True
    scheme = _SCHEME.match(lowered)
    return scheme is not None and scheme.group(1) in LINK_SCHEMES


def link_problem(value: str, domains: tuple[str, ...]) -> str | None:
    """None if ``value`` is a clean http(s) URL to an allowed host, else why it is not."""
    if _UNCLEAN.search(value):
        return "not a clean URL (spaces, control characters or backslashes)"
    try:
        parts = urlsplit(value)
        parts.port  # noqa: B018 - raises ValueError for a bad port
    except ValueError:
        return "not a valid URL"
    if parts.scheme.lower() not in ("http", "https") or not parts.netloc:
        return "not an absolute http(s) URL"
    if "@" in parts.netloc:
        return "a URL with user info"
    try:
        host = _ascii_host(parts.hostname or "")
    except ValueError:
        return "not a valid host name"
    if not host_allowed(host, domains):
        return f"host {host!r} is not in [automation] link_domains"
    return None


def screen_links(value: Any, domains: tuple[str, ...], path: str,
                 replace: Callable[[DroppedLink], Any],
                 dropped: list[DroppedLink], key: str | None = None, depth: int = 0) -> Any:
    """``value`` with every link-like string that fails :func:`link_problem` replaced by
    ``replace(report)``; the reports are appended to ``dropped``. Containers are copied."""
    if type(value) in _SCALARS:  # most values: nothing to screen, no path to build
        return value
    if type(value) is dict and depth < MAX_DEPTH:  # the Mapping branch below, no ABC check
        return _screen_mapping(value, domains, path, replace, dropped, depth)
    if isinstance(value, str):
        if not looks_like_link(key, value):
            return value
        problem = link_problem(value, domains)
        if problem is None:
            return value
        report = DroppedLink(path, value[:MAX_SHOWN], problem)
        dropped.append(report)
        return replace(report)
    if isinstance(value, Mapping | list | tuple) and depth >= MAX_DEPTH:
        report = DroppedLink(path, "", f"nested deeper than {MAX_DEPTH} levels")
        dropped.append(report)
        return replace(report)
    if isinstance(value, Mapping):
        return _screen_mapping(value, domains, path, replace, dropped, depth)
    if isinstance(value, list | tuple):
        return [screen_links(item, domains, f"{path}[{index}]", replace, dropped, key, depth + 1)
                for index, item in enumerate(value)]
    return value


def _screen_mapping(value: Mapping[Any, Any], domains: tuple[str, ...], path: str,
                    replace: Callable[[DroppedLink], Any], dropped: list[DroppedLink],
                    depth: int) -> dict[Any, Any]:
    return {name: item if type(item) in _SCALARS else screen_links(
                item, domains, f"{path}.{name}", replace, dropped,
                name if isinstance(name, str) else None, depth + 1)
            for name, item in value.items()}
