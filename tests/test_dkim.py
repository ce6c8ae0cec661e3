"""DKIM signing: signatures checked by dkimpy and by Perl's Mail::DKIM (independent code), policy
(h=, over-signed From, no l=, relaxed/relaxed), key selection, key files and TXT records.

The only seam is DNS: dkimpy gets a ``dnsfunc`` and Mail::DKIM a resolver, both answering from
the zone lines ``write_keypair`` prints. They are checked to agree with each other below.
"""

from __future__ import annotations

import base64
import re
import shutil
import stat
import subprocess
from collections.abc import Callable
from pathlib import Path

import dkim
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa
from dkim.canonicalization import Relaxed
from dkim.util import parse_tag_value
from hypothesis import given
from hypothesis import strategies as st

from engine.privacy.forgetting import forget_personal_data
from mta.dkim import signed_fields
from mta.dkim.canonical import relaxed_header
from mta.dkim.keys import dns_txt_record, generate_key, normalize_domain, write_keypair
from mta.dkim.signed_fields import parsed_signed_fields, plain_signed_fields
from mta.dkim.signer import DkimKeyConfig, DkimSigner, canonicalize_body, parse_message
from mta.dkim.signing_pool import SigningPool
from mta.errors import DkimError, InvalidMessage

PERL_VERIFIER = Path(__file__).parent / "support" / "mail_dkim_verify.pl"
DnsFunc = Callable[..., bytes | None]


def message(
    sender: str = "Shop <news@example.com>",
    extra: str = "",
    body: str = "Hello  there,\r\n\tthis is\tthe body. \r\n\r\n\r\n",
) -> bytes:
    head = (
        f"From: {sender}\r\nTo: Someone <someone@recipient.example>\r\n"
        "Subject: Your weekly\r\n  picks\r\nDate: Mon, 01 Jan 2024 10:00:00 +0000\r\n"
        "Message-ID: <m1@example.com>\r\nMIME-Version: 1.0\r\n"
        "Content-Type: text/plain; charset=utf-8\r\nX-Campaign: weekly\r\n"
    )
    return (head + extra + "\r\n" + body).encode()


def signatures(signed: bytes) -> list[dict[bytes, bytes]]:
    headers, _ = parse_message(signed)
    return [parse_tag_value(v) for k, v in headers if k.lower() == b"dkim-signature"]


def signed_names(tags: dict[bytes, bytes]) -> list[bytes]:
    return [x.strip().lower() for x in tags[b"h"].split(b":")]


def txt_value(zone_line: str) -> bytes:
    """What a resolver returns for a zone line: its character-strings concatenated."""
    return "".join(re.findall(r'"([^"]*)"', zone_line)).encode()


class Keys:
    """Key files and zone lines written by write_keypair in a temporary directory."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.zone: dict[str, str] = {}

    def add(self, domain: str, selector: str, algorithm: str = "rsa") -> DkimKeyConfig:
        path, line = write_keypair(domain, selector, algorithm, self.directory)
        self.zone[f"{selector}._domainkey.{domain}."] = line
        return DkimKeyConfig(domain, selector, path, algorithm)

    def dnsfunc(self, name: bytes, timeout: int = 5) -> bytes | None:
        line = self.zone.get(name.decode())
        return txt_value(line) if line else None

    def zone_file(self) -> Path:
        path = self.directory / "zone.txt"
        path.write_text("\n".join(self.zone.values()) + "\n")
        return path


@pytest.fixture
def keys(tmp_path: Path) -> Keys:
    return Keys(tmp_path / "keys")


@pytest.fixture
def make_signer() -> Callable[..., DkimSigner]:
    def make(*configs: DkimKeyConfig) -> DkimSigner:
        return DkimSigner.from_configs(configs)

    return make


def verify_all(signed: bytes, dnsfunc: DnsFunc) -> list[bool]:
    """dkimpy's verdict on every DKIM-Signature, top to bottom."""
    verdicts = []
    for index in range(len(signatures(signed))):
        try:
            verdicts.append(dkim.DKIM(signed).verify(idx=index, dnsfunc=dnsfunc))
        except dkim.DKIMException:  # dkimpy raises on a body hash mismatch
            verdicts.append(False)
    return verdicts


