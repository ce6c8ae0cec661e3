"""DKIM signing: one DKIM-Signature per configured key of the message's From domain.

dkimpy does the DKIM logic: header parsing, relaxed canonicalization of headers, header hashing
and tag folding (``rfc822_parse``, ``Relaxed``, ``hash_headers``, ``fold``, ``RE_BTAG``). Two
things are not taken from ``dkim.DKIM.sign``: it re-parses the PEM key with a pure-Python ASN.1
reader and signs with pure-Python RSA on every call (~160 signatures/s). Here each key is loaded
once into a ``cryptography`` key object, and the private-key operation runs in OpenSSL. The
delivery service signs off the event loop in worker processes (:mod:`mta.dkim.signing_pool`,
each with a ``DkimSigner``): threads would queue behind the loop for the GIL. Per-message
Python work is trimmed where dkimpy repeats it: the body is split off without dkimpy's per-line
split/join, relaxed body canonicalization skips dkimpy's regexes when the body has no tab or
double space (both property-tested to equal dkimpy's results), and the canonical form of
header fields and the domain of From values are memoized, as a campaign's messages repeat them.

Policy: relaxed/relaxed, never ``l=``, From signed once more than it occurs, and only the
headers in :data:`SIGNED_HEADERS` that are present. Keys of the exact From domain are used, else
those of its closest configured parent domain; with none the message is returned unsigned.
"""

from __future__ import annotations

import base64
import email.utils
import functools
import hashlib
import re
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import dkim
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ed25519, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import Prehashed
from dkim.canonicalization import (
    CanonicalizationPolicy,
    correct_empty_body,
    strip_trailing_lines,
)
from dkim.util import get_linesep

from mta.dkim.keys import (
    PrivateKey,
    check_algorithm,
    load_private_key,
    normalize_domain,
    normalize_selector,
)
from mta.errors import DkimError, InvalidMessage

Header = tuple[bytes, bytes]

#: Signed when present, in message order (RFC 6376 5.4.1, RFC 8058 for List-Unsubscribe-Post).
SIGNED_HEADERS: Final = frozenset(
    b"from to cc subject date message-id reply-to mime-version content-type "
    b"content-transfer-encoding list-unsubscribe list-unsubscribe-post list-id feedback-id "
    b"in-reply-to references".split()
)
#: Listed once more in h= than they occur, so that none can be added.
OVERSIGNED_HEADERS: Final = (b"from",)
_CACHE_SIZE: Final = 4096  # header values kept canonicalized / From values kept parsed

_SIGNATURE_HEADER: Final = b"DKIM-Signature"
_RELAXED: Final = CanonicalizationPolicy.from_c_value(b"relaxed/relaxed")
_HEADER_END: Final = re.compile(rb"\n(?:\r?\n|\Z)")
_WSP_RUN: Final = re.compile(rb"\t[\t ]*| [\t ]+")  # runs that are not already one space
_RSA_PADDING: Final = padding.PKCS1v15()
_PREHASHED_SHA256: Final = Prehashed(hashes.SHA256())


@dataclass(frozen=True, slots=True)
class DkimKeyConfig:
    """One ``[[mta.dkim]]`` entry of the config file."""

    domain: str
    selector: str
    key_file: Path
    algorithm: str = "rsa"  # "rsa" | "ed25519"


@dataclass(frozen=True, slots=True)
class DkimKey:
    """A loaded signing key: d=, s=, a= and the parsed private key."""

    domain: str
    selector: str
    private_key: PrivateKey

    @property
    def signature_algorithm(self) -> bytes:
        if isinstance(self.private_key, rsa.RSAPrivateKey):
            return b"rsa-sha256"
        return b"ed25519-sha256"

    def sign_digest(self, digest: bytes) -> bytes:
        """Sign a SHA-256 digest: PKCS#1 v1.5 for RSA, PureEdDSA over the digest (RFC 8463)."""
        if isinstance(self.private_key, ed25519.Ed25519PrivateKey):
            return self.private_key.sign(digest)
        return self.private_key.sign(digest, _RSA_PADDING, _PREHASHED_SHA256)


