"""Waking the event log's followers after the intake's commits, at most once per interval.

The log's followers (the automation) LISTEN on :data:`engine.eventlog.EVENTS_CHANNEL`. But
Postgres (15, 16) signals *every* LISTENing backend of the database on each NOTIFY, whatever
channel it listens on, and each woken backend reads the notification queue: ~20 µs of
Postgres CPU per listener per NOTIFY on the reference machine, on top of the NOTIFY's own
~13 µs (``herald bench listener-wakeups``; ``docs/PERFORMANCE.md``, "Twelfth pass"). A full
deployment has seven listening connections (one per process, :mod:`engine.notifications`,
and the automation leader's; nine before they were shared), so a NOTIFY in every group commit
cost more Postgres CPU than a one-row commit.

So the intake's commits do not NOTIFY. After a commit, :meth:`LogWakeups.committed` owes the
followers one; a NOTIFY goes out on a connection of its own at once when none went out within
``interval``, else when the interval is up. One NOTIFY, sent after a commit completed, wakes
the followers for that commit and every one before it (they read all that is committed). So at
low rates each commit is followed by its NOTIFY within one round trip, as before; under load
the followers are woken at most once per interval per process, however many commits there
are. Followers also poll on a timer, so a NOTIFY that never goes out (the database unreachable,
the process killed between a commit and its NOTIFY) delays them; it loses nothing.
"""

from __future__ import annotations

import asyncio
import logging

from engine.database import Database
from engine.errors import DatabaseError
from engine.eventlog import EVENTS_CHANNEL
from engine.intake.held_connection import HeldConnection

log = logging.getLogger("herald.intake")

NOTIFY = f"NOTIFY {EVENTS_CHANNEL}"
# A NOTIFY waits at most this long for its connection and its answer: the followers' timer
# covers one that fails, and a writer stopping with the database unreachable is not held up.
NOTIFY_TIMEOUT = 2.0


class LogWakeups:
    def __init__(self, database: Database, interval: float) -> None:
        self._database = HeldConnection(database)  # kept between NOTIFYs
        self._interval = interval
        self._owed = False  # a commit completed after the last NOTIFY was sent
        self._last_sent = float("-inf")  # loop time the last NOTIFY was sent
        self._sender: asyncio.Task[None] | None = None
        self.sent = 0  # NOTIFYs sent (tests, metrics)

    def committed(self) -> None:
        """A commit that stored events has completed: the followers are owed a NOTIFY."""
        self._owed = True
        if self._sender is None:
            self._sender = asyncio.create_task(self._send_owed(), name="intake-log-wakeups")

    async def stop(self) -> None:
        """Send the NOTIFY still owed (call it after the last commit), then give back the
        connection."""
        if self._sender is not None:
            await asyncio.gather(self._sender, return_exceptions=True)
        await self._database.release()

    async def _send_owed(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            while self._owed:
                wait = self._last_sent + self._interval - loop.time()
                if wait > 0:
                    await asyncio.sleep(wait)
                # Commits completing from here on are owed another NOTIFY: this one may be
                # delivered before they commit.
                self._owed = False
                self._last_sent = loop.time()
                try:
                    async with self._database.connection(NOTIFY_TIMEOUT) as connection:
                        await connection.execute(NOTIFY, timeout=NOTIFY_TIMEOUT)
                    self.sent += 1
                except DatabaseError as exc:  # the followers' timer covers it
                    log.warning("could not wake the event log's followers",
                                extra={"error": str(exc)})
        finally:
            self._sender = None
