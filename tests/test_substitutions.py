"""The bounded substitution sandbox (pure): what renders, and what is refused before it could
cost time or memory."""

from __future__ import annotations

import pytest

from mta.substitutions import SubstitutionError, compile_part


def test_output_conditionals_filters_and_html_escaping() -> None:
    template = compile_part("Hi {{ name|title }}{% if vip %}, VIP{% endif %}! "
                            "{{ city|default('there') }}")
    assert template.render({"name": "ann", "vip": True}) == "Hi Ann, VIP! there"
    assert template.render({"name": "bob"}) == "Hi Bob! there"  # a missing value is false
    assert compile_part("<b>{{ x }}</b>", html=True).render({"x": "<i>"}) == \
        "<b>&lt;i&gt;</b>"
    assert compile_part("no markup at all").compiled is None


@pytest.mark.parametrize(("source", "words"), [
    ("{% for i in x %}{% endfor %}", "not for"),
    ("{% set x = 1 %}", "not assign"),
    ("{% macro m() %}{% endmacro %}", "not macro"),
    ("{% include 'x' %}", "not include"),
    ("{{ 'x'|center(1000000000) }}", "filter 'center'"),
    ("{{ 'x'|wordwrap(5) }}", "filter 'wordwrap'"),
    ("{{ unclosed", "syntax"),
])
def test_refused_when_compiled(source: str, words: str) -> None:
    with pytest.raises(SubstitutionError, match=words):
        compile_part(source)


@pytest.mark.parametrize(("source", "words"), [
    ("{{ 'x' * 1000000000 }}", "repetition"),
    ("{{ [1] * 1000000000 }}", "repetition"),
    ("{{ 2 ** 100000 }}", "exponents"),
    ('{{ "%*d" % (1000000000, 1) }}', "formatting"),
    ('{{ "{:>1000000000}".format(1) }}', "calls"),
    ("{{ 'a'.ljust(1000000000) }}", "calls"),
    ("{{ range(10) }}", "calls"),
    ("{{ range }}", "undefined"),
    ("{{ ''.__class__ }}", "unsafe"),
    ("{{ missing }}", "'missing' is undefined"),
    ("{{ 1 / 0 }}", "ZeroDivisionError"),
])
def test_refused_when_rendered(source: str, words: str) -> None:
    with pytest.raises(SubstitutionError, match=words):
        compile_part(source).render({})


def test_output_is_bounded() -> None:
    with pytest.raises(SubstitutionError, match="renders past"):
        compile_part("{{ a }}{{ a }}").render({"a": "x" * 600_000})
