"""Strict e-mail addresses (pure; shared by HTTP intake and MTA; mailboxes and header values
built on them are :mod:`engine.mailboxes`).

The grammar is RFC 5321's ``Mailbox`` (Dot-string or Quoted-string local part, a domain of LDH
labels or an address literal) widened by RFC 6531 to UTF-8, and nothing looser: no comments, no
folding, no whitespace outside quotes, no ``<``/``>``, no control or invisible characters anywhere.
Whatever passes can be written into an SMTP command or a header without escaping anything else.

Canonical form: a quoted local part is stored unquoted (``"abc"`` and ``abc`` are the same mailbox)
and re-quoted only when it must be; its case is kept. The domain is lower-cased, IDNs are held as
U-labels (``xn--`` input is decoded) and ``ascii_domain`` gives the A-labels. Internationalised
labels follow IDNA 2008 with UTS #46 mapping, via the ``idna`` package (errors translated here).
"""

from __future__ import annotations

import functools
import ipaddress
import re
import unicodedata
from dataclasses import dataclass, field

import idna

from engine.errors import HeraldError
from engine.privacy.forgetting import remembers_personal_data

MAX_LOCAL_OCTETS = 64  # RFC 5321 4.5.3.1.1
MAX_DOMAIN_OCTETS = 253  # RFC 1035 (255 on the wire, less the length octets)
MAX_LABEL_OCTETS = 63
MAX_PATH_OCTETS = 254  # RFC 5321 4.5.3.1.3: 256 for the path including "<" and ">"
MAX_INPUT_CHARS = 1000  # nothing longer can canonicalise to a valid address or mailbox

