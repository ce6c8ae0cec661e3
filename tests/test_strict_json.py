"""engine.strict_json: the cheap tests never let through what the exact path refuses."""

from __future__ import annotations

import json
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from engine import strict_json
from engine.strict_json import INT_MAX, INT_MIN, MAX_DEPTH, JsonRefused

KEYS = st.text(alphabet=st.sampled_from('ab:"\\\u00e9 {}[],\u0000'), max_size=4)
SCALARS = (st.none() | st.booleans() | st.integers(INT_MIN, INT_MAX)
           | st.floats(allow_nan=False, allow_infinity=False) | KEYS)
VALUES = st.recursive(SCALARS, lambda inner: st.lists(inner, max_size=4)
                      | st.dictionaries(KEYS, inner, max_size=4), max_leaves=30)


def nest(depth: int) -> Any:
    value: Any = 1
    for _ in range(depth):
        value = [value]
    return value


@settings(max_examples=300, deadline=None)
@given(VALUES, st.booleans())
def test_what_round_trips_is_accepted_unchanged(value: Any, ascii_only: bool) -> None:
    text = json.dumps(value, ensure_ascii=ascii_only).encode()
    assert strict_json.loads(text) == orjson.loads(text)


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(KEYS, VALUES, min_size=1, max_size=4), st.data(), st.booleans())
def test_a_duplicate_key_anywhere_is_refused(value: dict[str, Any], data: st.DataObject,
                                              ascii_only: bool) -> None:
    name = data.draw(st.sampled_from(sorted(value)))
    pairs = [json.dumps(k, ensure_ascii=ascii_only) + ":" + json.dumps(v, ensure_ascii=ascii_only)
             for k, v in value.items()]
    extra = json.dumps(name, ensure_ascii=ascii_only) + ":" + json.dumps(
        data.draw(SCALARS), ensure_ascii=ascii_only)
    pairs.insert(data.draw(st.integers(0, len(pairs))), extra)
    text = "{" + ",".join(pairs) + "}"
    wrapped = data.draw(st.sampled_from(["{}", '{{"outer": {}}}', "[1, {}]"])).format(text)
    with pytest.raises(JsonRefused, match="the key appears twice"):
        strict_json.loads(wrapped.encode())


@pytest.mark.parametrize("number", [INT_MAX + 1, INT_MIN - 1, 10**19, -(10**30), 2**64])
def test_integers_past_64_bits_are_refused(number: int) -> None:
    with pytest.raises(JsonRefused, match=r"^a\.b\[1\]: integers must be"):
        strict_json.loads(b'{"a": {"b": [0, %d]}}' % number)


def test_limits_of_what_is_accepted() -> None:
    assert strict_json.loads(b'[%d, %d]' % (INT_MAX, INT_MIN)) == [INT_MAX, INT_MIN]
    assert strict_json.loads(json.dumps(nest(MAX_DEPTH)).encode()) == nest(MAX_DEPTH)
    with pytest.raises(JsonRefused, match=r"^\[0\]\[0\]\[0\]\[0\]…: nests deeper than 32"):
        strict_json.loads(json.dumps(nest(MAX_DEPTH + 1)).encode())
    with pytest.raises(JsonRefused, match="nests deeper"):
        strict_json.loads(b"[" * 1000 + b"]" * 1000)
    assert strict_json.loads(b'"12345678901234567890123"') == "12345678901234567890123"
    assert strict_json.loads(b'{"s": "\\\\u003a"}') == {"s": "\\u003a"}


def test_limits_hold_in_a_large_body() -> None:
    # Past a few KB the brackets are not counted: the body is always wrapped.
    padding = {"pad": "x" * 5000, "colon": "a:b", "escaped": "\\u003a\\n"}
    deepest = {"events": [padding, nest(MAX_DEPTH - 2)]}
    assert strict_json.loads(json.dumps(deepest).encode()) == deepest
    with pytest.raises(JsonRefused, match="nests deeper than 32"):
        strict_json.loads(json.dumps({"events": [padding, nest(MAX_DEPTH - 1)]}).encode())
    duplicate = json.dumps(padding)[:-1] + ', "pad": 1}'
    with pytest.raises(JsonRefused, match="the key appears twice"):
        strict_json.loads(duplicate.encode())
    spelled = json.dumps(padding)[:-1] + ', "p": "\\u003a", "p": 2}'
    with pytest.raises(JsonRefused, match="the key appears twice"):
        strict_json.loads(spelled.encode())
