"""An in-memory run store for simulation: the same core and interpreter, no database.

It also plays the parts the rest of Herald plays in production: contact upserts and
``update_contact`` steps produce ``contact_updated`` events, and every send produces an
``email_delivered`` event carrying the workflow and step (as the MTA's outcome events do), so
engagement triggers behave as they would live. Those synthetic events wait in
:attr:`MemoryStore.pending` for the simulator to feed back to the core.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Hashable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import orjson

from automation.content.recommend import engagement, recommend
from automation.index.trigger_index import Fire, IndexEvent
from automation.loading.catalog import Catalog
from automation.runtime.interpreter import Policy, RunInputs, interpret
from automation.runtime.runs import Resume, Run
from automation.stores.event_needs import EventNeeds
from engine.privacy.consent import consent_from_event
from mta.suppression.addresses import normalise_lenient
from mta.suppression.rules import from_event

MAX_EVENTS_PER_CONTACT = 1000


@dataclass(slots=True)
class SimContact:
    contact_id: str
    email: str | None = None
    attributes: dict[str, Any] = field(default_factory=dict)
    timezone: str | None = None
    events: deque[tuple[datetime, str, dict[str, Any]]] = field(
        default_factory=lambda: deque(maxlen=MAX_EVENTS_PER_CONTACT))
    sends: list[tuple[datetime, bool]] = field(default_factory=list)
    consent: str | None = None


def reentry_key_text(key: Hashable | None) -> str:
    return orjson.dumps(key, default=str).decode()


class MemoryStore:
    def __init__(self, catalog: Catalog, policy: Policy, frequency_window: float,
                 recommendations: int = 4) -> None:
        self.catalog = catalog
        self.policy = policy
        self.event_needs = EventNeeds(policy.templates)
        self.frequency_window = timedelta(seconds=frequency_window)
        self.recommendations = recommendations
        self.contacts: dict[str, SimContact] = {}
        # address -> category -> reason, as the suppressions table holds it (first entry wins)
        self.suppressions: dict[str, dict[str, str]] = {}
        self.runs: dict[int, Run] = {}
        self._by_key: dict[tuple[str, str, str], list[int]] = {}
        self._entry_keys: set[tuple[str, str, str]] = set()
        self.output: list[dict[str, Any]] = []
        self.log: list[dict[str, Any]] = []
        self.pending: list[IndexEvent] = []

    # --- the world outside the core --------------------------------------------------------

    def contact(self, contact_id: str) -> SimContact:
        found = self.contacts.get(contact_id)
        if found is None:
            found = self.contacts[contact_id] = SimContact(contact_id)
        return found

    def upsert_contact(self, contact_id: str, email: str | None,
                       attributes: dict[str, Any], timezone: str | None,
                       at: datetime) -> IndexEvent:
        """Apply a contact line; returns the ``contact_updated`` event it implies."""
        contact = self.contact(contact_id)
        created = not contact.attributes and contact.email is None
        previous = dict(contact.attributes)
        merged = {**previous, **attributes}
        merged = {k: v for k, v in merged.items() if v is not None}
        changed = sorted(k for k in set(merged) | set(previous)
                         if merged.get(k) != previous.get(k))
        contact.attributes = merged
        if email is not None:
            contact.email = email
        if timezone is not None:
            contact.timezone = timezone
        return IndexEvent(contact_id, "contact_updated", {
            "created": created, "changed": changed,
            "previous": {k: previous.get(k) for k in changed}, "attributes": merged,
            "email": contact.email, "timezone": contact.timezone}, at)

    def record_event(self, event: IndexEvent) -> None:
        contact = self.contact(event.contact_id)
        properties = dict(event.properties)
        contact.events.append((event.occurred_at, event.type, properties))
        email = properties.get("email") if event.type == "contact_updated" else None
        if isinstance(email, str):
            contact.email = email
        consent = consent_from_event(event.type, properties, event.occurred_at)
        if consent is not None:
            contact.consent = consent.state
        entry = from_event(event.type, properties.get("recipient") if isinstance(
            properties.get("recipient"), str) else contact.email, properties)
        if entry is not None:
            self.suppressions.setdefault(entry.email, {}).setdefault(entry.category, entry.reason)

    # --- Store protocol --------------------------------------------------------------------

    async def active_runs(self) -> list[Run]:
        return [run for run in self.runs.values() if run.active]

    async def start_run(self, fire: Fire, now: datetime) -> Run | None:
        run = await self._begin(fire, now)
        return None if run is None else await self.advance(run.id, None, now)

    async def _begin(self, fire: Fire, now: datetime) -> Run | None:
        workflow = self.catalog.current[fire.workflow]
        if (fire.workflow, fire.contact_id, fire.entry_key) in self._entry_keys:
            return None
        key = reentry_key_text(workflow.reentry.key_of(fire.trigger_properties))
        previous = [self.runs[i] for i in self._by_key.get((fire.workflow, fire.contact_id,
                                                            key), [])]
        active = any(run.active for run in previous)
        last = max((run.entered_at for run in previous), default=None)
        if not workflow.reentry.allows(active=active, last_started_at=last, now=now):
            why = "a run is already active" if active else (
                f"re-entry policy '{workflow.reentry.policy}': last entered {last}")
            self._log(now, fire.workflow, fire.contact_id, None, None, "not_entered", why)
            return None
        run = Run(len(self.runs) + 1, workflow.name, workflow.version, fire.contact_id, key,
                  fire.entry_key, "running", 0, now, fire.trigger_type,
                  dict(fire.trigger_properties))
        self.runs[run.id] = run
        self._by_key.setdefault((fire.workflow, fire.contact_id, key), []).append(run.id)
        self._entry_keys.add((fire.workflow, fire.contact_id, fire.entry_key))
        self._log(now, run.workflow, run.contact_id, run.id, None, "entered", fire.trigger_type)
        return run

    async def exit_run(self, run_id: int, reason: str, now: datetime) -> None:
        run = self.runs[run_id]
        if run.active:
            run.state, run.exit_reason, run.wake_at = "exited", reason, None
            self._log(now, run.workflow, run.contact_id, run.id, None, "exit", reason)

    async def advance(self, run_id: int, resume: Resume, now: datetime) -> Run | None:
        run = self.runs[run_id]
        if not run.active:
            return run
        entry = self.catalog.version(run.workflow, run.version)
        assert entry is not None
        workflow, program = entry
        contact = self.contact(run.contact_id)
        window_start = now - self.frequency_window
        recent = sum(1 for at, transactional in contact.sends
                     if at > window_start and not transactional)
        # The same events as the live store reads: none where the next steps cannot use them
        # (automation.stores.event_needs), so that both log the same decisions.
        events = contact.events if self.event_needs.needed(
            program, run.pc, entering=run.pc == 0 and run.entered_at == now) else []
        since = [(t, props) for at, t, props in events if at >= run.entered_at]
        opened, clicked = engagement(since, run.workflow, run.id)
        opened_all, clicked_all = engagement(since, run.workflow, run.id, include_machine=True)
        views = [props for _at, t, props in reversed(events) if t == "product_viewed"]
        entries = self.suppressions.get(normalise_lenient(contact.email or ""), {})
        inputs = RunInputs(
            contact.email, dict(contact.attributes), contact.timezone,
            tuple((reason, category) for category, reason in entries.items()), recent,
            opened, clicked, since,
            recommend(views, run.trigger_properties, self.recommendations),
            lambda step: f"https://example.invalid/v1/unsubscribe/{run.id}/{step}",
            opened_all, clicked_all, contact.consent,
            f"https://example.invalid/v1/consent/confirm/{run.contact_id}")
        effects = interpret(run, program, workflow, inputs, resume, now, self.policy)
        sends = iter(effects.sends)
        for step, action, detail in effects.log:
            if action == "send":
                send = next(sends)
                contact.sends.append((now, send.transactional))
                self.output.append({"at": now, "workflow": run.workflow, "step": send.step_id,
                                    "contact_id": run.contact_id, "template": send.template})
                self._log(now, run.workflow, run.contact_id, run.id, send.step_id, "sent",
                          send.template)
                self.pending.append(IndexEvent(run.contact_id, "email_delivered", {
                    "workflow": run.workflow, "step": send.step_id, "run_id": run.id,
                    "template": send.template, "recipient": contact.email}, now))
                continue
            if action == "skipped":
                self.output.append({"at": now, "workflow": run.workflow, "step": step,
                                    "contact_id": run.contact_id, "skipped": detail})
            self._log(now, run.workflow, run.contact_id, run.id, step, action, detail)
        if effects.attributes is not None:
            previous = dict(contact.attributes)
            removed = {k: None for k in previous if k not in effects.attributes}
            self.pending.append(self.upsert_contact(
                run.contact_id, None, {**effects.attributes, **removed}, None, now))
        for webhook in effects.webhooks:
            self._log(now, run.workflow, run.contact_id, run.id, webhook.step_id,
                      "webhook", f"(simulated) POST {webhook.url}")
        return run

    def _log(self, at: datetime, workflow: str, contact_id: str, run_id: int | None,
             step: str | None, action: str, detail: str) -> None:
        self.log.append({"at": at, "workflow": workflow, "contact_id": contact_id,
                         "run_id": run_id, "step": step, "action": action, "detail": detail})
