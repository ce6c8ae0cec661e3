"""The pure parts of open and click tracking: tokens, the HTML rewriter and the machine
classifier (table-driven)."""

from __future__ import annotations

import asyncio
import html.parser
import uuid

import pytest

from engine.link_keys import BadToken, LinkKeys
from mta.tracking.lookups import GroupedLookup
from mta.tracking.machine import (
    EXACT_USER_AGENTS,
    USER_AGENTS,
    Hit,
    MachineRules,
    RecentClicks,
    classify,
)
from mta.tracking.rewrite import (
    MAX_LINKS,
    _link_of,
    forget_cached_links,
    rewrite_links,
    track_html,
)
from mta.tracking.tokens import TrackingRef, read_tracking_token, tracking_token

KEYS = LinkKeys("k1", {"k1": b"s" * 32})
ROTATED = LinkKeys("k2", {"k2": b"t" * 32, "k1": b"s" * 32})
MESSAGE = uuid.UUID("0b7c3f0e-5a51-4f3e-9a36-8e6a3c1d2b4f")
PUBLIC = "https://mail.shop.test"
BROWSER = ("Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 "
           "(KHTML, like Gecko) Version/17.0 Safari/605.1.15")


# --- tokens -------------------------------------------------------------------------------

def test_a_token_names_its_message_and_position_and_survives_rotation() -> None:
    token = tracking_token(KEYS, "click", MESSAGE, 7)
    ref = read_tracking_token(ROTATED, "click", token)
    assert (ref.message_id, ref.position, ref.kind) == (MESSAGE, 7, "click")
    assert read_tracking_token(KEYS, "open", tracking_token(KEYS, "open", MESSAGE)).position == 0


def _flip(token: str, index: int) -> str:
    character = token[index]
    return token[:index] + ("b" if character != "b" else "c") + token[index + 1:]


@pytest.mark.parametrize("bad", [
    "", "k1", "k1.", "nokey", "k1.!!!!", "k9." + "a" * 48, "K1." + "a" * 300, "k1.é",
    "k1." + "a" * 47,  # one character short
])
def test_malformed_tokens_are_refused(bad: str) -> None:
    with pytest.raises(BadToken):
        read_tracking_token(KEYS, "click", bad)


def test_tampered_forged_and_cross_purpose_tokens_are_refused() -> None:
    token = tracking_token(KEYS, "click", MESSAGE, 3)
    for index in range(3, len(token)):
        with pytest.raises(BadToken):
            read_tracking_token(KEYS, "click", _flip(token, index))
    forged = tracking_token(LinkKeys("k1", {"k1": b"x" * 32}), "click", MESSAGE, 3)
    with pytest.raises(BadToken, match="signature does not match"):
        read_tracking_token(KEYS, "click", forged)
    with pytest.raises(BadToken):  # an open token is no click token
        read_tracking_token(KEYS, "click", tracking_token(KEYS, "open", MESSAGE))
    with pytest.raises(BadToken):  # nor an unsubscribe token
        from mta.suppression.tokens import unsubscribe_token
        read_tracking_token(KEYS, "click", unsubscribe_token(KEYS, MESSAGE))


# --- rewriter -----------------------------------------------------------------------------

class _Collect(html.parser.HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))

    def handle_data(self, data: str) -> None:
        self.text.append(data)


def parse(document: str) -> _Collect:
    collector = _Collect()
    collector.feed(document)
    collector.close()
    return collector


DOCUMENT = """<!DOCTYPE html><html><head><title>Hi</title></head><body>
<p>Plain <a href="https://shop.test/a?x=1&amp;y=2" style="color:red">first</a>,
<A HREF='http://shop.test/b'>upper case, single quotes</A>,
<a class="btn" href=https://shop.test/c>unquoted</a>,
<a title="a > b" href="https://shop.test/d">a '>' in another attribute</a>,
<a href="  https://shop.test/e  ">spaces around</a>,
<a href="https://shop.test/a?x=1&amp;y=2">the first URL again</a></p>
<p>Left alone: <a href="mailto:help@shop.test">mail</a> <a href="tel:+331234">call</a>
<a href="#top">anchor</a> <a href="/relative">relative</a> <a name="n">no href</a>
<a href="javascript:alert(1)">js</a> <a href="https://shop.test/with space">space</a>
<a data-href="https://shop.test/not-an-href">data-href</a>
<a href="https://mail.shop.test/v1/unsubscribe/k1.abc">unsubscribe</a>
<abbr title="https://shop.test/x">abbr</abbr></p>
<!-- <a href="https://shop.test/commented">commented out</a> -->
<!--[if mso]><a href="https://shop.test/outlook">outlook only</a><![endif]-->
</body></html>"""


