"""The ``submission`` role: the SMTP submission server with its certificate, key look-ups and
queue identity."""

from __future__ import annotations

import logging
import time
from pathlib import Path

from engine.database import Database
from engine.errors import ConfigError
from engine.http.auth import Authenticator
from engine.http.ratelimit import RateLimiter
from engine.keys import ApiKey, fetch_key
from mta.queue.enqueue import QueueIdentity
from mta.senders import SenderPolicy
from mta.smtpd.sessions import configured_tls_context
from mta.submission.server import SubmissionServer
from mta.submission.settings import SubmissionSettings

log = logging.getLogger("herald.submission")


class SubmissionService:
    def __init__(self, database: Database, settings: SubmissionSettings,
                 identity: QueueIdentity, senders: SenderPolicy, hostname: str,
                 tls_files: tuple[Path, Path] | None = None) -> None:
        self._database = database
        self._settings = settings
        self._identity = identity
        self._senders = senders
        self._hostname = settings.hostname or hostname
        self._tls_files = tls_files
        # Keys are cached and unknown ids rate-limited per client address, as for HTTP.
        self._keys = Authenticator(database, RateLimiter(0, 0))
        self.server: SubmissionServer | None = None

    async def _lookup(self, token: str, client: str | None) -> ApiKey | None:
        return await self._keys.lookup(token, client)

    async def _by_id(self, key_id: str) -> ApiKey | None:
        """A trusted client's key, cached like the authenticator's keys."""
        now = time.monotonic()
        found, key = self._keys.known.get(key_id, now)
        if not found:
            async with self._database.connection() as connection:
                key = await fetch_key(connection, key_id)
            self._keys.known.put(key_id, key, now)
        return None if key is None or key.revoked or key.publishable else key

    async def start(self) -> None:
        context = configured_tls_context(self._tls_files, "submission")
        self.server = SubmissionServer(self._database, self._settings, self._identity,
                                       self._senders, self._lookup, self._by_id, self._hostname,
                                       context)
        try:
            await self.server.start()
        except OSError as exc:
            raise ConfigError(f"submission.listen/listen_tls: cannot listen: "
                              f"{exc.strerror or exc}") from None
        log.info("submission listening", extra={
            **{name: port for name, port in self.server.ports.items()},
            "starttls": context is not None,
            "plain_auth_from": list(self._settings.allow_plain_auth_from)})

    async def stop(self) -> None:
        if self.server is not None:
            await self.server.stop()
