"""The suppression list's pure parts: one normal form for addresses, signed unsubscribe tokens
with key ids, and the rule that decides who may be mailed."""

from __future__ import annotations

import uuid

import pytest
from hypothesis import given
from hypothesis import strategies as st

from engine.addresses import AddressError
from engine.link_keys import LinkKeys
from mta.suppression.addresses import normalise
from mta.suppression.rules import Suppression, blocking_reason, from_event
from mta.suppression.tokens import (
    BadToken,
    read_unsubscribe_token,
    token_from_mailto_address,
    unsubscribe_mailto,
    unsubscribe_token,
)

KEYS = LinkKeys.parse(["k2:second-secret-0123456789", "k1:first-secret-0123456789"])


@pytest.mark.parametrize(("a", "b"), [
    ("Ann@Example.COM", "ann@example.com"),
    ("  ann@example.com ", "ann@example.com"),
    ("ann@Bücher.example", "ann@xn--bcher-kva.example"),
    ("ann@BÜCHER.example", "ann@xn--bcher-kva.example"),
    ("jos\u0065\u0301@example.com", "jos\u00e9@example.com"),  # NFD and NFC spellings
])
def test_one_person_has_one_normal_form(a: str, b: str) -> None:
    assert normalise(a) == normalise(b)


@pytest.mark.parametrize("bad", ["", "no-at-sign", "a@@b.example", "a@b.example\r\nBcc: x"])
def test_what_is_not_an_address_is_refused(bad: str) -> None:
    with pytest.raises(AddressError):
        normalise(bad)


def test_tokens_round_trip_and_name_their_key() -> None:
    message_id = uuid.uuid4()
    token = unsubscribe_token(KEYS, message_id)
    assert token.startswith("k2.") and token == token.lower()
    assert read_unsubscribe_token(KEYS, token) == message_id
    assert read_unsubscribe_token(KEYS, token.upper()) == message_id  # mailto case folding


def test_an_old_key_still_verifies_after_rotation() -> None:
    old = LinkKeys.parse(["k1:first-secret-0123456789"])
    message_id = uuid.uuid4()
    token = unsubscribe_token(old, message_id)
    assert read_unsubscribe_token(KEYS, token) == message_id
    retired = LinkKeys.parse(["k2:second-secret-0123456789"])
    with pytest.raises(BadToken, match="unknown key"):
        read_unsubscribe_token(retired, token)


def test_tampered_and_foreign_tokens_are_refused() -> None:
    message_id = uuid.uuid4()
    token = unsubscribe_token(KEYS, message_id)
    kid, body = token.split(".")
    flipped = body[:5] + ("a" if body[5] != "a" else "b") + body[6:]
    with pytest.raises(BadToken):
        read_unsubscribe_token(KEYS, f"{kid}.{flipped}")
    foreign = LinkKeys.parse(["k2:somebody-elses-secret-xyz"])
    with pytest.raises(BadToken, match="does not match"):
        read_unsubscribe_token(KEYS, unsubscribe_token(foreign, message_id))
    # the same message id signed for k1 cannot be relabelled as k2
    k1_token = unsubscribe_token(LinkKeys.parse(["k1:first-secret-0123456789"]), message_id)
    with pytest.raises(BadToken):
        read_unsubscribe_token(KEYS, "k2." + k1_token.split(".")[1])


@given(st.text(max_size=120))
def test_malformed_tokens_raise_bad_token_only(text: str) -> None:
    try:
        message_id = read_unsubscribe_token(KEYS, text)
    except BadToken:
        return
    # only a genuinely signed token may verify: it must be the one we would have issued
    assert unsubscribe_token(KEYS, message_id) == text.lower()


def test_mailto_address_carries_the_same_token() -> None:
    message_id = uuid.uuid4()
    mailto = unsubscribe_mailto("bounces.shop.example", KEYS, message_id)
    address = mailto.removeprefix("mailto:")
    token = token_from_mailto_address(address.upper())
    assert token is not None and read_unsubscribe_token(KEYS, token) == message_id
    assert token_from_mailto_address("postmaster@bounces.shop.example") is None