def test_links_are_rewritten_in_order_and_nothing_else_changes() -> None:
    tracked = track_html(DOCUMENT, PUBLIC, KEYS, MESSAGE)
    assert tracked.links == ("https://shop.test/a?x=1&y=2", "http://shop.test/b",
                             "https://shop.test/c", "https://shop.test/d", "https://shop.test/e",
                             "https://shop.test/a?x=1&y=2")
    before, after = parse(DOCUMENT), parse(tracked.html)
    assert "".join(before.text) == "".join(after.text)  # the text is untouched
    hrefs = [attrs.get("href") for tag, attrs in after.tags if tag == "a"]
    tracked_hrefs = [h for h in hrefs if h and h.startswith(f"{PUBLIC}/t/c/")]
    assert len(tracked_hrefs) == 6
    for position, href in enumerate(tracked_hrefs):
        ref = read_tracking_token(KEYS, "click", href.rsplit("/", 1)[1])
        assert (ref.message_id, ref.position) == (MESSAGE, position)
    # Other attributes and the untracked links are exactly as they were.
    assert ("a", {"href": tracked_hrefs[0], "style": "color:red"}) in after.tags
    assert ("a", {"class": "btn", "href": tracked_hrefs[2]}) in after.tags
    assert ("a", {"title": "a > b", "href": tracked_hrefs[3]}) in after.tags
    for untouched in ("mailto:help@shop.test", "tel:+331234", "#top", "/relative",
                      "javascript:alert(1)", "https://shop.test/with space",
                      "https://mail.shop.test/v1/unsubscribe/k1.abc"):
        assert untouched in hrefs
    assert '<a data-href="https://shop.test/not-an-href">' in tracked.html
    assert '<!-- <a href="https://shop.test/commented">' in tracked.html
    assert '<a href="https://shop.test/outlook">' in tracked.html
    # Everything outside the rewritten href values is byte for byte the same.
    assert tracked.html.count("\n") == DOCUMENT.count("\n")


def test_the_open_pixel_goes_before_the_body_end_or_at_the_end() -> None:
    tracked = track_html(DOCUMENT, PUBLIC, KEYS, MESSAGE)
    images = [attrs for tag, attrs in parse(tracked.html).tags if tag == "img"]
    assert len(images) == 1 and images[0]["width"] == "1" and images[0]["height"] == "1"
    src = images[0]["src"]
    assert src is not None and src.startswith(f"{PUBLIC}/t/o/")
    assert read_tracking_token(KEYS, "open", src.rsplit("/", 1)[1]).message_id == MESSAGE
    assert tracked.html.index("<img") < tracked.html.rindex("</body>")
    fragment = track_html("<p>no body tag</p>", PUBLIC, KEYS, MESSAGE).html
    assert fragment.startswith("<p>no body tag</p><img ")


def test_already_tracked_links_and_the_link_cap() -> None:
    once = track_html('<a href="https://shop.test/a">a</a>', PUBLIC, KEYS, MESSAGE)
    again = track_html(once.html, PUBLIC, KEYS, MESSAGE)
    assert again.links == () and again.html.count("/t/c/") == 1
    many = "".join(f'<a href="https://shop.test/{i}">{i}</a>' for i in range(MAX_LINKS + 5))
    capped = rewrite_links(many, lambda p: f"https://t/{p}", None)
    assert len(capped.links) == MAX_LINKS
    assert f'<a href="https://shop.test/{MAX_LINKS}">' in capped.html


