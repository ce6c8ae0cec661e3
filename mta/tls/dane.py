"""DANE for SMTP (RFC 7672): which TLSA records count and whether a certificate chain matches.

Usable records are DANE-TA(2) and DANE-EE(3) with selector 0 (full certificate) or 1
(SubjectPublicKeyInfo) and matching type 0 (exact), 1 (SHA-256) or 2 (SHA-512) (§3.1);
PKIX-TA/PKIX-EE (0/1) do not apply to SMTP. DANE-EE matches the server's own certificate, and
ignores its names and dates (§3.1.1). DANE-TA matches a certificate the server sent in its
chain, which then anchors an ordinary chain check of the leaf, names included: the MX host name
(§3.2.2, with cryptography's verifier). Pure: certificates in, a verdict out.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from datetime import UTC, datetime

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from cryptography.x509.verification import PolicyBuilder, Store, VerificationError

from mta.dns.secure import TlsaRecord

DANE_TA, DANE_EE = 2, 3
_DIGEST_SIZES = {0: None, 1: 32, 2: 64}
MAX_CHAIN = 10


def usable(records: Sequence[TlsaRecord]) -> tuple[TlsaRecord, ...]:
    """The records RFC 7672 lets SMTP use (others are ignored)."""
    found = []
    for record in records:
        if record.usage not in (DANE_TA, DANE_EE) or record.selector not in (0, 1):
            continue
        if record.matching not in _DIGEST_SIZES:
            continue
        size = _DIGEST_SIZES[record.matching]
        if (size is not None and len(record.data) != size) or not record.data:
            continue
        found.append(record)
    return tuple(found)


def _selected(cert: x509.Certificate, selector: int) -> bytes:
    if selector == 0:
        return cert.public_bytes(Encoding.DER)
    return cert.public_key().public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)


def record_matches(record: TlsaRecord, cert: x509.Certificate) -> bool:
    data = _selected(cert, record.selector)
    if record.matching == 1:
        data = hashlib.sha256(data).digest()
    elif record.matching == 2:
        data = hashlib.sha512(data).digest()
    return data == record.data


def authenticate(chain_der: Sequence[bytes], records: Sequence[TlsaRecord], name: str,
                 now: datetime | None = None) -> str | None:
    """None when the chain (leaf first, as sent) matches a record; else why not."""
    if not chain_der:
        return "the server sent no certificate"
    try:
        chain = [x509.load_der_x509_certificate(der) for der in chain_der[:MAX_CHAIN]]
    except ValueError as exc:
        return f"the server's certificate does not parse ({exc})"
    leaf = chain[0]
    if any(r.usage == DANE_EE and record_matches(r, leaf) for r in records):
        return None
    for anchor in chain[1:] if len(chain) > 1 else chain:
        if not any(r.usage == DANE_TA and record_matches(r, anchor) for r in records):
            continue
        verifier = (PolicyBuilder().store(Store([anchor]))
                    .time(now or datetime.now(UTC)).build_server_verifier(x509.DNSName(name)))
        try:
            verifier.verify(leaf, [c for c in chain[1:] if c is not anchor])
        except VerificationError as exc:
            return f"the chain to the DANE-TA certificate does not verify for {name} ({exc})"
        return None
    return f"no TLSA record for {name} matches the server's certificate chain"
