"""The filter language: operators, paths, type safety, error messages and boolean laws."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from automation.errors import DefinitionError
from automation.model.filters import MATCH_ALL, compile_filter, compile_value_test, parse_path

CART = {
    "cart_id": "c-1",
    "total": 129.5,
    "count": 3,
    "vip": True,
    "country": "FR",
    "tags": ["new", "mobile"],
    "note": "gift wrap please",
    "items": [{"sku": "A-1", "price": 20}, {"sku": "B-2", "price": 109.5}],
    "coupon": None,
    "when": "2026-03-01T10:00:00Z",
}


@pytest.mark.parametrize(("spec", "expected"), [
    ({}, True),
    ({"cart_id": "c-1"}, True),
    ({"cart_id": "c-2"}, False),
    ({"count": 3}, True),
    ({"count": 3.0}, True),                 # ints and floats compare numerically
    ({"count": "3"}, False),                # a string never equals a number
    ({"vip": True}, True),
    ({"vip": 1}, False),                    # booleans are not numbers
    ({"count": True}, False),
    ({"tags": ["new", "mobile"]}, True),    # equality with a list is exact
    ({"tags": ["mobile", "new"]}, False),
    ({"items.0.sku": "A-1"}, True),
    ({"items.1.price": {"gt": 100}}, True),
    ({"items.2.sku": {"exists": True}}, False),
    ({"items.*.sku": "B-2"}, True),         # '*': any element
    ({"items.*.sku": "C-3"}, False),
    ({"items.*.price": {"gt": 10, "lt": 50}}, True),    # one element satisfies both
    ({"items.*.price": {"gt": 50, "lt": 100}}, False),  # no single element does
    ({"total": {"gte": 129.5}}, True),
    ({"total": {"gt": 129.5}}, False),
    ({"total": {"lt": 200, "gt": 100}}, True),
    ({"total": {"lte": "200"}}, False),     # a number never orders against a string
    ({"country": {"gt": "AA"}}, True),      # strings order by code point
    ({"country": {"gt": 5}}, False),
    ({"when": {"gte": "2026-01-01", "lt": "2026-04-01"}}, True),
    ({"country": {"in": ["FR", "DE"]}}, True),
    ({"country": {"not_in": ["FR", "DE"]}}, False),
    ({"count": {"in": [1, 2, 3]}}, True),
    ({"count": {"in": ["3"]}}, False),
    ({"country": {"not_equals": "DE"}}, True),
    ({"tags": {"contains": "new"}}, True),
    ({"tags": {"contains": "old"}}, False),
    ({"note": {"contains": "gift"}}, True),  # substring
    ({"count": {"contains": 3}}, False),
    ({"note": {"matches": "gift*"}}, True),
    ({"note": {"matches": "*GIFT*"}}, False),  # case-sensitive
    ({"coupon": {"exists": True}}, False),   # null counts as missing
    ({"coupon": {"exists": False}}, True),
    ({"missing": {"exists": False}}, True),
    ({"missing": "x"}, False),               # missing: false for every operator...
    ({"missing": {"not_equals": "x"}}, False),
    ({"missing": {"not_in": ["x"]}}, False),
    ({"missing": {"lt": 5}}, False),
    ({"not": {"missing": "x"}}, True),       # ...and `not` is plain negation
    ({"all": []}, True),
    ({"any": []}, False),
    ({"any": [{"country": "DE"}, {"vip": True}]}, True),
    ({"all": [{"country": "FR"}, {"not": {"vip": True}}]}, False),
    ({"cart_id": "c-1", "country": "DE"}, False),  # entries are ANDed
    ({"items": {"equals": [{"sku": "A-1", "price": 20}, {"sku": "B-2", "price": 109.5}]}}, True),
])
def test_operators(spec: dict[str, Any], expected: bool) -> None:
    assert compile_filter(spec)(CART) is expected


def test_filter_reports_paths_and_matches_everything_when_empty() -> None:
    compiled = compile_filter({"a.b": 1, "any": [{"c": {"gt": 2}}], "not": {"d": 3}})
    assert compiled.paths == {"a.b", "c", "d"}
    assert compile_filter(None) is MATCH_ALL
    assert MATCH_ALL({"anything": 1})


@pytest.mark.parametrize(("spec", "message"), [
    ({"amount": {"gtx": 1}}, "trigger.where.amount.gtx: unknown operator 'gtx'"),
    ({"amount": {"plan": "pro"}}, "trigger.where.amount.plan: unknown operator 'plan'"),
    ({"items.0.sku": {"gt": [1]}},
     'trigger.where["items.0.sku"].gt: expected a number or a string, got a list'),
    ({"amount": {"gt": True}}, "trigger.where.amount.gt: expected a number or a string"),
    ({"amount": None}, "trigger.where.amount: null is not a value to compare with"),
    ({"amount": {"in": "abc"}}, "trigger.where.amount.in: expected a list"),
    ({"amount": {"in": [1, [2]]}}, "trigger.where.amount.in[1]: expected a string, number"),
    ({"amount": {"exists": "yes"}}, "trigger.where.amount.exists: expected true or false"),
    ({"amount": {}}, "trigger.where.amount: empty operator mapping"),
    ({"any": {"a": 1}}, "trigger.where.any: expected a list of filters, got a mapping"),
    ({"all": [{"a": 1}, "b"]}, "trigger.where.all[1]: a filter must be a mapping"),
    ({"not": {"x..y": 1}}, "trigger.where.not[\"x..y\"]: 'x..y' is not a dotted property path"),
    ([1, 2], "trigger.where: a filter must be a mapping of field tests, got a list"),
    ({"a": {"matches": 5}}, "trigger.where.a.matches: expected a glob pattern"),
    ({"a": {"gte": float("nan")}}, "trigger.where.a.gte: expected a finite number"),
])
def test_errors_name_the_key_path(spec: Any, message: str) -> None:
    with pytest.raises(DefinitionError) as caught:
        compile_filter(spec, where="trigger.where")
    assert message in str(caught.value)


def test_limits() -> None:
    deep: dict[str, Any] = {"a": 1}
    for _ in range(20):
        deep = {"not": deep}
    with pytest.raises(DefinitionError, match="nested deeper"):
        compile_filter(deep)
    with pytest.raises(DefinitionError, match="filter too large"):
        compile_filter({"any": [{"a": i} for i in range(600)]})


def test_value_test_and_paths() -> None:
    to_pro = compile_value_test({"in": ["pro", "team"]}, "trigger.to")
    assert to_pro("pro") and not to_pro("free") and not to_pro(None)
    absent = compile_value_test({"exists": False}, "trigger.from")
    assert absent(None) and not absent("free")
    assert compile_value_test("free", "x")("free")
    path = parse_path("items.*.sku", "p")
    assert path.values(CART) == ["A-1", "B-2"] and path.first(CART) == "A-1"
    assert parse_path("items.1.sku", "p").first(CART) == "B-2"
    assert parse_path("items.9.sku", "p").first(CART) is None
    with pytest.raises(DefinitionError, match=r"correlate: 'items\.\*\.sku': '\*' is not allowed"):
        parse_path("items.*.sku", "correlate", allow_wildcard=False)


# --- properties ---------------------------------------------------------------------------

FIELDS = ["a", "b", "c", "n.x"]
scalars = st.one_of(st.booleans(), st.integers(-5, 5), st.floats(-5, 5, allow_nan=False),
                    st.sampled_from(["", "a", "b", "ab", "5"]))
documents = st.fixed_dictionaries({}, optional={
    "a": st.one_of(scalars, st.none()),
    "b": st.one_of(scalars, st.lists(scalars, max_size=3)),
    "c": scalars,
    "n": st.fixed_dictionaries({}, optional={"x": scalars}),
})
operands = st.one_of(st.integers(-5, 5), st.floats(-5, 5, allow_nan=False),
                     st.sampled_from(["a", "b", "5"]))
leaf = st.one_of(
    st.builds(lambda f, v: {f: v}, st.sampled_from(FIELDS), scalars),
    st.builds(lambda f, op, v: {f: {op: v}}, st.sampled_from(FIELDS),
              st.sampled_from(["gt", "gte", "lt", "lte"]), operands),
    st.builds(lambda f, v: {f: {"in": v}}, st.sampled_from(FIELDS), st.lists(scalars, max_size=3)),
    st.builds(lambda f, v: {f: {"exists": v}}, st.sampled_from(FIELDS), st.booleans()),
    st.builds(lambda f, v: {f: {"contains": v}}, st.sampled_from(FIELDS), scalars),
)
filters = st.recursive(leaf, lambda inner: st.one_of(
    st.builds(lambda fs: {"all": fs}, st.lists(inner, max_size=3)),
    st.builds(lambda fs: {"any": fs}, st.lists(inner, max_size=3)),
    st.builds(lambda f: {"not": f}, inner),
), max_leaves=8)


@settings(max_examples=300)
@given(filters, documents)
def test_not_is_negation(spec: dict[str, Any], document: dict[str, Any]) -> None:
    assert compile_filter({"not": spec})(document) is (not compile_filter(spec)(document))
    assert compile_filter({"not": {"not": spec}})(document) is compile_filter(spec)(document)


@settings(max_examples=300)
@given(st.lists(filters, max_size=4), documents)
def test_all_any_laws(specs: list[dict[str, Any]], document: dict[str, Any]) -> None:
    results = [compile_filter(spec)(document) for spec in specs]
    assert compile_filter({"all": specs})(document) is all(results)
    assert compile_filter({"any": specs})(document) is any(results)
    negated = [{"not": spec} for spec in specs]  # De Morgan
    assert compile_filter({"any": specs})(document) is (
        not compile_filter({"all": negated})(document))


@given(st.sampled_from(FIELDS), operands, documents)
def test_comparisons_are_total_only_within_one_type(field: str, operand: Any,
                                                    document: dict[str, Any]) -> None:
    value = parse_path(field, "f").first(document)
    gt, lte = (compile_filter({field: {op: operand}})(document) for op in ("gt", "lte"))
    lt, gte = (compile_filter({field: {op: operand}})(document) for op in ("lt", "gte"))
    comparable = (isinstance(value, str) == isinstance(operand, str)
                  and isinstance(value, int | float | str) and not isinstance(value, bool))
    if comparable:
        assert gt is not lte and lt is not gte
        assert gt is (value > operand) and lt is (value < operand)
    else:  # missing, bool, list or the other type: no comparison holds
        assert not (gt or lte or lt or gte)


@given(scalars, scalars)
def test_equality_is_type_strict_and_symmetric(left: Any, right: Any) -> None:
    forward = compile_filter({"v": {"equals": right}})({"v": left})
    backward = compile_filter({"v": {"equals": left}})({"v": right})
    assert forward is backward
    if isinstance(left, bool) != isinstance(right, bool) or isinstance(left, str) != isinstance(
            right, str):
        assert not forward
