"""Queue control: select queued mail by site, domain, workflow, contact or message, and hold,
release, retry now or purge it; every message changed gets an event (``queue_held``, ...).

Shared by ``herald queue`` and ``POST /v1/queue/{action}``. States: ``held`` mail is never
claimed until released; ``purged`` is final (the row, its attempts and its events are kept).
A message in flight when it is held or purged finishes its attempt: delivered or bounced
stands, a deferral leaves it held or purged (see ``RECORD`` in :mod:`mta.queue.store`).
Retry skips messages in flight. Changes go in batches of ``BATCH`` rows, one transaction each.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import asyncpg

from engine.addresses import AddressError, ascii_host
from engine.eventlog import append_rows
from mta.errors import MtaError

BATCH = 1000
MAX_TEXT = 255

PENDING = ("queued", "deferred", "held")
FINAL = ("delivered", "bounced", "expired", "suppressed", "purged")


class QueueSelectionError(MtaError):
    """A selector is malformed or names nothing Herald knows (a clear line for the user)."""

    def __init__(self, message: str, *, unknown: bool = False) -> None:
        super().__init__(message)
        self.unknown = unknown  # names nothing (404) rather than malformed (400)


@dataclass(frozen=True, slots=True)
class Action:
    name: str
    event_type: str
    done: str  # past tense, for messages
    from_states: tuple[str, ...]
    set_sql: str  # the SET list of the UPDATE
    skip_in_flight: bool = False


_RELEASED_STATE = "CASE WHEN m.attempts > 0 THEN 'deferred' ELSE 'queued' END"
ACTIONS: dict[str, Action] = {
    "hold": Action("hold", "queue_held", "held", ("queued", "deferred"), "state = 'held'"),
    "release": Action("release", "queue_released", "released", ("held",),
                      f"state = {_RELEASED_STATE}"),
    # Due at once (held mail is released too); a message in flight keeps its attempt.
    "retry": Action("retry", "queue_retried", "retried", PENDING,
                    f"state = {_RELEASED_STATE}, next_attempt_at = now()", skip_in_flight=True),
    "purge": Action("purge", "queue_purged", "purged", PENDING,
                    "state = 'purged', finished_at = now(), "
                    "last_reply = 'purged by an operator'"),
}

# In flight: claimed by a delivery worker whose lease has not run out.
IN_FLIGHT = "(m.lease_owner IS NOT NULL AND m.next_attempt_at > now())"


@dataclass(frozen=True, slots=True)
class Selector:
    site: str | None = None
    domain: str | None = None
    workflow: str | None = None
    contact: str | None = None
    message: uuid.UUID | None = None

    @classmethod
    def parse(cls, *, site: str | None = None, domain: str | None = None,
              workflow: str | None = None, contact: str | None = None,
              message: str | None = None) -> Selector:
        for name, value in (("site", site), ("domain", domain), ("workflow", workflow),
                            ("contact", contact), ("message", message)):
            if value is not None and (not isinstance(value, str) or not value
                                      or len(value) > MAX_TEXT or "\x00" in value):
                raise QueueSelectionError(f"{name}: must be a string of 1-{MAX_TEXT} characters")
        message_id = None
        if message is not None:
            try:
                message_id = uuid.UUID(message)
            except ValueError:
                raise QueueSelectionError(f"message: {message!r} is not a message id (a UUID)"
                                          ) from None
        if domain is not None:
            try:
                domain = ascii_host(domain.rstrip("."))
            except AddressError as exc:
                raise QueueSelectionError(f"domain: {domain!r}: {exc}") from None
        return cls(site.lower() if site else None, domain, workflow, contact, message_id)

    @property
    def empty(self) -> bool:
        return not any((self.site, self.domain, self.workflow, self.contact, self.message))

    def as_dict(self) -> dict[str, str]:
        return {key: str(value) for key, value in (
            ("site", self.site), ("domain", self.domain), ("workflow", self.workflow),
            ("contact", self.contact), ("message", self.message)) if value is not None}

    def where(self, args: list[Any]) -> str:
        """SQL conditions on ``outbound_messages AS m``; appends their parameters to ``args``."""
        clauses = []

        def param(value: Any) -> str:
            args.append(value)
            return f"${len(args)}"

        if self.site is not None:
            clauses.append("m.recipient_domain IN (SELECT domain FROM mta_domain_sites "
                           f"WHERE site = {param(self.site)})")
        if self.domain is not None:
            clauses.append(f"m.recipient_domain = {param(self.domain)}")
        if self.workflow is not None:
            clauses.append(f"m.metadata->>'workflow' = {param(self.workflow)}")
        if self.contact is not None:
            clauses.append(f"m.contact_id = {param(self.contact)}")
        if self.message is not None:
            clauses.append(f"m.id = {param(self.message)}")
        return " AND ".join(clauses) or "true"


@dataclass(frozen=True, slots=True)
class ActionResult:
    action: str
    affected: int
    in_flight: int  # matching messages left alone because an attempt is under way (retry)
    more: bool  # stopped at the row cap; run again for the rest

    def as_dict(self) -> dict[str, Any]:
        return {"action": self.action, "affected": self.affected, "in_flight": self.in_flight,
                "more": self.more}


async def check_selector(connection: asyncpg.Connection, selector: Selector) -> None:
    """Refuse selectors that name nothing Herald knows, with one line saying which."""
    if selector.site is not None and not await connection.fetchval(
            "SELECT EXISTS (SELECT 1 FROM mta_domain_sites WHERE site = $1)", selector.site):
        raise QueueSelectionError(
            f"unknown site {selector.site!r}: no running MTA has routed mail to it "
            "(`herald queue` lists sites)", unknown=True)
    if selector.message is not None:
        state = await connection.fetchval(
            "SELECT state FROM outbound_messages WHERE id = $1", selector.message)
        if state is None:
            raise QueueSelectionError(f"no message with id {selector.message}", unknown=True)
    domain = selector.domain
    if domain is not None and await connection.fetchval(
            "SELECT EXISTS (SELECT 1 FROM mta_domain_sites WHERE domain = $1)", domain):
        domain = None  # routed before: known, even with nothing queued now
    for name, condition, value in (
            ("domain", "recipient_domain = $1", domain),
            ("workflow", "metadata->>'workflow' = $1", selector.workflow),
            ("contact", "contact_id = $1", selector.contact)):
        # Only mail still in the queue (the partial index outbound_pending_domain).
        if value is not None and not await connection.fetchval(
                "SELECT EXISTS (SELECT 1 FROM outbound_messages WHERE state = ANY($2::text[]) "
                f"AND {condition})", value, list(PENDING)):
            raise QueueSelectionError(f"unknown {name} {value!r}: no mail for it in the queue",
                                      unknown=True)


async def apply(connection: asyncpg.Connection, action_name: str, selector: Selector,
                actor: str, max_rows: int = 100_000, everything: bool = False) -> ActionResult:
    """Apply an action to the selected messages, ``BATCH`` rows per transaction, at most
    ``max_rows`` in all. ``everything`` allows an empty selector (not for purge)."""
    action = ACTIONS.get(action_name)
    if action is None:
        raise QueueSelectionError(f"unknown action {action_name!r} "
                                  f"(one of {', '.join(ACTIONS)})", unknown=True)
    if selector.empty and (action.name == "purge" or not everything):
        hint = "" if action.name == "purge" else " (or --all)"
        raise QueueSelectionError(f"{action.name} needs a selector: --site, --domain, "
                                  f"--workflow, --contact or --message{hint}")
    await check_selector(connection, selector)
    args: list[Any] = [list(action.from_states)]
    where = selector.where(args)
    skip = f" AND NOT {IN_FLIGHT}" if action.skip_in_flight else ""
    args.append(BATCH)
    statement = f"""
        WITH picked AS (
            SELECT m.id FROM outbound_messages AS m
            WHERE m.state = ANY($1::text[]) AND {where}{skip}
            ORDER BY m.created_at
            LIMIT ${len(args)}
            FOR UPDATE
        )
        UPDATE outbound_messages AS m SET {action.set_sql}
        FROM picked WHERE m.id = picked.id
        RETURNING m.id, m.contact_id, m.recipient, m.recipient_domain,
                  m.metadata->>'workflow' AS workflow, m.state
    """
    action_id = uuid.uuid4().hex[:12]
    affected = 0
    more = False
    while True:
        if affected >= max_rows:
            more = True
            break
        async with connection.transaction():
            rows = await connection.fetch(statement, *args)
            now = datetime.now(UTC)
            await append_rows(connection, [_event(action, action_id, selector, actor, row, now)
                                           for row in rows])
        affected += len(rows)
        if len(rows) < BATCH:
            break
    in_flight = 0
    if action.skip_in_flight:
        count_args: list[Any] = [list(action.from_states)]
        in_flight = await connection.fetchval(
            "SELECT count(*) FROM outbound_messages AS m WHERE m.state = ANY($1::text[]) "
            f"AND {selector.where(count_args)} AND {IN_FLIGHT}", *count_args)
    return ActionResult(action.name, affected, in_flight, more)


def _event(action: Action, action_id: str, selector: Selector, actor: str,
           row: asyncpg.Record, now: datetime) -> tuple[Any, ...]:
    properties = {"message_id": str(row["id"]), "action": action.name, "actor": actor,
                  "selector": selector.as_dict(), "recipient_domain": row["recipient_domain"],
                  "state": row["state"]}
    if row["workflow"] is not None:
        properties["workflow"] = row["workflow"]
    return (f"queue:{action.name}:{action_id}:{row['id']}", action.event_type,
            row["contact_id"], row["recipient"], properties, now, "queue")
