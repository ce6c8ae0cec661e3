"""Links from event data in messages: the allow-list, the template fallback, and the reason."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from automation.content.link_policy import (
    DroppedLink,
    link_problem,
    looks_like_link,
    normalize_domains,
    screen_links,
)
from automation.content.templates import TemplateSet, message_context
from automation.errors import RenderError
from automation.settings import AutomationSettings
from engine.errors import ConfigError
from herald.settings import load_settings

ROOT = Path(__file__).resolve().parent.parent
DOMAINS = normalize_domains(["Shop.Example.com.", "bücher.example", "faß.example"])


@pytest.mark.parametrize(("url", "problem"), [
    ("https://shop.example.com/p/1", None),
    ("http://img.shop.example.com/a.jpg", None),
    ("https://shop.example.com:8443/x?y=1#z", None),
    ("https://xn--bcher-kva.example/", None),
    ("https://bücher.example/", None),
    ("https://xn--fa-hia.example/", None),  # IDNA 2008, as addresses and DKIM keys
    ("https://faß.example/", None),
    ("https://fass.example/", "host 'fass.example' is not in"),  # IDNA 2003's other domain
    ("https://phish.invalid/login", "host 'phish.invalid' is not in [automation] link_domains"),
    ("https://shop.example.com.phish.invalid/", "is not in"),
    ("https://evilshop.example.com/", "is not in"),
    ("https://shop.example.com@phish.invalid/", "user info"),
    ("https://shop.example.com\\@phish.invalid/", "not a clean URL"),
    ("https://shop.example.com /x", "not a clean URL"),
    ("javascript:alert(1)", "not an absolute http(s) URL"),
    ("//phish.invalid/x", "not an absolute http(s) URL"),
    ("/relative/path", "not an absolute http(s) URL"),
    ("https://shop.example.com:99999/", "not a valid URL"),
])
def test_only_clean_http_urls_to_listed_domains_pass(url: str, problem: str | None) -> None:
    found = link_problem(url, DOMAINS)
    assert found == problem if problem is None else (found is not None and problem in found)


def test_what_counts_as_a_link() -> None:
    assert looks_like_link("url", "anything")
    assert looks_like_link("image_url", "") and looks_like_link("href", "x")
    assert looks_like_link("name", "Your account is locked: https://phish.invalid")
    assert looks_like_link("name", "www.phish.invalid") and looks_like_link("n", "//phish")
    assert looks_like_link("note", "JavaScript:alert(1)") and looks_like_link("n", "data:x")
    assert not looks_like_link("name", "Sale: 50% off") and not looks_like_link("sku", "Z1")


def test_screening_replaces_and_reports_nested_values() -> None:
    dropped: list[DroppedLink] = []
    event = {"sku": "Z1", "url": "https://phish.invalid/login", "ok": "https://shop.example.com/",
             "items": [{"image_url": "https://cdn.evil/x.png", "qty": 1}], "price": 3}
    screened = screen_links(event, DOMAINS, "event", lambda r: "<gone>", dropped)
    assert screened == {"sku": "Z1", "url": "<gone>", "ok": "https://shop.example.com/",
                        "items": [{"image_url": "<gone>", "qty": 1}], "price": 3}
    assert [d.path for d in dropped] == ["event.url", "event.items[0].image_url"]
    assert event["url"] == "https://phish.invalid/login"  # the input is not changed
    deep: Any = "https://phish.invalid"
    for _ in range(40):
        deep = [deep]
    dropped = []
    screen_links({"x": deep}, DOMAINS, "event", lambda r: None, dropped)
    assert "nested deeper" in dropped[0].reason


def test_bad_domains_fail_at_start_naming_the_key(tmp_path: Path) -> None:
    for bad in (["https://shop.example.com"], ["*.example.com"], ["shop.example.com/x"], [""]):
        with pytest.raises(ValueError, match="link_domains"):
            AutomationSettings(link_domains=tuple(bad))
    config = tmp_path / "herald.toml"
    config.write_text('[automation]\nlink_domains = ["https://shop.example.com"]\n')
    with pytest.raises(ConfigError, match="link_domains"):
        load_settings(config, environ={})


PHISH = {"sku": "Z1", "name": "Your account is locked", "url": "https://phish.invalid/login",
         "image_url": "https://phish.invalid/logo.png", "price": 10}


def render(templates: TemplateSet, name: str, event: dict[str, Any],
           recommendations: list[dict[str, Any]] | None = None,
           domains: tuple[str, ...] = DOMAINS) -> tuple[str, list[DroppedLink]]:
    dropped: list[DroppedLink] = []
    message = templates.render(name, message_context(
        contact_id="c1", email="ann@example.com", attributes={"first_name": "Ann"},
        event_type="product_viewed", event=event, unsubscribe_url="https://u.example/x",
        recommendations=recommendations or [], link_domains=domains, dropped=dropped))
    return (message.html or "") + message.text + message.subject, dropped


def test_shipped_templates_fall_back_for_foreign_links_and_keep_allowed_ones() -> None:
    shipped = TemplateSet.load(ROOT / "config" / "templates")
    products = [{"sku": "P2", "name": "Tote", "url": "https://phish.invalid/tote",
                 "image_url": "https://img.shop.example.com/tote.jpg"}]
    for name in sorted(shipped.names):
        text, dropped = render(shipped, name, PHISH, products)
        assert "phish.invalid" not in text, name
        assert {d.path for d in dropped} == {"event.url", "event.image_url",
                                             "recommendations[0].url"}
    text, _ = render(shipped, "browse-followup", PHISH, products)
    assert 'href="https://shop.example.com"' in text  # the button's fallback
    assert "https://img.shop.example.com/tote.jpg" in text  # an allowed image stays
    own = {**PHISH, "url": "https://shop.example.com/p/z1"}
    text, dropped = render(shipped, "browse-followup", own)
    assert 'href="https://shop.example.com/p/z1"' in text
    text, _ = render(shipped, "browse-followup", own, domains=())
    assert "shop.example.com/p/z1" not in text  # an empty allow-list allows nothing


def test_a_foreign_link_printed_without_fallback_is_a_render_error_naming_why() -> None:
    templates = TemplateSet.from_sources({"m/subject.txt": "Hi", "m/body.txt": "{{ event.url }}"})
    with pytest.raises(RenderError, match=r"event\.url: link dropped: host 'phish\.invalid'"):
        render(templates, "m", PHISH)