def require_nacl() -> None:
    pytest.importorskip("nacl", reason="dkimpy verifies ed25519 only with pynacl (dkimpy[ed25519])")


# -- dkimpy verifies what we sign ----------------------------------------------------------------


def test_rsa_signature_verifies_with_dkimpy(
    keys: Keys, make_signer: Callable[..., DkimSigner]
) -> None:
    signer = make_signer(keys.add("example.com", "rsa1"))
    signed = signer.sign(message())
    [tags] = signatures(signed)
    assert (tags[b"a"], tags[b"d"], tags[b"s"]) == (b"rsa-sha256", b"example.com", b"rsa1")
    assert verify_all(signed, keys.dnsfunc) == [True]
    assert signed.endswith(message())


def test_rsa_and_ed25519_keys_give_one_signature_each(
    keys: Keys, make_signer: Callable[..., DkimSigner]
) -> None:
    require_nacl()
    signer = make_signer(keys.add("example.com", "rsa1"), keys.add("example.com", "ed1", "ed25519"))
    signed = signer.sign(message())
    assert [t[b"a"] for t in signatures(signed)] == [b"rsa-sha256", b"ed25519-sha256"]
    assert verify_all(signed, keys.dnsfunc) == [True, True]
    tampered = signed.replace(b"the body", b"the BODY")
    assert verify_all(tampered, keys.dnsfunc) == [False, False]


def test_lf_only_message_keeps_lf_and_verifies(
    keys: Keys, make_signer: Callable[..., DkimSigner]
) -> None:
    signer = make_signer(keys.add("example.com", "rsa1"))
    lf_message = message().replace(b"\r\n", b"\n")
    signed = signer.sign(lf_message)
    assert b"\r" not in signed
    assert verify_all(signed, keys.dnsfunc) == [True]


# -- Perl's Mail::DKIM verifies what we sign -----------------------------------------------------


@pytest.fixture
def mail_dkim(keys: Keys) -> Callable[[bytes], list[str]]:
    perl = shutil.which("perl")
    if (
        perl is None
        or subprocess.run([perl, "-MMail::DKIM", "-e1"], capture_output=True).returncode != 0
    ):
        pytest.skip("Perl's Mail::DKIM is not installed (Debian: libmail-dkim-perl)")

    def verify(signed: bytes) -> list[str]:
        done = subprocess.run(
            [perl, str(PERL_VERIFIER), str(keys.zone_file())],
            input=signed,
            capture_output=True,
            timeout=60,
            check=True,
        )
        return done.stdout.decode().splitlines()

    return verify


def test_mail_dkim_verifies_rsa_and_sees_tampering(
    keys: Keys, make_signer: Callable[..., DkimSigner], mail_dkim: Callable[[bytes], list[str]]
) -> None:
    signer = make_signer(keys.add("example.com", "rsa1"), keys.add("example.com", "ed1", "ed25519"))
    signed = signer.sign(message(extra="List-Unsubscribe: <https://example.com/u/1>\r\n"))
    lines = mail_dkim(signed)
    assert lines[0] == "SIGNATURE d=example.com s=rsa1 a=rsa-sha256 pass"
    # Mail::DKIM before 1.20230630 has no ed25519: it must then call it unsupported, not failed.
    assert lines[1] in (
        "SIGNATURE d=example.com s=ed1 a=ed25519-sha256 pass",
        "SIGNATURE d=example.com s=ed1 a=ed25519-sha256 invalid "
        "(unsupported algorithm ed25519-sha256)",
    )
    assert lines[-1] == "RESULT pass"

    body_changed = signed.replace(b"the body", b"the BODY")
    assert mail_dkim(body_changed)[0].endswith("fail (body has been altered)")
    unsubscribe_changed = signed.replace(b"/u/1>", b"/u/2>")
    assert mail_dkim(unsubscribe_changed)[0].endswith(" fail (message has been altered)")
    second_from = b"From: Attacker <ceo@evil.example>\r\n" + signed
    assert mail_dkim(second_from)[0].endswith(" fail (message has been altered)")
    # Relaxed/relaxed: re-folding and whitespace changes in transit do not break it.
    rewrapped = signed.replace(b"Subject: Your weekly\r\n  picks", b"Subject:  Your weekly picks")
    assert mail_dkim(rewrapped.replace(b"the body. \r\n", b"the body.\r\n"))[0].endswith("pass")


