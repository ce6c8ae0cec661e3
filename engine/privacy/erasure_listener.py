"""Every serving process forgets its caches of personal data when a contact is erased by any
process (:data:`engine.privacy.service.ERASED_CHANNEL`).

It listens on the process's one LISTEN connection (:mod:`engine.notifications`), which the
process's roles share for their own channels. While that connection is down (at start-up when
Postgres cannot be reached, or after it was lost) an erasure could go unheard, so the caches
are emptied each time it is lost and again once it is back.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

from engine.database import Database
from engine.notifications import Notifications
from engine.privacy.forgetting import forget_personal_data
from engine.privacy.service import ERASED_CHANNEL


class ErasureListener:
    def __init__(self, database: Database) -> None:
        self.notifications = Notifications(database)  # the process's, for its roles too
        self.heard = 0  # erasures heard (metrics and tests)

    async def start(self, timeout: float = 5.0) -> None:
        """Start listening; waits at most ``timeout`` s for the first connection (the listener
        keeps trying in the background after that)."""
        await self.notifications.subscribe(ERASED_CHANNEL, self._on_erased,
                                           on_gap=forget_personal_data)
        await self.notifications.start(timeout)

    async def listening(self) -> None:
        """Returns once the listener is connected and LISTENing."""
        await self.notifications.listening()

    async def stop(self) -> None:
        await self.notifications.stop()

    def _on_erased(self, _payload: str) -> None:
        self.heard += 1
        forget_personal_data()


@contextlib.asynccontextmanager
async def erasures_heard(database: Database) -> AsyncIterator[ErasureListener]:
    listener = ErasureListener(database)
    await listener.start()
    try:
        yield listener
    finally:
        await listener.stop()
