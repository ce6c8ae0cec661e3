"""Event validation (engine.intake.validation): the fast paths accept and refuse exactly what
the rules say, and an error names the event and field."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from engine.intake.validation import InvalidEvent, parse_event_body

NOW = datetime.now(UTC)


def body(**fields: Any) -> dict[str, Any]:
    good = {"type": "t", "contact_id": "c", "id": "e0"}
    return {"events": [good, {"type": "t", "contact_id": "c", "id": "e1", **fields}]}


@pytest.mark.parametrize("value", ["\u00fc-\u00f1", "a b", "x" * 255, "\u4e2d", "~!@#$%"])
def test_printable_identifiers_are_accepted(value: str) -> None:
    [_, event] = parse_event_body(body(contact_id=value, id=value), NOW, 10)
    assert (event.contact_id, event.event_id) == (value, value)


@pytest.mark.parametrize(("value", "message"), [
    ("a\x01", "events[1].id: must not contain control characters"),
    ("a\x7f", "events[1].id: must not contain control characters"),
    ("a\x85", "events[1].id: must not contain control characters"),
    ("a\u2028", "events[1].id: must not contain control characters"),
    ("", "events[1].id: must be 1 to 255 characters"),
    ("x" * 256, "events[1].id: must be 1 to 255 characters"),
    (7, "events[1].id: must be a string"),
])
def test_bad_identifiers_are_refused_by_path(value: Any, message: str) -> None:
    with pytest.raises(InvalidEvent) as refused:
        parse_event_body(body(id=value), NOW, 10)
    assert str(refused.value) == message
    assert refused.value.field == "events[1].id"


def test_an_invalid_type_is_refused_every_time_and_a_valid_one_always_accepted() -> None:
    for _ in range(2):  # the valid types are remembered; invalid ones never are
        with pytest.raises(InvalidEvent, match=r"^events\[1\]\.type: must be a string"):
            parse_event_body(body(type="no spaces"), NOW, 10)
        assert [e.type for e in parse_event_body(body(type="a.b:c-d_e"), NOW, 10)] == [
            "t", "a.b:c-d_e"]


def test_errors_about_the_event_itself_name_it() -> None:
    with pytest.raises(InvalidEvent) as refused:
        parse_event_body({"events": [{"type": "t", "contact_id": "c"}, 5]}, NOW, 10)
    assert str(refused.value) == "events[1]: must be a JSON object"
    with pytest.raises(InvalidEvent) as refused:
        parse_event_body({"type": "t"}, NOW, 10)
    assert str(refused.value) == "event.contact_id: contact_id or email is required"
