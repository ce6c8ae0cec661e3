"""One delivery attempt of one message to one destination, turned into an :class:`Outcome`.

Tries the destination's hosts in order (and up to two addresses of each); connection failures
move on to the next host, a reply decides the outcome. Replies are classified by
:mod:`mta.bounces.smtp_replies`:
5xx bounces (a hard bounce also suppresses the address), 4xx defers,
throttling also backs the site off.

Transport security decides per host (:mod:`mta.tls.policy`): a host the MTA-STS policy does
not list is skipped, a session whose peer fails its policy (certificate, TLSA, no STARTTLS)
moves on to the next host, and when no host is left the message is deferred with the policy
and the reason in the attempt row (``mta-sts enforce (id 1): certificate for mx.example does
not match (...)``). Nothing is ever sent in plaintext where a policy requires TLS.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from mta.bounces.smtp_replies import (
    BounceCategory,
    Classification,
    classify_failure,
    classify_reply,
)
from mta.dns.resolver import DnsPermanentFailure, DnsTemporaryFailure
from mta.dns.routing import Destination, Router
from mta.queue.store import ClaimedMessage, Outcome
from mta.relays import Relay
from mta.settings import MtaSettings, retry_delay
from mta.smtp.pool import ConnectionPool, PoolClosed, PoolSaturated
from mta.smtp.reply import SmtpReply, UnsendableMessage
from mta.smtp.session import SmtpConnectFailure, SmtpSessionFailure
from mta.smtp.types import TlsAuthFailure
from mta.tls.peer import PeerPolicy
from mta.tls.policy import HostRefused, TlsPolicies

log = logging.getLogger("herald.mta.attempt")

MAX_HOSTS = 5
MAX_ADDRESSES_PER_HOST = 2
# Temporary failures in these phases say nothing about the message: try the next MX.
_HOST_PHASES = frozenset({"connect", "ehlo", "starttls"})


@dataclass(frozen=True, slots=True)
class AttemptContext:
    settings: MtaSettings
    router: Router
    pool_for: Callable[[str, int, Destination, PeerPolicy | None], ConnectionPool]
    on_throttle: Callable[[str], None]  # site key
    on_success: Callable[[str], None]
    tls: TlsPolicies | None = None  # None: the destination's tls setting alone


def now_utc() -> datetime:
    return datetime.now(UTC)


def deferred(context: AttemptContext, message: ClaimedMessage, classification: Classification,
             *, host: str | None = None, reply: SmtpReply | None = None,
             detail: str | None = None) -> Outcome:
    at = now_utc()
    next_at = at + timedelta(seconds=retry_delay(context.settings, message.attempt))
    if next_at >= message.expires_at:
        return Outcome(message, "expired", at, None, host, reply.code if reply else None,
                       reply.enhanced if reply else None,
                       (str(reply) if reply else detail) or "retries exhausted",
                       str(BounceCategory.SOFT))
    return Outcome(message, "deferred", at, next_at, host, reply.code if reply else None,
                   reply.enhanced if reply else None, str(reply) if reply else detail,
                   str(classification.category))


def bounced(message: ClaimedMessage, classification: Classification, *,
            host: str | None = None, reply: SmtpReply | None = None,
            detail: str | None = None) -> Outcome:
    return Outcome(message, "bounced", now_utc(), None, host,
                   reply.code if reply else None, reply.enhanced if reply else None,
                   str(reply) if reply else detail, str(classification.category),
                   suppress=classification.suppress,
                   soft=classification.category is BounceCategory.SOFT)


def from_reply(context: AttemptContext, message: ClaimedMessage, destination: Destination,
               host: str, reply: SmtpReply) -> Outcome:
    classification = classify_reply(reply.code, reply.enhanced, reply.text)
    if classification.category is BounceCategory.THROTTLE or reply.code == 421:
        context.on_throttle(destination.site)
    if reply.permanent:
        return bounced(message, classification, host=host, reply=reply)
    return deferred(context, message, classification, host=host, reply=reply)


def dns_outcome(context: AttemptContext, message: ClaimedMessage,
                error: DnsPermanentFailure | DnsTemporaryFailure) -> Outcome:
    if isinstance(error, DnsPermanentFailure):
        kind = "dns_null_mx" if error.reason == "null_mx" else "dns_nxdomain"
        return bounced(message, classify_failure(kind), detail=str(error))
    return deferred(context, message, classify_failure("dns_servfail"), detail=str(error))


async def attempt(context: AttemptContext, message: ClaimedMessage, destination: Destination,
                  wire: bytes) -> Outcome:
    """Deliver ``wire`` (the signed message) to the first host that answers."""
    tried: list[str] = []  # the TLS policies of the hosts tried, for the attempt row
    outcome = await _attempt(context, message, destination, wire, tried)
    if tried:
        outcome = dataclasses.replace(outcome, tls_policy="; ".join(dict.fromkeys(tried)))
    if outcome.state == "deferred" and outcome.category == "tls_policy":
        log.warning("delivery deferred by TLS policy",
                    extra={"message_id": str(message.id), "domain": message.recipient_domain,
                           "reason": outcome.reply, "tls_policy": outcome.tls_policy})
    return outcome


async def _attempt(context: AttemptContext, message: ClaimedMessage, destination: Destination,
                   wire: bytes, tried: list[str]) -> Outcome:
    last_failure = "no host could be reached"
    failure_kind = "connection_refused"
    scope = None
    if context.tls is not None:
        scope = await context.tls.domain(message.recipient_domain,
                                         routed=destination.site.startswith("route:"))
    for host in destination.hosts[:MAX_HOSTS]:
        peer: PeerPolicy | None = None
        relay = destination.relay
        if relay is not None and relay.verified:  # a smarthost: its certificate, always
            peer = relay_peer(context.settings, relay)
            tried.append(peer.label)
        elif context.tls is not None and scope is not None:
            decided = await context.tls.host(scope, host)
            if isinstance(decided, HostRefused):
                last_failure, failure_kind = decided.reason, "tls_policy"
                continue
            peer = decided
            tried.append(peer.label)
        try:
            addresses = await context.router.addresses(host)
        except (DnsPermanentFailure, DnsTemporaryFailure) as exc:
            last_failure, failure_kind = str(exc), "dns_servfail"
            continue
        for address in addresses[:MAX_ADDRESSES_PER_HOST]:
            pool = context.pool_for(address, destination.port, destination, peer)
            try:
                result = await pool.send(message.envelope_from, [message.recipient], wire)
            except TlsAuthFailure as exc:
                last_failure = f"{exc.detail} (at {exc.host}:{exc.port})"
                failure_kind = "tls_policy"
                continue
            except SmtpConnectFailure as exc:
                last_failure = str(exc)
                if exc.reason == "login":
                    log.warning("smarthost refused the route's credentials",
                                extra={"host": host, "detail": exc.detail})
                failure_kind = ("tls_required_unavailable" if exc.reason.startswith("tls")
                                else "timeout" if exc.reason == "timeout"
                                else "connection_refused")
                continue
            except SmtpSessionFailure as exc:
                if not exc.permanent and exc.phase in _HOST_PHASES and exc.reply.code != 421:
                    last_failure = str(exc)
                    continue
                return reached(from_reply(context, message, destination, host, exc.reply),
                               address)
            except (PoolSaturated, PoolClosed) as exc:
                return Outcome(message, "released", now_utc(),
                               now_utc() + timedelta(seconds=5), reply=str(exc)[:500])
            except UnsendableMessage as exc:
                return bounced(message, classify_failure_unsendable(),
                               host=host, detail=str(exc))
            rcpt = result.recipients[0]
            if not rcpt.accepted:
                return reached(from_reply(context, message, destination, host, rcpt.reply),
                               address, result.tls_version)
            data = result.data_reply
            assert data is not None
            if data.code != 250:
                return reached(from_reply(context, message, destination, host, data),
                               address, result.tls_version)
            context.on_success(destination.site)
            return Outcome(message, "delivered", now_utc(), None, host, data.code,
                           data.enhanced, str(data), None, remote_ip=address,
                           tls_version=result.tls_version)
    outcome = deferred(context, message, classify_failure(failure_kind), detail=last_failure)
    if failure_kind == "tls_policy" and outcome.state == "deferred":
        outcome = dataclasses.replace(outcome, category="tls_policy")  # why it waits
    return outcome


def reached(outcome: Outcome, address: str, tls_version: str | None = None) -> Outcome:
    """The outcome with the address that answered (and its TLS version), for the log."""
    return dataclasses.replace(outcome, remote_ip=address, tls_version=tls_version)


def classify_failure_unsendable() -> Classification:
    return Classification(BounceCategory.UNKNOWN, True, False, "unsendable_message")


def relay_peer(settings: MtaSettings, relay: Relay) -> PeerPolicy:
    """A smarthost route's TLS: a certificate valid for its host name (trust store +
    ``tls_ca_file``), over STARTTLS or implicit TLS."""
    ca_file = str(settings.tls_ca_file) if settings.tls_ca_file else None
    kind = "implicit tls" if relay.tls == "implicit" else "starttls"
    return PeerPolicy("verify", relay.host, label=f"route: {kind}, verified", ca_file=ca_file)
