"""The inbound role's parts together: the SMTP server that stores, and the processor that works
from the stored copies (woken by each commit, and polling for retries and other processes'
rows)."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

from engine.database import Database
from engine.errors import ConfigError
from mta.inbound.processor import InboundProcessor
from mta.inbound.recipients import RecipientPolicy
from mta.inbound.server import InboundServer
from mta.inbound.settings import InboundSettings
from mta.queue.enqueue import load_bounce_secret
from mta.settings import MtaSettings
from mta.smtpd.sessions import configured_tls_context
from mta.suppression.unsubscribe import load_link_keys

log = logging.getLogger("herald.inbound")


class InboundService:
    def __init__(self, database: Database, settings: InboundSettings, mta: MtaSettings,
                 link_keys: Sequence[str] = (), tls_files: tuple[Path, Path] | None = None
                 ) -> None:
        self._database = database
        self._settings = settings
        self._mta = mta
        self._link_keys = link_keys
        self._tls_files = tls_files
        self.server: InboundServer | None = None
        self.processor: InboundProcessor | None = None

    async def start(self) -> None:
        context = configured_tls_context(self._tls_files, "inbound")
        async with self._database.connection() as connection:
            secret = await load_bounce_secret(connection, self._mta.bounce_secret)
            keys = await load_link_keys(connection, self._link_keys)
        policy = RecipientPolicy.build(self._mta.bounce_domain, secret, keys,
                                       self._settings.feedback)
        processor = self.processor = InboundProcessor(self._database, self._settings,
                                                      self._mta, secret)
        await processor.start()
        self.server = InboundServer(self._database, self._settings, policy,
                                    self._settings.hostname or self._mta.ehlo_name, context,
                                    on_stored=processor.wake)
        try:
            await self.server.start()
        except OSError as exc:
            await processor.stop()
            raise ConfigError(f"inbound.listen: cannot listen on {self._settings.listen}: "
                              f"{exc.strerror or exc}") from None
        log.info("inbound listening", extra={
            "address": f"{self._settings.listen.host}:{self.server.port}",
            "bounce_domain": self._mta.bounce_domain, "starttls": context is not None})

    async def stop(self) -> None:
        if self.server is not None:
            await self.server.stop()  # no new mail; stores in flight finish
        if self.processor is not None:
            await self.processor.stop()
