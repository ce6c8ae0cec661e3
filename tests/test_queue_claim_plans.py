"""A claim's suppression look-up runs its generic plan (planned once per connection, not on
every claim), and the setting ends with the claim's transaction."""

from __future__ import annotations

from engine.database import Database
from mta.queue import store as queue
from mta.suppression.store import LOOKUP
from tests.support.mta import identity_for, mta_settings, queue_message


async def test_a_claims_suppression_look_up_runs_its_generic_plan(database: Database) -> None:
    identity = await identity_for(database, mta_settings())
    async with database.connection() as connection:
        for n in range(7):  # more claims than auto's five custom plans
            await queue_message(database, identity, f"u{n}@example.org")
            [message], blocked = await queue.claim(connection, 10, 60, "worker")
            assert message.recipient == f"u{n}@example.org" and blocked == {}
        assert await connection.fetchval("SHOW plan_cache_mode") == "auto"
        row = await connection.fetchrow(
            "SELECT generic_plans, custom_plans FROM pg_prepared_statements "
            "WHERE statement = $1", LOOKUP)
    assert (row["generic_plans"], row["custom_plans"]) == (7, 0)
