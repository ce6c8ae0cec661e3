"""Strict address, mailbox and header-value handling."""

from __future__ import annotations

import email.header
from email.headerregistry import AddressHeader, HeaderRegistry

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from engine.addresses import (
    ATEXT,
    Address,
    AddressError,
    _is_dot_string,
    check_text,
    normalize_email,
    parse_address,
)
from engine.errors import HeraldError
from engine.mailboxes import HeaderError, check_header_value, format_mailbox, parse_mailbox

# (input, str() of the result, for_smtp, needs_smtputf8)
VALID: list[tuple[str, str, str, bool]] = [
    ("a@example.com", "a@example.com", "a@example.com", False),
    ("First.Last+tag@Example.COM", "First.Last+tag@example.com",
     "First.Last+tag@example.com", False),
    ("!#$%&'*+-/=?^_`{|}~@example.org", "!#$%&'*+-/=?^_`{|}~@example.org",
     "!#$%&'*+-/=?^_`{|}~@example.org", False),
    ('"john doe"@example.com', '"john doe"@example.com', '"john doe"@example.com', False),
    ('"abc"@example.com', "abc@example.com", "abc@example.com", False),  # needless quotes dropped
    ('"a@b"@example.com', '"a@b"@example.com', '"a@b"@example.com', False),
    ('"a\\"b\\\\c"@example.com', '"a\\"b\\\\c"@example.com', '"a\\"b\\\\c"@example.com', False),
    ('"a..b"@example.com', '"a..b"@example.com', '"a..b"@example.com', False),
    ('"\\a"@example.com', "a@example.com", "a@example.com", False),  # quoted-pair of a plain char
    ("a@sub-domain.example.co.uk", "a@sub-domain.example.co.uk",
     "a@sub-domain.example.co.uk", False),
    ("a@123.example", "a@123.example", "a@123.example", False),
    ("a@[192.0.2.1]", "a@[192.0.2.1]", "a@[192.0.2.1]", False),
    ("a@[IPv6:2001:DB8:0:0:0:0:0:1]", "a@[IPv6:2001:db8::1]", "a@[IPv6:2001:db8::1]", False),
    ("a@[ipv6:::1]", "a@[IPv6:::1]", "a@[IPv6:::1]", False),
    # RFC 6531 / IDNA
    ("josé@example.com", "josé@example.com", "josé@example.com", True),
    ("用户@例子.广告", "用户@例子.广告", "用户@xn--fsqu00a.xn--4rr70v", True),
    ("a@Bücher.example", "a@bücher.example", "a@xn--bcher-kva.example", False),
    ("a@xn--bcher-kva.example", "a@bücher.example", "a@xn--bcher-kva.example", False),
    ("a@XN--BCHER-KVA.example", "a@bücher.example", "a@xn--bcher-kva.example", False),
    ("a@bücher\u3002example", "a@bücher.example", "a@xn--bcher-kva.example", False),
    ("δοκιμή@παράδειγμα.δοκιμή", "δοκιμή@παράδειγμα.δοκιμή",
     "δοκιμή@xn--hxajbheg2az3al.xn--jxalpdlp", True),
    ("a" * 64 + "@example.com", "a" * 64 + "@example.com", "a" * 64 + "@example.com", False),
]

