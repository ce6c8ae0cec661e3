"""What one SMTP session must prove about its peer: the TLS policy for one MX host.

A :class:`PeerPolicy` is decided per destination host by :mod:`mta.tls.policy` and carried by the
session settings into :mod:`mta.smtp.connect`, which enforces it. ``label`` names it in delivery
attempt rows and logs (``mta-sts enforce (id 2024a)``, ``dane (2 TLSA records)``); ``report``
says where TLS-RPT counts the session (None: not counted).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from mta.dns.secure import TlsaRecord

PeerMode = Literal[
    "none",  # never STARTTLS
    "opportunistic",  # STARTTLS when offered, unverified; plaintext otherwise
    "required",  # STARTTLS or no delivery, unverified
    "verify",  # STARTTLS with a certificate valid for the MX host name (WebPKI + tls_ca_file)
    "sts-enforce",  # as "verify", from an MTA-STS policy in enforce mode
    "sts-testing",  # try "verify"; on failure report it and continue unverified
    "dane",  # STARTTLS, authenticated by TLSA records (none usable: encrypted only)
]


@dataclass(frozen=True, slots=True)
class ReportPolicy:
    """TLS-RPT's view of the policy (RFC 8460 §4.4): the domain it is reported to and as what."""

    domain: str
    policy_type: str  # "sts", "tlsa" or "no-policy-found"
    strings: tuple[str, ...] = ()
    mx: tuple[str, ...] = ()  # the policy's mx patterns, or the TLSA host


@dataclass(frozen=True, slots=True)
class PeerPolicy:
    mode: PeerMode = "opportunistic"
    server_name: str | None = None  # the MX host name: SNI and the name certificates must match
    tlsa: tuple[TlsaRecord, ...] = ()
    label: str = "opportunistic"
    ca_file: str | None = None
    report: ReportPolicy | None = None

    @property
    def tls(self) -> Literal["none", "opportunistic", "required"]:
        """The session's STARTTLS mode: only "opportunistic" and "sts-testing" allow plaintext."""
        if self.mode == "none":
            return "none"
        if self.mode in ("opportunistic", "sts-testing"):
            return "opportunistic"
        return "required"

    @property
    def verify_name(self) -> bool:
        return self.mode in ("verify", "sts-enforce", "sts-testing")

    def unverified(self) -> PeerPolicy:
        """The fallback for "sts-testing" after a failed verification: TLS as before."""
        return PeerPolicy("opportunistic", self.server_name, label=f"{self.label}, unverified",
                          ca_file=self.ca_file)  # the failure was counted; this is not news
