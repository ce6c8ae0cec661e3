"""Contact tokens (pure): minting, verifying, and every way a token is refused."""

from __future__ import annotations

import base64
import hashlib
import hmac

import pytest

from engine.contact_tokens import ContactTokenError, mint, parse, verify

KEY_ID = "a1b2c3d4e5f6"
SECRET = "s3cret-for-tests"
NOW = 1_770_000_000


def refused(token: str, *, key_id: str = KEY_ID, secret: str | None = SECRET,
            now: float = NOW) -> str:
    with pytest.raises(ContactTokenError) as caught:
        verify(token, key_id=key_id, secret=secret, now=now)
    return caught.value.reason


def test_a_minted_token_verifies_and_names_its_contact() -> None:
    token = mint(KEY_ID, SECRET, "cust/42 é", NOW + 60)
    claims = verify(token, key_id=KEY_ID, secret=SECRET, now=NOW)
    assert (claims.key_id, claims.contact_id, claims.expires_at) == (KEY_ID, "cust/42 é",
                                                                       NOW + 60)


def test_the_documented_format_can_be_made_by_any_backend() -> None:
    contact = base64.urlsafe_b64encode(b"42").rstrip(b"=").decode()
    payload = f"v1.{KEY_ID}.{contact}.{NOW + 60}"
    signature = hmac.new(SECRET.encode(), payload.encode(), hashlib.sha256).digest()
    token = payload + "." + base64.urlsafe_b64encode(signature).rstrip(b"=").decode()
    assert token == mint(KEY_ID, SECRET, "42", NOW + 60)


def test_expired_tampered_foreign_and_malformed_tokens_are_refused() -> None:
    token = mint(KEY_ID, SECRET, "42", NOW + 60)
    assert refused(token, now=NOW + 60) == "expired"
    assert refused(token, secret="another secret") == "bad_signature"
    assert refused(token, key_id="ffffffffffff") == "foreign_key"
    assert refused(token, secret=None) == "foreign_key"
    _claims, payload, _signature = parse(token)
    other = base64.urlsafe_b64encode(b"victim").rstrip(b"=").decode()
    swapped = payload.replace(payload.split(".")[2], other) + "." + token.rsplit(".", 1)[1]
    assert refused(swapped) == "bad_signature"
    later = token.replace(f".{NOW + 60}.", f".{NOW + 10**6}.")
    assert refused(later) == "bad_signature"
    for garbage in ("", "v1", "v2." + token[3:], token + ".x", "v1.KEY.x.1.y",
                    token.replace(token.split(".")[2], "!!"), "x" * 700):
        assert refused(garbage) == "malformed"


def test_minting_checks_its_inputs() -> None:
    with pytest.raises(ValueError):
        mint("not-hex", SECRET, "42", NOW)
    with pytest.raises(ValueError):
        mint(KEY_ID, SECRET, "", NOW)
    with pytest.raises(ValueError):
        mint(KEY_ID, SECRET, "x" * 256, NOW)