# (input, a substring of the error message)
INVALID: list[tuple[str, str]] = [
    ("", "address is empty"),
    ("example.com", "has no '@'"),
    ("a@b@example.com", "more than one '@'"),
    ("@example.com", "local part is empty"),
    ('""@example.com', "local part is empty"),
    ("a@", "domain is empty"),
    (".a@example.com", "starts or ends with '.'"),
    ("a.@example.com", "starts or ends with '.'"),
    ("a..b@example.com", "contains '..'"),
    ("a b@example.com", "whitespace outside a quoted string"),
    ("a@exa mple.com", "whitespace outside a quoted string"),
    (" a@example.com", "whitespace outside a quoted string"),
    ("a\u00a0b@example.com", "whitespace outside a quoted string"),
    ("a(comment)@example.com", "comments are not allowed"),
    ("a@example.com(comment)", "comments are not allowed"),
    ("<a@example.com>", "'<' or '>'"),
    ('"a<b"@example.com', "'<' or '>'"),
    ("a,b@example.com", "allowed only in a quoted string"),
    ("a[b]@example.com", "allowed only in a quoted string"),
    ('a"b"@example.com', "misplaced '\"'"),
    ('"ab@example.com', "no closing '\"'"),
    ('"ab"c@example.com', "must be followed by '@'"),
    ('"a\\\u00e9"@example.com', "not followed by a printable ASCII"),
    ("a\r\n@example.com", "control character"),
    ("a@example.com\r\nRCPT TO:<b@evil.example>", "control character"),
    ("a\x00@example.com", "control character"),
    ("a\t@example.com", "control character"),
    ("a\x7f@example.com", "control character"),
    ("a\u2028@example.com", "control character"),
    ('"a\rb"@example.com', "control character"),
    ("a\u200b@example.com", "invisible"),
    ("a\u202e@example.com", "invisible"),
    ("a" * 65 + "@example.com", "local part longer than 64 octets"),
    ("é" * 33 + "@example.com", "local part longer than 64 octets"),  # 66 octets, 33 chars
    ("a@localhost", "only one label"),
    ("a@example..com", "empty label"),
    ("a@.example.com", "empty label"),
    ("a@example.com.", "empty label"),
    ("a@-example.com", "starts or ends with '-'"),
    ("a@example-.com", "starts or ends with '-'"),
    ("a@exa_mple.com", "character other than a-z, 0-9, '-'"),
    ("a@" + "b" * 64 + ".com", "longer than 63 octets"),
    ("a@" + ".".join(["b" * 63] * 4), "domain longer than 253 octets"),
    ("a" * 64 + "@" + ".".join(["b" * 62] * 3) + ".bb", "address longer than 254 octets"),
    ("a@192.0.2.1", "all-numeric"),
    ("a@[192.0.2]", "address literal"),
    ("a@[192.0.2.256]", "address literal"),
    ("a@[010.0.2.1]", "address literal"),
    ("a@[IPv6:2001:db8::g]", "address literal"),
    ("a@[IPv6:fe80::1%eth0]", "address literal"),
    ("a@[tag:content]", "address literal"),
    ("a@[192.0.2.1", "address literal"),
    ("a@xn--zz.example", "not a valid A-label"),
    ("a@\u2603.example", "not a valid IDN label"),
    ("a" * 1001, "longer than 254 octets"),
]


@pytest.mark.parametrize(("text", "shown", "smtp", "utf8"), VALID)
def test_valid_addresses(text: str, shown: str, smtp: str, utf8: bool) -> None:
    address = parse_address(text)
    assert str(address) == shown
    assert address.for_smtp == smtp
    assert address.needs_smtputf8 is utf8
    assert parse_address(shown) == address
    assert parse_address(smtp) == address


@pytest.mark.parametrize(("text", "reason"), INVALID)
def test_invalid_addresses(text: str, reason: str) -> None:
    with pytest.raises(AddressError) as caught:
        parse_address(text)
    assert reason in str(caught.value)


def test_errors_are_value_errors_in_the_herald_tree() -> None:
    assert issubclass(AddressError, ValueError) and issubclass(AddressError, HeraldError)
    assert issubclass(HeaderError, ValueError) and issubclass(HeaderError, HeraldError)


def test_domain_lower_cased_local_part_case_kept() -> None:
    address = parse_address("John.Smith@EXAMPLE.Com")
    assert (address.local, address.domain) == ("John.Smith", "example.com")
    assert parse_address("john.smith@example.com") != address


def test_ascii_domain_and_literals() -> None:
    assert parse_address("a@münchen.de").ascii_domain == "xn--mnchen-3ya.de"
    assert parse_address("a@[192.0.2.1]").ascii_domain == "[192.0.2.1]"
    assert parse_address("a@[192.0.2.1]").is_literal
    assert not parse_address("a@example.com").is_literal
    # IDNA 2008 (not 2003): ß is kept, not mapped to "ss"
    assert parse_address("a@straße.de").ascii_domain == "xn--strae-oqa.de"


def test_constructing_an_address_validates_and_insists_on_canonical_form() -> None:
    assert str(Address("a", "example.com")) == "a@example.com"
    with pytest.raises(AddressError, match="canonical"):
        Address("a", "Example.com")
    with pytest.raises(AddressError, match="control"):
        Address("a\r\nRCPT TO:<x@y.z>", "example.com")
    with pytest.raises(AddressError):
        Address("a", "example.com\r\n")
    with pytest.raises(AddressError, match="empty"):
        Address("", "example.com")