def test_a_remembered_tag_gives_each_message_its_own_tokens_and_is_forgotten() -> None:
    """Each <a> tag's parse is remembered (a template's tags repeat in every message): a second
    message with the same document gets its own tokens, a later call with another public URL
    still leaves that URL's own links alone, and forgetting drops the remembered tags (they may
    hold personal URLs)."""
    other = uuid.UUID("1f0c3a4e-0000-4000-8000-000000000002")
    first = track_html(DOCUMENT, PUBLIC, KEYS, MESSAGE)
    second = track_html(DOCUMENT, PUBLIC, KEYS, other)
    assert first.links == second.links and first.html != second.html
    tokens = [href.rsplit("/", 1)[1] for href in second.html.split('"')
              if href.startswith(f"{PUBLIC}/t/c/")]
    assert [read_tracking_token(KEYS, "click", token) for token in tokens] == [
        TrackingRef("click", other, position) for position in range(len(second.links))]
    assert _link_of.cache_info().currsize > 0
    # Under another public URL the same tags are tracked, and that URL's own links are not.
    own = '<a href="https://shop.test/a">a</a><a href="https://shop.test/t/c/k1.x">t</a>'
    elsewhere = track_html(own, "https://shop.test", KEYS, MESSAGE)
    assert elsewhere.links == ("https://shop.test/a",)
    assert '<a href="https://shop.test/t/c/k1.x">' in elsewhere.html
    forget_cached_links()
    assert _link_of.cache_info().currsize == 0


def test_own_links_stay_as_they_are_and_are_not_remembered() -> None:
    """A tag spelling out an own link is left alone without being remembered (one per
    message); a tag that only mentions it elsewhere is tracked, and one that spells it with
    entities is left alone too, after the usual (remembered) parse."""
    own = (f"{PUBLIC}/v1/unsubscribe/", f"{PUBLIC}/t/c/", f"{PUBLIC}/t/o/")
    document = (f'<a href="{PUBLIC}/v1/unsubscribe/k1.per-message">u</a>'
                f'<a title="{PUBLIC}/t/c/" href="https://shop.test/z">mentions it</a>'
                f'<a href="https&#58;//mail.shop.test/v1/unsubscribe/k1.x">entity</a>'
                f'<a href=" {PUBLIC}/t/o/k1.y ">spaces</a>')
    forget_cached_links()
    with_own = rewrite_links(document, lambda p: f"https://t/{p}", None, own)
    assert with_own.links == ("https://shop.test/z",)
    assert _link_of.cache_info().currsize == 2  # the mention and the entity spelling
    assert with_own.html == document.replace('href="https://shop.test/z"', 'href="https://t/0"')
    without_own = rewrite_links(document, lambda p: f"https://t/{p}", None)
    assert len(without_own.links) == 4  # the same tags, with no own prefixes: all tracked


# --- machine classifier -------------------------------------------------------------------

RULES = MachineRules(click_window=10.0, burst_window=2.0)
CASES = [
    # (hit, expected reason or None)
    (Hit("click", "GET", BROWSER, 3600.0), None),
    (Hit("open", "GET", BROWSER, 1.0), None),  # an early open by a person's client is fine
    (Hit("click", "HEAD", BROWSER, 3600.0), "head_request"),
    (Hit("open", "head", BROWSER, 3600.0), "head_request"),
    (Hit("open", "GET", None, 3600.0), "no_user_agent"),
    (Hit("open", "GET", "  ", 3600.0), "no_user_agent"),
    (Hit("open", "GET", "Mozilla/5.0", 3600.0), "proxy:apple_privacy_proxy"),
    (Hit("open", "GET", "Mozilla/5.0 (Windows NT 5.1; rv:11.0) Gecko Firefox/11.0 "
         "(via ggpht.com GoogleImageProxy)", 3600.0), "proxy:google_image_proxy"),
    (Hit("open", "GET", "YahooMailProxy; https://help.yahoo.com/kb/yahoo-mail-proxy-SLN28749.html",
         3600.0), "proxy:yahoo_mail_proxy"),
    (Hit("click", "GET", "Mozilla/5.0 (compatible; BingPreview/1.0b)", 3600.0),
     "scanner:bing_preview"),
    (Hit("click", "GET", "Proofpoint URL Defense", 3600.0), "scanner:proofpoint"),
    (Hit("click", "GET", "Mozilla/5.0 HeadlessChrome/120.0", 3600.0),
     "scanner:headless_browser"),
    (Hit("click", "GET", "python-requests/2.31", 3600.0), "client_library:python"),
    (Hit("click", "GET", "curl/8.5.0", 3600.0), "client_library:curl"),
    (Hit("click", "GET", BROWSER, 2.0), "soon_after_delivery"),
    (Hit("click", "GET", BROWSER, None), "soon_after_delivery"),
    (Hit("click", "GET", BROWSER, 3600.0, 2, [(1, 0.3)]), "link_burst"),
    (Hit("click", "GET", BROWSER, 3600.0, 1, [(1, 0.3)]), None),  # the same link twice
    (Hit("click", "GET", BROWSER, 3600.0, 2, [(1, 30.0)]), None),  # long after the other
]


