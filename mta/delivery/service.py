"""The delivery role: claim due messages, route them to per-site queues, deliver, and record
every outcome durably in batches.

Postfix's shape: a bounded active window of claimed messages (``active_window``), fed by
claims of up to ``claim_batch`` rows; each message goes to its destination site's ready queue
(bounded by ``site_window``); a site that is backed off or full hands new messages back to the
queue for later, so it never holds the window hostage. Outcomes are written in batches (one
transaction per flush) and a message leaves the window only once its outcome is committed.
Leases are renewed while messages are in flight; if this process dies they expire and another
worker (or this one, restarted) claims them again: delivery is at least once, duplicates bounded
by what was in flight.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import os
import socket
import time
import uuid
from collections.abc import Awaitable
from datetime import UTC, datetime, timedelta

from engine.database import Database
from engine.errors import DatabaseError
from engine.notifications import Notifications
from mta.bounces.smtp_replies import classify_failure
from mta.delivery.attempt import AttemptContext, attempt, deferred, dns_outcome
from mta.delivery.delivery_log import log_outcomes
from mta.delivery.site_state import INTERVAL as STATE_INTERVAL
from mta.delivery.site_state import SiteStatePublisher
from mta.dkim.signing_pool import SigningPool
from mta.dns.resolver import DnsPermanentFailure, DnsTemporaryFailure
from mta.dns.routing import Destination, Router
from mta.errors import DkimError
from mta.metrics import (
    ACTIVE,
    CLAIM_BATCH,
    DKIM_SIGN_SECONDS,
    DKIM_SIGNATURES,
    OUTCOMES,
    QUEUE,
    QUEUE_TO_DELIVERY,
    SITE_STATE_WRITES,
    THROTTLES,
    SiteQueue,
)
from mta.queue import overview
from mta.queue import store as queue
from mta.queue.enqueue import OUTBOUND_CHANNEL
from mta.queue.store import ClaimedMessage, Outcome, SoftBouncePolicy
from mta.relays import Relay
from mta.settings import MtaSettings
from mta.shaping.rules import ShapingRule, SiteGovernor, limits_for
from mta.shaping.sites import Site, SiteScheduler
from mta.smtp.pool import ConnectionPool, PoolSettings, TlsObserver
from mta.smtp.types import SmtpLogin
from mta.tls.peer import PeerPolicy
from mta.tls.policy import TlsPolicies

log = logging.getLogger("herald.mta.delivery")

FLUSH_INTERVAL = 0.02
FLUSH_MAX = 1000
IDLE_POLL = 1.0
RELEASE_DELAY = 5.0


class DeliveryService:
    def __init__(self, database: Database, settings: MtaSettings, router: Router,
                 signer: SigningPool | None, rules: tuple[ShapingRule, ...] = (),
                 tls: TlsPolicies | None = None, on_tls: TlsObserver | None = None,
                 notifications: Notifications | None = None) -> None:
        """``notifications``: the process's LISTEN connection (:mod:`engine.notifications`);
        without one the service makes its own."""
        self._database = database
        self._settings = settings
        self._router = router
        self._signer = signer
        self._rules = rules
        self._soft_bounces = SoftBouncePolicy(settings.soft_bounce_limit,
                                              settings.soft_bounce_window)
        self.owner = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"
        self._inflight: dict[uuid.UUID, ClaimedMessage] = {}
        self._wire: dict[uuid.UUID, bytes] = {}  # signed messages awaiting delivery
        self._pending: list[Outcome] = []
        self._room = asyncio.Event()
        self._wake = asyncio.Event()
        self._flush_now = asyncio.Event()
        self._stopping = False
        self._tasks: set[asyncio.Task[None]] = set()
        self._loops: list[asyncio.Task[None]] = []
        # One pool per address, port and TLS policy: sessions never cross policies.
        self._pools: dict[tuple[str, int, PeerPolicy | None, Relay | None], ConnectionPool] = {}
        self._on_tls = on_tls
        self._notifications = notifications
        self._own_notifications: Notifications | None = None
        self._scheduler = SiteScheduler(self._deliver, self._spawn)
        self._context = AttemptContext(settings, router, self._pool_for, self._throttled,
                                       self._succeeded, tls)
        self._publisher = SiteStatePublisher(self.owner)
        self.delivered = 0

    # --- lifecycle ----------------------------------------------------------------------------

    async def start(self) -> None:
        # New mail wakes the claim loop; so does a gap in the notifications (some may have
        # gone unheard). Without them it still polls every IDLE_POLL.
        notifications = self._notifications or Notifications(self._database)
        await notifications.subscribe(OUTBOUND_CHANNEL, self._on_notify, on_gap=self._wake.set)
        if self._notifications is None:
            self._own_notifications = notifications
            await notifications.start()
        self._loops = [asyncio.create_task(self._claim_loop(), name="mta-claim"),
                       asyncio.create_task(self._flush_loop(), name="mta-flush"),
                       asyncio.create_task(self._renew_loop(), name="mta-renew"),
                       asyncio.create_task(self._state_loop(), name="mta-state")]

    async def stop(self, grace: float = 5.0) -> None:
        """Stop claiming, let deliveries in flight finish (bounded), hand back the rest."""
        self._stopping = True
        self._wake.set()
        self._room.set()
        waiting = self._scheduler.stop()
        now = datetime.now(UTC)
        for message in waiting:
            self._pending.append(Outcome(message, "released", now, now))
        if self._tasks:
            _done, pending = await asyncio.wait(set(self._tasks), timeout=grace)
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
        self._flush_now.set()
        for task in self._loops:
            if task.get_name() != "mta-flush":
                task.cancel()
        await asyncio.gather(*self._loops, return_exceptions=True)
        await self._flush()  # whatever the flush loop did not write before it stopped
        try:
            async with self._database.connection() as connection:
                await self._publisher.withdraw(connection)
        except DatabaseError:
            log.warning("could not withdraw this process's site state", exc_info=True)
        await asyncio.gather(*(pool.close() for pool in self._pools.values()),
                             return_exceptions=True)
        if self._own_notifications is not None:
            await self._own_notifications.stop()
        if self._signer is not None:
            await asyncio.to_thread(self._signer.close)

    def _spawn(self, coroutine: Awaitable[None], name: str) -> None:
        task = asyncio.ensure_future(coroutine)
        task.set_name(name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _on_notify(self, *_args: object) -> None:
        self._wake.set()

    # --- claiming -----------------------------------------------------------------------------

    async def _claim_loop(self) -> None:
        settings = self._settings
        while not self._stopping:
            room = settings.active_window - len(self._inflight)
            if room < min(settings.claim_batch, settings.active_window) // 4 or room <= 0:
                self._room.clear()
                await self._room.wait()
                continue
            try:
                async with self._database.connection() as connection:
                    messages, blocked = await queue.claim(
                        connection, min(room, settings.claim_batch), settings.lease, self.owner)
            except DatabaseError:
                log.warning("claim failed; retrying", exc_info=True)
                await self._sleep_or_wake(IDLE_POLL)
                continue
            if messages:
                CLAIM_BATCH.observe(len(messages))
            deliverable = []
            for message in messages:
                self._inflight[message.id] = message
                if message.id in blocked:
                    self._finish(Outcome(message, "suppressed", datetime.now(UTC),
                                         reply="recipient is on the suppression list "
                                               f"({blocked[message.id]})",
                                         category="suppressed"))
                elif message.expires_at <= datetime.now(UTC):
                    self._finish(Outcome(message, "expired", datetime.now(UTC),
                                         reply="expired before delivery",
                                         category=str(classify_failure("expired").category)))
                else:
                    deliverable.append(message)
            if deliverable and self._signer is not None:
                deliverable = await self._sign(deliverable)
            for message in deliverable:
                self._spawn(self._route(message), f"route:{message.id}")
            ACTIVE.set(len(self._inflight))
            if len(messages) < min(room, settings.claim_batch):
                await self._sleep_or_wake(await self._idle_wait())

    async def _sign(self, messages: list[ClaimedMessage]) -> list[ClaimedMessage]:
        """Sign a claimed batch in the worker processes; failures defer those messages."""
        assert self._signer is not None
        started = time.perf_counter()
        signed = await self._signer.sign_batch([m.body for m in messages])
        DKIM_SIGN_SECONDS.observe(time.perf_counter() - started)
        ready = []
        for message, result in zip(messages, signed, strict=True):
            DKIM_SIGNATURES.labels("failed" if isinstance(result, DkimError) else "ok").inc()
            if isinstance(result, DkimError):
                log.error("DKIM signing failed", extra={"message_id": str(message.id),
                                                        "error": str(result)})
                self._finish(deferred(self._context, message, classify_failure("timeout"),
                                      detail=f"DKIM signing failed: {result}"))
            else:
                self._wire[message.id] = result
                ready.append(message)
        return ready

    async def _idle_wait(self) -> float:
        """Until the next deferred message is due, at most IDLE_POLL."""
        try:
            async with self._database.connection() as connection:
                due = await queue.next_due(connection)
        except DatabaseError:
            return IDLE_POLL
        if due is None:
            return IDLE_POLL
        return max(0.01, min(IDLE_POLL, (due - datetime.now(UTC)).total_seconds()))

    async def _sleep_or_wake(self, seconds: float) -> None:
        self._wake.clear()
        try:
            await asyncio.wait_for(self._wake.wait(), seconds)
        except TimeoutError:
            pass

    # --- routing and delivery -----------------------------------------------------------------

    async def _route(self, message: ClaimedMessage) -> None:
        try:
            destination = await self._router.destination(message.recipient_domain)
        except (DnsPermanentFailure, DnsTemporaryFailure) as exc:
            self._finish(dns_outcome(self._context, message, exc))
            return
        site = self._site(destination, message.recipient_domain)
        self._publisher.routed(message.recipient_domain, destination.site, destination.hosts)
        now = time.monotonic()
        paused = site.paused_for(now)
        if site.full or paused > RELEASE_DELAY:
            later = datetime.now(UTC) + timedelta(seconds=max(RELEASE_DELAY, paused))
            self._finish(Outcome(message, "released", datetime.now(UTC), later))
            return
        self._scheduler.add(site, message, destination)

    def _site(self, destination: Destination, domain: str) -> Site:
        """The site's state; its limits come from the first rule matching the domain that
        created it or any of the site's MX hosts."""
        site = self._scheduler.sites.get(destination.site)
        if site is None:
            limits = limits_for(self._rules, domain, destination.hosts,
                                self._settings.max_connections_per_site,
                                self._settings.max_messages_per_connection)
            governor = SiteGovernor(limits, self._settings.throttle_backoff, time.monotonic())
            site = Site(destination.site, governor, self._settings.site_window)
            self._scheduler.sites[destination.site] = site
        return site

    def _pool_for(self, address: str, port: int, destination: Destination,
                  peer: PeerPolicy | None = None) -> ConnectionPool:
        relay = destination.relay
        key = (address, port, peer, relay)
        pool = self._pools.get(key)
        if pool is None:
            site = self._scheduler.sites[destination.site]
            pool = ConnectionPool(address, port, PoolSettings(
                ehlo_name=self._settings.ehlo_name,
                max_connections=site.governor.limits.max_connections,
                max_messages_per_connection=site.governor.limits.max_messages_per_connection,
                idle_timeout=self._settings.connection_idle_timeout,
                tls="required" if destination.tls_required else (
                    "none" if self._settings.tls == "none" else "opportunistic"),
                max_message_bytes=self._settings.max_message_size * 2,
                rset_before_reuse=5.0,  # probe only sessions that sat idle a while
                peer=peer,
                implicit_tls=relay is not None and relay.tls == "implicit",
                login=SmtpLogin(*relay.login) if relay is not None and relay.login else None,
            ), on_tls=self._on_tls)
            self._pools[key] = pool
        return pool

    def _throttled(self, site_key: str) -> None:
        site = self._scheduler.sites.get(site_key)
        if site is not None:
            pause = site.governor.throttled(time.monotonic())
            THROTTLES.labels(site.governor.limits.rule).inc()
            log.warning("site throttled us; backing off",
                        extra={"site": site_key, "pause_s": round(pause, 1)})

    def _succeeded(self, site_key: str) -> None:
        site = self._scheduler.sites.get(site_key)
        if site is not None:
            site.governor.succeeded()

    async def _deliver(self, message: ClaimedMessage, destination: Destination) -> None:
        wire = self._wire.get(message.id, message.body)
        outcome = await attempt(self._context, message, destination, wire)
        self._finish(dataclasses.replace(outcome, site=destination.site))

    # --- outcomes -----------------------------------------------------------------------------

    def _finish(self, outcome: Outcome) -> None:
        self._wire.pop(outcome.message.id, None)
        self._pending.append(outcome)
        if len(self._pending) >= FLUSH_MAX:
            self._flush_now.set()

    async def _flush_loop(self) -> None:
        while True:
            try:
                await asyncio.wait_for(self._flush_now.wait(), FLUSH_INTERVAL)
            except TimeoutError:
                pass
            self._flush_now.clear()
            await self._flush()
            if self._stopping and not self._tasks:
                return

    async def _flush(self) -> None:
        if not self._pending:
            return
        batch, self._pending = self._pending, []
        try:
            async with self._database.connection() as connection:
                held = await queue.record(connection, batch, self.owner, self._soft_bounces)
        except DatabaseError:
            log.warning("recording outcomes failed; will retry", exc_info=True)
            self._pending[:0] = batch
            await asyncio.sleep(0.5)
            return
        log_outcomes([outcome for outcome in batch if outcome.message.id in held])
        now = datetime.now(UTC)
        for outcome in batch:
            self._inflight.pop(outcome.message.id, None)
            OUTCOMES.labels(outcome.state, outcome.category or "none").inc()
            if outcome.state == "delivered":
                self.delivered += 1
                QUEUE_TO_DELIVERY.observe((now - outcome.message.created_at).total_seconds())
        ACTIVE.set(len(self._inflight))
        self._room.set()

    async def _renew_loop(self) -> None:
        interval = self._settings.lease / 3
        while not self._stopping:
            await asyncio.sleep(interval)
            try:
                async with self._database.connection() as connection:
                    await queue.renew(connection, list(self._inflight), self.owner,
                                      self._settings.lease)
            except DatabaseError:
                log.warning("lease renewal failed", exc_info=True)

    async def _state_loop(self) -> None:
        while not self._stopping:
            await self.publish_state()
            await asyncio.sleep(STATE_INTERVAL)  # a period, cancelled by stop()

    async def publish_state(self) -> None:
        """Publish the sites' state for `herald queue` and read the queue depth for metrics."""
        try:
            async with self._database.connection() as connection:
                await self._publisher.publish(connection, list(self._scheduler.sites.values()))
                depths = await overview.depths(connection)
        except DatabaseError:
            SITE_STATE_WRITES.labels("failed").inc()
            log.warning("publishing site state failed", exc_info=True)
            return
        SITE_STATE_WRITES.labels("ok").inc()
        now = datetime.now(UTC)
        QUEUE.update([SiteQueue(d.key, d.queued, d.deferred, d.held,
                                (now - d.oldest).total_seconds()) for d in depths],
                     now.timestamp())