@pytest.mark.parametrize(("bad", "problem"), [
    (["nokid"], "KID:SECRET"), (["K1:0123456789abcdef"], "KID:SECRET"),
    (["k1:short"], "at least 16"), (["k1:0123456789abcdef", "k1:0123456789abcdeg"], "twice"),
])
def test_link_keys_config_is_checked(bad: list[str], problem: str) -> None:
    with pytest.raises(ValueError, match=problem):
        LinkKeys.parse(bad)


@pytest.mark.parametrize(("entries", "category", "transactional", "expected"), [
    ([], "", False, None),
    ([("hard_bounce", "")], "", True, "hard_bounce"),
    ([("complaint", "")], "news", True, "complaint"),
    ([("manual", "")], "", True, "manual"),
    ([("unsubscribe", "")], "", False, "unsubscribe"),
    ([("unsubscribe", "")], "", True, None),  # transactional ignores an unsubscribe
    ([("unsubscribe", "news")], "news", False, "unsubscribe (news)"),
    ([("unsubscribe", "news")], "offers", False, None),
    ([("unsubscribe", "news")], "", False, None),
    ([("unsubscribe", ""), ("hard_bounce", "")], "", False, "hard_bounce"),
])
def test_blocking_reason(entries: list[tuple[str, str]], category: str, transactional: bool,
                         expected: str | None) -> None:
    assert blocking_reason(entries, category, transactional) == expected


def test_only_an_unsubscribe_can_have_a_category() -> None:
    with pytest.raises(ValueError, match="only an unsubscribe"):
        Suppression("a@example.com", "hard_bounce", "news")
    with pytest.raises(ValueError, match="reason must be"):
        Suppression("a@example.com", "bored")


def test_events_that_imply_suppressions() -> None:
    hard = from_event("email_bounced", "A@Example.com", {"category": "hard"})
    assert hard is not None and (hard.email, hard.reason) == ("a@example.com", "hard_bounce")
    assert from_event("email_bounced", "a@example.com", {"category": "soft"}) is None
    assert from_event("email_bounced", "a@example.com", {"hard": False}) is None
    complaint = from_event("email_complained", "a@example.com", {})
    assert complaint is not None and complaint.reason == "complaint"
    scoped = from_event("email_unsubscribed", "a@example.com", {"unsubscribe_category": "news"})
    assert scoped is not None and scoped.category == "news"
    posted = from_event("unsubscribed", "a@example.com", {})
    assert posted is not None and posted.category == ""
    assert from_event("email_complained", None, {}) is None
    assert from_event("order_completed", "a@example.com", {}) is None


def test_only_the_canonical_spelling_of_a_token_is_accepted() -> None:
    """The last base32 character carries unused bits: other spellings of the same bytes are
    refused, so an edited token never verifies."""
    message_id = uuid.uuid4()
    token = unsubscribe_token(KEYS, message_id)
    alphabet = "abcdefghijklmnopqrstuvwxyz234567"
    accepted = []
    for c in alphabet:
        variant = token[:-1] + c
        try:
            read_unsubscribe_token(KEYS, variant)
            accepted.append(variant)
        except BadToken:
            pass
    assert accepted == [token]


def test_the_mailto_local_part_fits_rfc_5321() -> None:
    longest = LinkKeys.parse(["abcdefgh:some-secret-0123456789"])
    mailto = unsubscribe_mailto("b.example", longest, uuid.uuid4())
    local = mailto.removeprefix("mailto:").split("@")[0]
    assert len(local.encode()) <= 64


def test_only_the_canonical_spelling_of_a_bounce_address_is_accepted() -> None:
    from mta.queue.return_paths import BadReturnPath, bounce_address, message_id_from

    secret = b"s" * 32
    message_id = uuid.uuid4()
    address = bounce_address(secret, message_id, "bounces.example")
    local, domain = address.split("@")
    accepted = []
    for c in "abcdefghijklmnopqrstuvwxyz234567":
        try:
            message_id_from(secret, f"{local[:-1]}{c}@{domain}")
            accepted.append(c)
        except BadReturnPath:
            pass
    assert accepted == [local[-1]]