# -- signing policy ------------------------------------------------------------------------------


def test_from_is_over_signed(keys: Keys, make_signer: Callable[..., DkimSigner]) -> None:
    signer = make_signer(keys.add("example.com", "rsa1"))
    signed = signer.sign(message())
    [tags] = signatures(signed)
    assert signed_names(tags).count(b"from") == 2
    assert verify_all(b"From: Attacker <ceo@evil.example>\r\n" + signed, keys.dnsfunc) == [False]


def test_signed_headers_are_the_present_ones_of_the_default_set(
    keys: Keys, make_signer: Callable[..., DkimSigner]
) -> None:
    signer = make_signer(keys.add("example.com", "rsa1"))
    plain = signatures(signer.sign(message()))[0]
    assert signed_names(plain) == [
        b"from",
        b"to",
        b"subject",
        b"date",
        b"message-id",
        b"mime-version",
        b"content-type",
        b"from",
    ]
    listed = message(
        extra="List-Unsubscribe: <https://example.com/u/1>\r\n"
        "List-Unsubscribe-Post: List-Unsubscribe=One-Click\r\n"
        "Feedback-ID: a:b:c\r\n"
    )
    signed = signer.sign(listed)
    names = signed_names(signatures(signed)[0])
    assert {b"list-unsubscribe", b"list-unsubscribe-post", b"feedback-id"} <= set(names)
    assert b"x-campaign" not in names
    post_changed = signed.replace(b"=One-Click", b"=Two-Click")
    assert verify_all(post_changed, keys.dnsfunc) == [False]


def test_relaxed_relaxed_and_no_length_tag(
    keys: Keys, make_signer: Callable[..., DkimSigner]
) -> None:
    signer = make_signer(keys.add("example.com", "rsa1"))
    signed = signer.sign(message())
    [tags] = signatures(signed)
    assert tags[b"c"] == b"relaxed/relaxed"
    assert b"l" not in tags
    whitespace_changed = signed.replace(b"Hello  there", b"Hello \t there").replace(
        b"Subject: Your weekly\r\n  picks", b"subject:Your   weekly picks"
    )
    assert verify_all(whitespace_changed, keys.dnsfunc) == [True]
    appended = signed + b"Appended by a list.\r\n"  # what l= would have allowed
    assert verify_all(appended, keys.dnsfunc) == [False]


def test_body_modification_breaks_verification(
    keys: Keys, make_signer: Callable[..., DkimSigner]
) -> None:
    signer = make_signer(keys.add("example.com", "rsa1"))
    signed = signer.sign(message())
    assert verify_all(signed.replace(b"this is", b"this was"), keys.dnsfunc) == [False]


# -- which keys sign -----------------------------------------------------------------------------


def test_closest_parent_domain_signs(keys: Keys, make_signer: Callable[..., DkimSigner]) -> None:
    signer = make_signer(keys.add("example.com", "top"), keys.add("mail.example.com", "sub"))
    deep = signer.sign(message(sender="news@a.b.mail.example.com"))
    assert [(t[b"d"], t[b"s"]) for t in signatures(deep)] == [(b"mail.example.com", b"sub")]
    assert verify_all(deep, keys.dnsfunc) == [True]
    other = signer.sign(message(sender='"Shop, Inc." <news@shop.example.com>'))
    assert [(t[b"d"], t[b"s"]) for t in signatures(other)] == [(b"example.com", b"top")]
    assert verify_all(other, keys.dnsfunc) == [True]
    assert signer.signing_domain("EXAMPLE.com.") == "example.com"


@pytest.mark.parametrize(
    "sender",
    [
        "news@other.org",
        "news@notexample.com",
        "news@example.com.evil.org",
        "undisclosed-recipients:;",
    ],
)
def test_unsigned_when_no_key_covers_the_from_domain(
    keys: Keys, make_signer: Callable[..., DkimSigner], sender: str
) -> None:
    signer = make_signer(keys.add("example.com", "rsa1"))
    original = message(sender=sender)
    assert signer.sign(original) is original


