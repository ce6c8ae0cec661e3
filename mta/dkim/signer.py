"""DKIM signing: one DKIM-Signature per configured key of the message's From domain.

The private-key operation runs in OpenSSL through ``cryptography`` (each key loaded once;
dkimpy's ``DKIM.sign`` re-parses the PEM key and signs in pure Python, ~160 signatures/s).
Everything around it is a few C-level passes over bytes, all property-tested to equal dkimpy:
the signed fields of a plain header section come from a cache of canonicalised lines
(:mod:`mta.dkim.signed_fields`; any other section is parsed as dkimpy parses it), the body is
canonicalised without being split into lines (:mod:`mta.dkim.canonical`), and the
DKIM-Signature of a key and h= list is laid out once (:class:`SignatureTemplate`) so that what
is hashed is known before the signature is (``b=`` on lines of its own). dkimpy's ``fold``
lays out the tags. The delivery service signs off the event loop in worker processes
(:mod:`mta.dkim.signing_pool`): threads would queue behind the loop for the GIL.

Policy: relaxed/relaxed, never ``l=``, From signed once more than it occurs, and only the
headers in :data:`mta.dkim.signed_fields.SIGNED_HEADERS` that are present. Keys of the exact
From domain are used, else those of its closest configured parent domain; with none the
message is returned unsigned.
"""

from __future__ import annotations

import binascii
import email.utils
import functools
import hashlib
import re
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

import dkim
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ed25519, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import Prehashed

from mta.dkim.canonical import (
    Header,
    HeaderSyntaxError,
    crlf_body,
    relaxed_body,
    relaxed_field,
    split_message,
)
from mta.dkim.keys import (
    PrivateKey,
    check_algorithm,
    load_private_key,
    normalize_domain,
    normalize_selector,
)
from mta.dkim.signed_fields import parsed_signed_fields, plain_signed_fields
from mta.errors import DkimError, InvalidMessage