class DkimSigner:
    """Signs messages with the keys of their From domain; keys loaded once."""

    def __init__(self, keys: Sequence[DkimKey]) -> None:
        by_domain: dict[str, list[DkimKey]] = {}
        for key in keys:
            by_domain.setdefault(key.domain, []).append(key)
        self._keys: Mapping[str, tuple[DkimKey, ...]] = {
            domain: tuple(domain_keys) for domain, domain_keys in by_domain.items()
        }

    @classmethod
    def from_configs(cls, configs: Sequence[DkimKeyConfig]) -> DkimSigner:
        """Load every key file once; DkimError naming the domain or file on a bad entry."""
        keys: list[DkimKey] = []
        seen: set[tuple[str, str]] = set()
        for config in configs:
            domain = normalize_domain(config.domain)
            try:
                selector = normalize_selector(config.selector)
            except DkimError as exc:
                raise DkimError(f"DKIM key for {domain}: {exc}") from exc
            if (domain, selector) in seen:
                raise DkimError(f"DKIM key for {domain}: selector {selector!r} configured twice")
            seen.add((domain, selector))
            algorithm = check_algorithm(config.algorithm)
            keys.append(DkimKey(domain, selector, load_private_key(config.key_file, algorithm)))
        return cls(keys)

    @property
    def keys(self) -> tuple[DkimKey, ...]:
        """Every loaded key, in configuration order within each domain."""
        return tuple(key for domain_keys in self._keys.values() for key in domain_keys)

    def signing_domain(self, domain: str) -> str | None:
        """The configured domain whose keys sign mail from ``domain`` (itself or its closest
        parent), or None."""
        labels = domain.rstrip(".").lower().split(".")
        for i in range(len(labels)):
            candidate = ".".join(labels[i:])
            if candidate in self._keys:
                return candidate
        return None

    def sign(self, message: bytes) -> bytes:
        """The message with one DKIM-Signature per key prepended; ``message`` itself when no
        key covers its From domain. InvalidMessage if the header section is malformed."""
        headers, body = parse_message(message)
        domain = from_domain(headers)
        signer_domain = self.signing_domain(domain) if domain else None
        if signer_domain is None:
            return message
        include = headers_to_sign(headers)
        canonical_headers = [
            canonical_header(name, value)
            for name, value in headers
            if name.lower() in SIGNED_HEADERS
        ]
        body_hash = base64.b64encode(hashlib.sha256(canonicalize_body(body)).digest())
        timestamp = str(int(time.time())).encode("ascii")
        linesep = get_linesep(message)
        signatures = [
            signature_header(key, canonical_headers, include, body_hash, timestamp, linesep)
            for key in self._keys[signer_domain]
        ]
        return b"".join(signatures) + message


def parse_message(message: bytes) -> tuple[list[Header], bytes]:
    """``dkim.rfc822_parse`` without its per-line split and join of the body: the header
    section goes through dkimpy, the body only has bare LFs turned into CRLF."""
    if message.startswith((b"\n", b"\r\n")):
        head, raw_body = b"", message[message.index(b"\n") + 1 :]
    elif (end := _HEADER_END.search(message)) is not None:
        head, raw_body = message[: end.start() + 1], message[end.end() :]
    else:
        head, raw_body = message, b""
    try:
        parsed, _ = dkim.rfc822_parse(head)
    except dkim.MessageFormatError as exc:
        raise InvalidMessage(f"cannot DKIM-sign: {exc}") from exc
    except IndexError as exc:  # dkimpy: a continuation line before any header
        raise InvalidMessage("cannot DKIM-sign: the message starts with a folded line") from exc
    if raw_body.count(b"\n") != raw_body.count(b"\r\n"):
        raw_body = raw_body.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")
    return [(name, value) for name, value in parsed], raw_body


