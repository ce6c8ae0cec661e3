"""The automation's statements are planned once per connection, not on every run: a group's
transaction runs its statements' generic plans (the setting ends with the transaction), and
the leader's own connection plans generically for good.

Under Postgres's default (``auto``), the first five runs of a prepared statement are custom
plans, and a statement over a small array stays on custom plans for good; a count of custom
plans above zero is what the default leaves behind."""

from __future__ import annotations

from typing import Any

from automation.live.service import leader_connection
from automation.stores.group_sql import CONTACTS, REENTRY
from engine.database import Database
from engine.eventlog_reader import READ_AFTER, LogCursor, read_after
from tests.support.automation import automation_service, post_event, wait_for

PLANS = "SELECT generic_plans, custom_plans FROM pg_prepared_statements WHERE statement = $1"


async def test_a_groups_statements_run_their_generic_plans_and_the_pool_keeps_the_default(
        database_url: str) -> None:
    database = await Database.connect(database_url, min_size=1, max_size=2)
    try:
        async with automation_service(database):
            for n in range(7):  # more runs than auto's five custom plans
                await post_event(database, f"c{n}", "signed_up", email=f"u{n}@example.com")

                async def sent(connection: Any, contact: str = f"c{n}") -> bool:
                    return bool(await connection.fetchval(
                        "SELECT count(*) FROM outbound_messages WHERE contact_id = $1",
                        contact))

                await wait_for(database_url, sent)  # one group per sign-up
        # Both of the pool's connections at once: the statements were prepared on either.
        async with database.connection() as first, database.connection() as second:
            plans = {statement: [0, 0] for statement in (REENTRY, CONTACTS)}
            for connection in (first, second):
                assert await connection.fetchval("SHOW plan_cache_mode") == "auto"
                for statement, counts in plans.items():
                    row = await connection.fetchrow(PLANS, statement)
                    if row is not None:
                        counts[0] += row["generic_plans"]
                        counts[1] += row["custom_plans"]
    finally:
        await database.close()
    for generic, custom in plans.values():
        assert generic >= 7 and custom == 0


async def test_the_leaders_connection_plans_the_log_reads_generically(
        database: Database) -> None:
    connection = await leader_connection(database)
    try:
        for _ in range(7):
            await read_after(connection, LogCursor(), 100)
        assert await connection.fetchval("SHOW plan_cache_mode") == "force_generic_plan"
        row = await connection.fetchrow(PLANS, READ_AFTER)
        assert row["generic_plans"] == 7 and row["custom_plans"] == 0
    finally:
        await connection.close()
