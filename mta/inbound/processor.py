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
from dataclasses import dataclass
from datetime import UTC, datetime

import asyncpg

from engine.database import Database
from engine.db_errors import database_errors, describe
from engine.errors import DatabaseError, DatabaseUnavailable
from engine.eventlog import append_rows
from engine.tasks import cancel_and_wait
from mta.bounces.parse import parse_report
from mta.bounces.report import UNKNOWN, Report
from mta.inbound import store
from mta.inbound.outcomes import UNMATCHED, UNSUBSCRIBED, Effects, decide, message_id_for
from mta.inbound.recipients import UNSUBSCRIBE, Recipient
from mta.inbound.settings import InboundSettings, retry_delay
from mta.settings import MtaSettings
from mta.suppression import store as suppressions
from mta.suppression.unsubscribe import MessageRef, unsubscribe

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
                await cancel_and_wait(task)

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
                with database_errors():
                    async with connection.transaction():
                        plans = await self._plans(connection, claimed, reports, failures)
                        await self._apply_batch(connection, plans, failures)
            except DatabaseError as exc:  # the batch's commit itself failed
                failures = [(m.id, describe(exc), retry_delay(self._settings, m.attempts + 1))
                            for m in claimed]
            await store.failed(connection, failures, self._settings.max_attempts)
            await connection.execute(f"NOTIFY {store.PROCESSED_CHANNEL}")
        for message_id, error, _delay in failures:
            log.warning("inbound message processing failed; will retry",
                        extra={"id": str(message_id), "error": error})
        self.attempted += len(claimed)
        return len(claimed)

    async def _plans(self, connection: asyncpg.Connection, claimed: list[store.Claimed],
                     reports: list[Report | None],
                     failures: list[tuple[uuid.UUID, str, float]]) -> list[_Plan]:
        wanted = [[message_id_for(r, report, self._secret) for r in message.recipients]
                  for message, report in zip(claimed, reports, strict=True)]
        refs = await store.message_refs(connection, [i for ids in wanted for i in ids if i])
        plans = []
        for message, report, ids in zip(claimed, reports, wanted, strict=True):
            try:
                effects = tuple(
                    _effects(message, index, recipient, report, refs.get(message_id)
                             if message_id else None, message_id)
                    for index, (recipient, message_id) in enumerate(
                        zip(message.recipients, ids, strict=True)))
            except Exception as exc:  # a bug on odd input: this message waits for a fix
                log.exception("inbound message cannot be planned", extra={"id": str(message.id)})
                failures.append((message.id, f"{type(exc).__name__}: {exc}"[:1000],
                                 retry_delay(self._settings, message.attempts + 1)))
                continue
            for item in effects:
                if item.outcome == UNMATCHED:
                    log.info("inbound message matches no outbound message; kept", extra={
                        "id": str(message.id), "kind": report.kind if report else None,
                        **{k: v for k, v in item.detail.items() if v}})
            plans.append(_Plan(message, report, effects))
        return plans

    async def _apply_batch(self, connection: asyncpg.Connection, plans: list[_Plan],
                           failures: list[tuple[uuid.UUID, str, float]]) -> None:
        try:  # the whole batch at once: a few statements for all of it
            with database_errors():
                async with connection.transaction():
                    await self._apply(connection, plans)
        except DatabaseUnavailable:
            raise
        except Exception:  # find the culprits: one savepoint per message
            for plan in plans:
                error = await self._apply_alone(connection, plan)
                if error is not None:
                    failures.append((plan.message.id, error, retry_delay(
                        self._settings, plan.message.attempts + 1)))

    async def _apply_alone(self, connection: asyncpg.Connection, plan: _Plan) -> str | None:
        """Apply one message's effects in a savepoint; the error text if they failed."""
        try:
            with database_errors():
                async with connection.transaction():
                    await self._apply(connection, [plan])
        except DatabaseUnavailable:
            raise  # the connection is gone: the whole batch is retried after its lease
        except Exception as exc:  # this message's effects only; the savepoint rolled back
            cause = exc.__cause__ if isinstance(exc, DatabaseError) and exc.__cause__ else exc
            return f"{type(cause).__name__}: {describe(exc)}"
        return None

    async def _apply(self, connection: asyncpg.Connection, plans: list[_Plan]) -> None:
        """Every plan's effects, in a few statements, and the messages marked processed."""
        effects = [(e, plan.message.received_at) for plan in plans for e in plan.effects]
        for item, at in effects:
            if item.unsubscribe is not None:
                # As the one-click POST does by default: the message's category (all mail
                # when it has none).
                await unsubscribe(connection, item.unsubscribe, all_mail=False,
                                  source="mailto", now=at)
        now = max(at for _, at in effects) if effects else datetime.now(UTC)
        await suppressions.add(connection, [s for e, _ in effects for s in e.suppressions], now)
        await suppressions.record_soft_bounces(
            connection, [b for e, _ in effects for b in e.soft_bounces],
            self._mta.soft_bounce_limit, self._mta.soft_bounce_window, now)
        await append_rows(connection, [row for e, _ in effects for row in e.events])
        await store.done(connection, [
            (plan.message.id, _kind(plan.report),
             [e.to_json(r) for e, r in zip(plan.effects, plan.message.recipients, strict=True)])
            for plan in plans])


@dataclass(frozen=True, slots=True)
class _Plan:
    message: store.Claimed
    report: Report | None
    effects: tuple[Effects, ...]


def _effects(message: store.Claimed, index: int, recipient: Recipient, report: Report | None,
             ref: MessageRef | None, message_id: uuid.UUID | None) -> Effects:
    if recipient.kind == UNSUBSCRIBE:
        return Effects(UNSUBSCRIBED, ref.id, unsubscribe=ref) if ref else Effects(
            UNMATCHED, message_id)
    return decide(recipient, report or UNKNOWN, ref, f"inbound:{message.id}:{index}",
                  message.received_at)


def _parse_all(messages: list[store.Claimed]) -> list[Report | None]:
    """Reports for the messages that need one (not those only for unsubscribe addresses)."""
    return [parse_report(m.raw) if any(r.kind != UNSUBSCRIBE for r in m.recipients) else None
            for m in messages]


def _kind(report: Report | None) -> str:
    return report.kind if report is not None else "unsubscribe"

