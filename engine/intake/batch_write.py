"""How one batch of the event log's group commit is written (see :mod:`engine.intake.writer`
for how batches are formed and answered).

A plain batch (contacts named, no anonymous ids, joins or traits: the native API's events;
fewer than :data:`PLAIN_MAX_EVENTS`) is one autocommitted statement, its contacts and its
events together, durable before any 202 and atomic: a batch the database refuses leaves no
contact behind. Its ids go in with no per-id conflict handling: a batch repeating a stored id
fails and is written again by a statement that claims each id. A larger plain batch is one
transaction: its contacts and its ids in one statement (optimistically too: a batch repeating
a stored id is rolled back and written again with per-id claims), then its events by COPY.
Other batches run in one transaction, where anonymous ids are resolved and joins and traits
applied. None of them NOTIFYs: the writer wakes the log's followers after its commits
(:mod:`engine.intake.log_wakeups`).
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import cast

import asyncpg

from engine.database import Database
from engine.eventlog import (
    BATCH_ROWS,
    COPY_MIN_ROWS,
    INSERT_BATCH_ROWS,
    append_typed,
    copy_claimed,
)
from engine.intake.identities import (
    apply_identity,
    lock_and_resolve,
    stored_joins,
)
from engine.intake.known_contacts import BEGIN_SHARED, GENERATION, NEVER, KnownContacts
from engine.intake.rows import RequestPart, batch_rows, email_owners
from engine.intake.validation import EventIn
from engine.metrics import INTAKE_CLAIM_FALLBACKS

# New contacts only; existing rows are not locked, so concurrent batches do not contend.
INSERT_CONTACTS = """
    INSERT INTO contacts (contact_id, email)
    SELECT * FROM unnest($1::text[], $2::text[])
    ON CONFLICT (contact_id) DO NOTHING
"""
FILL_MISSING_EMAILS = """
    UPDATE contacts AS c SET email = u.email, updated_at = now()
    FROM unnest($1::text[], $2::text[]) AS u(contact_id, email)
    WHERE c.contact_id = u.contact_id AND c.email IS NULL AND u.email IS NOT NULL
