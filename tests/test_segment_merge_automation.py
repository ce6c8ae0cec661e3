"""Joining an anonymous id to a contact with the live automation engine: the anonymous events
fire for the contact once, repeated identifies, an alias and a restart never send twice, and
explain says what was joined."""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

import httpx

from automation.loading.catalog import Catalog
from automation.tools.explain import explain, render_text
from engine.database import Database
from engine.eventlog_reader import head
from tests.support.app import running_app
from tests.support.automation import automation_service, wait_for

# reentry: always: every trigger event starts a run, so an event seen twice would send twice.
VIEWED = """
reentry: always
trigger: {type: event, event: Product Viewed}
steps:
  - id: viewed
    send: viewed
"""


def catalog(tmp_path: Path) -> Catalog:
    (tmp_path / "wf").mkdir()
    (tmp_path / "wf" / "viewed.yaml").write_text(VIEWED)
    (tmp_path / "tpl" / "viewed").mkdir(parents=True)
    (tmp_path / "tpl" / "viewed" / "subject.txt").write_text("You looked at {{ event.sku }}")
    (tmp_path / "tpl" / "viewed" / "body.txt").write_text("Hi {{ unsubscribe_url }}")
    return Catalog.load(tmp_path / "wf", tmp_path / "tpl")


async def sends(connection: Any) -> list[str]:
    rows = await connection.fetch("SELECT contact_id FROM outbound_messages ORDER BY created_at")
    return [row["contact_id"] for row in rows]


async def test_a_join_sends_once_and_later_merges_never_again(
        database: Database, database_url: str, tmp_path: Path) -> None:
    workflows = catalog(tmp_path)
    async with running_app(database_url) as app:
        auth = "Basic " + base64.b64encode(f"{app.admin_key}:".encode()).decode()
        client = httpx.AsyncClient(base_url=app.base_url, headers={"Authorization": auth})

        async def post(path: str, **message: Any) -> None:
            response = await client.post(path, json=message)
            assert response.status_code == 200, response.text

        async def settled(service: Any) -> None:
            async def caught_up(connection: Any) -> bool:
                return bool(service.cursor >= await head(connection))
            await wait_for(database_url, caught_up)

        async with automation_service(database, workflows) as service:
            await post("/v1/track", messageId="a1", anonymousId="v1", event="Product Viewed",
                       properties={"sku": "Z1"})
            await settled(service)
            async with database.connection() as connection:
                assert await sends(connection) == []  # anonymous: nobody to mail, no run
            await post("/v1/identify", messageId="i1", userId="u1", anonymousId="v1",
                       traits={"email": "ann@example.com"})

            async def one_sent(connection: Any) -> bool:
                return len(await sends(connection)) == 1
            await wait_for(database_url, one_sent)
            # What SDKs do all day: identify again; and an alias of the same visitor.
            await post("/v1/identify", messageId="i2", userId="u1", anonymousId="v1")
            await post("/v1/alias", messageId="al1", userId="u1", previousId="v1")
            await post("/v1/identify", messageId="i1", userId="u1", anonymousId="v1",
                       traits={"email": "ann@example.com"})  # a retried identify
            await settled(service)
            async with database.connection() as connection:
                assert await sends(connection) == ["u1"]
            # The visitor browses on, still anonymous to the client: it is u1's now.
            await post("/v1/track", messageId="a2", anonymousId="v1", event="Product Viewed",
                       properties={"sku": "Z2"})

            async def two_sent(connection: Any) -> bool:
                return len(await sends(connection)) == 2
            await wait_for(database_url, two_sent)
        # A restart replays from the snapshot: the copies are not new to it.
        async with automation_service(database, workflows) as service:
            await post("/v1/identify", messageId="i3", userId="u1", anonymousId="v1")
            await settled(service)
        await client.aclose()
    async with database.connection() as connection:
        assert await sends(connection) == ["u1", "u1"]
        report = await explain(connection, workflows, "u1")
        anonymous = await explain(connection, workflows, "anon:v1")
    assert [j["anonymous_id"] for j in report["anonymous_ids"]] == ["v1"]
    assert report["workflows"][0]["summary"].startswith("2 run(s)")
    assert anonymous["joined_to"] == "u1"
    assert anonymous["workflows"][0]["summary"].startswith("never triggered")
    assert "anonymous id v1 joined" in render_text(report)
