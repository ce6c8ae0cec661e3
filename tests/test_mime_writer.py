"""Messages written directly as bytes (mta.mime_writer, mta.compose) against the ``email``
package: the same header lines byte for byte, bodies that decode to the same text, valid MIME,
DKIM signatures that verify. Also the token helpers made faster for every send (base32, HMAC,
cached unsubscribe tokens and parsed addresses)."""

from __future__ import annotations

import base64
import binascii
import email
import email.policy
import email.utils
import hmac
import random
import uuid
from datetime import UTC, datetime
from pathlib import Path

import dkim
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from automation.content.links import list_unsubscribe, send_message_id
from engine.addresses import AddressError, parse_address
from engine.base32 import b32_lower
from engine.hmac_sha256 import hmac_sha256
from engine.link_keys import LinkKeys
from mta import compose as compose_module
from mta import mime_writer
from mta.compose import _compose_mime, _extra_headers, _mailbox, compose
from mta.dkim.keys import write_keypair
from mta.dkim.signer import DkimKeyConfig, DkimSigner
from mta.errors import InvalidMessage
from mta.suppression.tokens import read_unsubscribe_token, unsubscribe_token
from tests.test_dkim import txt_value

NOW = datetime(2026, 3, 1, 12, 30, 5, 123456, tzinfo=UTC)
KEYS = LinkKeys.parse(["k1:0123456789abcdef0123"])
WIRE = email.policy.compat32.clone(linesep="\r\n", max_line_length=78)

plain_word = st.text(st.characters(min_codepoint=0x21, max_codepoint=0x7E), min_size=1,
                     max_size=90)
plain_value = st.lists(plain_word, min_size=1, max_size=14).map(" ".join)
header_name = st.sampled_from(["Subject", "To", "List-Unsubscribe", "X-Campaign-Reference"])


@given(header_name, plain_value)
@settings(max_examples=1000)
def test_plain_header_lines_are_what_compat32_writes(name: str, value: str) -> None:
    assert mime_writer.header_field(name, value) == WIRE.fold_binary(name, value)


@given(header_name, st.text(max_size=200).filter(lambda v: "\r" not in v and "\n" not in v))
@settings(max_examples=500)
def test_every_header_value_is_what_compat32_writes(name: str, value: str) -> None:
    try:
        expected = WIRE.fold_binary(name, value)
    except Exception as exc:  # compat32 refuses some values (e.g. lone surrogates): so do we
        with pytest.raises(type(exc)):
            mime_writer.header_field(name, value)
        return
    assert mime_writer.header_field(name, value) == expected


def test_long_list_unsubscribe_is_folded_as_compat32_folds_it() -> None:
    value = list_unsubscribe("https://mail.example.com", "bounce.example.com", KEYS,
                             uuid.uuid4())["List-Unsubscribe"]
    field = mime_writer.header_field("List-Unsubscribe", value)
    assert field == WIRE.fold_binary("List-Unsubscribe", value)
    assert field.startswith(b"List-Unsubscribe: \r\n <https://") and field.count(b"\r\n") == 3


def decoded(encoded: bytes) -> bytes:
    return binascii.a2b_qp(encoded.replace(b"\r\n", b"\n"))


edge_text = st.lists(st.sampled_from([*"ab =\t\n\r.é€ \x00\x7f\U0001f600", "From ", "x" * 70]),
                     max_size=120).map("".join)


@given(st.one_of(edge_text, st.text(max_size=400)))
@settings(max_examples=1500)
def test_quoted_printable_decodes_to_the_text_in_short_clean_lines(text: str) -> None:
    try:
        encoded = mime_writer.quoted_printable(text)
    except UnicodeEncodeError:
        with pytest.raises(UnicodeEncodeError):
            text.encode("utf-8")  # only a lone surrogate is refused
        return
    normalised = text.replace("\r\n", "\n").replace("\r", "\n").encode("utf-8")
    assert decoded(encoded) == normalised
    lines = encoded.split(b"\r\n")
    assert all(len(line) <= 76 for line in lines)
    assert all(not line.endswith((b" ", b"\t")) for line in lines)  # nothing lost in transit
    assert b"\r\n.\r\n" not in b"\r\n" + encoded + b"\r\n"  # never SMTP's end of data
    assert not encoded.translate(None, bytes([9, 10, 13, *range(0x20, 0x7F)]))  # 7-bit clean
    assert b"\r" not in encoded.replace(b"\r\n", b"")


def whole_text_quoted_printable(text: str) -> bytes:
    """The encoding of the text at once (before the line-by-line encoder with its cache)."""
    data = text.replace("\r\n", "\n").replace("\r", "\n").encode("utf-8")
    lines = binascii.b2a_qp(data, istext=True).split(b"\n")
    mime_writer._soft_breaks(lines)
    return b"\r\n".join(lines)


