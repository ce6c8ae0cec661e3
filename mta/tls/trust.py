"""Which certificates Herald trusts, and what a failed verification means.

Verified sessions (MTA-STS, ``tls_verified_domains``), MTA-STS policy fetches and TLS-RPT HTTPS
posts all use :func:`verifying_context`: the system trust store plus ``[mta] tls_ca_file`` when
set. DANE sessions use :func:`dane_context` (no WebPKI checks: the TLSA records decide, see
:mod:`mta.tls.dane`). :func:`describe_verify_error` turns OpenSSL's verdict into an RFC 8460
result type and a sentence for the delivery log.
"""

from __future__ import annotations

import functools
import ssl
from pathlib import Path

from engine.errors import ConfigError

# OpenSSL X509_V_ERR_* codes -> RFC 8460 §4.3 result types.
_EXPIRED = {9, 10}  # not yet valid, expired
_UNTRUSTED = {2, 18, 19, 20, 21, 27}  # no issuer, self-signed (leaf or in chain), untrusted
_HOST_MISMATCH = {62}


@functools.lru_cache(maxsize=8)
def verifying_context(ca_file: str | None = None) -> ssl.SSLContext:
    """System trust store (+ the PEM bundle), host name checks on, TLS 1.2 or later."""
    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    if ca_file is not None:
        context.load_verify_locations(cafile=ca_file)
    return context


@functools.lru_cache(maxsize=1)
def dane_context() -> ssl.SSLContext:
    """Encryption without WebPKI checks: the caller authenticates the chain by TLSA records."""
    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context


def check_ca_file(path: Path | None) -> str | None:
    """The bundle's path as text, after checking it loads (at start-up: errors name the key)."""
    if path is None:
        return None
    try:
        verifying_context(str(path))
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(f"mta.tls_ca_file: cannot load {path}: {exc}") from None
    return str(path)


def describe_verify_error(exc: ssl.SSLCertVerificationError, name: str) -> tuple[str, str]:
    """(RFC 8460 result type, "certificate for NAME ...") for a failed verification."""
    code = exc.verify_code
    message = exc.verify_message or str(exc)
    if code in _HOST_MISMATCH:
        return "certificate-host-mismatch", f"certificate for {name} does not match ({message})"
    if code in _EXPIRED:
        return "certificate-expired", f"certificate for {name} is expired ({message})"
    if code in _UNTRUSTED:
        return "certificate-not-trusted", f"certificate for {name} is not trusted ({message})"
    return "validation-failure", f"certificate for {name} does not verify ({message})"