def test_address_is_hashable_and_frozen() -> None:
    address = parse_address("a@example.com")
    assert {address, parse_address('"a"@EXAMPLE.com')} == {address}
    with pytest.raises(AttributeError):
        address.local = "b"  # type: ignore[misc]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("  Some.One@Example.COM \t", "Some.One@example.com"),
        ('"x"@EXAMPLE.com', "x@example.com"),
        ("a@XN--BCHER-KVA.de", "a@bücher.de"),
    ],
)
def test_normalize_email(text: str, expected: str) -> None:
    assert normalize_email(text) == expected


@pytest.mark.parametrize("text", ["a@example.com\n", "\ra@example.com", "", "   ", "a@b"])
def test_normalize_email_rejects(text: str) -> None:
    with pytest.raises(AddressError):
        normalize_email(text)


# --- mailboxes ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "name", "address"),
    [
        ("a@example.com", None, "a@example.com"),
        ("  a@example.com  ", None, "a@example.com"),
        ("<a@example.com>", None, "a@example.com"),
        ('"" <a@example.com>', None, "a@example.com"),
        ("Jane Doe <jane@example.com>", "Jane Doe", "jane@example.com"),
        ("John Q. Public <john@example.com>", "John Q. Public", "john@example.com"),
        ('"Doe, Jane" <jane@example.com>', "Doe, Jane", "jane@example.com"),
        ('"Jane \\"JD\\" Doe" <jane@example.com>', 'Jane "JD" Doe', "jane@example.com"),
        ('"<not@this.one>" <real@example.com>', "<not@this.one>", "real@example.com"),
        ("Zoë Ünlü <zoe@bücher.de>", "Zoë Ünlü", "zoe@bücher.de"),
        ("Jane<jane@example.com>", "Jane", "jane@example.com"),
    ],
)
def test_parse_mailbox(text: str, name: str | None, address: str) -> None:
    assert parse_mailbox(text) == (name, parse_address(address))


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("Jane <jane@example.com>\r\nBcc: victim@example.org", "line break"),
        ("Jane\n <jane@example.com>", "line break"),
        ("Jane <jane@example.com\x00>", "line break or NUL"),
        ("Doe, Jane <jane@example.com>", "put the name in double quotes"),
        ("Jane: <jane@example.com>", "put the name in double quotes"),
        ('"Jane <jane@example.com>', "unterminated quote"),
        ('"Jane\\" <jane@example.com>', "unterminated quote"),
        ('"Ja"ne" <jane@example.com>', "unterminated quote"),
        ('"Ja"n"e" <jane@example.com>', "inside quotes"),
        ("Jane jane@example.com>", "no matching '<'"),
        ("Jane <<jane@example.com>", "more than one '<'"),
        ("Jane <jane@example.com", "'<' or '>'"),
        ("Jane <jane@localhost>", "only one label"),
        ("Jane < jane@example.com>", "whitespace"),
        ("Ja\u202ene <jane@example.com>", "invisible"),
        ("J" * 101 + " <jane@example.com>", "display name longer than 100"),
        ("x" * 1001, "longer than 1000"),
    ],
)
def test_parse_mailbox_rejects(text: str, reason: str) -> None:
    with pytest.raises(AddressError) as caught:
        parse_mailbox(text)
    assert reason in str(caught.value)


def _parse_header(value: str) -> tuple[str, str, str]:
    """(display name, decoded local part, domain) as the stdlib's header parser reads them.
    (Its addr_spec re-quotes local parts such as '"a..b"' wrongly, so compare the parts.)"""
    header = HeaderRegistry()("To", value)
    assert isinstance(header, AddressHeader)
    assert not header.defects, header.defects
    (mailbox,) = header.addresses
    return mailbox.display_name, mailbox.username, mailbox.domain


