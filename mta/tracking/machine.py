"""Telling machine opens and clicks from people's (pure, table-driven).

Mail privacy proxies (Apple Mail Privacy Protection, Google's and Yahoo's image proxies) fetch
every image of a message whether or not anyone reads it; link scanners (Microsoft Defender Safe
Links, Proofpoint, Mimecast, Barracuda, ...) follow links before delivery to the inbox or right
after. Their hits are recorded, flagged ``machine: true`` with a ``machine_reason``, and left out
of engagement triggers and unique figures unless a workflow asks for them.

Rules, first match wins (:func:`classify`):

* ``head_request``: a HEAD request (people's browsers send GET);
* ``no_user_agent``: no User-Agent at all;
* ``proxy:<name>`` / ``scanner:<name>`` / ``client_library:<name>``: a known user agent
  (:data:`USER_AGENTS`: substrings, case-insensitive; ``EXACT_USER_AGENTS``: whole values);
* ``soon_after_delivery``: a click within ``click_window`` seconds of delivery (or before the
  delivery was recorded);
* ``link_burst``: a click on a link while a *different* link of the same message was clicked
  less than ``burst_window`` seconds before (scanners follow every link at once; the first click
  of a burst is only caught by the other rules, as nothing can know yet that more will follow).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

# (substring of the lower-cased User-Agent, category, name), in order.
USER_AGENTS: tuple[tuple[str, str, str], ...] = (
    ("googleimageproxy", "proxy", "google_image_proxy"),
    ("ggpht.com", "proxy", "google_image_proxy"),
    ("yahoomailproxy", "proxy", "yahoo_mail_proxy"),
    ("ymailproxy", "proxy", "yahoo_mail_proxy"),
    ("outlook-ios-android", "proxy", "outlook_proxy"),
    ("microsoft office existence discovery", "scanner", "microsoft_office"),
    ("safelinks", "scanner", "microsoft_safe_links"),
    ("bingpreview", "scanner", "bing_preview"),
    ("proofpoint", "scanner", "proofpoint"),
    ("mimecast", "scanner", "mimecast"),
    ("barracuda", "scanner", "barracuda"),
    ("symantec", "scanner", "symantec"),
    ("forcepoint", "scanner", "forcepoint"),
    ("trendmicro", "scanner", "trend_micro"),
    ("cisco", "scanner", "cisco"),
    ("ironport", "scanner", "cisco"),
    ("fortiguard", "scanner", "fortinet"),
    ("sophos", "scanner", "sophos"),
    ("slackbot", "scanner", "link_preview"),
    ("facebookexternalhit", "scanner", "link_preview"),
    ("twitterbot", "scanner", "link_preview"),
    ("linkedinbot", "scanner", "link_preview"),
    ("whatsapp", "scanner", "link_preview"),
    ("headlesschrome", "scanner", "headless_browser"),
    ("phantomjs", "scanner", "headless_browser"),
    ("bot", "scanner", "bot"),
    ("spider", "scanner", "bot"),
    ("crawl", "scanner", "bot"),
    ("python-", "client_library", "python"),
    ("curl/", "client_library", "curl"),
    ("wget", "client_library", "wget"),
    ("go-http-client", "client_library", "go"),
    ("java/", "client_library", "java"),
    ("okhttp", "client_library", "okhttp"),
    ("libwww-perl", "client_library", "perl"),
    ("apache-httpclient", "client_library", "java"),
    ("node-fetch", "client_library", "node"),
    ("axios/", "client_library", "node"),
)
# Whole User-Agent values (lower-cased): Apple's privacy proxy sends a bare "Mozilla/5.0".
EXACT_USER_AGENTS: dict[str, tuple[str, str]] = {
    "mozilla/5.0": ("proxy", "apple_privacy_proxy"),
    "mozilla/4.0": ("proxy", "generic_proxy"),
}


@dataclass(frozen=True, slots=True)
class Hit:
    """One open or click. ``since_delivery``: seconds since the message was delivered (None: no
    delivery recorded yet). ``recent_clicks``: other clicks of the same message as
    ``(position, seconds ago)``."""

    kind: Literal["open", "click"]
    method: str
    user_agent: str | None
    since_delivery: float | None
    position: int = 0
    recent_clicks: Sequence[tuple[int, float]] = ()


@dataclass(frozen=True, slots=True)
class MachineRules:
    click_window: float = 10.0
    burst_window: float = 2.0


def user_agent_reason(user_agent: str | None) -> str | None:
    if user_agent is None or not user_agent.strip():
        return "no_user_agent"
    lowered = user_agent.strip().lower()
    exact = EXACT_USER_AGENTS.get(lowered)
    if exact is not None:
        return f"{exact[0]}:{exact[1]}"
    for needle, category, name in USER_AGENTS:
        if needle in lowered:
            return f"{category}:{name}"
    return None


def classify(hit: Hit, rules: MachineRules) -> str | None:
    """Why the hit is a machine's, or None for a person's."""
    if hit.method.upper() == "HEAD":
        return "head_request"
    reason = user_agent_reason(hit.user_agent)
    if reason is not None:
        return reason
    if hit.kind != "click":
        return None
    if hit.since_delivery is None or hit.since_delivery < rules.click_window:
        return "soon_after_delivery"
    if any(position != hit.position and 0 <= ago < rules.burst_window
           for position, ago in hit.recent_clicks):
        return "link_burst"
    return None


class RecentClicks:
    """The last clicks per message within ``window`` seconds (for ``link_burst``), for at most
    ``max_messages`` messages (the least recently clicked go first). The clock is passed in.
    Kept per process: with several HTTP processes a burst split across them is seen in part."""

    def __init__(self, window: float, max_messages: int = 10_000, per_message: int = 64) -> None:
        self.window = window
        self.max_messages = max_messages
        self.per_message = per_message
        self._clicks: dict[object, list[tuple[int, float]]] = {}

    def note(self, message: object, position: int, now: float) -> list[tuple[int, float]]:
        """Record a click; returns the message's earlier recent clicks as (position, ago)."""
        earlier = [(p, now - t) for p, t in self._clicks.pop(message, ())
                   if 0 <= now - t < self.window]
        kept = [(p, now - ago) for p, ago in earlier][-(self.per_message - 1):]
        self._clicks[message] = [*kept, (position, now)]  # re-inserted: most recent last
        if len(self._clicks) > self.max_messages:
            del self._clicks[next(iter(self._clicks))]
        return earlier