# Characters str.splitlines() breaks on: none may reach a header or an SMTP command line.
LINE_BREAKS = frozenset("\r\n\x00\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029")
ATEXT = frozenset(
    "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789!#$%&'*+-/=?^_`{|}~"
)
_ASCII_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_ATOM = "[A-Za-z0-9!#$%&'*+\\-/=?^_`{|}~]+"
_ASCII_DOT_STRING = re.compile(rf"{_ATOM}(?:\.{_ATOM})*\Z")  # ATEXT atoms joined by dots
_LDH_LABEL = re.compile(r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?\Z")

class AddressError(HeraldError, ValueError):
    """An address or mailbox is malformed; the message says what is wrong, for the user."""


@dataclass(frozen=True, slots=True)
class Address:
    """A validated mailbox in canonical form. Build it with :func:`parse_address`; constructing it
    directly validates too, and insists on canonical form."""

    local: str
    domain: str
    _ascii_domain: str = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        check_text(self.local, "local part")
        _check_local(self.local)
        canonical, ascii_domain = _canonical_domain(self.domain)
        if canonical != self.domain:
            raise AddressError(f"domain {self.domain!r} is not in canonical form {canonical!r}")
        path = len(_wire_local(self.local).encode()) + 1 + len(ascii_domain)
        if path > MAX_PATH_OCTETS:
            raise AddressError(f"address longer than {MAX_PATH_OCTETS} octets ({path})")
        object.__setattr__(self, "_ascii_domain", ascii_domain)

    def __str__(self) -> str:
        return f"{_wire_local(self.local)}@{self.domain}"

    @property
    def ascii_domain(self) -> str:
        """The domain in ASCII (IDNA A-labels); address literals unchanged."""
        return self._ascii_domain

    @property
    def needs_smtputf8(self) -> bool:
        """True when the local part is non-ASCII, so only an SMTPUTF8 server can take it."""
        return not self.local.isascii()

    @property
    def is_literal(self) -> bool:
        """True for an address literal domain such as ``[192.0.2.1]``."""
        return self.domain.startswith("[")

    @property
    def for_smtp(self) -> str:
        """The form for MAIL FROM / RCPT TO: the local part as on the wire, the domain in ASCII."""
        return f"{_wire_local(self.local)}@{self._ascii_domain}"


def parse_address(text: str) -> Address:
    """Parse an RFC 5321/6531 mailbox (``local@domain``) strictly; raise AddressError if invalid."""
    if not isinstance(text, str):
        raise AddressError("address must be a string")
    return _parse_address(text)


@remembers_personal_data
def forget_cached_addresses() -> None:
    """Drop every remembered address (a contact was erased: keep no copy of it here)."""
    _parse_address.cache_clear()
    _is_dot_string.cache_clear()  # local parts


@functools.lru_cache(maxsize=4096)
def _parse_address(text: str) -> Address:
    """Cached (an Address is immutable): a send parses its recipient three times (the
    suppression key, the To header, the queue's suppression check), and mail streams repeat
    their senders. Errors are not cached."""
    if not text:
        raise AddressError("address is empty")
    if len(text) > MAX_INPUT_CHARS:
        raise AddressError(f"address longer than {MAX_PATH_OCTETS} octets")
    check_text(text, "address")
    if "<" in text or ">" in text:
        raise AddressError("address contains '<' or '>'")
    if text.startswith('"'):
        local, rest = _split_quoted_local(text)
    else:
        local, sep, rest = text.partition("@")
        if not sep:
            raise AddressError("address has no '@'")
        _check_dot_string(local)
    if "@" in rest:
        raise AddressError("address has more than one '@'")
    domain, _ = _canonical_domain(rest)
    return Address(local, domain)


def ascii_host(text: str) -> str:
    """A host or domain name as lower-case A-labels without the trailing dot: the one IDNA 2008
    (UTS #46, non-transitional) normalisation Herald uses for every domain, so ``faß.example``
    is ``xn--fa-hia.example`` here as in addresses (IDNA 2003 made it ``fass.example``).
    Labels are letters, digits and hyphens; raises AddressError."""
    if not isinstance(text, str):
        raise AddressError("a domain name must be a string")
    name = text.strip()
    name = name[:-1] if name.endswith(".") else name
    if not name or len(name) > MAX_INPUT_CHARS:
        raise AddressError(f"{text!r} is not a domain name")
    check_text(name, "domain")
    if name.isascii():
        name = name.lower()
    else:
        try:
            name = idna.uts46_remap(name, std3_rules=False, transitional=False)
        except idna.IDNAError as exc:
            raise AddressError(f"{text!r} is not a valid internationalised name: {exc}") from None
    ascii_name = ".".join(_canonical_label(label, name)[1] for label in name.split("."))
    if len(ascii_name) > MAX_DOMAIN_OCTETS:
        raise AddressError(f"domain longer than {MAX_DOMAIN_OCTETS} octets ({len(ascii_name)})")
    return ascii_name


def normalize_email(text: str) -> str:
    """The canonical stored form of an address: surrounding whitespace stripped, domain lower-cased
    (and IDNs as U-labels), local part case kept. Raises AddressError."""
    reject_line_breaks(text, "address")
    return str(parse_address(text.strip()))


# --- local part -----------------------------------------------------------------------------


def check_text(text: str, what: str) -> None:
    """Reject line breaks, controls, invisible format characters and lone surrogates."""
    if text.isascii():  # the common case, without a loop over the characters
        if _ASCII_CONTROL.search(text):
            raise AddressError(f"{what} contains a control character")
        return
    for char in text:
        if char.isascii():
            if char < " " or char == "\x7f":
                raise AddressError(f"{what} contains a control character")
            continue
        category = unicodedata.category(char)
        if category in ("Cc", "Zl", "Zp"):
            raise AddressError(f"{what} contains a control character")
        if category in ("Cf", "Cs", "Co", "Cn"):
            raise AddressError(f"{what} contains an invisible or unassigned character {char!r}")


def reject_line_breaks(text: str, what: str) -> None:
    if any(char in LINE_BREAKS for char in text):
        raise AddressError(f"{what} contains a line break or NUL")


def _check_dot_string(local: str) -> None:
    """Validate an unquoted (Dot-string) local part, with a specific message for each fault."""
    if not local:
        raise AddressError("local part is empty")
    if local.isascii() and _ASCII_DOT_STRING.match(local):  # the common case: nothing to report
        return
    for char in local:
        if char in ATEXT or char == "." or (not char.isascii() and not char.isspace()):
            continue
        if char.isspace():
            raise AddressError("address contains whitespace outside a quoted string")
        if char in "()":
            raise AddressError("comments are not allowed in addresses")
        if char == '"':
            raise AddressError("local part has a misplaced '\"'; quote the whole local part")
        raise AddressError(f"local part contains {char!r}, allowed only in a quoted string")
    if local.startswith(".") or local.endswith("."):
        raise AddressError("local part starts or ends with '.'")
    if ".." in local:
        raise AddressError("local part contains '..'")


def _split_quoted_local(text: str) -> tuple[str, str]:
    """Decode a Quoted-string local part at the start of text; return it and the domain text."""
    chars: list[str] = []
    index = 1
    while index < len(text):
        char = text[index]
        if char == "\\":
            if index + 1 >= len(text) or not " " <= text[index + 1] <= "~":
                raise AddressError(
                    "local part has a '\\' not followed by a printable ASCII character"
                )
            chars.append(text[index + 1])
            index += 2
        elif char == '"':
            rest = text[index + 1 :]
            if not rest.startswith("@"):
                raise AddressError("a quoted local part must be followed by '@'")
            local = "".join(chars)
            if not local:
                raise AddressError("local part is empty")
            return local, rest[1:]
        else:
            if not char.isascii() and char.isspace():
                raise AddressError("quoted local part contains non-ASCII whitespace")
            chars.append(char)
            index += 1
    raise AddressError("quoted local part has no closing '\"'")


def _check_local(local: str) -> None:
    """Validate a decoded local part (the form held in Address.local)."""
    if not local:
        raise AddressError("local part is empty")
    if "<" in local or ">" in local:
        raise AddressError("address contains '<' or '>'")
    if not local.isascii() and any(not char.isascii() and char.isspace() for char in local):
        raise AddressError("local part contains non-ASCII whitespace")
    octets = len(_wire_local(local).encode("utf-8"))
    if octets > MAX_LOCAL_OCTETS:
        raise AddressError(f"local part longer than {MAX_LOCAL_OCTETS} octets ({octets})")


@functools.lru_cache(maxsize=4096)
def _is_dot_string(local: str) -> bool:
    """Cached: every parse of an address asks it, and a mail stream repeats its senders."""
    if local.isascii():
        return _ASCII_DOT_STRING.match(local) is not None
    atoms = local.split(".")
    return all(atoms) and all(c in ATEXT or not c.isascii() for atom in atoms for c in atom)


def _wire_local(local: str) -> str:
    """The local part as written in SMTP: bare when it is a Dot-string, else quoted."""
    if _is_dot_string(local):
        return local
    return '"' + local.replace("\\", "\\\\").replace('"', '\\"') + '"'


# --- domain ---------------------------------------------------------------------------------


@functools.lru_cache(maxsize=4096)
def _canonical_domain(text: str) -> tuple[str, str]:
    """Validate a domain or address literal; return (canonical form, ASCII form). Cached: a
    mail stream names few domains, and IDNA is the costly part of parsing an address (errors
    are raised again each time, never cached)."""
    if not text:
        raise AddressError("domain is empty")
    if text.startswith("["):
        literal = _canonical_literal(text)
        return literal, literal
    check_text(text, "domain")
    if "(" in text or ")" in text:
        raise AddressError("comments are not allowed in addresses")
    if any(char.isspace() for char in text):
        raise AddressError("address contains whitespace outside a quoted string")
    if text.isascii():
        domain = text.lower()
    else:
        try:
            domain = idna.uts46_remap(text, std3_rules=False, transitional=False)
        except idna.IDNAError as exc:
            raise AddressError(
                f"domain {text!r} is not a valid internationalised name: {exc}"
            ) from None
    labels = domain.split(".")
    if len(labels) < 2:
        raise AddressError(f"domain {domain!r} has only one label; a dotted domain is required")
    canonical: list[str] = []
    ascii_labels: list[str] = []
    for label in labels:
        unicode_label, ascii_label = _canonical_label(label, domain)
        canonical.append(unicode_label)
        ascii_labels.append(ascii_label)
    if labels[-1].isdigit():
        raise AddressError(f"top-level domain {labels[-1]!r} is all-numeric; use [address literal]")
    ascii_domain = ".".join(ascii_labels)
    if len(ascii_domain) > MAX_DOMAIN_OCTETS:
        raise AddressError(f"domain longer than {MAX_DOMAIN_OCTETS} octets ({len(ascii_domain)})")
    return ".".join(canonical), ascii_domain


def _canonical_label(label: str, domain: str) -> tuple[str, str]:
    """Validate one label; return (U-label, A-label)."""
    if not label:
        raise AddressError(f"domain {domain!r} has an empty label")
    if label.isascii():
        if len(label) > MAX_LABEL_OCTETS:
            raise AddressError(f"domain label {label!r} longer than {MAX_LABEL_OCTETS} octets")
        if not _LDH_LABEL.match(label):
            if label.startswith("-") or label.endswith("-"):
                raise AddressError(f"domain label {label!r} starts or ends with '-'")
            raise AddressError(f"domain label {label!r} has a character other than a-z, 0-9, '-'")
        if not label.startswith("xn--"):
            return label, label
        try:
            unicode_label = idna.ulabel(label)
            if idna.alabel(unicode_label).decode("ascii") != label:
                raise idna.IDNAError("not the canonical encoding")
        except (idna.IDNAError, UnicodeError) as exc:
            raise AddressError(f"domain label {label!r} is not a valid A-label: {exc}") from None
        return unicode_label, label
    try:
        ascii_label = idna.alabel(label).decode("ascii")
    except (idna.IDNAError, UnicodeError) as exc:
        raise AddressError(f"domain label {label!r} is not a valid IDN label: {exc}") from None
    return label, ascii_label


def _canonical_literal(text: str) -> str:
    if not text.endswith("]") or text.count("[") != 1 or text.count("]") != 1:
        raise AddressError("address literal must be one bracketed IP address like [192.0.2.1]")
    inner = text[1:-1]
    try:
        if inner[:5].lower() == "ipv6:":
            if "%" in inner:
                raise ValueError("zone")
            return f"[IPv6:{ipaddress.IPv6Address(inner[5:]).compressed}]"
        if not re.fullmatch(r"[0-9.]+", inner):
            raise ValueError("not dotted-quad")
        return f"[{ipaddress.IPv4Address(inner)}]"
    except ValueError:
        raise AddressError(
            f"address literal {text!r} is not [IPv4 dotted-quad] or [IPv6:address]"
        ) from None