@pytest.mark.parametrize(
    ("name", "address", "formatted"),
    [
        (None, "a@example.com", "a@example.com"),
        ("", "a@example.com", "a@example.com"),
        ("   ", "a@example.com", "a@example.com"),
        ("Jane Doe", "jane@example.com", "Jane Doe <jane@example.com>"),
        ("Doe, Jane", "jane@example.com", '"Doe, Jane" <jane@example.com>'),
        ("J. Doe", "jane@example.com", '"J. Doe" <jane@example.com>'),
        ('Jane "JD" Doe', "jane@example.com", '"Jane \\"JD\\" Doe" <jane@example.com>'),
        ("Back\\slash", "a@example.com", '"Back\\\\slash" <a@example.com>'),
        ("Zoë", "zoe@bücher.de", "=?utf-8?q?Zo=C3=AB?= <zoe@xn--bcher-kva.de>"),
    ],
)
def test_format_mailbox(name: str | None, address: str, formatted: str) -> None:
    parsed = parse_address(address)
    assert format_mailbox(name, parsed) == formatted
    assert _parse_header(formatted) == ((name or "").strip(), parsed.local, parsed.ascii_domain)
    if name and name.isascii():
        assert parse_mailbox(formatted) == (name.strip() or None, parsed)


def test_format_mailbox_rejects_unsafe_display_names() -> None:
    address = parse_address("a@example.com")
    for name in ("Jane\r\nBcc: x@y.z", "Jane\n", "J\x00", "J" * 101):
        with pytest.raises(AddressError):
            format_mailbox(name, address)


def test_format_mailbox_encodes_lookalike_encoded_words() -> None:
    formatted = format_mailbox("=?utf-8?q?Admin?=", parse_address("a@example.com"))
    assert formatted.startswith("=?utf-8?")
    assert email.header.decode_header(formatted.rpartition(" <")[0])[0][0] == b"=?utf-8?q?Admin?="


def test_long_non_ascii_display_name_is_split_into_short_encoded_words() -> None:
    name = "Zoë 😀 " * 14 + "Zoë 😀"
    formatted = format_mailbox(name, parse_address("a@example.com"))
    words = formatted.rpartition(" <")[0].split(" ")
    assert len(words) > 1 and all(len(word) <= 75 for word in words)
    decoded = email.header.decode_header(formatted.rpartition(" <")[0])
    assert decoded[0][0].decode(decoded[0][1] or "ascii") == name
    check_header_value("From", formatted)


def test_smtputf8_mailbox_keeps_the_utf8_address() -> None:
    formatted = format_mailbox("A. User", parse_address("josé@bücher.de"))
    assert formatted == '"A. User" <josé@bücher.de>'
    assert parse_mailbox(formatted) == ("A. User", parse_address("josé@bücher.de"))


# --- header values --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("Subject", "Hello, world"),
        ("X-Custom-Header", "tab\tseparated"),
        ("Subject", "Grüße 👋"),
        ("Subject", ""),
        ("X", "v" * (998 - 3)),
    ],
)
def test_check_header_value_accepts(name: str, value: str) -> None:
    check_header_value(name, value)


@pytest.mark.parametrize(
    ("name", "value", "reason"),
    [
        ("Subject", "Hi\r\nBcc: victim@example.org", "line break"),
        ("Subject", "Hi\n", "line break"),
        ("Subject", "Hi\r", "line break"),
        ("Subject", "a\x00b", "line break or NUL"),
        ("Subject", "a\u2028b", "line break"),
        ("Subject", "a\x1bb", "control character"),
        ("Sub ject", "x", "header name"),
        ("Subject:", "x", "header name"),
        ("", "x", "header name"),
        ("Sübject", "x", "header name"),
        ("X", "v" * (998 - 2), "limit is 998"),
        ("X", "é" * 498, "limit is 998"),  # 996 octets + "X: "
    ],
)
def test_check_header_value_rejects(name: str, value: str, reason: str) -> None:
    with pytest.raises(HeaderError) as caught:
        check_header_value(name, value)
    assert reason in str(caught.value)


# --- properties -----------------------------------------------------------------------------

_BREAK = st.sampled_from(["\r", "\n", "\r\n"])


@st.composite
def _with_line_break(draw: st.DrawFn) -> str:
    before, after = draw(st.text(max_size=40)), draw(st.text(max_size=40))
    return before + draw(_BREAK) + after


@given(_with_line_break())
def test_any_line_break_is_rejected_everywhere(text: str) -> None:
    with pytest.raises(AddressError):
        parse_address(text)
    with pytest.raises(AddressError):
        normalize_email(text)
    with pytest.raises(AddressError):
        parse_mailbox(text)
    with pytest.raises(AddressError):
        format_mailbox(text, parse_address("a@example.com"))
    with pytest.raises(HeaderError):
        check_header_value("Subject", text)
    with pytest.raises(HeaderError):
        check_header_value(text, "value")