_CACHE_SIZE: Final = 4096  # From values kept parsed and resolved to a signing domain
_TEMPLATE_CACHE_SIZE: Final = 256  # signature layouts kept per (domain, h= list, line ending)

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

    sign: Callable[[bytes], bytes] = field(init=False, repr=False, compare=False)
    signature_bytes: int = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        # The private-key operation, bound once: PKCS#1 v1.5 over a SHA-256 digest for RSA,
        # PureEdDSA over the digest for Ed25519 (RFC 8463).
        sign: Callable[[bytes], bytes]
        if isinstance(self.private_key, ed25519.Ed25519PrivateKey):
            sign, size = self.private_key.sign, 64
        else:
            sign = functools.partial(self.private_key.sign, padding=_RSA_PADDING,
                                     algorithm=_PREHASHED_SHA256)
            size = -(-self.private_key.key_size // 8)
        object.__setattr__(self, "sign", sign)
        object.__setattr__(self, "signature_bytes", size)

    def sign_digest(self, digest: bytes) -> bytes:
        """Sign a SHA-256 digest: PKCS#1 v1.5 for RSA, PureEdDSA over the digest (RFC 8463)."""
        return self.sign(digest)


class DkimSigner:
    """Signs messages with the keys of their From domain; keys loaded once."""

    def __init__(self, keys: Sequence[DkimKey]) -> None:
        by_domain: dict[str, list[DkimKey]] = {}
        for key in keys:
            by_domain.setdefault(key.domain, []).append(key)
        self._keys: Mapping[str, tuple[DkimKey, ...]] = {
            domain: tuple(domain_keys) for domain, domain_keys in by_domain.items()
        }
        self._signing_domains: dict[bytes | None, str | None] = {}
        self._second, self._t_tag = -1, b""
        self._templates: dict[tuple[str, tuple[bytes, ...], bytes],
                              tuple[SignatureTemplate, ...]] = {}

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
        return self.signature_fields(message) + message

    def signature_fields(self, message: bytes) -> bytes:
        """The DKIM-Signature fields :meth:`sign` prepends (each with its line ending), b""
        when no key covers the From domain. InvalidMessage if the header section is
        malformed."""
        end = message.find(b"\r\n\r\n")
        fields = plain_signed_fields(message[:end]) if end > 0 else None
        if fields is not None:
            body = crlf_body(message[end + 4:])
        else:
            headers, body = parse_message(message)
            fields = parsed_signed_fields(headers)
        include, hashed, from_value = fields
        domain = self._signing_domain_of(from_value)
        if domain is None:
            return b""
        linesep = b"\r\n" if message.endswith(b"\r\n") or not message.endswith(b"\n") else b"\n"
        templates = (self._templates.get((domain, include, linesep))
                     or self._learn_templates(domain, include, linesep))
        body_hash = binascii.b2a_base64(hashlib.sha256(relaxed_body(body)).digest(), newline=False)
        moving = self._timestamp_tag() + body_hash + b";"
        if len(templates) == 1:
            return templates[0].field(hashed, moving)
        return b"".join([template.field(hashed, moving) for template in templates])

    def _timestamp_tag(self) -> bytes:
        """``t=<now>; bh=``, formatted once a second."""
        now = int(time.time())
        if now != self._second:
            self._second, self._t_tag = now, b"t=%d; bh=" % now
        return self._t_tag

    def _signing_domain_of(self, from_value: bytes | None) -> str | None:
        """The configured domain whose keys sign mail with this From value, or None (cached
        per From value: a campaign sends many messages with one From)."""
        try:
            return self._signing_domains[from_value]
        except KeyError:
            pass
        domain = address_domain(from_value) if from_value is not None else None
        if len(self._signing_domains) >= _CACHE_SIZE:
            self._signing_domains.clear()
        signing = self._signing_domains[from_value] = (
            self.signing_domain(domain) if domain is not None else None)
        return signing

    def _learn_templates(self, domain: str, include: tuple[bytes, ...],
                         linesep: bytes) -> tuple[SignatureTemplate, ...]:
        if len(self._templates) >= _TEMPLATE_CACHE_SIZE:
            self._templates.clear()
        templates = self._templates[(domain, include, linesep)] = tuple(
            SignatureTemplate.build(key, include, linesep) for key in self._keys[domain])
        return templates


@dataclass(frozen=True, slots=True)
class SignatureTemplate:
    """The DKIM-Signature field of one key for one h= list, laid out once.

    Laid out as the tags that repeat (folded by dkimpy's ``fold``), then ``t=`` and ``bh=`` on
    a line, then ``b=`` on lines of its own; so the text that is hashed (the field with an
    empty b=, relaxed: ``hashed_head`` then the t=/bh= line then `` b=``) is known before the
    signature is. Verifiers ignore FWS inside b=."""

    key: DkimKey
    sign: Callable[[bytes], bytes]  # the key's private-key operation over a digest
    head: bytes  # "DKIM-Signature: " + the folded repeating tags + a continuation
    hashed_head: bytes  # the repeating tags in relaxed form, as hashed, + " "
    continuation: bytes  # line ending + " "
    b_tag: bytes  # continuation + "b="
    linesep: bytes
    signature_length: int  # base64 characters of every signature of this key
    chunks: tuple[slice, ...]  # the b= lines of a signature

    @classmethod
    def build(cls, key: DkimKey, include: tuple[bytes, ...], linesep: bytes) -> SignatureTemplate:
        domain = key.domain.encode("ascii")
        tags = b"; ".join((
            b"v=1", b"a=" + key.signature_algorithm, b"c=relaxed/relaxed", b"d=" + domain,
            b"i=@" + domain, b"q=dns/txt", b"s=" + key.selector.encode("ascii"),
            b"h=" + b" : ".join(include),
        )) + b";"
        folded = dkim.fold(tags, namelen=_NAME_LENGTH, linesep=linesep)
        continuation = linesep + b" "
        length = 4 * -(-key.signature_bytes // 3)
        return cls(
            key=key,
            sign=key.sign,
            head=_SIGNATURE_HEADER + b": " + folded + continuation,
            hashed_head=relaxed_field(_SIGNATURE_HEADER, b" " + folded) + b" ",
            continuation=continuation,
            b_tag=continuation + b"b=",
            linesep=linesep,
            signature_length=length,
            chunks=tuple(slice(i, i + _SIGNATURE_LINE) for i in range(0, length, _SIGNATURE_LINE)),
        )

    def field(self, hashed_fields: bytes, moving: bytes) -> bytes:
        """The folded field (with its line ending) for a message whose signed fields hash as
        ``hashed_fields`` and whose t= and bh= tags are ``moving``."""
        digest = hashlib.sha256(b"".join((hashed_fields, self.hashed_head, moving, b" b=")))
        try:
            signature = binascii.b2a_base64(self.sign(digest.digest()), newline=False)
        except ValueError as exc:
            raise DkimError(
                f"DKIM signing for {self.key.domain} ({self.key.selector}) failed: {exc}"
            ) from exc
        lines: Iterable[bytes]
        if len(signature) == self.signature_length:
            lines = map(signature.__getitem__, self.chunks)
        else:
            lines = (signature[i:i + _SIGNATURE_LINE]
                     for i in range(0, len(signature), _SIGNATURE_LINE))
        return b"".join((self.head, moving, self.b_tag, self.continuation.join(lines),
                         self.linesep))


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


def canonicalize_body(body: bytes) -> bytes:
    """Relaxed body canonicalization (RFC 6376 3.4.4), equal to dkimpy's ``Relaxed``."""
    return relaxed_body(body)
