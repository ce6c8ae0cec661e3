"""Transport security in the mta role: the parts built from ``[mta]``, and their upkeep task.

:class:`TransportSecurity` builds the DNSSEC-aware resolver, MTA-STS cache, policy decisions
and TLS-RPT counter the delivery service uses, and owns one background task that adds the
session counts to Postgres every ``FLUSH_SECONDS``, and every ``UPKEEP_SECONDS`` re-fetches
MTA-STS policies past half their life and sends the TLS-RPT reports of finished days.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from engine.database import Database
from engine.errors import DatabaseError
from engine.outbox.transport import OutboundPolicy
from engine.tasks import cancel_and_wait
from mta.dns.resolver import MxResolver
from mta.dns.secure import SecureResolver
from mta.queue.enqueue import QueueIdentity
from mta.settings import MtaSettings
from mta.tls.policy import TlsPolicies
from mta.tls.rpt_counts import TlsRptCounter
from mta.tls.rpt_report import Reporter
from mta.tls.rpt_send import SentReport, send_reports
from mta.tls.sts import StsPolicies
from mta.tls.trust import check_ca_file

log = logging.getLogger("herald.mta.tls")

FLUSH_SECONDS = 10.0
UPKEEP_SECONDS = 3600.0


def reporter_for(settings: MtaSettings) -> tuple[Reporter, str]:
    """Who signs the reports, and the From address of mailed ones."""
    reporter = Reporter(settings.tls_rpt_organization or settings.ehlo_name,
                        settings.tls_rpt_contact or f"postmaster@{settings.bounce_domain}",
                        settings.ehlo_name)
    return reporter, settings.tls_rpt_from or f"tls-reports@{settings.bounce_domain}"


class TransportSecurity:
    def __init__(self, database: Database, settings: MtaSettings, resolver: MxResolver,
                 identity: Callable[[], Awaitable[QueueIdentity]] | None = None,
                 outbound: OutboundPolicy | None = None) -> None:
        self._database = database
        self.outbound = outbound  # [webhooks] allow for the policy fetches and report POSTs
        self._settings = settings
        self._identity = identity
        self.ca_file = check_ca_file(settings.tls_ca_file)
        nameserver = (settings.resolver.host, settings.resolver.port) if settings.resolver else None
        self.secure = SecureResolver(nameserver, settings.dns_timeout)
        self.counter = TlsRptCounter()
        self.sts = StsPolicies(database, self.secure, resolver.addresses,
                               port=settings.mta_sts_port, timeout=settings.mta_sts_timeout,
                               max_bytes=settings.mta_sts_max_bytes,
                               recheck=settings.mta_sts_recheck, ca_file=self.ca_file,
                               outbound=outbound)
        self.policies = TlsPolicies(settings, self.secure, self.sts, self.ca_file,
                                    self.counter.count if settings.tls_rpt else None)
        self._task: asyncio.Task[None] | None = None

    @property
    def observer(self) -> Callable[..., None] | None:
        return self.counter.observe_session if self._settings.tls_rpt else None

    async def start(self) -> None:
        self._task = asyncio.create_task(self._upkeep(), name="mta-tls-upkeep")

    async def stop(self) -> None:
        task, self._task = self._task, None
        await cancel_and_wait(task)
        await asyncio.shield(self.flush())

    async def flush(self) -> int:
        try:
            async with self._database.connection() as connection:
                return await self.counter.flush(connection)
        except (DatabaseError, OSError) as exc:
            log.warning("TLS-RPT counts not saved; will retry", extra={"error": str(exc)})
            return 0

    async def send_reports(self) -> list[SentReport]:
        if self._identity is None:
            return []
        await self.flush()
        reporter, sender = reporter_for(self._settings)
        return await send_reports(self._database, self.secure, await self._identity(),
                                  reporter, sender, ca_file=self.ca_file,
                                  outbound=self.outbound)

    async def _upkeep(self) -> None:
        loop = asyncio.get_running_loop()
        next_upkeep = loop.time()
        while True:
            await asyncio.sleep(FLUSH_SECONDS)
            await self.flush()
            if loop.time() < next_upkeep:
                continue
            next_upkeep = loop.time() + UPKEEP_SECONDS
            try:
                if self._settings.mta_sts:
                    await self.sts.refresh_expiring()
                if self._settings.tls_rpt:
                    await self.send_reports()
            except (DatabaseError, OSError) as exc:
                log.warning("TLS upkeep failed; will retry", extra={"error": str(exc)})
