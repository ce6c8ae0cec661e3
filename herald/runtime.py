"""``herald run``: start the roles on uvloop, serve until SIGTERM/SIGINT, stop cleanly.

Under systemd (``Type=notify``) it reports READY=1 once every role is up, STOPPING=1 on the
way down, and WATCHDOG=1 from the event loop while ``WatchdogSec=`` asks for it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import platform
from collections.abc import AsyncIterator

from engine import gc_policy
from engine.errors import ConfigError
from engine.http.metrics_server import MetricsServer
from engine.lifecycle import install_stop_signals, sd_notify, watchdog_interval, watchdog_pings
from engine.log import configure_separate_log
from engine.metrics import BUILD_INFO
from engine.privacy.erasure_listener import erasures_heard
from engine.tasks import cancel_and_wait
from herald.database import open_database
from herald.exit_codes import ServiceUnavailable
from herald.identity import identity_problems, refusal
from herald.roles import VERSION, Role, build_roles
from herald.settings import Settings, resolve_path
from mta.delivery.delivery_log import DELIVERY_LOGGER

log = logging.getLogger("herald.run")


async def serve(settings: Settings, role_names: list[str],
                stop: asyncio.Event | None = None) -> None:
    problems = identity_problems(settings, role_names)
    held = refusal(problems) if problems else None
    if held is not None:
        log.error(held)  # everything else runs; the mta role holds delivery (nothing is lost)
    stop = stop or asyncio.Event()
    install_stop_signals(stop)
    configure_observability(settings, role_names)
    async with watchdog(), open_database(settings) as database, metrics_endpoint(
            settings, role_names), erasures_heard(database) as erasures:
        # One LISTEN connection per process: the erasure listener's, shared by the roles.
        roles = build_roles(role_names, settings, database, held, erasures.notifications)
        started: list[Role] = []
        try:
            for role in roles:
                try:
                    await role.start()
                except OSError as exc:  # a listening address taken or not ours
                    raise ServiceUnavailable(
                        f"role {role.name} cannot start: {exc.strerror or exc}") from None
                started.append(role)
            # What start-up built lives as long as the process: out of the collector's way.
            gc_policy.tune()
            gc_policy.settle()
            log.info("herald ready", extra={"roles": role_names})  # logged before READY=1
            sd_notify("READY=1")
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


@contextlib.asynccontextmanager
async def watchdog() -> AsyncIterator[None]:
    """WATCHDOG=1 pings from this event loop for as long as the block runs (start-up included:
    migrations and the embedded Postgres run off the loop)."""
    interval = watchdog_interval()
    if interval is None:
        yield
        return
    task = asyncio.create_task(watchdog_pings(interval), name="herald-watchdog")
    try:
        yield
    finally:
        await cancel_and_wait(task)


def configure_observability(settings: Settings, role_names: list[str]) -> None:
    """The build-info metric and the delivery log's own stream (``[log]``)."""
    BUILD_INFO.info({"version": VERSION, "python": platform.python_version(),
                     "roles": ",".join(role_names)})
    path = settings.log.delivery_file
    try:
        configure_separate_log(DELIVERY_LOGGER, settings.log.delivery,
                               resolve_path(settings, path) if path is not None else None)
    except OSError as exc:
        raise ConfigError(f"log.delivery_file: cannot open {path}: {exc.strerror}") from None


@contextlib.asynccontextmanager
async def metrics_endpoint(settings: Settings, role_names: list[str]) -> AsyncIterator[None]:
    """``/metrics`` on ``[metrics] listen`` (or the role's own key) for this process, once."""
    listen = settings.metrics.for_roles(role_names)
    if listen is None:
        yield
        return
    try:
        server = MetricsServer(listen)
        await server.start()
    except OSError as exc:
        raise ServiceUnavailable(f"metrics cannot listen on {listen.host}:{listen.port}: "
                                 f"{exc.strerror or exc}") from None
    log.info("metrics listening", extra={"address": f"{listen.host}:{server.port}"})
    try:
        yield
    finally:
        await server.stop()


async def _stop_all(roles: list[Role]) -> None:
    for role in reversed(roles):
        try:
            await role.stop()
        except Exception:
            log.exception("role failed to stop cleanly", extra={"role": role.name})
