"""The Postgres run store: every transition of a run, and the messages and contact updates it
causes, commit together atomically (the run row is locked, its state checked, then written).

So a crash never sends twice or skips a send: either the step advanced and its message is in the
outbound queue, or neither happened. Messages also carry the idempotency key
``run:<id>:<step>``, a second line of defence should two engines ever act on one run.

Each transition runs in its own savepoint of a transaction shared with transitions of other
contacts (:mod:`automation.stores.group_commit`): one commit for many transitions, and a
transition that fails rolls back alone. A transition returns once its group committed.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

import asyncpg

from automation.content.links import list_unsubscribe, send_message_id, unsubscribe_url
from automation.content.recommend import engagement, recommend
from automation.index.trigger_index import Fire
from automation.live.webhooks import queue_webhooks
from automation.loading.catalog import Catalog
from automation.runtime.interpreter import Effects, Policy, RunInputs, SendEffect, interpret
from automation.runtime.runs import Resume, Run
from automation.settings import AutomationSettings
from automation.stores.group_commit import GroupCommit
from automation.stores.memory import reentry_key_text
from automation.stores.workflow_events import INSERT_LOG_AND_EVENTS
from engine.contacts import UNCHANGED, ContactUpsert, upsert_contact
from engine.database import Database
from engine.eventlog_reader import LoggedEvent
from engine.link_keys import LinkKeys
from engine.privacy.audit import erased_sql
from engine.privacy.consent import EVENT_STATES, consent_from_event
from engine.privacy.consent_store import apply_consent
from engine.privacy.consent_tokens import confirm_url
from mta.compose import compose
from mta.errors import InvalidMessage
from mta.queue.enqueue import OutboundMessage, QueueIdentity, enqueue
from mta.suppression import store as suppressions
from mta.suppression.addresses import normalise_lenient
from mta.suppression.rules import from_event
from mta.tracking.rewrite import track_html

log = logging.getLogger("herald.automation.store")

RUN_COLUMNS = """id, workflow, version, contact_id, reentry_key, entry_key, state, pc, entered_at,
    trigger_type, trigger_properties, wake_at, waiting_since, sent_steps, exit_reason"""
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
        self.commits = GroupCommit(database, connections=settings.commit_connections,
                                   max_batch=settings.commit_batch)

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
        async def transition(connection: asyncpg.Connection) -> Run | None:
            logs = LogBuffer()
            run = await self._begin(connection, fire, now, logs)
            if run is not None and run.active:
                await self._advance_locked(connection, run, None, now, logs)
            await logs.flush(connection)
            return run

        return await self.commits.run(transition)

    async def _begin(self, connection: asyncpg.Connection, fire: Fire, now: datetime,
                     logs: LogBuffer) -> Run | None:
        workflow = self.catalog.current[fire.workflow]
        key = reentry_key_text(workflow.reentry.key_of(fire.trigger_properties))
        previous = await connection.fetchrow(
            "SELECT bool_or(state IN ('running', 'waiting', 'waiting_event')) AS active, "
            "max(entered_at) AS last, bool_or(entry_key = $4) AS same, "
            f"{erased_sql('$2::text')} AS erased "
            "FROM workflow_runs WHERE workflow = $1 AND contact_id = $2 "
            "AND reentry_key = $3", fire.workflow, fire.contact_id, key, fire.entry_key)
        if previous["same"]:
            return None  # this very fire was handled before (replay after a restart)
        if previous["erased"]:
            return None  # a timer or snapshot from before the contact was erased: no trace
        active, last = bool(previous["active"]), previous["last"]
        if not workflow.reentry.allows(active=active, last_started_at=last, now=now):
            why = "a run is already active" if active else (
                f"re-entry policy '{workflow.reentry.policy}': last entered "
                f"{last.isoformat() if last else '-'}")
            logs.add(now, fire.workflow, fire.contact_id, None, None, "not_entered", why)
            return None
        row = await connection.fetchrow(
            f"""INSERT INTO workflow_runs (workflow, version, contact_id, reentry_key,
                    entry_key, state, pc, entered_at, trigger_type, trigger_properties)
                VALUES ($1, $2, $3, $4, $5, 'running', 0, $6, $7, $8)
                ON CONFLICT (workflow, contact_id, entry_key) DO NOTHING
                RETURNING {RUN_COLUMNS}""",
            workflow.name, workflow.version, fire.contact_id, key, fire.entry_key, now,
            fire.trigger_type, dict(fire.trigger_properties))
        if row is None:
            return None
        run = run_from(row)
        logs.add(now, run.workflow, run.contact_id, run.id, None, "entered",
                 fire.trigger_type)
        return run

    async def exit_run(self, run_id: int, reason: str, now: datetime) -> None:
        async def transition(connection: asyncpg.Connection) -> None:
            row = await connection.fetchrow(
                "UPDATE workflow_runs SET state = 'exited', exit_reason = $2, wake_at = NULL, "
                "updated_at = now() WHERE id = $1 "
                "AND state IN ('running', 'waiting', 'waiting_event') "
                "RETURNING workflow, contact_id", run_id, reason)
            if row is not None:
                logs = LogBuffer()
                logs.add(now, row["workflow"], row["contact_id"], run_id, None, "exit", reason)
                await logs.flush(connection)

        await self.commits.run(transition)

    async def advance(self, run_id: int, resume: Resume, now: datetime) -> Run | None:
        async def transition(connection: asyncpg.Connection) -> Run | None:
            row = await connection.fetchrow(
                f"SELECT {RUN_COLUMNS} FROM workflow_runs WHERE id = $1 FOR UPDATE", run_id)
            if row is None:
                return None
            run = run_from(row)
            if run.active:
                logs = LogBuffer()
                await self._advance_locked(connection, run, resume, now, logs)
                await logs.flush(connection)
            return run

        return await self.commits.run(transition)

    async def _advance_locked(self, connection: asyncpg.Connection, run: Run, resume: Resume,
                              now: datetime, logs: LogBuffer) -> None:
        entry = self.catalog.version(run.workflow, run.version)
        if entry is None:
            source = await connection.fetchval(
                "SELECT source FROM workflow_versions WHERE workflow = $1 AND version = $2",
                run.workflow, run.version)
            if source is None:
                log.error("no definition for a run's version; exiting it",
                          extra={"run_id": run.id, "workflow": run.workflow})
                run.state, run.exit_reason = "exited", "workflow version not found"
                await self._save(connection, run)
                return
            entry = self.catalog.add_version(run.workflow, run.version, source)
        workflow, program = entry
        inputs = await self._inputs(connection, run, now)
        effects = interpret(run, program, workflow, inputs, resume, now, self.policy)
        await self._apply(connection, run, inputs, effects, now, logs)
        await self._save(connection, run)

    async def _inputs(self, connection: asyncpg.Connection, run: Run,
                      now: datetime) -> RunInputs:
        contact = await connection.fetchrow(
            """SELECT c.email, c.attributes, c.timezone, c.consent_state,
                      (SELECT count(*) FROM outbound_messages m
                        WHERE m.contact_id = c.contact_id AND m.source = 'automation'
                          AND m.created_at > $2
                          AND NOT coalesce((m.metadata->>'transactional')::boolean, false))
                          AS recent
               FROM contacts c WHERE c.contact_id = $1""",
            run.contact_id, now - timedelta(seconds=self.settings.frequency_window))
        rows = await connection.fetch(
            "SELECT type, properties, occurred_at FROM events WHERE contact_id = $1 "
            "AND (occurred_at >= $2 OR type = 'product_viewed') "
            "ORDER BY position DESC LIMIT 1000", run.contact_id, run.entered_at)
        since = [(r["type"], r["properties"]) for r in reversed(rows)
                 if r["occurred_at"] >= run.entered_at]
        views = [r["properties"] for r in rows if r["type"] == "product_viewed"][:50]
        opened, clicked = engagement(since, run.workflow, run.id)
        opened_all, clicked_all = engagement(since, run.workflow, run.id, include_machine=True)
        email = contact["email"] if contact else None
        entries: tuple[tuple[str, str], ...] = ()
        if email:
            key = normalise_lenient(email)
            entries = tuple((await suppressions.lookup(connection, [key])).get(key, ()))
        public_url, links, run_id = self.public_url, self.links, run.id
        consent_link = confirm_url(public_url, links, run.contact_id, now) if public_url else ""

        def link(step_id: str) -> str:
            return unsubscribe_url(public_url, links, send_message_id(run_id, step_id)) \
                if public_url else ""

        return RunInputs(
            email, dict(contact["attributes"]) if contact else {},
            contact["timezone"] if contact else None, entries,
            int(contact["recent"]) if contact else 0, opened, clicked, since,
            recommend(views, run.trigger_properties, self.settings.recommendations), link,
            opened_all, clicked_all, contact["consent_state"] if contact else None,
            consent_link)

    async def _apply(self, connection: asyncpg.Connection, run: Run, inputs: RunInputs,
                     effects: Effects, now: datetime, logs: LogBuffer) -> None:
        sends = iter(effects.sends)
        for step, action, detail in effects.log:
            if action == "send":
                await self._send(connection, run, inputs, next(sends), now, logs)
            else:
                logs.add(now, run.workflow, run.contact_id, run.id, step, action, detail)
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
                logs.add(now, run.workflow, run.contact_id, run.id, step_id, action, detail)

    async def _send(self, connection: asyncpg.Connection, run: Run, inputs: RunInputs,
                    send: SendEffect, now: datetime, logs: LogBuffer) -> None:
        if not self.public_url:
            logs.add(now, run.workflow, run.contact_id, run.id, send.step_id, "skipped",
                     f"not sent: {NO_PUBLIC_URL}")
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
            logs.add(now, run.workflow, run.contact_id, run.id, send.step_id, "skipped",
                     f"cannot build message: {exc}")
            return
        message = OutboundMessage(
            composed.header_from, composed.recipient, composed.body, run.contact_id,
            (run.workflow,), {"workflow": run.workflow, "step": send.step_id, "run_id": run.id,
                              "template": send.template, "transactional": send.transactional},
            "automation", f"run:{run.id}:{send.step_id}", id=message_id, tracked_links=links)
        queued = await enqueue(connection, self.identity, message, now)
        if queued.suppressed:
            logs.add(now, run.workflow, run.contact_id, run.id, send.step_id, "skipped",
                     f"suppressed: {queued.suppressed} (message {queued.id})")
            return
        self.sent += 1
        logs.add(now, run.workflow, run.contact_id, run.id, send.step_id, "sent",
                 f"{send.template} -> message {queued.id}")

    async def _save(self, connection: asyncpg.Connection, run: Run) -> None:
        await connection.execute(
            "UPDATE workflow_runs SET state = $2, pc = $3, wake_at = $4, waiting_since = $5, "
            "sent_steps = $6, exit_reason = $7, updated_at = now() WHERE id = $1",
            run.id, run.state, run.pc, run.wake_at, run.waiting_since, run.sent_steps,
            run.exit_reason)



class LogBuffer:
    """Decision-log rows gathered during one transaction and written with one statement."""

    def __init__(self) -> None:
        self.rows: list[tuple[Any, ...]] = []

    def add(self, at: datetime, workflow: str, contact_id: str, run_id: int | None,
            step: str | None, action: str, detail: str) -> None:
        self.rows.append((at.isoformat(), workflow, contact_id, run_id, step, action,
                          detail[:1000]))

    async def flush(self, connection: asyncpg.Connection) -> None:
        if self.rows:
            # also queues the outcome webhooks of workflow events (entered, exit, completed)
            await connection.execute(INSERT_LOG_AND_EVENTS, self.rows)
            self.rows = []