def test_unsigned_without_from_header(keys: Keys, make_signer: Callable[..., DkimSigner]) -> None:
    signer = make_signer(keys.add("example.com", "rsa1"))
    no_from = b"To: someone@recipient.example\r\nSubject: hi\r\n\r\nbody\r\n"
    assert signer.sign(no_from) is no_from


def test_malformed_header_section_is_invalid_message(
    keys: Keys, make_signer: Callable[..., DkimSigner]
) -> None:
    signer = make_signer(keys.add("example.com", "rsa1"))
    with pytest.raises(InvalidMessage, match="cannot DKIM-sign"):
        signer.sign(b"From: news@example.com\r\nthis is not a header\r\n\r\nbody\r\n")


# -- keys and configuration ----------------------------------------------------------------------


def test_bad_key_file_is_a_dkim_error_naming_the_file(tmp_path: Path, keys: Keys) -> None:
    garbage = tmp_path / "garbage.pem"
    garbage.write_bytes(b"-----BEGIN PRIVATE KEY-----\nnot a key\n-----END PRIVATE KEY-----\n")
    with pytest.raises(DkimError, match=re.escape(str(garbage))):
        DkimSigner.from_configs([DkimKeyConfig("example.com", "s1", garbage)])
    missing = tmp_path / "missing.pem"
    with pytest.raises(DkimError, match=re.escape(str(missing))):
        DkimSigner.from_configs([DkimKeyConfig("example.com", "s1", missing)])
    ed = keys.add("example.com", "ed1", "ed25519")
    with pytest.raises(DkimError, match=re.escape(ed.key_file.name) + ".*algorithm is rsa"):
        DkimSigner.from_configs([DkimKeyConfig("example.com", "s1", ed.key_file, "rsa")])


def test_bad_configuration_is_a_dkim_error(keys: Keys) -> None:
    rsa_key = keys.add("example.com", "rsa1")
    with pytest.raises(DkimError, match="bad domain"):
        DkimSigner.from_configs([DkimKeyConfig("bad domain", "s1", rsa_key.key_file)])
    with pytest.raises(DkimError, match="configured twice"):
        DkimSigner.from_configs([rsa_key, rsa_key])
    with pytest.raises(DkimError, match="unknown DKIM algorithm 'dsa'"):
        DkimSigner.from_configs([DkimKeyConfig("example.com", "s1", rsa_key.key_file, "dsa")])
    with pytest.raises(
        DkimError, match=re.escape("example.com: 'a;b' is not a valid DKIM selector")
    ):
        DkimSigner.from_configs([DkimKeyConfig("example.com", "a;b", rsa_key.key_file)])


def test_keygen_writes_0600_and_refuses_to_overwrite(tmp_path: Path) -> None:
    path, _ = write_keypair("Example.COM", "s1", "rsa", tmp_path)
    assert path == tmp_path / "example.com.s1.pem"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    before = path.read_bytes()
    with pytest.raises(DkimError, match="already exists; refusing to overwrite"):
        write_keypair("example.com", "s1", "ed25519", tmp_path)
    assert path.read_bytes() == before
    with pytest.raises(DkimError, match="not a valid DKIM selector"):
        write_keypair("example.com", "../escape", "rsa", tmp_path)


