"""What a group's runs read before their steps run (:class:`RunInputs`), with one statement
each for the contacts, their recent events and the suppression list, for the whole group of
the Postgres run store (:mod:`automation.stores.postgres`).

The recent events are read only for the runs whose next steps can use them
(:mod:`automation.stores.event_needs`); the others get none.
"""

from __future__ import annotations

from datetime import datetime, timedelta

import asyncpg

from automation.content.links import send_message_id, unsubscribe_url
from automation.content.recommend import engagement, recommend
from automation.runtime.interpreter import RunInputs
from automation.runtime.runs import Run
from automation.settings import AutomationSettings
from automation.stores.group_sql import CONTACTS, RECENT_EVENTS
from engine.link_keys import LinkKeys
from engine.privacy.consent_tokens import confirm_url
from mta.queue.enqueue import SuppressionsRead
from mta.suppression import store as suppressions
from mta.suppression.addresses import normalise_lenient


class RunInputsReader:
    def __init__(self, settings: AutomationSettings, links: LinkKeys,
                 public_url: str | None) -> None:
        self.settings = settings
        self.links = links
        self.public_url = public_url

    async def read(self, connection: asyncpg.Connection,
                   runs: list[tuple[Run, datetime, bool]]
                   ) -> tuple[list[RunInputs], SuppressionsRead]:
        """Each run's inputs at its ``now``, its recent events read if its flag says so; the
        suppression entries found (by normalised address) are returned too."""
        if not runs:
            return [], SuppressionsRead(frozenset(), {})
        contact_ids = [run.contact_id for run, _, _ in runs]
        window = timedelta(seconds=self.settings.frequency_window)
        contacts = {row["n"]: row for row in await connection.fetch(
            CONTACTS, contact_ids, [now - window for _, now, _ in runs])}
        events: dict[int, list[asyncpg.Record]] = {}
        reading = [n for n, (_, _, needed) in enumerate(runs, start=1) if needed]
        if reading:
            for row in await connection.fetch(
                    RECENT_EVENTS, [runs[n - 1][0].contact_id for n in reading],
                    [runs[n - 1][0].entered_at for n in reading]):
                events.setdefault(reading[row["n"] - 1], []).append(row)
        emails = {n: normalise_lenient(row["email"]) for n, row in contacts.items()
                  if row["email"]}
        found = await suppressions.lookup(connection, emails.values()) if emails else {}
        return [self._run_inputs(run, now, contacts.get(n), events.get(n, []),
                                 tuple(found.get(emails[n], ())) if n in emails else ())
                for n, (run, now, _) in enumerate(runs, start=1)], SuppressionsRead(
                    frozenset(emails.values()), found)

    def _run_inputs(self, run: Run, now: datetime, contact: asyncpg.Record | None,
                    rows: list[asyncpg.Record], entries: tuple[tuple[str, str], ...]
                    ) -> RunInputs:
        since = [(r["type"], r["properties"]) for r in reversed(rows)
                 if r["occurred_at"] >= run.entered_at]
        views = [r["properties"] for r in rows if r["type"] == "product_viewed"][:50]
        opened, clicked = engagement(since, run.workflow, run.id)
        opened_all, clicked_all = engagement(since, run.workflow, run.id, include_machine=True)
        email = contact["email"] if contact else None
        public_url, links, run_id = self.public_url, self.links, run.id
        consent_link = confirm_url(public_url, links, run.contact_id, now) if public_url else ""

        def link(step_id: str) -> str:
            return unsubscribe_url(public_url, links, send_message_id(run_id, step_id)) \
                if public_url else ""

        return RunInputs(
            email, dict(contact["attributes"]) if contact else {},
            contact["timezone"] if contact else None, entries if email else (),
            int(contact["recent"]) if contact else 0, opened, clicked, since,
            recommend(views, run.trigger_properties, self.settings.recommendations), link,
            opened_all, clicked_all, contact["consent_state"] if contact else None,
            consent_link)
