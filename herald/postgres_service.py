"""``herald postgres``: the embedded Postgres as a service of its own (``herald-postgres``).

With one systemd unit per role, the embedded server must not live in any role's control group:
stopping that role would kill the server under the others. This process starts it in the data
directory, reports READY=1, pings the watchdog, and on SIGTERM stops it with ``pg_ctl stop``
(fast mode: it finishes its last commits and checkpoints), which ``KillMode=mixed`` allows.
The roles then attach to the running server and leave it running when they exit.
With ``database_url`` configured there is nothing to run: it reports READY=1 and exits 0.
"""

from __future__ import annotations

import asyncio
import logging

from engine.embedded_postgres import start_embedded
from engine.lifecycle import install_stop_signals, sd_notify
from herald.runtime import watchdog
from herald.settings import Settings

log = logging.getLogger("herald.postgres")


async def serve_embedded(settings: Settings) -> int:
    if settings.engine.database_url:
        log.info("database_url is set: the embedded Postgres is not used")
        sd_notify("READY=1")
        return 0
    stop = asyncio.Event()
    install_stop_signals(stop)
    async with watchdog():
        embedded = await asyncio.to_thread(start_embedded, settings.engine.data_dir)
        try:
            sd_notify("READY=1")
            log.info("embedded postgres serving", extra={"pgdata": str(embedded.data_dir)})
            await stop.wait()
            sd_notify("STOPPING=1")
        finally:
            await asyncio.to_thread(embedded.stop)
    log.info("embedded postgres stopped")
    return 0
