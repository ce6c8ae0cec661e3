"""``herald simulate``: run the real automation core on a virtual clock over a JSON-lines file.

Each line is an event exactly as ``POST /v1/events`` takes it (``timestamp`` required; an
optional ``"source": "pixel"`` or ``"pixel_anonymous"`` plays it as sent by a browser, which
only triggers that accept browser events see), or a
contact upsert ``{"kind": "contact", "contact_id": ..., "email": ..., "attributes": {...},
"timezone": ...}`` applied at its ``timestamp`` (or at the start when it has none). Lines are
processed in timestamp order (file order breaks ties); the clock then runs to the last event plus
the horizon so delayed steps fire. The output is one JSON object per send or skipped send; the
same input always gives the same output.
"""

from __future__ import annotations

import zoneinfo
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import orjson

from automation.content.link_policy import normalize_domains
from automation.errors import AutomationError
from automation.index.trigger_index import IndexEvent, TriggerIndex
from automation.loading.catalog import Catalog
from automation.runtime.core import AutomationCore
from automation.runtime.guards import parse_quiet_hours
from automation.runtime.interpreter import Policy
from automation.settings import AutomationSettings
from automation.stores.memory import MemoryStore
from engine.addresses import AddressError, normalize_email
from engine.intake.validation import InvalidEvent, parse_event
from engine.sources import API, BROWSER_SOURCES
from engine.timestamps import format_rfc3339, parse_rfc3339

MAX_LINES = 1_000_000


class SimulationInputError(AutomationError):
    """A line of the events file is invalid; the message names the line and field."""


@dataclass(frozen=True, slots=True)
class ContactLine:
    at: datetime | None
    contact_id: str
    email: str | None
    attributes: dict[str, Any]
    timezone: str | None


@dataclass(frozen=True, slots=True)
class EventLine:
    at: datetime
    contact_id: str | None
    email: str | None
    type: str
    properties: dict[str, Any]
    source: str = API


Line = ContactLine | EventLine
SOURCES = frozenset({API}) | BROWSER_SOURCES


def parse_lines(lines: Iterable[str | bytes]) -> list[Line]:
    parsed: list[Line] = []
    for number, raw in enumerate(lines, start=1):
        if number > MAX_LINES:
            raise SimulationInputError(f"more than {MAX_LINES} lines")
        if not raw.strip():
            continue
        try:
            item = orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            raise SimulationInputError(f"line {number}: not valid JSON: {exc}") from None
        if isinstance(item, dict) and item.get("kind") == "contact":
            parsed.append(_contact_line(item, number))
            continue
        source = API
        if isinstance(item, dict) and "source" in item:
            item = dict(item)
            source = item.pop("source")
            if source not in SOURCES:
                raise SimulationInputError(f"line {number}.source: one of "
                                           + ", ".join(sorted(SOURCES)))
        try:
            event = parse_event(item, f"line {number}", now=None)
        except InvalidEvent as exc:
            raise SimulationInputError(str(exc)) from None
        parsed.append(EventLine(event.occurred_at, event.contact_id, event.email, event.type,
                                event.properties, source))
    return parsed


def _contact_line(item: dict[str, Any], number: int) -> ContactLine:
    where = f"line {number}"
    allowed = {"kind", "contact_id", "email", "attributes", "timezone", "timestamp"}
    unknown = sorted(set(item) - allowed)
    if unknown:
        raise SimulationInputError(f"{where}.{unknown[0]}: unknown field")
    contact_id = item.get("contact_id")
    if not isinstance(contact_id, str) or not contact_id:
        raise SimulationInputError(f"{where}.contact_id: is required (a string)")
    email = item.get("email")
    if email is not None:
        try:
            email = normalize_email(email) if isinstance(email, str) else None
        except AddressError as exc:
            raise SimulationInputError(f"{where}.email: {exc}") from None
    attributes = item.get("attributes") or {}
    if not isinstance(attributes, dict):
        raise SimulationInputError(f"{where}.attributes: must be an object")
    timezone = item.get("timezone")
    if timezone is not None:
        try:
            zoneinfo.ZoneInfo(timezone)
        except (zoneinfo.ZoneInfoNotFoundError, ValueError, TypeError):
            raise SimulationInputError(f"{where}.timezone: {timezone!r} is not an IANA "
                                       "time zone") from None
    at = None
    if item.get("timestamp") is not None:
        try:
            at = parse_rfc3339(str(item["timestamp"]))
        except ValueError as exc:
            raise SimulationInputError(f"{where}.timestamp: {exc}") from None
    return ContactLine(at, contact_id, email, attributes, timezone)


def policy_for(catalog: Catalog, settings: AutomationSettings) -> Policy:
    return Policy(catalog.templates, settings.frequency_cap,
                  parse_quiet_hours(settings.quiet_hours),
                  normalize_domains(settings.link_domains))


class Simulator:
    def __init__(self, catalog: Catalog, settings: AutomationSettings) -> None:
        self.store = MemoryStore(catalog, policy_for(catalog, settings),
                                 settings.frequency_window, settings.recommendations)
        self.core = AutomationCore(catalog, TriggerIndex(catalog.ordered()), self.store)
        self._emails: dict[str, str] = {}

    async def run(self, lines: list[Line], horizon: timedelta) -> list[dict[str, Any]]:
        timed = [line.at for line in lines if line.at is not None]
        if not timed:
            return []
        start = min(timed)
        order = sorted(range(len(lines)), key=lambda i: (lines[i].at or start, i))
        for i in order:
            line = lines[i]
            at = line.at or start
            await self._advance_clock(at)
            if isinstance(line, ContactLine):
                if line.email:
                    self._emails[line.email.lower()] = line.contact_id
                event = self.store.upsert_contact(line.contact_id, line.email, line.attributes,
                                                  line.timezone, at)
            else:
                event = IndexEvent(self._contact_id(line), line.type, line.properties, at,
                                   source=line.source)
            await self._feed(event)
        await self._advance_clock(max(timed) + horizon)
        return self.store.output

    def _contact_id(self, line: EventLine) -> str:
        if line.contact_id is not None:
            return line.contact_id
        assert line.email is not None
        lowered = line.email.lower()
        contact_id = self._emails.get(lowered, lowered)
        contact = self.store.contact(contact_id)
        if contact.email is None:
            contact.email = line.email
        return contact_id

    async def _feed(self, event: IndexEvent) -> None:
        queue = [event]
        while queue:
            current = queue.pop(0)
            self.store.record_event(current)
            await self.core.on_event(current, current.occurred_at)
            queue.extend(self.store.pending)
            self.store.pending.clear()

    async def _advance_clock(self, target: datetime) -> None:
        while True:
            due = self.core.next_due()
            if due is None or due > target:
                return
            await self.core.on_time(due)
            pending, self.store.pending = list(self.store.pending), []
            for event in pending:
                await self._feed(event)


def output_line(entry: dict[str, Any]) -> str:
    rendered = dict(entry)
    rendered["at"] = format_rfc3339(entry["at"])
    return orjson.dumps(rendered).decode()
