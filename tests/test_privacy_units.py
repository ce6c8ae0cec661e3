"""Consent values, signed confirm links, the privacy hash (Python and SQL agree with RFC 2104
HMAC) and the consent guard, each on its own."""

from __future__ import annotations

import hashlib
import hmac
from datetime import UTC, datetime, timedelta

import pytest

from automation.runtime.guards import GuardInputs, check_send
from engine.database import Database
from engine.link_keys import LinkKeys
from engine.privacy.consent import (
    InvalidConsent,
    consent_from_event,
    missing_consent,
    parse_consent,
)
from engine.privacy.consent_tokens import (
    BadConsentToken,
    confirm_url,
    consent_token,
    read_consent_token,
)
from engine.privacy.hashing import hash_sql, key_from_secret, keyed_hash, load_key

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
KEYS = LinkKeys.parse(["k2:second-secret-0123456789", "k1:first-secret-0123456789"])
OLD_KEYS = LinkKeys.parse(["k1:first-secret-0123456789"])
DAY = 86400.0


def test_consent_values() -> None:
    assert parse_consent("opted_in", NOW).to_json() == {
        "state": "opted_in", "at": NOW.isoformat(), "source": "api"}
    given = parse_consent({"state": "opted_out", "source": "preference-center",
                           "at": "2026-02-01T00:00:00+01:00"}, NOW)
    assert given.at == datetime(2026, 1, 31, 23, 0, tzinfo=UTC)
    for bad, field in [("yes", "consent.state"), ({"state": "pending", "source": ""},
                                                  "consent.source"),
                       ({"state": "pending", "at": "2026-03-03T00:00:00Z"}, "consent.at"),
                       ({"state": "pending", "at": "yesterday"}, "consent.at"),
                       (3, "consent"), ({"state": "pending", "why": 1}, "consent.why")]:
        with pytest.raises(InvalidConsent, match=f"^{field}"):
            parse_consent(bad, NOW)
    event = consent_from_event("consent_withdrawn", {"source": "<script>"}, NOW)
    assert event is not None and (event.state, event.source) == ("opted_out", "event")
    assert consent_from_event("signed_up", {}, NOW) is None
    assert missing_consent("opted_in") is None
    assert missing_consent(None) == "no consent (none recorded)"
    assert missing_consent("opted_out") == "no consent (opted_out)"


def test_confirm_tokens_round_trip_rotate_and_expire() -> None:
    token = consent_token(KEYS, "cust/ä 1", NOW)
    assert token.startswith("k2.")
    assert read_consent_token(KEYS, token, NOW + timedelta(days=29), 30 * DAY) == "cust/ä 1"
    assert read_consent_token(KEYS, consent_token(OLD_KEYS, "c", NOW), NOW, DAY) == "c"
    with pytest.raises(BadConsentToken, match="expired"):
        read_consent_token(KEYS, token, NOW + timedelta(days=31), 30 * DAY)
    with pytest.raises(BadConsentToken, match="unknown key"):
        read_consent_token(OLD_KEYS, token, NOW, DAY)
    kid, body, mac = token.split(".")
    other = consent_token(KEYS, "someone-else", NOW).split(".")[1]
    for tampered in (f"{kid}.{other}.{mac}", f"{kid}.{body}.{mac[:-1]}A",
                     f"{kid}.{body}=.{mac}", f"{kid}.{body}", token + ".x", token.upper(),
                     "k2." + "A" * 2000):
        with pytest.raises(BadConsentToken):
            read_consent_token(KEYS, tampered, NOW, DAY)
    assert confirm_url("https://m.example/", KEYS, "c", NOW) == (
        f"https://m.example/v1/consent/confirm/{consent_token(KEYS, 'c', NOW)}")


def test_keyed_hash_is_rfc_2104_hmac() -> None:
    for secret in (b"s" * 32, b"x" * 100, b""):
        key = key_from_secret(secret)
        for text in ("ann@example.org", "ü@bücher.example", ""):
            assert keyed_hash(key, text) == hmac.new(secret, text.encode(),
                                                     hashlib.sha256).digest()


async def test_sql_computes_the_same_hash(database: Database) -> None:
    async with database.connection() as connection:
        key = await load_key(connection)
        assert await load_key(connection) == key  # made once
        for text in ("ann@example.org", "ü@bücher.example"):
            assert bytes(await connection.fetchval(
                f"SELECT {hash_sql('$1::text')} FROM privacy_key k", text)) == keyed_hash(
                key, text)


def test_the_guard_holds_marketing_without_consent() -> None:
    def verdict(consent: str | None, *, needs: bool, transactional: bool = False) -> str | None:
        inputs = GuardInputs("a@example.org", {}, None, (), 0, consent)
        result = check_send(inputs, already_sent=False, transactional=transactional,
                            frequency_cap=5, allowed_window=None, now=NOW,
                            requires_consent=needs)
        return None if result.send else result.skip_reason

    assert verdict("pending", needs=True) == "no consent (pending)"
    assert verdict(None, needs=True) == "no consent (none recorded)"
    assert verdict("opted_out", needs=True) == "no consent (opted_out)"
    assert verdict("opted_in", needs=True) is None
    assert verdict("pending", needs=False) is None
    assert verdict(None, needs=True, transactional=True) is None
