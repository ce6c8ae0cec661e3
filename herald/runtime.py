"""``herald run``: start the roles on uvloop, serve until SIGTERM/SIGINT, stop cleanly."""

from __future__ import annotations

import asyncio
import logging

from engine.lifecycle import install_stop_signals, sd_notify
from herald.database import open_database
from herald.roles import Role, build_roles
from herald.settings import Settings

log = logging.getLogger("herald.run")


async def serve(settings: Settings, role_names: list[str],
                stop: asyncio.Event | None = None) -> None:
    stop = stop or asyncio.Event()
    install_stop_signals(stop)
    async with open_database(settings) as database:
        roles = build_roles(role_names, settings, database)
        started: list[Role] = []
        try:
            for role in roles:
                await role.start()
                started.append(role)
            sd_notify("READY=1")
            log.info("herald ready", extra={"roles": role_names})
            await stop.wait()
        finally:
            sd_notify("STOPPING=1")
            log.info("herald stopping")
            try:
                await asyncio.wait_for(_stop_all(started), settings.engine.shutdown_timeout)
            except TimeoutError:
                log.error("roles did not stop in time",
                          extra={"timeout_s": settings.engine.shutdown_timeout})
    log.info("herald stopped")


async def _stop_all(roles: list[Role]) -> None:
    for role in reversed(roles):
        try:
            await role.stop()
        except Exception:
            log.exception("role failed to stop cleanly", extra={"role": role.name})