@pytest.mark.parametrize(("hit", "reason"), CASES)
def test_classify(hit: Hit, reason: str | None) -> None:
    assert classify(hit, RULES) == reason


def test_every_user_agent_rule_is_reachable() -> None:
    """Each table row is hit by its own needle (no earlier row shadows it with another name)."""
    for needle, category, name in USER_AGENTS:
        found = classify(Hit("open", "GET", f"X {needle.upper()} Y", 3600.0), RULES)
        assert found == f"{category}:{name}", needle
    for value, (category, name) in EXACT_USER_AGENTS.items():
        assert classify(Hit("open", "GET", value.upper(), 3600.0), RULES) == f"{category}:{name}"


def test_recent_clicks_are_bounded_and_expire() -> None:
    recent = RecentClicks(window=2.0, max_messages=2)
    assert recent.note("m1", 0, 100.0) == []
    assert recent.note("m1", 1, 100.5) == [(0, 0.5)]
    assert recent.note("m1", 2, 103.0) == []  # both earlier clicks are older than the window
    recent.note("m2", 0, 103.0)
    recent.note("m3", 0, 103.0)  # m1 is the least recent: dropped
    assert recent.note("m1", 0, 103.1) == []


def test_the_message_cache_keeps_only_delivered_messages_and_is_bounded() -> None:
    from datetime import UTC, datetime

    from mta.tracking.store import MessageCache, TrackedMessage

    cache = MessageCache(max_messages=2)
    ids = [uuid.uuid4() for _ in range(3)]
    pending = TrackedMessage(ids[0], "c", {}, None, ("https://a",))
    cache.put(pending)
    assert cache.get(ids[0]) is None  # not delivered yet: its delivery time may still change
    delivered = [TrackedMessage(i, "c", {}, datetime.now(UTC), ("https://a",)) for i in ids]
    for message in delivered:
        cache.put(message)
    assert cache.get(ids[0]) is None and cache.get(ids[2]) is delivered[2]
    assert delivered[2].url(0) == "https://a" and delivered[2].url(1) is None
    assert delivered[2].url(-1) is None


# --- grouped look-ups ----------------------------------------------------------------------

class _Fetcher:
    def __init__(self) -> None:
        self.calls: list[list[int]] = []
        self.called = asyncio.Event()
        self.release = asyncio.Event()
        self.fail: Exception | None = None

    async def __call__(self, keys: list[int]) -> dict[int, str]:
        self.calls.append(keys)
        self.called.set()
        await self.release.wait()
        if self.fail is not None:
            raise self.fail
        return {key: f"v{key}" for key in keys if key != 13}


async def test_concurrent_lookups_share_queries() -> None:
    fetcher = _Fetcher()
    lookup = GroupedLookup(fetcher)
    first = asyncio.create_task(lookup.get(0))
    await fetcher.called.wait()
    rest = [asyncio.create_task(lookup.get(key)) for key in range(1, 50)]
    rest.append(asyncio.create_task(lookup.get(5)))  # the same key twice: one future
    fetcher.release.set()
    assert await first == "v0"
    assert await asyncio.gather(*rest) == [None if k == 13 else f"v{k}" for k in range(1, 50)] \
        + ["v5"]
    assert fetcher.calls == [[0], list(range(1, 50))]


async def test_a_failed_query_fails_its_callers_and_the_next_one_is_fresh() -> None:
    fetcher = _Fetcher()
    fetcher.fail = RuntimeError("database down")
    fetcher.release.set()
    lookup = GroupedLookup(fetcher)
    results = await asyncio.gather(lookup.get(1), lookup.get(2), return_exceptions=True)
    assert all(isinstance(r, RuntimeError) for r in results)
    fetcher.fail = None
    assert await lookup.get(1) == "v1"


async def test_a_cancelled_leader_hands_its_batch_to_the_next() -> None:
    fetcher = _Fetcher()
    lookup = GroupedLookup(fetcher)
    leader = asyncio.create_task(lookup.get(1))
    await fetcher.called.wait()
    waiter = asyncio.create_task(lookup.get(2))
    await asyncio.sleep(0)  # one loop turn: the waiter registers its key and waits
    leader.cancel()
    fetcher.release.set()
    assert await waiter == "v2"
    assert [sorted(c) for c in fetcher.calls[1:]] == [[1, 2]]  # the leader's key went back
