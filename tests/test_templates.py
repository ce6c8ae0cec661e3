"""Templates: fallbacks, strict undefined, header safety, autoescape, sandbox, load-time errors,
and the shipped example templates."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from automation.content.formats import datetime_format, money
from automation.content.templates import TemplateSet, message_context
from automation.errors import DefinitionError, RenderError

ROOT = Path(__file__).resolve().parent.parent


def one(subject: str = "Hello", text: str = "Hi", html: str | None = None,
        **extra: str) -> TemplateSet:
    sources = {"m/subject.txt": subject, "m/body.txt": text, **extra}
    if html is not None:
        sources["m/body.html"] = html
    return TemplateSet.from_sources(sources)


def context(**overrides: Any) -> dict[str, Any]:
    values: dict[str, Any] = {
        "contact_id": "c-1", "email": "ann@example.com", "attributes": {"first_name": "Ann"},
        "event_type": "cart_updated", "event": {}, "unsubscribe_url": "https://u.example/x"}
    values.update(overrides)
    return message_context(**values)


# --- undefined values and fallbacks -----------------------------------------------------------


def test_default_fallbacks() -> None:
    templates = one(subject='Hi {{ first_name | default("there") }}')
    assert templates.render("m", context()).subject == "Hi Ann"
    assert templates.render("m", context(attributes={})).subject == "Hi there"
    assert templates.render("m", context(attributes={"first_name": None})).subject == "Hi there"
    chained = one(text='{{ event.cart.url | default("https://shop/cart") }}')
    assert chained.render("m", context()).text == "https://shop/cart"


def test_missing_variable_without_default_is_a_render_error() -> None:
    templates = one(text="Hello {{ first_name }}, your code is {{ coupon_code }}")
    with pytest.raises(RenderError) as caught:
        templates.render("m", context())
    assert caught.value.template == "m"
    assert "body.txt: undefined: 'coupon_code' is undefined" in caught.value.reason
    with pytest.raises(RenderError, match="undefined"):
        one(text="{% for i in event.items %}{{ i }}{% endfor %}").render("m", context())


def test_if_and_is_defined_work_on_missing_values() -> None:
    templates = one(text="{% if coupon %}code{% else %}none{% endif %}"
                         "{% if event.total is defined %} total{% endif %}")
    assert templates.render("m", context()).text == "none"
    assert templates.render("m", context(attributes={"coupon": "X"},
                                         event={"total": 5})).text == "code total"


def test_mapping_keys_win_over_dict_methods() -> None:
    templates = one(text="{% for item in event.items %}{{ item.name }};{% endfor %}"
                         "{{ event.keys | default('no keys') }}")
    rendered = templates.render("m", context(event={"items": [{"name": "a"}, {"name": "b"}]}))
    assert rendered.text == "a;b;no keys"


def test_context_exposes_attributes_and_reserved_names_win() -> None:
    values = context(attributes={"first_name": "Ann", "event": "shadowed", "plan": "pro",
                                 "bad-name": 1})
    assert values["first_name"] == "Ann" and values["plan"] == "pro"
    assert values["event"] == {} and "bad-name" not in values
    assert values["contact"] == {"id": "c-1", "email": "ann@example.com", "timezone": None,
                                 "locale": None,
                                 "attributes": {"first_name": "Ann", "event": "shadowed",
                                                "plan": "pro", "bad-name": 1}}
    assert values["recommendations"] == [] and values["links"] == {}


# --- header safety, escaping, sandbox ---------------------------------------------------------


@pytest.mark.parametrize("name", ["Ann\r\nBcc: victim@example.com", "Ann\nX", "Ann\rX",
                                  "Ann\u2028X", "Ann\x00"])
def test_line_breaks_in_the_subject_are_a_render_error(name: str) -> None:
    templates = one(subject="Hi {{ first_name }}")
    with pytest.raises(RenderError, match=r"subject\.txt: header Subject contains"):
        templates.render("m", context(attributes={"first_name": name}))


def test_subject_file_newline_is_dropped_and_empty_subject_rejected() -> None:
    assert one(subject="Hello\n").render("m", context()).subject == "Hello"
    with pytest.raises(RenderError, match="the subject is empty"):
        one(subject="{{ nothing | default('') }}").render("m", context())
    with pytest.raises(RenderError, match="octets long; the limit is 998"):
        one(subject="{{ 'x' * 999 }}").render("m", context())


def test_html_is_autoescaped_and_text_is_not() -> None:
    templates = one(subject="{{ first_name }}", text="{{ first_name }}",
                    html="<p>{{ first_name }}</p>{{ event.note | safe }}")
    rendered = templates.render("m", context(attributes={"first_name": "<b>Ann & co</b>"},
                                             event={"note": "<i>ok</i>"}))
    assert rendered.html == "<p>&lt;b&gt;Ann &amp; co&lt;/b&gt;</p><i>ok</i>"
    assert rendered.text == "<b>Ann & co</b>" and rendered.subject == "<b>Ann & co</b>"
    assert one().render("m", context()).html is None  # the HTML part is optional


@pytest.mark.parametrize("source", [
    "{{ ''.__class__ }}",
    "{{ ''.__class__.__mro__[1].__subclasses__() }}",
    "{{ event.__init__.__globals__ }}",
    "{{ contact.attributes.update({'x': 1}) }}",
    "{{ recommendations.append(1) }}",
    "{{ 'x' * 100000 }}",
    "{{ [1] * 100000 }}",
    "{{ 2 ** 100000 }}",
    "{% for i in range(10**9) %}{% endfor %}",
])
def test_sandbox_blocks_unsafe_access(source: str) -> None:
    with pytest.raises(RenderError):
        one(text=source).render("m", context())


def test_unknown_template() -> None:
    with pytest.raises(RenderError, match="no such template"):
        one().render("nope", context())


# --- load time ------------------------------------------------------------------------------


def write(root: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return root


def test_syntax_errors_name_file_and_line_and_are_all_collected(tmp_path: Path) -> None:
    write(tmp_path, {
        "welcome-1/subject.txt": "Welcome",
        "welcome-1/body.txt": "Hi\n",
        "welcome-1/body.html": "<p>\nfine\n{{ first_name | default('x') </p>\n",
        "welcome-2/subject.txt": "Hi {% if %}",
        "welcome-2/body.txt": "ok",
        "welcome-3/subject.txt": "no body",
        "welcome-4/subject.txt": "x",
        "welcome-4/body.txt": '{% extends "_layouts/missing.txt" %}',
    })
    with pytest.raises(DefinitionError) as caught:
        TemplateSet.load(tmp_path)
    found = caught.value.problems
    assert any(p.startswith(f"{tmp_path}/welcome-1/body.html:3: ") for p in found), found
    assert any(p.startswith(f"{tmp_path}/welcome-2/subject.txt:1: ") for p in found), found
    assert f"{tmp_path}/welcome-3: missing body.txt" in found
    assert (f"{tmp_path}/welcome-4/body.txt: refers to missing template "
            "'_layouts/missing.txt'") in found
    assert len(found) == 4
    with pytest.raises(DefinitionError, match="templates directory not found"):
        TemplateSet.load(tmp_path / "nope")


def test_layouts_and_partials_are_not_messages(tmp_path: Path) -> None:
    write(tmp_path, {
        "_layouts/base.html": "<main>{% block content %}{% endblock %}</main>",
        "_partials/hello.txt": "Hello {{ first_name | default('there') }}",
        "note/subject.txt": "Note",
        "note/body.txt": '{% include "_partials/hello.txt" %}!',
        "note/body.html": '{% extends "_layouts/base.html" %}{% block content %}'
                          '{{ event.x | default("<none>") }}{% endblock %}',
    })
    templates = TemplateSet.load(tmp_path)
    assert templates.names == {"note"} and "note" in templates
    rendered = templates.render("note", context())
    assert rendered.text == "Hello Ann!"
    assert rendered.html == "<main>&lt;none&gt;</main>"


def test_json_templates_for_webhook_bodies() -> None:
    templates = one()
    body = templates.compile_json({"contact": "{{ contact.id }}", "n": 5, "tags": ["{{ plan }}"],
                                   "plain": "no braces"}, "steps[0].webhook.body")
    assert body.render(context(attributes={"plan": "pro"})) == {
        "contact": "c-1", "n": 5, "tags": ["pro"], "plain": "no braces"}
    with pytest.raises(RenderError, match="webhook body"):
        body.render(context())
    with pytest.raises(DefinitionError, match=r"steps\[0\].webhook.body.a: line 1:"):
        templates.compile_json({"a": "{{ x"}, "steps[0].webhook.body")


@pytest.mark.parametrize(("value", "currency", "expected"), [
    (19.9, "EUR", "€19.90"),
    (1234.5, "usd", "$1,234.50"),
    ("7", "GBP", "£7.00"),
    (1500, "JPY", "¥1,500"),
    (-5, "USD", "-$5.00"),
    (12.5, "CHF", "CHF12.50"),
    (3, "KRW", "₩3"),  # any ISO 4217 currency, with its own decimals (Babel's CLDR data)
])
def test_money(value: Any, currency: str, expected: str) -> None:
    assert money(value, currency) == expected


@pytest.mark.parametrize(("locale", "expected"), [
    ("de_DE", "1.234,50\xa0€"),
    ("de-DE", "1.234,50\xa0€"),  # BCP 47 spelling
    ("fr_FR", "1\u202f234,50\xa0€"),
    ("en_US", "€1,234.50"),
])
def test_money_follows_the_locale(locale: str, expected: str) -> None:
    assert money(1234.5, "EUR", locale) == expected


def test_filters_use_the_contact_locale_attribute() -> None:
    templates = one(text='{{ 1234.5 | money("EUR") }} | {{ "2026-03-01" | datetime }} | '
                         '{{ "2026-03-01T10:00:00Z" | datetime("d. MMMM y") }} | '
                         '{{ 9 | money("EUR", locale="en_GB") }}')
    german = templates.render("m", context(attributes={"locale": "de-DE"})).text
    assert german == "1.234,50\xa0€ | 1. März 2026 | 1. März 2026 | €9.00"
    english = templates.render("m", context(attributes={})).text
    assert english == "€1,234.50 | March 1, 2026 | 1. March 2026 | €9.00"
    chinese = templates.render("m", context(attributes={"locale": "zh_Hans_CN"})).text
    assert chinese.startswith("€1,234.50 | 2026年3月1日 | ")
    # An unknown or malformed locale attribute falls back to the default, never fails a send.
    for bad in ("xx_YY", "../etc", 5, ""):
        assert templates.render("m", context(attributes={"locale": bad})).text == english
    assert context(attributes={"locale": "de-DE"})["contact"]["locale"] == "de_DE"


def test_money_and_datetime_reject_bad_values() -> None:
    for bad in (True, None, "abc", "nan", [1]):
        with pytest.raises(ValueError, match="is not an amount"):
            money(bad)
    assert datetime_format("2026-03-01T10:00:00Z", "%d %B %Y") == "01 March 2026"
    with pytest.raises(ValueError):
        datetime_format("soon")
    with pytest.raises(ValueError, match="is not a currency"):
        money(5, "euro")
    with pytest.raises(ValueError, match="unknown locale"):
        money(5, "EUR", "xx_YY")
    with pytest.raises(ValueError, match="format"):
        datetime_format("2026-03-01", "HH:mm")  # a time pattern for a date
    with pytest.raises(RenderError, match="is not an amount"):
        one(text="{{ event.price | money }}").render("m", context(event={"price": "free"}))


# --- the shipped templates ------------------------------------------------------------------

FULL_EVENT = {
    "cart_id": "k-9", "order_id": "1042", "currency": "EUR", "total": 129.0, "amount": 129.0,
    "cart_url": "https://shop.example.com/cart/k-9", "sku": "LIN-1", "name": "Linen shirt",
    "image_url": "https://img.example.com/lin-1.jpg", "price": 59.0,
    "url": "https://shop.example.com/p/lin-1",
    "items": [{"sku": "LIN-1", "name": "Linen shirt", "price": 59.0, "quantity": 1,
               "image_url": "https://img.example.com/lin-1.jpg"},
              {"sku": "MUG-2", "name": "Stoneware mug <blue>", "price": 35.0, "quantity": 2,
               "image_url": "https://img.example.com/mug-2.jpg"}],
}
PRODUCTS = [{"name": "Canvas tote", "url": "https://shop.example.com/p/tote", "price": 25,
             "currency": "EUR", "image_url": "https://img.example.com/tote.jpg"}]


@pytest.fixture(scope="module")
def shipped() -> TemplateSet:
    return TemplateSet.load(ROOT / "config" / "templates")


def test_shipped_templates_render_with_full_and_minimal_context(shipped: TemplateSet) -> None:
    assert len(shipped.names) == 14
    for name in sorted(shipped.names):
        full = shipped.render(name, context(event=FULL_EVENT, recommendations=PRODUCTS))
        bare = shipped.render(name, message_context(
            contact_id="c-2", email=None, attributes={}, event_type="x", event={},
            unsubscribe_url="https://u.example/y"))
        for rendered, unsubscribe in ((full, "https://u.example/x"),
                                      (bare, "https://u.example/y")):
            assert rendered.html is not None and unsubscribe in rendered.html
            assert unsubscribe in rendered.text
            assert "{{" not in rendered.html + rendered.text
        assert "Ann" in full.text and "Ann" in (full.html or "")  # first_name, with fallbacks
    with pytest.raises(RenderError, match="unsubscribe_url"):
        shipped.render("welcome-1", {"first_name": "Ann"})


def test_cart_reminders_show_items_images_prices_and_a_code(shipped: TemplateSet) -> None:
    first = shipped.render("cart-reminder-1", context(event=FULL_EVENT))
    assert first.html is not None
    assert 'src="https://img.example.com/mug-2.jpg"' in first.html
    assert "Stoneware mug &lt;blue&gt;" in first.html and "€35.00" in first.html
    assert 'href="https://shop.example.com/cart/k-9"' in first.html
    assert "Stoneware mug <blue> x 2" in first.text
    second = shipped.render("cart-reminder-2", context(event=FULL_EVENT))
    assert "CART10" in second.text and second.html is not None and "CART10" in second.html
    coded = shipped.render("cart-reminder-2", context(event={**FULL_EVENT,
                                                             "discount_code": "SAVE-K9"}))
    assert "SAVE-K9" in coded.text
    browse = shipped.render("browse-followup", context(event=FULL_EVENT,
                                                       recommendations=PRODUCTS))
    assert browse.subject == "Still thinking about Linen shirt?"
    assert "Canvas tote" in browse.text and "€59.00" in browse.text