"""


@asynccontextmanager
async def batch_transaction(database: Database, managed: bool
                            ) -> AsyncIterator[asyncpg.Connection]:
    """A batch's transaction. ``managed``: asyncpg's own (needed when something in it opens a
    nested transaction, i.e. a savepoint); else a plain BEGIN ... COMMIT. Errors leave as
    :mod:`engine.errors` types."""
    if managed:
        async with database.transaction() as connection:
            yield connection
        return
    async with database.connection() as connection:
        await connection.execute("BEGIN")
        try:
            yield connection
        except BaseException:
            with contextlib.suppress(Exception):  # a broken connection: the pool drops it
                await connection.execute("ROLLBACK")
            raise
        await connection.execute("COMMIT")


# A plain batch's contacts, as CTEs of the statement that also claims its ids: $2 the contact
# ids in sort order, $3 an email or null each (JSON arrays, see below); new contacts
# inserted, missing emails filled (rows the insert makes have theirs). ``contacts_done`` gates
# the claims, so every statement writes contacts before event ids (one order: concurrent
# batches cannot deadlock on them).
def _contacts_ctes(contact_rows: str) -> str:
    return f"""
    contact_rows AS ({contact_rows}
    ), inserted_contacts AS (
        INSERT INTO contacts (contact_id, email)
        SELECT contact_id, email FROM contact_rows
        ON CONFLICT (contact_id) DO NOTHING
        RETURNING 1
    ), filled_emails AS (
        UPDATE contacts AS c SET email = u.email, updated_at = now()
        FROM contact_rows AS u
        WHERE c.contact_id = u.contact_id AND c.email IS NULL AND u.email IS NOT NULL
        RETURNING 1
    ), contacts_done AS (
        SELECT (SELECT count(*) FROM inserted_contacts) + (SELECT count(*) FROM filled_emails)
            AS n
    )"""


# The small batches' contacts, as JSON arrays too: a text[] would cost ~20 µs of the HTTP
# process's CPU per statement, and with unnest the planner's row estimate of a small constant
# array made Postgres's default plan mode re-plan the statement at every run.
_PLAIN_CONTACTS = _contacts_ctes(
    """SELECT * FROM ROWS FROM (json_array_elements_text($2::json),
                                json_array_elements_text($3::json)) AS u(contact_id, email)""")
# The large batches' contacts: $2 those to write (not known to exist, or with an address, which
# may fill a missing one) and $3 an email or null each, $4 those known to exist (in sort
# order, like $2) and $5 the generation that knowledge is from: the known ones are written
# too only when the stored generation differs (a one-time filter: otherwise $4 is not even
# read), and the rows are then merged into one sort order. The arrays travel as JSON text
# (asyncpg checks every element of a text[] against two abstract base classes in Python,
# ~0.3 µs each: about 1 µs of the HTTP process's CPU per event).
_KNOWN_CONTACT_ROWS = """
        SELECT contact_id, email FROM (
            SELECT contact_id, email
            FROM ROWS FROM (json_array_elements_text($2::json),
                            json_array_elements_text($3::json)) AS u(contact_id, email)
            UNION ALL
            SELECT contact_id, NULL FROM json_array_elements_text($4::json) AS contact_id
            WHERE (SELECT generation FROM generation) IS DISTINCT FROM $5
        ) AS u ORDER BY contact_id"""

# A small plain batch in ONE statement, autocommitted (so atomic and durable before any 202):
# its contacts, then the events of $1 (rows as engine.eventlog.INSERT_EVENTS takes them; in
# batch order) and their ids in event_ids. A batch the database refuses leaves nothing behind,
# not even a contact. The rows never repeat an id (the writer flags repeats within a batch as
# duplicates and batch_rows leaves them out), so no statement here keeps "the first row of an
# id" as INSERT_EVENTS does.
def _plain_statement(ids: str, events_and_result: str) -> str:
    return f"""
    WITH {_PLAIN_CONTACTS}, batch AS (
        {BATCH_ROWS}
        WHERE (SELECT n FROM contacts_done) >= 0
    ), claimed AS (
        INSERT INTO event_ids (event_id)
        SELECT r->>0 FROM batch WHERE r->>0 IS NOT NULL ORDER BY r->>0
        {ids}
    ){events_and_result}"""


# Optimistically: every id inserted with no ON CONFLICT (no speculative insertion, no
# semi-join of the rows with the claims, nothing returned: ~14 against ~24 µs of Postgres CPU
# per event, docs/PERFORMANCE.md "Seventh pass"). A repeat of a stored id, or of
# one a concurrent batch committed, fails the statement with a unique violation on
# event_ids_pkey (after waiting, as a claim does, for a concurrent batch holding the id to
# end): nothing of it is left, and the batch is written again with WRITE_PLAIN_CLAIMING. The
# id insert, read by nothing, runs after the events' (a data-modifying CTE always runs), still
# after the contacts: the lock order is unchanged.
WRITE_PLAIN = _plain_statement("", f"""
    {INSERT_BATCH_ROWS}
    ORDER BY n""")

# The same batch with per-id claims: an id already stored is skipped, and returned (the ids
# NOT stored: usually few, so not one row per event).
WRITE_PLAIN_CLAIMING = _plain_statement("ON CONFLICT (event_id) DO NOTHING RETURNING event_id",
                                        f""", stored AS ({INSERT_BATCH_ROWS}
        WHERE r->>0 IS NULL OR r->>0 IN (SELECT event_id FROM claimed)
        ORDER BY n
    )
    SELECT r->>0 AS event_id FROM batch
    WHERE r->>0 IS NOT NULL AND r->>0 NOT IN (SELECT event_id FROM claimed)""")


def _claiming_statement(conflict_and_returning: str, result: str) -> str:
    """A large plain batch's statement: the contacts (see _KNOWN_CONTACT_ROWS), then the ids
    of $1 inserted in sort order (ended by ``conflict_and_returning``), then ``result``. The
    insert runs whether ``result`` reads it or not (a data-modifying CTE always does)."""
    return f"""
    WITH generation AS ({GENERATION}), {_contacts_ctes(_KNOWN_CONTACT_ROWS)}, claimed AS (
        INSERT INTO event_ids (event_id)
        SELECT id FROM json_array_elements_text($1::json) AS id
        WHERE (SELECT n FROM contacts_done) >= 0
        ORDER BY id
        {conflict_and_returning}
    )
    {result}"""


# A large plain batch that repeats a stored id (see OPTIMISTIC_PLAIN, tried first), in one
# transaction begun by BEGIN_SHARED (engine.intake.known_contacts):
# this statement writes the contacts the process does not know to exist ($2, $3; those of $4
# too when the stored generation is not $5, see _KNOWN_CONTACT_ROWS) and claims the ids of $1;
# then COPY of the rows whose ids it claimed (engine.eventlog's copy_claimed). It returns the
# ids it did NOT claim (repeats of stored ids: usually none, so no row per event) and one row
# with the generation it read.
CLAIM_PLAIN = _claiming_statement("ON CONFLICT (event_id) DO NOTHING RETURNING event_id", """
    SELECT id AS event_id, NULL::bigint AS generation
    FROM json_array_elements_text($1::json) AS id
    WHERE id NOT IN (SELECT event_id FROM claimed)
    UNION ALL
    SELECT NULL, (SELECT generation FROM generation)""")

# The same batch, optimistically: the ids of $1 inserted with no ON CONFLICT (no speculative
# insertion, no anti-join: about 2 µs of Postgres CPU per event less, docs/PERFORMANCE.md). A
# repeat of a stored id, or of one a concurrent batch committed, fails the statement with a
# unique violation on event_ids_pkey (after waiting, as the claim does, for a concurrent batch
# holding the id to end); the batch is then rolled back and written with CLAIM_PLAIN. Same
# lock order (contacts, then ids in sort order), same parameters; one row: the generation.
OPTIMISTIC_PLAIN = _claiming_statement("", """
    SELECT (SELECT generation FROM generation) AS generation""")
EVENT_IDS_KEY = "event_ids_pkey"

# Larger plain batches: OPTIMISTIC_PLAIN (or CLAIM_PLAIN), then COPY, in one transaction.
PLAIN_MAX_EVENTS = 4 * COPY_MIN_ROWS


class DryRunDone(Exception):
    """Ends a dry-run write: its transaction is rolled back."""


def is_plain(events: list[EventIn], anonymous: list[str]) -> bool:
    """Whether a batch can take the plain path (no identity work, small enough)."""
    return len(events) < PLAIN_MAX_EVENTS and has_no_identity_work(events, anonymous)


def has_no_identity_work(events: list[EventIn], anonymous: list[str]) -> bool:
    """No anonymous ids to resolve, no joins, no traits: contacts named, events stored."""
    return not anonymous and not any(e.joins_anonymous or e.traits is not None
                                     for e in events)


async def write_plain(database: Database, parts: list[RequestPart], events: list[EventIn]
                      ) -> frozenset[str]:
    """A plain batch in one autocommitted statement (:data:`WRITE_PLAIN`: its contacts and
    its events, atomic; :data:`WRITE_PLAIN_CLAIMING` instead when an id is already
    stored). The rows must not repeat an id (see the writer). Returns the ids NOT stored
    (repeats of stored ids: usually none); every other event was stored."""
    async with database.connection() as connection:
        email_owner = await email_owners(connection, events)
        built = batch_rows(parts, email_owner, {}, set())
        contact_ids = sorted(built.contacts)  # one lock order for every batch
        arguments = (built.rows, contact_ids, [built.contacts[c] for c in contact_ids])
        try:
            await connection.execute(WRITE_PLAIN, *arguments)
        except asyncpg.UniqueViolationError as exc:
            if exc.constraint_name != EVENT_IDS_KEY:
                raise
            INTAKE_CLAIM_FALLBACKS.inc()
            rows = await connection.fetch(WRITE_PLAIN_CLAIMING, *arguments)
            return frozenset(row[0] for row in rows)
    return _NONE


_NONE: frozenset[str] = frozenset()


async def write_in_transaction(database: Database, parts: list[RequestPart],
                               events: list[EventIn], anonymous: list[str],
                               commit: bool, known: KnownContacts) -> set[str]:
    """Any batch in one transaction; with ``commit`` false it ends in :class:`DryRunDone`
    (rolled back). ``known``: the contacts the process knows (used by plain batches)."""
    if commit and has_no_identity_work(events, anonymous):
        return await write_plain_copy(database, parts, events, known)
    # Trait updates (upsert_contact) use a savepoint: those batches need asyncpg's own.
    managed = any(event.traits is not None for event in events)
    async with batch_transaction(database, managed) as connection:
        email_owner = await email_owners(connection, events)
        joined = await lock_and_resolve(connection, anonymous)
        already = await stored_joins(connection, events)
        built = batch_rows(parts, email_owner, joined, already)
        contact_ids = sorted(built.contacts)  # one lock order for every batch: no deadlocks
        contact_emails = [built.contacts[c] for c in contact_ids]
        await connection.execute(INSERT_CONTACTS, contact_ids, contact_emails)
        if any(email is not None for email in contact_emails):
            await connection.execute(FILL_MISSING_EMAILS, contact_ids, contact_emails)
        stored_ids = await append_typed(connection, built.rows, notify=False)
        await apply_identity(connection, built.joins, built.updates, stored_ids)
        if not commit:
            raise DryRunDone
    return stored_ids



async def write_plain_copy(database: Database, parts: list[RequestPart],
                           events: list[EventIn], known: KnownContacts) -> set[str]:
    """A large plain batch: its rows built before the transaction opens, then three round
    trips in it (BEGIN_SHARED, OPTIMISTIC_PLAIN, the COPY) and the COMMIT. When an id is
    already stored, that transaction is rolled back and the batch written again with
    CLAIM_PLAIN (which skips the repeats). Returns the stored ids; ``known`` learns the
    batch's contacts once it committed. The batch's rows repeat no id (the writer flags
    repeats within a batch as duplicates before the rows are built)."""
    async with database.connection() as connection:
        email_owner = await email_owners(connection, events)
        built = batch_rows(parts, email_owner, {}, set())
        contact_ids = sorted(built.contacts)  # one lock order for every batch
        known_ids = known.ids
        # A contact with an address is always written (its address may fill a missing one).
        written: list[str] = []
        emails: list[str | None] = []
        skipped: list[str] = []
        for contact_id in contact_ids:
            email = built.contacts[contact_id]
            if email is None and contact_id in known_ids:
                skipped.append(contact_id)
            else:
                written.append(contact_id)
                emails.append(email)
        ids = cast(list[str], [row[0] for row in built.rows if row[0] is not None])
        arguments = (ids, written, emails, skipped, known.generation)
        try:
            await connection.execute(BEGIN_SHARED)  # may wait for an erase to commit
            try:
                generation = await connection.fetchval(OPTIMISTIC_PLAIN, *arguments)
            except asyncpg.UniqueViolationError as exc:
                if exc.constraint_name != EVENT_IDS_KEY:
                    raise
                await connection.execute("ROLLBACK")
                INTAKE_CLAIM_FALLBACKS.inc()
                await connection.execute(BEGIN_SHARED)
                generation, claimed = await _claim(connection, ids, arguments)
            else:
                claimed = set(ids)
            await copy_claimed(connection, built.rows, claimed,
                               all_new=len(claimed) == len(ids))
        except BaseException:
            with contextlib.suppress(Exception):  # a broken connection: the pool drops it
                await connection.execute("ROLLBACK")
            raise
        await connection.execute("COMMIT")
    known.learn(generation, contact_ids)
    return claimed


async def _claim(connection: asyncpg.Connection, ids: list[str],
                 arguments: tuple[object, ...]) -> tuple[int, set[str]]:
    """CLAIM_PLAIN: the generation read and the ids claimed (those not stored before)."""
    generation = NEVER
    unclaimed: set[str] = set()
    for row in await connection.fetch(CLAIM_PLAIN, *arguments):
        if row["event_id"] is None:
            generation = row["generation"]
        else:
            unclaimed.add(row["event_id"])
    return generation, set(ids) - unclaimed