def test_txt_records_publish_the_public_keys(tmp_path: Path) -> None:
    rsa_pem = generate_key("rsa")
    rsa_private = serialization.load_pem_private_key(rsa_pem, password=None)
    assert isinstance(rsa_private, rsa.RSAPrivateKey) and rsa_private.key_size == 2048
    record = dns_txt_record(rsa_pem, "rsa")
    assert record.startswith("v=DKIM1; k=rsa; p=")
    published = serialization.load_der_public_key(base64.b64decode(record.split("p=")[1]))
    assert published == rsa_private.public_key()

    ed_pem = generate_key("ed25519")
    ed_private = serialization.load_pem_private_key(ed_pem, password=None)
    assert isinstance(ed_private, ed25519.Ed25519PrivateKey)
    ed_record = dns_txt_record(ed_pem, "ed25519")
    raw = base64.b64decode(ed_record.removeprefix("v=DKIM1; k=ed25519; p="))
    assert raw == ed_private.public_key().public_bytes(
        serialization.Encoding.Raw, serialization.PublicFormat.Raw
    )
    # dkimpy's dknewkey writes an ed25519 key as a base64 seed: accepted as the same key.
    seed = ed_private.private_bytes(
        serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption()
    )
    assert dns_txt_record(base64.b64encode(seed) + b"\n", "ed25519") == ed_record
    with pytest.raises(DkimError, match="algorithm is rsa"):
        dns_txt_record(ed_pem, "rsa")

    _, line = write_keypair("example.com", "s2", "rsa", tmp_path)
    prefix = "s2._domainkey.example.com. IN TXT "
    assert line.startswith(prefix)
    strings = re.findall(r'"([^"]*)"', line)
    assert len(strings) == 2 and all(len(s) <= 255 for s in strings)
    assert line == prefix + " ".join(f'"{s}"' for s in strings)
    _, ed_line = write_keypair("example.com", "e2", "ed25519", tmp_path)
    assert re.fullmatch(
        r'e2\._domainkey\.example\.com\. IN TXT "v=DKIM1; k=ed25519; p=\S{44}"', ed_line
    )


def test_dns_fakes_agree(
    keys: Keys, mail_dkim: Callable[[bytes], list[str]], make_signer: Callable[..., DkimSigner]
) -> None:
    """The dnsfunc given to dkimpy and the zone resolver given to Mail::DKIM serve one key: a
    signature by a key that is not the published one fails in both."""
    config = keys.add("example.com", "rsa1")
    published = keys.zone["rsa1._domainkey.example.com."]
    other = keys.add("example.com", "rsa2")
    keys.zone["rsa2._domainkey.example.com."] = published.replace("rsa1.", "rsa2.", 1)
    signed = make_signer(config).sign(message())
    forged = make_signer(other).sign(message())
    assert verify_all(signed, keys.dnsfunc) == [True]
    assert verify_all(forged, keys.dnsfunc) == [False]
    assert mail_dkim(signed)[0].endswith(" pass")
    # The wrong key's signature is either a bad signature or, when its value happens to
    # exceed the published modulus, "data too large for modulus": a failure either way.
    assert mail_dkim(forged)[0].endswith(("fail (bad RSA signature)",
                                          "fail (data too large for modulus)",
                                          "fail (OpenSSL error: data too large for modulus)"))


# -- off the event loop --------------------------------------------------------------------------


async def test_signing_pool_signs_batches_in_worker_processes(keys: Keys) -> None:
    pool = SigningPool([keys.add("example.com", "rsa1")], processes=2, chunk=2)
    try:
        batch = [message(), b"From: news@example.com\r\nnot a header\r\n\r\nbody\r\n",
                 message(sender="news@other.org"), message()]
        signed = await pool.sign_batch(batch)
    finally:
        pool.close()
    good, bad, unsigned, again = signed
    assert isinstance(good, bytes) and isinstance(again, bytes)
    assert verify_all(good, keys.dnsfunc) == verify_all(again, keys.dnsfunc) == [True]
    assert isinstance(bad, DkimError) and "InvalidMessage" in str(bad)
    assert unsigned == batch[2]


# -- our fast paths equal dkimpy's -----------------------------------------------------------------

_MESSAGE_BYTES = st.lists(
    st.sampled_from(
        [b"a", b"B", b":", b" ", b"\t", b"\r", b"\n", b"\r\n", b"From: x", b"Subject:", b"\xc3\xa9"]
    ),
    max_size=60,
).map(b"".join)


def _outcome(parse: Callable[[bytes], tuple[list, bytes]], data: bytes) -> object:
    try:
        headers, body = parse(data)
    except (dkim.MessageFormatError, IndexError, InvalidMessage):
        return "error"
    return [tuple(h) for h in headers], body


@given(_MESSAGE_BYTES)
def test_parse_message_equals_dkimpy(data: bytes) -> None:
    assert _outcome(parse_message, data) == _outcome(dkim.rfc822_parse, data)


