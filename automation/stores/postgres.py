"""The Postgres run store: every transition of a run, and the messages and contact updates it
causes, commit together atomically (the run row is locked, its state checked, then written).

So a crash never sends twice or skips a send: either the step advanced and its message is in the
outbound queue, or neither happened. Messages also carry the idempotency key
``run:<id>:<step>``, a second line of defence should two engines ever act on one run.

Transitions of different contacts are handled in groups, in one transaction each
(:mod:`automation.stores.group_commit`), with a few set-based statements for the whole group
(:mod:`automation.stores.group_sql`): one commit and about a dozen round trips for many
transitions. A transition returns once its group committed, so each contact's transitions stay
in log order. A transition that fails fails its group's attempt, which is rolled back; every
member is then tried again alone, so the failing one gets its error and the others commit.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import datetime
from typing import Any

import asyncpg
import orjson

from automation.content.links import list_unsubscribe, send_message_id
from automation.index.trigger_index import Fire
from automation.live.webhooks import queue_webhooks
from automation.loading.catalog import Catalog
from automation.runtime.interpreter import Effects, Policy, RunInputs, SendEffect, interpret
from automation.runtime.runs import Resume, Run
from automation.settings import AutomationSettings
from automation.stores.event_needs import EventNeeds
from automation.stores.group_commit import GroupCommit
from automation.stores.group_sql import (
    EXIT_RUNS,
    INSERT_RUNS,
    NEW_RUN_IDS,
    REENTRY,
    RUN_COLUMNS,
    SAVE_RUNS,
)
from automation.stores.memory import reentry_key_text
from automation.stores.run_inputs import RunInputsReader
from automation.stores.transitions import (
    AdvanceRun,
    ExitRun,
    LogBuffer,
    PendingSend,
    RunOutcome,
    StartRun,
    Transition,
    transition_key,
)
from engine.contacts import UNCHANGED, ContactUpsert, upsert_contact
from engine.database import GENERIC_PLANS_IN_TRANSACTION, Database
from engine.eventlog_reader import LoggedEvent
from engine.link_keys import LinkKeys
from engine.privacy.consent import EVENT_STATES, consent_from_event
from engine.privacy.consent_store import apply_consent
from mta.compose import compose
from mta.errors import InvalidMessage
from mta.queue.enqueue import (
    OutboundMessage,
    QueueIdentity,
    SuppressionsRead,
    enqueue_many,
)
from mta.suppression import store as suppressions
from mta.suppression.rules import from_event
from mta.tracking.rewrite import track_html

log = logging.getLogger("herald.automation.store")

ENGAGEMENT_TYPES = ("email_opened", "email_clicked")
SUPPRESSING_TYPES = frozenset({"email_bounced", "email_complained", "email_unsubscribed",
                               "unsubscribed"})
NO_PUBLIC_URL = "[http] public_url is not set, so the message cannot carry its unsubscribe link"


def run_from(row: asyncpg.Record) -> Run:
    return Run(row["id"], row["workflow"], row["version"], row["contact_id"],
               row["reentry_key"], row["entry_key"], row["state"], row["pc"],
               row["entered_at"], row["trigger_type"], row["trigger_properties"],
               row["wake_at"], row["waiting_since"], list(row["sent_steps"]),
               row["exit_reason"])


class PgStore:
    def __init__(self, database: Database, catalog: Catalog, policy: Policy,
                 settings: AutomationSettings, identity: QueueIdentity,
                 links: LinkKeys, public_url: str | None, track: bool = True) -> None:
        """``track``: rewrite the HTML part's links for click tracking and add an open pixel
        (``[tracking] enabled``)."""
        self.database = database
        self.catalog = catalog
        self.policy = policy
        self.settings = settings
        self.identity = identity
        self.links = links
        self.public_url = public_url
        self.track = track
        self.sent = 0
        self.event_needs = EventNeeds(policy.templates)
        self.inputs = RunInputsReader(settings, links, public_url)
        self.commits: GroupCommit[Transition, Run | None] = GroupCommit(
            database, self._transitions, key=transition_key,
            connections=settings.commit_connections, max_batch=settings.commit_batch,
            min_batch=min(settings.commit_batch, settings.commit_batch_min))

    async def save_versions(self) -> None:
        async with self.database.connection() as connection:
            await connection.executemany(
                "INSERT INTO workflow_versions (workflow, version, source) VALUES ($1, $2, $3) "
                "ON CONFLICT DO NOTHING",
                [(name, version, source)
                 for (name, version), source in self.catalog.sources.items()])

    async def record_events(self, events: Sequence[LoggedEvent]) -> None:
        """Apply the suppressions that events imply (:func:`mta.suppression.rules.from_event`,
        the rule the simulator applies too): an ``unsubscribed`` event posted by the sender, a
        complaint or hard bounce logged by the MTA. Entries the MTA already made are kept as they
        are; an entry removed by hand after the event is not brought back by a replay.

        Consent events (``consent_given`` ...) set the contact's consent, the newest winning
        (:func:`engine.privacy.consent_store.apply_consent`)."""
        await self._record_consent(events)
        implied = [(event, from_event(event.type, event.email or await self._email_of(
            event.contact_id), event.properties)) for event in events
            if event.type in SUPPRESSING_TYPES]
        wanted = [(event, entry) for event, entry in implied if entry is not None]
        if not wanted:
            return
        async with self.database.transaction() as connection:
            for event, entry in wanted:
                assert entry is not None
                removed_later = await connection.fetchval(
                    "SELECT EXISTS (SELECT 1 FROM events WHERE type = 'suppression_removed' "
                    "AND email = $1 AND position > $2)", entry.email, event.position)
                if not removed_later:
                    await suppressions.add(connection, [entry], event.occurred_at)

    async def _record_consent(self, events: Sequence[LoggedEvent]) -> None:
        changes = [(event.contact_id, consent) for event in events
                   if event.type in EVENT_STATES
                   and (consent := consent_from_event(event.type, event.properties,
                                                      event.occurred_at)) is not None]
        if changes:
            async with self.database.transaction() as connection:
                for contact_id, consent in changes:
                    await apply_consent(connection, contact_id, consent)

    async def _email_of(self, contact_id: str) -> str | None:
        async with self.database.connection() as connection:
            email: str | None = await connection.fetchval(
                "SELECT email FROM contacts WHERE contact_id = $1", contact_id)
        return email

    async def active_runs(self) -> list[Run]:
        async with self.database.connection() as connection:
            rows = await connection.fetch(
                f"SELECT {RUN_COLUMNS} FROM workflow_runs "
                "WHERE state IN ('running', 'waiting', 'waiting_event')")
        return [run_from(row) for row in rows]

    async def start_run(self, fire: Fire, now: datetime) -> Run | None:
        """Apply the re-entry policy, create the run and advance it to its first pause, in
        one transition (committed when this returns)."""
        return await self.commits.run(StartRun(fire, now))

    async def advance(self, run_id: int, resume: Resume, now: datetime) -> Run | None:
        return await self.commits.run(AdvanceRun(run_id, resume, now))

    async def exit_run(self, run_id: int, reason: str, now: datetime) -> None:
        await self.commits.run(ExitRun(run_id, reason, now))

    async def _transitions(self, connection: asyncpg.Connection,
                           items: Sequence[Transition]) -> list[Run | None]:
        """One group of transitions (of different contacts) in the caller's transaction, with
        a few set-based statements for the whole group: exits, locks and re-entry first,
        then one read each of contacts, recent events and suppressions, the steps in Python,
        then one insert of every message, one run update, one decision-log insert."""
        results: list[Run | None] = [None] * len(items)
        logs = LogBuffer()
        # Planned once per connection: REENTRY, CONTACTS and the suppression look-up were
        # planned again in every group (~0.4, ~0.15, ~0.12 ms of Postgres CPU); their
        # generic plans read by the same indexes (checked at 200,000 contacts, 300,000 runs
        # and 20,000 erasures; docs/PERFORMANCE.md, "Postgres per send").
        await connection.execute(GENERIC_PLANS_IN_TRANSACTION)
        exits = [(n, item) for n, item in enumerate(items) if isinstance(item, ExitRun)]
        if exits:
            await self._exit_all(connection, [item for _, item in exits], logs)
        moving: list[tuple[int, Run, Resume, datetime]] = []
        advances = [(n, item) for n, item in enumerate(items) if isinstance(item, AdvanceRun)]
        if advances:
            rows = await connection.fetch(
                f"SELECT {RUN_COLUMNS} FROM workflow_runs WHERE id = ANY($1::bigint[]) "
                "ORDER BY id FOR UPDATE", [item.run_id for _, item in advances])
            locked = {row["id"]: run_from(row) for row in rows}
            for n, item in advances:
                run = locked.get(item.run_id)
                results[n] = run
                if run is not None and run.active:
                    moving.append((n, run, item.resume, item.now))
        starts = [(n, item) for n, item in enumerate(items) if isinstance(item, StartRun)]
        started: set[int] = set()
        if starts:
            begun = await self._begin_all(connection, [item for _, item in starts], logs)
            for (n, start), run in zip(starts, begun, strict=True):
                results[n] = run
                if run is not None:  # a new run: active, inserted once its first steps ran
                    started.add(run.id)
                    moving.append((n, run, None, start.now))
        if moving:
            moving.sort(key=lambda entry: entry[0])
            await self._advance_all(connection, [(run, resume, now)
                                                 for _, run, resume, now in moving], logs,
                                    started)
        await logs.flush(connection)
        return results

    async def _exit_all(self, connection: asyncpg.Connection, exits: list[ExitRun],
                        logs: LogBuffer) -> None:
        rows = await connection.fetch(EXIT_RUNS, [item.run_id for item in exits],
                                      [item.reason for item in exits])
        exited = {row["id"]: row for row in rows}
        for item in exits:
            row = exited.get(item.run_id)
            if row is not None:
                logs.add(item.now, row["workflow"], row["contact_id"], item.run_id, None,
                         "exit", item.reason)

    async def _begin_all(self, connection: asyncpg.Connection, starts: list[StartRun],
                         logs: LogBuffer) -> list[Run | None]:
        """Re-entry for every fire in one read; the runs it allows, not yet inserted (their
        ids taken from the sequence): :meth:`_save_runs` inserts them after their first
        steps, in the state those left them in (one write per new run, not an insert and an
        update)."""
        workflows = [self.catalog.current[item.fire.workflow] for item in starts]
        keys = [reentry_key_text(workflow.reentry.key_of(item.fire.trigger_properties))
                for workflow, item in zip(workflows, starts, strict=True)]
        previous = {row["n"]: row for row in await connection.fetch(
            REENTRY, [item.fire.workflow for item in starts],
            [item.fire.contact_id for item in starts], keys,
            [item.fire.entry_key for item in starts])}
        admitted: list[int] = []
        for n, (workflow, item) in enumerate(zip(workflows, starts, strict=True)):
            fire, now = item.fire, item.now
            seen = previous[n + 1]  # WITH ORDINALITY counts from 1
            if seen["same"]:
                continue  # this very fire was handled before (replay after a restart)
            if seen["erased"]:
                continue  # a timer or snapshot from before the contact was erased: no trace
            active, last = bool(seen["active"]), seen["last"]
            if not workflow.reentry.allows(active=active, last_started_at=last, now=now):
                why = "a run is already active" if active else (
                    f"re-entry policy '{workflow.reentry.policy}': last entered "
                    f"{last.isoformat() if last else '-'}")
                logs.add(now, fire.workflow, fire.contact_id, None, None, "not_entered", why)
                continue
            admitted.append(n)
        runs: list[Run | None] = [None] * len(starts)
        if not admitted:
            return runs
        ids = [row["id"] for row in await connection.fetch(NEW_RUN_IDS, len(admitted))]
        for n, run_id in zip(admitted, ids, strict=True):
            fire, now = starts[n].fire, starts[n].now
            run = Run(run_id, workflows[n].name, workflows[n].version, fire.contact_id, keys[n],
                      fire.entry_key, "running", 0, now, fire.trigger_type,
                      dict(fire.trigger_properties))
            runs[n] = run
            logs.add(now, run.workflow, run.contact_id, run.id, None, "entered",
                     fire.trigger_type)
        return runs

    async def _advance_all(self, connection: asyncpg.Connection,
                           moving: list[tuple[Run, Resume, datetime]], logs: LogBuffer,
                           started: set[int]) -> None:
        """Advance locked, active runs (of different contacts) to their next pause; those
        whose ids are in ``started`` are new (not inserted yet)."""
        programs: list[tuple[Any, Any] | None] = []
        for run, _, _ in moving:
            programs.append(await self._program(connection, run))
        ready = [(entry, program) for entry, program in zip(moving, programs, strict=True)
                 if program is not None]
        inputs, found = await self.inputs.read(connection, [
            (run, now, self.event_needs.needed(program, run.pc, entering=run.id in started))
            for (run, _, now), (_, program) in ready])
        outcomes: list[RunOutcome] = []
        for ((run, resume, now), (workflow, program)), run_inputs in zip(ready, inputs,
                                                                         strict=True):
            effects = interpret(run, program, workflow, run_inputs, resume, now, self.policy)
            outcomes.append(await self._apply(connection, run, run_inputs, effects, now))
        await self._enqueue_all(connection, outcomes, found)
        for outcome in outcomes:
            for row in outcome.rows:
                if isinstance(row, PendingSend):
                    row = outcome.sent_row(row)
                logs.rows.append(row)
        await self._save_runs(connection, [run for run, _, _ in moving], started)

    async def _program(self, connection: asyncpg.Connection, run: Run
                       ) -> tuple[Any, Any] | None:
        """The run's workflow and program (loaded from its stored source if this process
        does not know its version); None, and the run exited, if there is none."""
        entry = self.catalog.version(run.workflow, run.version)
        if entry is not None:
            return entry
        source = await connection.fetchval(
            "SELECT source FROM workflow_versions WHERE workflow = $1 AND version = $2",
            run.workflow, run.version)
        if source is None:
            log.error("no definition for a run's version; exiting it",
                      extra={"run_id": run.id, "workflow": run.workflow})
            run.state, run.exit_reason = "exited", "workflow version not found"
            return None
        return self.catalog.add_version(run.workflow, run.version, source)

    async def _apply(self, connection: asyncpg.Connection, run: Run, inputs: RunInputs,
                     effects: Effects, now: datetime) -> RunOutcome:
        """The run's decision-log rows (sends still to be queued, as PendingSend) and its
        contact and webhook writes (rare: one statement each, here)."""
        outcome = RunOutcome(run, now)
        sends = iter(effects.sends)
        for step, action, detail in effects.log:
            if action == "send":
                self._send(run, inputs, next(sends), now, outcome)
            else:
                outcome.add(step, action, detail)
        if effects.attributes is not None:
            current = await connection.fetchval(
                "SELECT attributes FROM contacts WHERE contact_id = $1", run.contact_id) or {}
            changes: dict[str, Any] = {k: None for k in current if k not in effects.attributes}
            changes.update({k: v for k, v in effects.attributes.items() if current.get(k) != v})
            if changes:
                await upsert_contact(connection, ContactUpsert(
                    run.contact_id, UNCHANGED, changes, UNCHANGED), now)
        if effects.webhooks:  # outbox rows in this transaction; sent after the commit
            for step_id, action, detail in await queue_webhooks(connection, effects.webhooks,
                                                              run.contact_id):
                outcome.add(step_id, action, detail)
        return outcome

    def _send(self, run: Run, inputs: RunInputs, send: SendEffect, now: datetime,
              outcome: RunOutcome) -> None:
        if not self.public_url:
            outcome.add(send.step_id, "skipped", f"not sent: {NO_PUBLIC_URL}")
            return
        message_id = send_message_id(run.id, send.step_id)
        html, links = send.message.html, tuple[str, ...]()
        if self.track and html is not None:
            tracked = track_html(html, self.public_url, self.links, message_id)
            html, links = tracked.html, tracked.links
        try:
            composed = compose({
                "from": self.settings.from_address, "to": inputs.email,
                "subject": send.message.subject, "text": send.message.text,
                "html": html,
                "headers": list_unsubscribe(self.public_url, self.identity.bounce_domain,
                                            self.links, message_id)}, now)
        except InvalidMessage as exc:
            outcome.add(send.step_id, "skipped", f"cannot build message: {exc}")
            return
        outcome.rows.append(PendingSend(send.step_id, send.template, OutboundMessage(
            composed.header_from, composed.recipient, composed.body, run.contact_id,
            (run.workflow,), {"workflow": run.workflow, "step": send.step_id, "run_id": run.id,
                              "template": send.template, "transactional": send.transactional},
            "automation", f"run:{run.id}:{send.step_id}", id=message_id, tracked_links=links)))

    async def _enqueue_all(self, connection: asyncpg.Connection,
                           outcomes: list[RunOutcome], found: SuppressionsRead) -> None:
        """Every message of the group in one enqueue (one insert, one NOTIFY) per clock
        reading (the group's transitions normally share one); the suppression entries were
        read with the runs' inputs in this transaction."""
        by_time: dict[datetime, list[PendingSend]] = {}
        for outcome in outcomes:
            for row in outcome.rows:
                if isinstance(row, PendingSend):
                    by_time.setdefault(outcome.now, []).append(row)
        for now, pending in by_time.items():
            queued = await enqueue_many(connection, self.identity,
                                        [send.message for send in pending], now,
                                        known_suppressions=found)
            for send, result in zip(pending, queued, strict=True):
                send.result = result
                if not result.suppressed:
                    self.sent += 1

    async def _save_runs(self, connection: asyncpg.Connection, runs: list[Run],
                         started: set[int]) -> None:
        """Insert the new runs (ids in ``started``), update the others. A new run that another
        transaction inserted meanwhile (the same fire on two engines) fails the transition:
        alone, it then finds that run and does nothing."""
        new = [run for run in runs if run.id in started]
        if new:
            inserted = await connection.fetch(
                INSERT_RUNS, [run.id for run in new], [run.workflow for run in new],
                [run.version for run in new], [run.contact_id for run in new],
                [run.reentry_key for run in new], [run.entry_key for run in new],
                [run.state for run in new], [run.pc for run in new],
                [run.entered_at for run in new], [run.trigger_type for run in new],
                [run.trigger_properties for run in new], [run.wake_at for run in new],
                [run.waiting_since for run in new],
                [orjson.dumps(run.sent_steps).decode() for run in new],
                [run.exit_reason for run in new])
            if len(inserted) != len(new):
                raise RuntimeError("a run of the same fire was started by another transaction")
        runs = [run for run in runs if run.id not in started]
        if not runs:
            return
        if len(runs) == 1:
            run = runs[0]
            await connection.execute(
                "UPDATE workflow_runs SET state = $2, pc = $3, wake_at = $4, "
                "waiting_since = $5, sent_steps = $6, exit_reason = $7, updated_at = now() "
                "WHERE id = $1", run.id, run.state, run.pc, run.wake_at, run.waiting_since,
                run.sent_steps, run.exit_reason)
            return
        await connection.execute(
            SAVE_RUNS, [run.id for run in runs], [run.state for run in runs],
            [run.pc for run in runs], [run.wake_at for run in runs],
            [run.waiting_since for run in runs],
            [orjson.dumps(run.sent_steps).decode() for run in runs],
            [run.exit_reason for run in runs])
