"""DKIM signing: one DKIM-Signature per configured key of the message's From domain.

The private-key operation runs in OpenSSL through ``cryptography`` (each key loaded once;
dkimpy's ``DKIM.sign`` re-parses the PEM key and signs in pure Python, ~160 signatures/s).
Everything around it is one pass over bytes (:mod:`mta.dkim.canonical`: header fields split
once, relaxed forms without per-line regexes, the body hashed without being split into lines,
all property-tested to equal dkimpy), the signed fields are hashed once per message and the
hash copied per key, and the DKIM-Signature is laid out so that what is hashed is known before
the signature is (``b=`` on lines of its own), so it is folded once. dkimpy's ``fold`` lays out
the tags. The delivery service signs off the event loop in worker processes
(:mod:`mta.dkim.signing_pool`): threads would queue behind the loop for the GIL.

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
from typing import Any, Final

import dkim
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ed25519, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import Prehashed
from dkim.util import get_linesep

from mta.dkim.canonical import (
    Header,
    HeaderSyntaxError,
    relaxed_body,
    relaxed_header,
    split_message,
)
from mta.dkim.keys import (
    PrivateKey,
    check_algorithm,
    load_private_key,
    normalize_domain,
    normalize_selector,
)
from mta.errors import DkimError, InvalidMessage

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
_NAME_LENGTH: Final = len(_SIGNATURE_HEADER)
_SIGNATURE_LINE: Final = 70  # base64 characters per line of b=
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
        header_hash, include = hash_signed_headers(headers)
        body_hash = base64.b64encode(hashlib.sha256(canonicalize_body(body)).digest())
        timestamp = str(int(time.time())).encode("ascii")
        linesep = get_linesep(message)
        signatures = [
            signature_header(key, header_hash, include, body_hash, timestamp, linesep)
            for key in self._keys[signer_domain]
        ]
        return b"".join(signatures) + message


def parse_message(message: bytes) -> tuple[list[Header], bytes]:
    """``(fields, body)`` as ``dkim.rfc822_parse`` gives them (see :mod:`mta.dkim.canonical`);
    InvalidMessage for a malformed header section."""
    try:
        return split_message(message)
    except HeaderSyntaxError as exc:
        raise InvalidMessage(f"cannot DKIM-sign: {exc}") from exc


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


def headers_to_sign(headers: Sequence[Header]) -> tuple[bytes, ...]:
    """The h= list: present headers of SIGNED_HEADERS in message order, then one more of
    each OVERSIGNED_HEADERS entry."""
    present = [name.lower() for name, _ in headers if name.lower() in SIGNED_HEADERS]
    return (*present, *OVERSIGNED_HEADERS)


def hash_signed_headers(headers: Sequence[Header]) -> tuple[Any, tuple[bytes, ...]]:
    """SHA-256 over the signed fields in relaxed form, in h= order, and the h= list.

    A name listed n times selects its occurrences from the bottom up (RFC 6376 5.4.2); the
    over-signed names select nothing more, so they hash nothing."""
    occurrences: dict[bytes, list[bytes]] = {}
    present: list[bytes] = []
    for name, value in headers:
        lower = name.lower()
        if lower in SIGNED_HEADERS:
            present.append(lower)
            occurrences.setdefault(lower, []).append(relaxed_header(name, value))
    hasher = hashlib.sha256()
    for lower in present:
        hasher.update(occurrences[lower].pop())
        hasher.update(b"\r\n")
    return hasher, (*present, *OVERSIGNED_HEADERS)


def canonicalize_body(body: bytes) -> bytes:
    """Relaxed body canonicalization (RFC 6376 3.4.4), equal to dkimpy's ``Relaxed``."""
    return relaxed_body(body)


def signature_header(
    key: DkimKey,
    header_hash: Any,
    include: Sequence[bytes],
    body_hash: bytes,
    timestamp: bytes,
    linesep: bytes,
) -> bytes:
    """One folded ``DKIM-Signature:`` field (with its line ending).

    Laid out as the tags that repeat for a key and an h= list (folded by dkimpy's ``fold``,
    once: cached), then ``t=`` and ``bh=`` on a line, then ``b=`` on lines of its own; so the
    text that is hashed (the field with an empty b=, relaxed) is known before the signature
    is. Verifiers ignore FWS inside b=."""
    static_folded, static_relaxed = _static_tags(key, tuple(include), linesep)
    moving = b"t=" + timestamp + b"; bh=" + body_hash + b";"
    hasher = header_hash.copy()
    hasher.update(static_relaxed + b" " + moving + b" b=")
    try:
        signature = base64.b64encode(key.sign_digest(hasher.digest()))
    except ValueError as exc:
        raise DkimError(f"DKIM signing for {key.domain} ({key.selector}) failed: {exc}") from exc
    continuation = linesep + b" "
    wrapped = continuation.join(
        signature[i:i + _SIGNATURE_LINE] for i in range(0, len(signature), _SIGNATURE_LINE))
    return b"".join((_SIGNATURE_HEADER, b": ", static_folded, continuation, moving,
                     continuation, b"b=", wrapped, linesep))


@functools.lru_cache(maxsize=256)
def _static_tags(key: DkimKey, include: tuple[bytes, ...], linesep: bytes) -> tuple[bytes, bytes]:
    """The tags that repeat for a key and an h= list: folded, and in relaxed form as the
    hash sees them (``dkim-signature:v=1; ...;``)."""
    domain = key.domain.encode("ascii")
    tags = b"; ".join((
        b"v=1", b"a=" + key.signature_algorithm, b"c=relaxed/relaxed", b"d=" + domain,
        b"i=@" + domain, b"q=dns/txt", b"s=" + key.selector.encode("ascii"),
        b"h=" + b" : ".join(include),
    )) + b";"
    folded = dkim.fold(tags, namelen=_NAME_LENGTH, linesep=linesep)
    return folded, relaxed_header(_SIGNATURE_HEADER, b" " + folded)
