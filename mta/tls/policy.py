"""Which TLS policy applies to each MX host of a destination, and why.

Precedence, per host (the first that applies wins):

1. ``[mta] tls_skip_domains``: no STARTTLS (an explicit local choice);
2. DANE (RFC 7672; wins over MTA-STS, RFC 8461 §2): the domain's MX answer and the host's
   ``_25._tcp.HOST`` TLSA answer both carry the AD bit and TLSA records exist;
3. MTA-STS: ``enforce`` delivers only to hosts matching the policy's mx patterns, with a
   certificate valid for the host name; ``testing`` tries that and reports, then delivers as
   before;
4. ``[mta] tls_verified_domains`` (verified TLS), ``tls_required_domains`` or ``tls =
   "required"`` (TLS, unverified), ``tls = "none"``, else opportunistic TLS.

Route overrides (``[mta] route``/``routes``: a smarthost, not the domain's MX) get local policy
only. :func:`decide` is pure; :class:`TlsPolicies` gathers its inputs (DNS, MTA-STS).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from mta.dns.resolver import DnsTemporaryFailure
from mta.dns.secure import SecureAnswer, SecureResolver, TlsaRecord
from mta.settings import MtaSettings
from mta.tls import dane
from mta.tls.peer import PeerPolicy, ReportPolicy
from mta.tls.sts import StsLookup, StsPolicies
from mta.tls.sts_policy import StsPolicy

NO_POLICY = StsLookup(None)


@dataclass(frozen=True, slots=True)
class HostRefused:
    """The policy forbids this host now; ``reason`` goes to the attempt row and the log."""

    reason: str
    result_type: str | None = None


@dataclass(frozen=True, slots=True)
class DomainTls:
    """What holds for every host of one destination (looked up once per attempt)."""

    domain: str
    local: str | None  # "skip", "verify", "required" or None
    routed: bool  # a route override: local policy only
    sts: StsLookup = NO_POLICY
    mx_secure: bool = False
    mx_problem: str | None = None  # the DNSSEC status of the MX answer is unknown


def local_choice(settings: MtaSettings, domain: str) -> str | None:
    if domain in {d.lower() for d in settings.tls_skip_domains}:
        return "skip"
    if domain in {d.lower() for d in settings.tls_verified_domains}:
        return "verify"
    if domain in {d.lower() for d in settings.tls_required_domains}:
        return "required"
    return None


def _sts_report(domain: str, policy: StsPolicy) -> ReportPolicy:
    return ReportPolicy(domain, "sts", tuple(policy.lines), policy.mx)


def decide(settings: MtaSettings, scope: DomainTls, host: str,
           tlsa: SecureAnswer[TlsaRecord] | None, ca_file: str | None) -> PeerPolicy | HostRefused:
    """The policy for ``host`` (pure). ``tlsa`` is None when DANE does not apply."""
    domain = scope.domain
    if scope.local == "skip":
        return PeerPolicy("none", host, label=f"local: tls skipped for {domain}")
    if tlsa is not None and tlsa.authenticated and tlsa.records:
        records = dane.usable(tlsa.records)
        report = ReportPolicy(domain, "tlsa", tuple(str(r) for r in tlsa.records), (host,))
        if records:
            label = f"dane ({len(records)} usable TLSA record{'s' if len(records) > 1 else ''})"
        else:
            label = "dane (no usable TLSA records: encrypted, unauthenticated)"
        return PeerPolicy("dane", host, records, label, ca_file, report)
    policy = scope.sts.policy
    if policy is not None and not scope.routed:
        label = f"mta-sts {policy.mode} (id {policy.policy_id})"
        report = _sts_report(domain, policy)
        if policy.mode == "enforce":
            if not policy.matches(host):
                return HostRefused(f"{label}: {host} is not an mx of the policy "
                                   f"({', '.join(policy.mx)})", "validation-failure")
            return PeerPolicy("sts-enforce", host, label=label, ca_file=ca_file, report=report)
        return PeerPolicy("sts-testing", host, label=label, ca_file=ca_file, report=report)
    if scope.local == "verify":
        return PeerPolicy("verify", host, label=f"local: verified tls for {domain}",
                          ca_file=ca_file)
    if scope.local == "required" or settings.tls == "required":
        return PeerPolicy("required", host, label="local: tls required")
    if settings.tls == "none":
        return PeerPolicy("none", host, label="local: tls = none")
    return PeerPolicy("opportunistic", host, label="opportunistic")


Counter = Callable[[ReportPolicy, str | None, str | None, str | None], None]


class TlsPolicies:
    """Gathers a destination's TLS facts (MTA-STS, DNSSEC, TLSA) and applies :func:`decide`.

    ``count(report, result, mx_host, ip)`` hears about policy failures found here (an MTA-STS
    policy that could not be fetched; a host the policy refuses) for TLS-RPT."""

    def __init__(self, settings: MtaSettings, secure: SecureResolver | None,
                 sts: StsPolicies | None, ca_file: str | None,
                 count: Counter | None = None) -> None:
        self._settings = settings
        self._secure = secure if settings.dane else None
        self._sts = sts if settings.mta_sts else None
        self._ca_file = ca_file
        self._count = count

    async def domain(self, domain: str, *, routed: bool) -> DomainTls:
        domain = domain.lower().rstrip(".")
        local = local_choice(self._settings, domain)
        if local == "skip":
            return DomainTls(domain, local, routed)
        sts = NO_POLICY
        if self._sts is not None and not routed:
            sts = await self._sts.lookup(domain)
            if sts.problem is not None and self._count is not None:
                self._count(ReportPolicy(domain, "no-policy-found"), sts.result_type,
                            None, None)
        mx_secure, mx_problem = False, None
        if self._secure is not None and not routed:
            try:
                mx_secure = await self._secure.mx_authenticated(domain)
            except DnsTemporaryFailure as exc:
                mx_problem = f"dane: DNSSEC status of the MX records unknown ({exc})"
        return DomainTls(domain, local, routed, sts, mx_secure, mx_problem)

    async def host(self, scope: DomainTls, host: str) -> PeerPolicy | HostRefused:
        tlsa: SecureAnswer[TlsaRecord] | None = None
        if scope.local != "skip" and not scope.routed and self._secure is not None:
            if scope.mx_problem is not None:
                return HostRefused(scope.mx_problem, "dnssec-invalid")
            if scope.mx_secure:
                try:
                    tlsa = await self._secure.tlsa(f"_25._tcp.{host}")
                except DnsTemporaryFailure as exc:
                    return HostRefused(f"dane: TLSA lookup for {host} failed ({exc})",
                                       "dnssec-invalid")
        decided = decide(self._settings, scope, host, tlsa, self._ca_file)
        if isinstance(decided, HostRefused) and self._count is not None:
            policy = scope.sts.policy
            if policy is not None:
                self._count(_sts_report(scope.domain, policy), decided.result_type, host, None)
        return decided