def from_domain(headers: Sequence[Header]) -> str | None:
    """The domain of the first address in the first From header, normalized, or None."""
    for name, value in headers:
        if name.lower() == b"from":
            return address_domain(value)
    return None


@functools.lru_cache(maxsize=_CACHE_SIZE)
def address_domain(from_value: bytes) -> str | None:
    """The normalized domain of the first address in a From value (cached: a campaign sends
    many messages with one From)."""
    text = re.sub(r"\r?\n", "", from_value.decode("utf-8", "replace"))
    for _, address in email.utils.getaddresses([text]):
        local, at, domain = address.rpartition("@")
        if at and local and domain:
            try:
                return normalize_domain(domain)
            except DkimError:
                return None
    return None


@functools.lru_cache(maxsize=_CACHE_SIZE)
def canonical_header(name: bytes, value: bytes) -> Header:
    """dkimpy's relaxed canonicalization of one header field (cached: most signed headers of
    a campaign's messages repeat)."""
    [canonical] = _RELAXED.canonicalize_headers([(name, value)])
    return canonical


def headers_to_sign(headers: Sequence[Header]) -> tuple[bytes, ...]:
    """The h= list: present headers of SIGNED_HEADERS in message order, then one more of
    each OVERSIGNED_HEADERS entry."""
    present = [name.lower() for name, _ in headers if name.lower() in SIGNED_HEADERS]
    return (*present, *OVERSIGNED_HEADERS)


def canonicalize_body(body: bytes) -> bytes:
    """Relaxed body canonicalization (RFC 6376 3.4.4), equal to dkimpy's ``Relaxed``: runs of
    WSP become one space, then WSP at line ends and empty lines at the end go. Bodies with no tab
    and no double space (most generated mail) skip the regex, which is slow on spaces."""
    if b"\t" in body or b"  " in body:
        body = _WSP_RUN.sub(b" ", body)
    if b" \r\n" in body:
        body = body.replace(b" \r\n", b"\r\n")
    return correct_empty_body(strip_trailing_lines(body))


def signature_header(
    key: DkimKey,
    canonical_headers: Sequence[Header],
    include: Sequence[bytes],
    body_hash: bytes,
    timestamp: bytes,
    linesep: bytes,
) -> bytes:
    """One folded ``DKIM-Signature:`` line (with its line ending), built as dkimpy's
    ``DomainSigner.gen_header`` does, with the private-key operation done by ``key``."""
    domain = key.domain.encode("ascii")
    fields = [
        (b"v", b"1"),
        (b"a", key.signature_algorithm),
        (b"c", b"relaxed/relaxed"),
        (b"d", domain),
        (b"i", b"@" + domain),
        (b"q", b"dns/txt"),
        (b"s", key.selector.encode("ascii")),
        (b"t", timestamp),
        (b"h", b" : ".join(include)),
        (b"bh", body_hash),
        (b"b", b"0" * 60),  # placeholder that makes fold() put b= on a line of its own
    ]
    namelen = len(_SIGNATURE_HEADER)
    unsigned = dkim.fold(b"; ".join(b"=".join(f) for f in fields), namelen=namelen)
    unsigned = dkim.RE_BTAG.sub(b"\\1", unsigned)
    hasher = hashlib.sha256()
    dkim.hash_headers(
        hasher,
        _RELAXED,
        canonical_headers,
        include,
        (_SIGNATURE_HEADER, b" " + unsigned),
        None,
    )
    try:
        signature = key.sign_digest(hasher.digest())
    except ValueError as exc:
        raise DkimError(f"DKIM signing for {key.domain} ({key.selector}) failed: {exc}") from exc
    fields[-1] = (b"b", base64.b64encode(signature))
    value = b"; ".join(b"=".join(f) for f in fields) + linesep
    return _SIGNATURE_HEADER + b": " + dkim.fold(value, namelen=namelen, linesep=linesep)