_ATEXT = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789!#$%&'*+-/=?^_`{|}~"
_atom = st.text(alphabet=_ATEXT + "éü用", min_size=1, max_size=10)
_label = st.from_regex(r"[a-z0-9](?:[a-z0-9-]{0,10}[a-z0-9])?", fullmatch=True)
_domain = st.lists(_label, min_size=1, max_size=4).map(lambda labels: ".".join([*labels, "com"]))
_quoted = st.text(
    alphabet=st.characters(min_codepoint=32, max_codepoint=126, blacklist_characters="<>"),
    min_size=1,
    max_size=20,
).map(lambda s: '"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"')
_local = st.one_of(st.lists(_atom, min_size=1, max_size=4).map(".".join), _quoted)


@given(_local, _domain)
def test_round_trip_of_generated_valid_addresses(local: str, domain: str) -> None:
    text = f"{local}@{domain}"
    address = parse_address(text)
    assert parse_address(str(address)) == address
    assert parse_address(address.for_smtp) == address
    assert normalize_email(str(address)) == str(address)


@given(st.emails())
def test_hypothesis_emails_parse_and_round_trip(text: str) -> None:
    try:
        address = parse_address(text)
    except AddressError:
        assume(False)  # hypothesis' generator is looser (e.g. long paths) than RFC 5321
    else:
        assert parse_address(str(address)) == address


@given(st.text(max_size=80))
def test_arbitrary_text_either_fails_cleanly_or_round_trips(text: str) -> None:
    try:
        address = parse_address(text)
    except AddressError:
        return
    assert parse_address(str(address)) == address
    assert not any(char in "\r\n\x00<>" for char in str(address))


@given(st.text(max_size=80), st.text(max_size=40))
def test_arbitrary_mailboxes_fail_cleanly_or_format_to_a_safe_header(
    name_part: str, address_part: str
) -> None:
    for text in (f"{name_part} <{address_part}>", f'"{name_part}" <{address_part}>'):
        try:
            name, address = parse_mailbox(text)
        except AddressError:
            continue
        formatted = format_mailbox(name, address)
        check_header_value("To", formatted)
        assert parse_mailbox(formatted)[1] == address


_display_name = st.text(
    alphabet=st.characters(blacklist_categories=("Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp")),
    min_size=1,
    max_size=100,
).filter(lambda s: s.strip() == s)


@given(_display_name, _local.filter(lambda s: s.isascii()), _domain)
def test_formatted_mailbox_parses_back_with_email_headerregistry(
    name: str, local: str, domain: str
) -> None:
    address = parse_address(f"{local}@{domain}")
    formatted = format_mailbox(name, address)
    check_header_value("From", formatted)
    parsed_name, local_part, domain_part = _parse_header(formatted)
    assert (local_part, domain_part) == (address.local, address.ascii_domain)
    decoded = email.header.make_header(email.header.decode_header(formatted.rpartition(" <")[0]))
    if formatted.startswith("=?"):
        # RFC 2047 exactness is checked with email.header: the headerregistry parser keeps the
        # spaces between adjacent encoded words, which RFC 2047 6.2 says to drop.
        assert str(decoded) == name
        assert parsed_name.replace(" ", "") == name.replace(" ", "")
    else:
        assert parsed_name == name
        assert parse_mailbox(formatted) == (name, address)


def test_the_ascii_fast_paths_agree_with_the_character_rules() -> None:
    """ASCII text skips the per-character loops (a regex each): every ASCII character, alone,
    inside, around and beside dots, is judged as the character rules judge it."""
    for code in range(128):
        char = chr(code)
        is_control = code < 32 or code == 127
        for text in (char, f"a{char}b", f".{char}", f"{char}.", f"a.{char}.b", f"a{char}{char}"):
            atoms = text.split(".")
            expected = all(atoms) and all(c in ATEXT for atom in atoms for c in atom)
            assert _is_dot_string(text) == expected, repr(text)
            if is_control:
                with pytest.raises(AddressError, match="control character"):
                    check_text(text, "address")
            else:
                check_text(text, "address")
            address = f"{text}@example.com"
            if is_control or not expected:
                with pytest.raises(AddressError):
                    parse_address(address)
            elif char not in ("<", ">"):
                assert parse_address(address).local == text
