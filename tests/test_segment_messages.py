"""The Segment dialect's mapping to Herald events, clock-skew correction and gzip bounds
(pure)."""

from __future__ import annotations

import gzip
from datetime import UTC, datetime, timedelta

import pytest

from engine.http.content_encoding import inflate
from engine.http.errors import ApiError
from engine.http.segment_routes import basic_user
from engine.intake.segment.messages import InvalidBody, parse_body, parse_message

NOW = datetime(2026, 3, 2, 12, 0, tzinfo=UTC)


def one(message: dict[str, object], path_type: str | None = None, sent_at: object = None):
    return parse_message(message, path_type, sent_at, NOW)


def test_track_keeps_the_name_properties_context_and_message_id() -> None:
    event = one({"type": "track", "event": "Order Completed", "userId": "u1",
                 "messageId": "m-1", "properties": {"total": 42},
                 "context": {"ip": "203.0.113.9", "library": {"name": "analytics-python"}}})
    assert event.type == "Order Completed" and event.contact_id == "u1"
    assert event.event_id == "segment:m-1" and event.properties["total"] == 42
    assert event.properties["_segment"]["context"]["ip"] == "203.0.113.9"
    assert event.properties["_segment"]["type"] == "track"
    assert event.anonymous_id is None and not event.joins_anonymous


def test_clock_skew_is_corrected_with_sent_at() -> None:
    # The client's clock is an hour fast: it says the event happened at 13:00 and was sent at
    # 13:05; the server received it at 12:00, so it happened five minutes before that.
    event = one({"type": "track", "event": "x", "userId": "u", "timestamp": "2026-03-02T13:00:00Z"},
                sent_at="2026-03-02T13:05:00.000Z")
    assert event.occurred_at == NOW - timedelta(minutes=5)
    assert event.properties["_segment"]["received_at"] == "2026-03-02T12:00:00.000Z"
    # Without sentAt the timestamp is taken as is; without either, the server's time.
    assert one({"type": "track", "event": "x", "userId": "u",
                "timestamp": "2026-03-01T08:00:00+01:00"}).occurred_at == \
        datetime(2026, 3, 1, 7, 0, tzinfo=UTC)
    assert one({"type": "track", "event": "x", "userId": "u"}).occurred_at == NOW
    # A message's own sentAt wins over the batch's; an event is never later than its receipt.
    event = one({"type": "track", "event": "x", "userId": "u", "sentAt": "2026-03-02T11:00:00Z",
                 "timestamp": "2026-03-02T11:30:00"}, sent_at="2026-03-02T13:00:00Z")
    assert event.occurred_at == NOW


def test_identify_page_group_alias_map_to_herald_events() -> None:
    identify = one({"type": "identify", "userId": "u1", "anonymousId": "a1",
                    "traits": {"email": "Ann@Example.COM", "plan": "pro"}})
    assert identify.type == "identified" and identify.email == "Ann@example.com"
    assert identify.traits == {"plan": "pro"} and identify.joins_anonymous
    assert identify.anonymous_id == "a1"
    page = one({"anonymousId": "a1", "name": "Pricing", "properties": {"path": "/pricing"}},
               path_type="page")
    assert page.type == "page_viewed" and page.contact_id is None
    assert page.properties["name"] == "Pricing" and page.properties["path"] == "/pricing"
    assert one({"type": "screen", "userId": 7, "name": "Home"}).contact_id == "7"
    group = one({"type": "group", "userId": "u1", "groupId": "acme", "traits": {"n": 1}})
    assert group.type == "grouped" and group.properties["group_id"] == "acme"
    alias = one({"type": "alias", "userId": "u1", "previousId": "old"})
    assert alias.type == "aliased" and alias.anonymous_id == "old" and alias.joins_anonymous
    # identify with only an email names the contact by address, like a native event.
    by_email = one({"type": "identify", "anonymousId": "a2", "traits": {"email": "b@x.example"}})
    assert by_email.contact_id is None and by_email.email == "b@x.example"


def test_bad_messages_are_set_aside_and_the_rest_kept() -> None:
    parsed = parse_body({"batch": [
        {"type": "track", "event": "ok", "userId": "u"},
        {"type": "track", "userId": "u"},
        {"type": "track", "event": "x"},
        {"type": "nope", "userId": "u", "messageId": "m9"},
        {"type": "alias", "userId": "u"},
        {"type": "track", "event": "x", "userId": "u", "timestamp": "yesterday"},
        {"type": "track", "event": "x", "userId": "u", "properties": {"a": "\x00"}},
        "text",
    ]}, None, NOW, 100)
    assert [e.type for e in parsed.events] == ["ok"]
    assert [r.index for r in parsed.rejected] == [1, 2, 3, 4, 5, 6, 7]
    assert parsed.rejected[2].message_id == "m9"
    assert "userId or anonymousId" in parsed.rejected[1].error
    with pytest.raises(InvalidBody):
        parse_body({"batch": {}}, None, NOW, 100)
    with pytest.raises(InvalidBody, match="at most 2"):
        parse_body({"batch": [{}, {}, {}]}, None, NOW, 2)
    with pytest.raises(InvalidBody):
        parse_body([], "track", NOW, 100)


def test_gzip_is_inflated_within_the_bound() -> None:
    body = b'{"batch": []}'
    assert inflate(gzip.compress(body), "gzip", 100) == body
    assert inflate(body, "", 100) == body
    bomb = gzip.compress(b"0" * 10_000_000)
    assert len(bomb) < 20_000
    with pytest.raises(ApiError) as exc:
        inflate(bomb, "gzip", 1024 * 1024)
    assert exc.value.status == 413
    with pytest.raises(ApiError) as exc:
        inflate(b"\x1f\x8bnot gzip", "gzip", 100)
    assert exc.value.status == 400
    with pytest.raises(ApiError) as exc:
        inflate(gzip.compress(body)[:-12], "gzip", 100)
    assert exc.value.status == 400
    with pytest.raises(ApiError) as exc:
        inflate(body, "br", 100)
    assert exc.value.status == 415


def test_basic_auth_user_is_the_write_key() -> None:
    assert basic_user("Basic aGtfYV9iOg==") == "hk_a_b"  # base64("hk_a_b:")
    assert basic_user("Basic !!!") is None
    assert basic_user("Bearer hk_a_b") is None


@pytest.mark.parametrize(("timestamp", "sent_at"), [
    ("0001-01-01T00:00:00Z", "6074-01-17T14:54:17.1-02:47"),  # found by the schemathesis job
    ("0001-01-01T00:00:00.5+05:00", None),  # not RFC 3339 (fraction), year 0 in UTC
])
def test_times_outside_what_datetime_holds_set_the_message_aside(
        timestamp: str, sent_at: str | None) -> None:
    parsed = parse_body({"batch": [{"type": "track", "event": "x", "userId": "u",
                                    "timestamp": timestamp}], "sentAt": sent_at},
                        None, NOW, 100)
    assert parsed.events == [] and parsed.rejected[0].error.startswith("timestamp: ")