@given(
    st.lists(
        st.sampled_from([b"a", b" ", b"  ", b"\t", b"\r", b"\n", b"\r\n", b"x y"]), max_size=40
    ).map(b"".join)
)
def test_canonicalize_body_equals_dkimpy_relaxed(body: bytes) -> None:
    assert canonicalize_body(body) == Relaxed.canonicalize_body(body)


@given(
    st.lists(st.sampled_from([b"a", b"B", b" ", b"  ", b"\t", b"\r", b"\r\n", b"\r\n ",
                              b"\n\t", b"x y", b":"]), max_size=30).map(b"".join),
    st.sampled_from([b"Subject", b"FROM", b"x-Tag "]),
)
def test_relaxed_header_equals_dkimpy(value: bytes, name: bytes) -> None:
    [(canonical_name, canonical_value)] = Relaxed.canonicalize_headers([(name, value)])
    assert relaxed_header(name, value) == canonical_name + b":" + canonical_value[:-2]


_CRLF_FIELDS = st.lists(
    st.tuples(st.sampled_from([b"From", b"To", b"X-a:b", b"Subject"]),
              st.lists(st.sampled_from([b" v", b"\t", b"  ", b"\r\n ", b"\r\n\t", b"\r", b"w"]),
                       max_size=8).map(b"".join)),
    max_size=8,
).map(lambda fields: b"".join(name + b":" + value + b"\r\n" for name, value in fields))


@given(_CRLF_FIELDS, st.sampled_from([b"", b"\r\nbody\r\n", b"\r\n"]))
def test_crlf_header_sections_parse_as_dkimpy_parses_them(head: bytes, rest: bytes) -> None:
    """The one-regex path for CRLF-only sections (generated mail) against dkimpy."""
    assert _outcome(parse_message, head + rest) == _outcome(dkim.rfc822_parse, head + rest)


_PLAIN_LINES = st.lists(  # mostly plain header lines, now and then one that is not
    st.tuples(
        st.sampled_from([b"From", b"TO", b"to", b"X-a", b"Subject", b"Content-Type", b"Received",
                         b"from", b"To", b"Cc"] * 3 + [b"a b", b"", b" To"]),
        st.sampled_from([b":"] * 12 + [b"", b" :"]),
        st.lists(st.sampled_from([b" v", b"\t", b"  ", b"w", b":", b" ", b"\x0b", b"\x0c",
                                  b"<a@b.example>", b"\xc3\xa9"] * 6 + [b"\r", b"\n", b"\r\n "]),
                 max_size=6).map(b"".join),
    ).map(b"".join),
    max_size=8,
)


def _parsed_fields(message: bytes) -> object:
    try:
        headers, _ = parse_message(message)
    except InvalidMessage:
        return "error"
    return parsed_signed_fields(headers)


@given(_PLAIN_LINES)
def test_plain_signed_fields_equal_the_parsed_ones(lines: list[bytes]) -> None:
    """The line-cache path (generated mail) against dkimpy's parse: the same h= list, hashed
    bytes and From value, or it declines (None) and the parse decides."""
    head = b"\r\n".join(lines)
    message = head + b"\r\n\r\nbody\r\n"
    for _ in range(2):  # learning the lines, then from the cache
        plain = plain_signed_fields(head)
        if plain is not None:
            assert head and plain == _parsed_fields(message)


