"""DKIM key material: generate keys, load them once, and publish them as DNS TXT records.

Keys are PEM files (PKCS#8, or PKCS#1 for RSA). RSA keys are 2048-bit (rsa-sha256); Ed25519 keys
follow RFC 8463 (ed25519-sha256), whose TXT record carries the raw 32-byte public key in ``p=``.
A 32-byte Ed25519 seed in base64 (what dkimpy's ``dknewkey`` writes) is accepted too.
``cryptography`` errors are translated into :class:`mta.errors.DkimError` here.
"""

from __future__ import annotations

import base64
import binascii
import os
import re
from pathlib import Path
from typing import Final, Literal, TypeAlias, get_args

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa

from engine.addresses import AddressError, ascii_host
from mta.errors import DkimError

Algorithm: TypeAlias = Literal["rsa", "ed25519"]
PrivateKey: TypeAlias = rsa.RSAPrivateKey | ed25519.Ed25519PrivateKey

ALGORITHMS: Final[tuple[str, ...]] = get_args(Algorithm)
RSA_BITS: Final = 2048
MIN_RSA_BITS: Final = 1024  # RFC 8301: signers MUST NOT use shorter keys
TXT_STRING_MAX: Final = 255  # one <character-string> in a TXT record (RFC 1035)

_LABEL = re.compile(r"(?!-)[a-z0-9_-]{1,63}(?<!-)")


def check_algorithm(algorithm: str) -> Algorithm:
    """Return ``algorithm`` typed, or raise DkimError naming the accepted values."""
    if algorithm == "rsa":
        return "rsa"
    if algorithm == "ed25519":
        return "ed25519"
    expected = " or ".join(ALGORITHMS)
    raise DkimError(f"unknown DKIM algorithm {algorithm!r}: expected {expected}")


def normalize_domain(name: str) -> str:
    """Lower-case A-label form (IDNA 2008, as for addresses) without the trailing dot;
    DkimError if it is not a DNS name."""
    try:
        ascii_name = ascii_host(name)
    except AddressError as exc:
        raise DkimError(f"{name!r} is not a valid domain name") from exc
    labels = ascii_name.split(".")
    if not ascii_name or len(ascii_name) > 253 or not all(_LABEL.fullmatch(x) for x in labels):
        raise DkimError(f"{name!r} is not a valid domain name")
    return ascii_name


def normalize_selector(selector: str) -> str:
    """Lower-case selector; DkimError unless it is one or more DNS labels."""
    text = selector.strip().lower()
    if not text or not all(_LABEL.fullmatch(x) for x in text.split(".")):
        raise DkimError(f"{selector!r} is not a valid DKIM selector (DNS labels only)")
    return text


def generate_key(algorithm: str) -> bytes:
    """A new private key as unencrypted PKCS#8 PEM: RSA-2048 or Ed25519."""
    key: PrivateKey
    if check_algorithm(algorithm) == "rsa":
        key = rsa.generate_private_key(public_exponent=65537, key_size=RSA_BITS)
    else:
        key = ed25519.Ed25519PrivateKey.generate()
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def parse_private_key(data: bytes, algorithm: str, source: str) -> PrivateKey:
    """Parse key material for ``algorithm``; ``source`` (a file name) is named in every error."""
    algo = check_algorithm(algorithm)
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError, UnsupportedAlgorithm) as exc:
        if algo == "ed25519" and (seed := _ed25519_seed(data)) is not None:
            return ed25519.Ed25519PrivateKey.from_private_bytes(seed)
        raise DkimError(f"{source}: cannot load the DKIM private key: {exc}") from exc
    if algo == "rsa":
        if not isinstance(key, rsa.RSAPrivateKey):
            raise DkimError(f"{source}: algorithm is rsa but the file holds a {_kind(key)} key")
        if key.key_size < MIN_RSA_BITS:
            raise DkimError(f"{source}: RSA key has {key.key_size} bits, at least 1024 required")
        return key
    if not isinstance(key, ed25519.Ed25519PrivateKey):
        raise DkimError(f"{source}: algorithm is ed25519 but the file holds a {_kind(key)} key")
    return key


def load_private_key(path: Path, algorithm: str) -> PrivateKey:
    """Read and parse a key file once; DkimError naming the file on any failure."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise DkimError(f"{path}: cannot read the DKIM private key: {exc.strerror}") from exc
    return parse_private_key(data, algorithm, str(path))


def dns_txt_record(private_pem: bytes, algorithm: str) -> str:
    """The TXT record value publishing the public half, e.g. ``v=DKIM1; k=rsa; p=MIIB...``."""
    algo = check_algorithm(algorithm)
    return public_key_record(parse_private_key(private_pem, algo, "private key"), algo)


def public_key_record(key: PrivateKey, algorithm: Algorithm) -> str:
    """``v=DKIM1; k=...; p=...``: DER SubjectPublicKeyInfo for RSA, raw 32 bytes for Ed25519."""
    if isinstance(key, rsa.RSAPrivateKey):
        public = key.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    else:
        public = key.public_key().public_bytes(
            serialization.Encoding.Raw, serialization.PublicFormat.Raw
        )
    return f"v=DKIM1; k={algorithm}; p={base64.b64encode(public).decode('ascii')}"


def txt_strings(value: str) -> list[str]:
    """Split a TXT value into <character-string>s of at most 255 characters."""
    return [value[i : i + TXT_STRING_MAX] for i in range(0, len(value), TXT_STRING_MAX)] or [""]


def zone_line(domain: str, selector: str, value: str) -> str:
    """``S._domainkey.D. IN TXT "..." "..."``, ready to paste into a zone file."""
    quoted = " ".join(f'"{part}"' for part in txt_strings(value))
    return f"{selector}._domainkey.{domain}. IN TXT {quoted}"


def write_keypair(domain: str, selector: str, algorithm: str, directory: Path) -> tuple[Path, str]:
    """Generate a key, write it to ``directory/DOMAIN.SELECTOR.pem`` (mode 0600, never
    overwriting), and return the file and the zone line to publish."""
    algo = check_algorithm(algorithm)
    name = normalize_domain(domain)
    sel = normalize_selector(selector)
    pem = generate_key(algo)
    record = zone_line(name, sel, dns_txt_record(pem, algo))
    path = directory / f"{name}.{sel}.pem"
    try:
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError as exc:
        raise DkimError(f"{path} already exists; refusing to overwrite a DKIM key") from exc
    except OSError as exc:
        raise DkimError(f"{path}: cannot write the DKIM key: {exc.strerror}") from exc
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(pem)
            out.flush()
            os.fsync(out.fileno())
    except OSError as exc:
        raise DkimError(f"{path}: cannot write the DKIM key: {exc.strerror}") from exc
    return path, record


def _ed25519_seed(data: bytes) -> bytes | None:
    """The 32-byte seed if ``data`` is one in base64 (dkimpy's dknewkey format), else None."""
    try:
        seed = base64.b64decode(data.strip(), validate=True)
    except (binascii.Error, ValueError):
        return None
    return seed if len(seed) == 32 else None


def _kind(key: object) -> str:
    return type(key).__name__.removeprefix("_").replace("PrivateKey", "") or "different"