@given(st.lists(st.one_of(edge_text, st.text(max_size=120)), min_size=1, max_size=4))
@example(["x" * 74 + " \n" + "y" * 75 + "\t", ".\n.\r\n. \n", " \n\t\n", "=" * 80 + "\n"])
@settings(max_examples=1500)
def test_quoted_printable_line_by_line_is_the_whole_text_encoding(texts: list[str]) -> None:
    # the same lines again (from the cache) and in other texts encode as the first time
    for text in [*texts, *texts]:
        try:
            expected = whole_text_quoted_printable(text)
        except UnicodeEncodeError:
            continue
        assert mime_writer.quoted_printable(text) == expected


def test_forgetting_cached_lines_empties_the_cache() -> None:
    mime_writer.quoted_printable("Hello Ann,\nsee you\n")
    assert mime_writer._qp_lines
    mime_writer.forget_cached_lines()
    assert not mime_writer._qp_lines


def test_white_space_before_a_line_end_never_makes_a_line_longer_than_76() -> None:
    # binascii.b2a_qp alone writes 77 and 78 octet lines here (its "=20" comes after its count)
    text = "x" * 74 + " \n" + "y" * 75 + "\t"
    encoded = mime_writer.quoted_printable(text)
    assert max(map(len, encoded.split(b"\r\n"))) <= 76
    assert decoded(encoded) == text.encode()


def reference(request: dict[str, object]) -> bytes:
    """What the email package writes for the same request (the path attachments still take)."""
    from_name, from_address = _mailbox(request["from"], "from")
    to_name, to_address = _mailbox(request["to"], "to")
    return _compose_mime(from_name, from_address, to_name, to_address, str(request["subject"]),
                         request.get("text"), request.get("html"),  # type: ignore[arg-type]
                         _extra_headers(request.get("headers")), NOW, ()).body


def both(monkeypatch: pytest.MonkeyPatch, request: dict[str, object]) -> tuple[bytes, bytes]:
    monkeypatch.setattr(compose_module, "message_id", lambda domain: f"<fixed@{domain}>")
    monkeypatch.setattr(compose_module, "make_msgid", lambda domain: f"<fixed@{domain}>")
    random.seed(17)
    written = compose(request, NOW).body
    random.seed(17)  # the same multipart boundary
    return written, reference(request)


def parts(message: bytes) -> list[tuple[str, bytes]]:
    parsed = email.message_from_bytes(message, policy=email.policy.default)
    assert not parsed.defects
    return [(part.get_content_type(), part.get_payload(decode=True))
            for part in parsed.walk() if not part.is_multipart()]


body_text = st.one_of(st.none(), edge_text, st.text(max_size=300))
subject_text = st.text(st.characters(blacklist_categories=("Cc", "Cs", "Zl", "Zp")),
                       min_size=1, max_size=120).filter(lambda s: s.strip())


@given(subject=subject_text, text=body_text, html=body_text,
       name=st.sampled_from(["", "Zoë Brontë", "Ann \"the\" Example", "A" * 60]))
@settings(max_examples=300, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])  # the same patch each time
def test_messages_match_the_email_package(monkeypatch: pytest.MonkeyPatch, subject: str,
                                          text: str | None, html: str | None,
                                          name: str) -> None:
    if text is None and html is None:
        text = ""
    request: dict[str, object] = {
        "from": "Shop News <news@shop.example>", "to": f"{name} <ann@example.com>".strip(),
        "subject": subject, "text": text, "html": html,
        "headers": list_unsubscribe("https://mail.example.com", "bounce.example.com", KEYS,
                                    uuid.uuid4())}
    try:
        written, expected = both(monkeypatch, request)
    except InvalidMessage:  # refused values (controls in names) are refused by both paths
        with pytest.raises(Exception):  # noqa: B017 - the email package fails its own way
            reference(request)
        return
    head, _, _ = written.partition(b"\r\n\r\n")
    expected_head, _, _ = expected.partition(b"\r\n\r\n")
    assert head == expected_head
    assert parts(written) == parts(expected)
    assert all(len(line) <= 998 for line in written.split(b"\r\n"))


def test_a_typical_automation_message_is_the_email_package_s_byte_for_byte(
        monkeypatch: pytest.MonkeyPatch) -> None:
    request: dict[str, object] = {
        "from": "Bench <news@bench.test>", "to": "user1@example.test",
        "subject": "Welcome aboard, Ann!", "text": "Hello Ann,\n\nThanks for joining.\n",
        "html": "<p>Hello <b>Ann</b></p>\n<p><a href=\"https://shop.example.com/\">Shop</a></p>",
        "headers": list_unsubscribe("https://mail.bench.test", "bounce.bench.test", KEYS,
                                    send_message_id(7, "welcome-1"))}
    written, expected = both(monkeypatch, request)
    assert written == expected


