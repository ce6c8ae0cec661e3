"""The real Segment-compatible SDKs (Python, Node, RudderStack's Python) against Herald on
loopback: every call arrives exactly once, also when a committed batch is answered 500 and the
SDK retries it; anonymous events before the identify count for the contact once."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import rudderstack.analytics.client as rudder
import segment.analytics.client as segment

from engine.database import Database
from tests.support.app import running_app
from tests.support.segment_clients import (
    Call,
    FailOnceProxy,
    install_node_client,
    run_node_sdk,
    run_python_sdk,
    scenario,
)


@pytest.fixture(scope="session")
def node_client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    try:
        yield install_node_client(tmp_path_factory.mktemp("segment-node"))
    except RuntimeError as exc:
        pytest.fail(str(exc))


async def check_arrived_once(database: Database, prefix: str, calls: list[Call]) -> None:
    async with database.connection() as connection:
        rows = await connection.fetch(
            "SELECT event_id, type, contact_id, properties FROM events "
            "WHERE source LIKE 'segment%' AND type <> 'contact_merged' ORDER BY position")
        contact = await connection.fetchrow("SELECT * FROM contacts WHERE contact_id = $1",
                                            f"{prefix}-user")
    originals = [r for r in rows if not r["event_id"].startswith("merged:")]
    counts = Counter(r["properties"]["_segment"]["message_id"] for r in originals)
    assert counts == Counter(fields["messageId"] for _, fields in calls)  # each exactly once
    # The user's view: every anonymous event once (copied at the identify or stored there).
    user = Counter(r["properties"].get("seq") for r in rows
                   if r["contact_id"] == f"{prefix}-user" and r["type"] == "Product Viewed")
    assert user == Counter([0, 1, 2, 3, 4, 100, 101, 102])
    pages = [r for r in rows if r["contact_id"] == f"{prefix}-user" and r["type"] == "page_viewed"]
    assert [r["properties"]["name"] for r in pages] == ["Pricing"]
    assert contact["email"] == f"{prefix}@example.com"
    assert contact["attributes"]["plan"] == "pro"
    library = originals[0]["properties"]["_segment"]["context"].get("library", {})
    assert library.get("name"), "the SDK's context is kept"


async def test_segment_python_sdk_gzip_and_a_retried_batch(database_url: str) -> None:
    calls = scenario("py")
    async with running_app(database_url) as app, FailOnceProxy(app.base_url) as proxy:
        errors = await asyncio.to_thread(run_python_sdk, segment.Client, proxy.url,
                                         app.admin_key, calls, gzip=True)
        assert errors == []
        assert proxy.failed == 1 and proxy.retries_seen >= 1
        await check_arrived_once(app.database, "py", calls)


async def test_segment_node_sdk_and_a_retried_batch(database_url: str,
                                                    node_client: Path) -> None:
    calls = scenario("node")
    async with running_app(database_url) as app, FailOnceProxy(app.base_url) as proxy:
        result: dict[str, Any] = await run_node_sdk(node_client, proxy.url, app.admin_key,
                                                    calls)
        assert result == {"calls": len(calls), "errors": []}
        assert proxy.failed == 1 and proxy.retries_seen >= 1
        await check_arrived_once(app.database, "node", calls)


async def test_rudderstack_python_sdk(database_url: str) -> None:
    calls = scenario("rudder")
    async with running_app(database_url) as app, FailOnceProxy(app.base_url) as proxy:
        errors = await asyncio.to_thread(run_python_sdk, rudder.Client, proxy.url,
                                         app.admin_key, calls)
        assert errors == []
        assert proxy.failed == 1
        await check_arrived_once(app.database, "rudder", calls)