def test_plain_signed_fields_survive_the_line_cache_emptying(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(signed_fields, "LINE_CACHE_SIZE", 5)
    for recipient in range(20):
        head = (b"From: Shop <news@example.com>\r\nTo: <c%d@example.org>\r\nX-Id: %d\r\n"
                b"Subject:  Hello\t you \r\nTo: <second@example.org>" % (recipient, recipient))
        plain = plain_signed_fields(head)
        assert plain is not None
        assert plain == _parsed_fields(head + b"\r\n\r\n")
        include, hashed, from_value = plain
        assert include == (b"from", b"to", b"subject", b"to", b"from")
        assert hashed == (b"from:Shop <news@example.com>\r\nto:<second@example.org>\r\n"
                          b"subject:Hello you\r\nto:<c%d@example.org>\r\n" % recipient)
        assert from_value == b" Shop <news@example.com>"
        assert len(signed_fields._line_names) <= 5


def test_headers_the_line_cache_declines_are_parsed(
        keys: Keys, make_signer: Callable[..., DkimSigner]) -> None:
    """Folded fields, bare LFs and an mbox From line in the header section: the parse path
    signs them, and the signatures verify."""
    signer = make_signer(keys.add("example.com", "rsa1"))
    folded = message()  # its Subject is folded
    assert plain_signed_fields(folded[:folded.index(b"\r\n\r\n")]) is None
    mbox = b"From news@example.com Mon Jan  1 10:00:00 2024\r\n" + message()
    mixed = message().replace(b"MIME-Version: 1.0\r\n", b"MIME-Version: 1.0\n")
    for original in (folded, mbox, mixed):
        assert verify_all(signer.sign(original), keys.dnsfunc) == [True]


# -- internationalised domains: one IDNA 2008 form everywhere ------------------------------------

IDN_DOMAINS = [
    # German: IDNA 2003 mapped ß to "ss" (fass.example, another domain); IDNA 2008 keeps it.
    ("faß.example", "xn--fa-hia.example"),
    ("例子.中国", "xn--fsqu00a.xn--fiqs8s"),  # Chinese
]


@pytest.mark.parametrize(("domain", "a_labels"), IDN_DOMAINS)
def test_idn_keys_are_named_and_published_with_idna_2008_a_labels(
        tmp_path: Path, domain: str, a_labels: str) -> None:
    assert normalize_domain(domain) == a_labels
    assert normalize_domain(" " + domain.replace("example", "EXAMPLE") + ". ") == a_labels
    assert normalize_domain(a_labels) == a_labels
    path, line = write_keypair(domain, "s1", "rsa", tmp_path)
    assert path == tmp_path / f"{a_labels}.s1.pem"
    assert line.startswith(f"s1._domainkey.{a_labels}. IN TXT ")


@pytest.mark.parametrize(("domain", "a_labels"), IDN_DOMAINS)
def test_mail_from_an_idn_domain_is_signed_with_its_key(
        keys: Keys, make_signer: Callable[..., DkimSigner], domain: str, a_labels: str) -> None:
    config = keys.add(domain, "s1")
    keys.zone = {name.replace(f".{domain}.", f".{a_labels}."): line
                 for name, line in keys.zone.items()}  # DNS holds A-labels only
    signer = make_signer(config)
    assert signer.signing_domain(a_labels) == a_labels
    for sender in (f"Shop <news@{a_labels}>", f"Shop <news@{domain}>",
                   f"news@mail.{a_labels}"):
        signed = signer.sign(message(sender=sender))
        assert [(t[b"d"], t[b"s"]) for t in signatures(signed)] == [(a_labels.encode(), b"s1")]
        assert verify_all(signed, keys.dnsfunc) == [True]


def test_a_signing_worker_empties_its_header_cache_once_an_erasure_reaches_it(
        keys: Keys) -> None:
    """Signed header fields (To, Subject) may name people: an erasure heard by the parent
    (its count in every chunk) empties a worker's cache before the worker signs again."""
    from mta.dkim import signing_pool
    from mta.dkim.canonical import relaxed_header

    signing_pool._init_worker([keys.add("example.com", "rsa1")])  # this process as the worker
    before = signing_pool._erasures
    signing_pool._sign_chunk([message()], before)
    signing_pool._sign_chunk([message()], before)
    relaxed_header(b"To", b" alice.smith@example.com\r\n")
    kept = relaxed_header.cache_info().currsize
    assert signing_pool._sign_chunk([], before) == []
    assert relaxed_header.cache_info().currsize == kept  # no erasure: kept
    forget_personal_data()  # the parent hears an erasure
    assert signing_pool._erasures == before + 1
    relaxed_header(b"To", b" alice.smith@example.com\r\n")  # (the parent's own, emptied)
    signing_pool._sign_chunk([], signing_pool._erasures)
    assert relaxed_header.cache_info().currsize == 0