def test_lone_surrogates_are_an_invalid_message() -> None:
    with pytest.raises(InvalidMessage, match="surrogate"):
        compose({"from": "a@example.com", "to": "b@example.com", "subject": "s",
                 "text": "bad \ud800 text"}, NOW)


def test_composed_messages_verify_with_dkimpy(tmp_path: Path) -> None:
    path, line = write_keypair("shop.example", "s1", "rsa", tmp_path)
    signer = DkimSigner.from_configs([DkimKeyConfig("shop.example", "s1", path, "rsa")])
    zone = {"s1._domainkey.shop.example.": line}

    def dnsfunc(name: bytes, timeout: int = 5) -> bytes | None:
        found = zone.get(name.decode())
        return txt_value(found) if found else None

    for text, html in (("Grüße " * 40, None), ("plain", "<p style=\"a:b\">" + "x " * 300),
                       (None, "<p>only html</p>")):
        composed = compose({
            "from": "Shop <news@shop.example>", "to": "Zoë <zoe@example.com>",
            "subject": "Ihre Bestellung \u2013 danke schön, wirklich vielen herzlichen Dank dafür!",
            "text": text, "html": html,
            "headers": list_unsubscribe("https://mail.shop.example", "bounce.shop.example",
                                        KEYS, uuid.uuid4())}, NOW)
        signed = signer.sign(composed.body)
        assert dkim.DKIM(signed).verify(dnsfunc=dnsfunc)


def test_date_header_follows_the_second() -> None:
    first = mime_writer.date_value(NOW)
    assert first == "Sun, 01 Mar 2026 12:30:05 +0000"
    assert mime_writer.date_value(NOW.replace(microsecond=999)) == first
    assert mime_writer.date_value(NOW.replace(second=6)) == "Sun, 01 Mar 2026 12:30:06 +0000"


def test_date_header_of_the_same_datetime_again_and_of_others_between() -> None:
    # the last datetime asked for is answered from memory; any other is formatted as before
    later = NOW.replace(minute=31)
    for when in (NOW, NOW, later, later, NOW, later.replace(microsecond=5), NOW):
        assert mime_writer.date_value(when) == email.utils.format_datetime(
            when.replace(microsecond=0))


@given(st.binary(max_size=80))
def test_base32_is_the_standard_spelling(data: bytes) -> None:
    assert b32_lower(data) == base64.b32encode(data).decode().rstrip("=").lower()


@given(st.binary(max_size=200), st.binary(max_size=200))
def test_hmac_is_hmac(key: bytes, message: bytes) -> None:
    assert hmac_sha256(key, message) == hmac.digest(key, message, "sha256")


def test_unsubscribe_tokens_are_reused_only_for_the_same_key_and_message() -> None:
    message_id = uuid.uuid4()
    token = unsubscribe_token(KEYS, message_id)
    assert unsubscribe_token(KEYS, message_id) == token
    assert read_unsubscribe_token(KEYS, token) == message_id
    rotated = LinkKeys.parse(["k2:fedcba9876543210fedc", "k1:0123456789abcdef0123"])
    other = unsubscribe_token(rotated, message_id)
    assert other.startswith("k2.") and read_unsubscribe_token(rotated, other) == message_id
    assert unsubscribe_token(KEYS, uuid.uuid4()) != token


def test_parsed_addresses_are_shared_and_errors_are_not_cached() -> None:
    assert parse_address("Ann@Example.COM") is parse_address("Ann@Example.COM")
    assert str(parse_address("Ann@Example.COM")) == "Ann@example.com"
    for _ in range(2):
        with pytest.raises(AddressError):
            parse_address("not an address")
    with pytest.raises(AddressError):
        parse_address(["ann@example.com"])  # type: ignore[arg-type]


@given(st.integers(min_value=1, max_value=2**63 - 1),
       st.text(st.characters(blacklist_categories=("Cs",)), min_size=1, max_size=40))
@settings(max_examples=300)
def test_a_send_message_id_is_the_uuid5_of_its_run_and_step(run_id: int, step_id: str) -> None:
    namespace = uuid.UUID("6f1d2a8e-52c4-4d0b-9a57-8d0f6d1b7c11")
    assert send_message_id(run_id, step_id) == uuid.uuid5(namespace, f"run:{run_id}:{step_id}")


@pytest.mark.parametrize(("name", "reason"), [
    ("Message-ID", "is set by Herald and cannot be given here"),
    ("Authentication-Results", "only a receiving system may add it"),
    ("ARC-Seal", "only a receiving system may add it")])
def test_refused_header_names_are_refused_every_time(name: str, reason: str) -> None:
    # the judgement of a name is remembered; asking again refuses it the same way
    for _ in range(2):
        with pytest.raises(compose_module.InvalidMessage) as caught:
            compose_module._extra_headers({"X-Fine": "yes", name: "value"})
        assert str(caught.value) == f"headers.{name}: {reason}"
    assert compose_module._extra_headers({"X-Fine": "yes"}) == [("X-Fine", "yes")]
