"""Processing stored inbound messages: parse, suppress, log events; retried with back-off.

A batch is claimed (``FOR UPDATE SKIP LOCKED`` with a lease), parsed off the event loop, then
applied in one transaction with a savepoint per message: a message whose effects fail rolls
back alone and is marked for a retry (doubling back-off, ``failed`` after ``max_attempts``),
the others commit together. Effects are idempotent (deterministic event ids, suppressions
keyed by address), so a message processed twice after a lost lease changes nothing more.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from datetime import UTC, datetime

import asyncpg

from engine.database import CONNECTIVITY_ERRORS, Database, describe
from engine.errors import DatabaseUnavailable
from engine.eventlog import append_rows
from mta.bounces.parse import parse_report
from mta.bounces.report import UNKNOWN, Report
from mta.inbound import store
from mta.inbound.outcomes import UNSUBSCRIBED, Effects, decide, message_id_for
from mta.inbound.recipients import UNSUBSCRIBE, Recipient
from mta.inbound.settings import InboundSettings, retry_delay
from mta.settings import MtaSettings
from mta.suppression import store as suppressions
from mta.suppression.unsubscribe import MessageRef, message_ref, unsubscribe

log = logging.getLogger("herald.inbound")


class InboundProcessor:
    def __init__(self, database: Database, settings: InboundSettings, mta: MtaSettings,
                 bounce_secret: bytes) -> None:
        self._database = database
        self._settings = settings
        self._mta = mta
        self._secret = bounce_secret
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._stopping = False
        self.attempted = 0  # messages claimed and worked on since start

    def wake(self) -> None:
        """A message was stored: look for work now."""
        self._wake.set()

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="inbound-processor")

    async def stop(self) -> None:
        self._stopping = True
        self._wake.set()
        task, self._task = self._task, None
        if task is not None:
            try:
                await asyncio.wait_for(asyncio.shield(task), timeout=10.0)
            except TimeoutError:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task

    async def _run(self) -> None:
        while not self._stopping:
            self._wake.clear()
            try:
                count = await self.process_due()
            except DatabaseUnavailable as exc:
                log.warning("inbound processing paused: database unavailable",
                            extra={"error": str(exc)})
                count = 0
            except Exception:
                log.exception("inbound processing failed")
                count = 0
            if count:
                continue  # a full batch may mean more is due
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), await self._idle_seconds())

    async def _idle_seconds(self) -> float:
        try:
            async with self._database.connection() as connection:
                due = await store.next_due(connection)
        except DatabaseUnavailable:
            return self._settings.poll_interval
        if due is None:
            return self._settings.poll_interval
        seconds = (due - datetime.now(UTC)).total_seconds()
        return min(self._settings.poll_interval, max(0.01, seconds))

    async def process_due(self) -> int:
        """Claim and process one batch; returns how many messages it held."""
        async with self._database.connection() as connection:
            claimed = await store.claim(connection, self._settings.process_batch,
                                        self._settings.lease)
            if not claimed:
                return 0
            reports = await asyncio.to_thread(_parse_all, claimed)
            failures: list[tuple[uuid.UUID, str, float]] = []
            try:
                async with connection.transaction():
                    for message, report in zip(claimed, reports, strict=True):
                        error = await self._process_one(connection, message, report)
                        if error is not None:
                            failures.append((message.id, error,
                                             retry_delay(self._settings, message.attempts + 1)))
            except asyncpg.PostgresError as exc:  # the batch's commit itself failed
                failures = [(m.id, describe(exc), retry_delay(self._settings, m.attempts + 1))
                            for m in claimed]
            await store.failed(connection, failures, self._settings.max_attempts)
            await connection.execute(f"NOTIFY {store.PROCESSED_CHANNEL}")
        for message_id, error, _delay in failures:
            log.warning("inbound message processing failed; will retry",
                        extra={"id": str(message_id), "error": error})
        self.attempted += len(claimed)
        return len(claimed)

    async def _process_one(self, connection: asyncpg.Connection, message: store.Claimed,
                           report: Report | None) -> str | None:
        """Apply one message's effects in a savepoint; the error text if they failed."""
        try:
            async with connection.transaction():
                results = []
                for index, recipient in enumerate(message.recipients):
                    effects = await self._effects(connection, message, index, recipient,
                                                  report)
                    await self._apply(connection, effects, message.received_at)
                    results.append(effects.to_json(recipient))
                await store.done(connection, message.id, _kind(message, report), results)
        except CONNECTIVITY_ERRORS:
            raise  # the connection is gone: the whole batch is retried after its lease
        except Exception as exc:  # this message's effects only; the savepoint rolled back
            return f"{type(exc).__name__}: {describe(exc)}"
        return None

    async def _effects(self, connection: asyncpg.Connection, message: store.Claimed,
                       index: int, recipient: Recipient, report: Report | None) -> Effects:
        message_id = message_id_for(recipient, report, self._secret)
        ref = await message_ref(connection, message_id) if message_id else None
        if recipient.kind == UNSUBSCRIBE:
            if ref is None:
                return Effects("unmatched", message_id)
            return Effects(UNSUBSCRIBED, ref.id, unsubscribe=ref)
        return decide(recipient, report or UNKNOWN, ref, f"inbound:{message.id}:{index}",
                      message.received_at)

    async def _apply(self, connection: asyncpg.Connection, effects: Effects,
                     at: datetime) -> None:
        if effects.unsubscribe is not None:
            await _unsubscribe(connection, effects.unsubscribe, at)
        await suppressions.add(connection, list(effects.suppressions), at)
        await suppressions.record_soft_bounces(
            connection, list(effects.soft_bounces), self._mta.soft_bounce_limit,
            self._mta.soft_bounce_window, at)
        if effects.events:
            await append_rows(connection, list(effects.events))


async def _unsubscribe(connection: asyncpg.Connection, message: MessageRef,
                       at: datetime) -> None:
    # As the one-click POST does by default: the message's category, all mail without one.
    await unsubscribe(connection, message, all_mail=False, source="mailto", now=at)


def _parse_all(messages: list[store.Claimed]) -> list[Report | None]:
    """Reports for the messages that need one (not those only for unsubscribe addresses)."""
    return [parse_report(m.raw) if any(r.kind != UNSUBSCRIBE for r in m.recipients) else None
            for m in messages]


def _kind(message: store.Claimed, report: Report | None) -> str:
    return report.kind if report is not None else "unsubscribe"

