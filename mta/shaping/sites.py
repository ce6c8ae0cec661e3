"""Per-site ready queues: each destination site drains its own bounded queue under its own
limits, so backlog, throttling or deferrals at one site never slow the others."""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from mta.dns.routing import Destination
from mta.queue.store import ClaimedMessage
from mta.shaping.rules import SiteGovernor

Deliver = Callable[[ClaimedMessage, Destination], Awaitable[None]]


@dataclass(eq=False)
class Site:
    key: str
    governor: SiteGovernor
    window: int
    ready: deque[tuple[ClaimedMessage, Destination]] = field(default_factory=deque)
    active: int = 0
    runner: asyncio.Task[None] | None = None
    changed: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def full(self) -> bool:
        return len(self.ready) >= self.window

    def paused_for(self, now: float) -> float:
        return max(0.0, self.governor.backoff_until - now)


class SiteScheduler:
    """Owns one runner task per site with work; each runner starts deliveries while the site's
    rate, backoff and concurrency allow."""

    def __init__(self, deliver: Deliver, spawn: Callable[[Awaitable[None], str], None],
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._deliver = deliver
        self._spawn = spawn
        self._clock = clock
        self.sites: dict[str, Site] = {}
        self._stopping = False

    def add(self, site: Site, message: ClaimedMessage, destination: Destination) -> None:
        site.ready.append((message, destination))
        site.changed.set()
        if site.runner is None or site.runner.done():
            site.runner = asyncio.create_task(self._run(site), name=f"site:{site.key}")

    def stop(self) -> list[ClaimedMessage]:
        """Stop starting deliveries; returns the messages still waiting in ready queues."""
        self._stopping = True
        waiting: list[ClaimedMessage] = []
        for site in self.sites.values():
            waiting.extend(message for message, _ in site.ready)
            site.ready.clear()
            site.changed.set()
        return waiting

    async def _run(self, site: Site) -> None:
        while site.ready and not self._stopping:
            if site.active >= site.governor.allowed_connections:
                site.changed.clear()
                await site.changed.wait()
                continue  # re-check backoff and rate: the delivery that ended may have changed them
            wait = site.governor.wait_time(self._clock())
            if wait > 0:
                site.changed.clear()
                try:  # woken early if the site changes (e.g. stop)
                    await asyncio.wait_for(site.changed.wait(), min(wait, 1.0))
                except TimeoutError:
                    pass
                continue
            message, destination = site.ready.popleft()
            site.active += 1
            self._spawn(self._delivery(site, message, destination), f"deliver:{message.id}")

    async def _delivery(self, site: Site, message: ClaimedMessage,
                        destination: Destination) -> None:
        try:
            await self._deliver(message, destination)
        finally:
            site.active -= 1
            site.changed.set()
