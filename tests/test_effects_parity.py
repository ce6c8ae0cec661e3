"""One effects path: the simulator and the live engine apply suppressions and guards through
the same code, so the same scenario gives the same sends and skips, reason by reason."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import orjson

from automation.settings import AutomationSettings
from automation.tools.simulate import Simulator, parse_lines
from engine.database import Database
from engine.eventlog import LogEvent, append_events
from tests.support.automation import automation_service, example_catalog, post_event, wait_for

T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
FIRST_STEPS = ("welcome-1", "order-thanks")

# (contact, attributes, events before signing up and ordering: (type, properties))
SCENARIO: list[tuple[str, dict[str, Any], list[tuple[str, dict[str, Any]]]]] = [
    ("ok", {}, []),
    ("posted-unsubscribe", {}, [("unsubscribed", {})]),
    ("one-click", {}, [("email_unsubscribed", {"unsubscribe_category": ""})]),
    ("news-only", {}, [("email_unsubscribed", {"unsubscribe_category": "news"})]),
    ("complained", {}, [("email_complained", {"feedback_type": "abuse"})]),
    ("hard", {}, [("email_bounced", {"category": "hard"})]),
    ("async-hard", {}, [("email_bounced", {"hard": True, "kind": "async"})]),
    ("soft", {}, [("email_bounced", {"category": "soft"})]),
    ("attribute", {"unsubscribed": True}, []),
]


def outcome(step: str, action: str, detail: str) -> str:
    return "sent" if action == "sent" else f"skipped: {detail}"


async def simulated() -> dict[tuple[str, str], str]:
    lines: list[dict[str, Any]] = []
    for contact_id, attributes, before in SCENARIO:
        lines.append({"kind": "contact", "contact_id": contact_id,
                      "email": f"{contact_id}@example.com", "attributes": attributes})
        for i, (kind, properties) in enumerate(before):
            lines.append({"type": kind, "contact_id": contact_id, "properties": properties,
                          "timestamp": (T0 + timedelta(seconds=i)).isoformat()})
        for kind, properties in (("signed_up", {}), ("order_completed", {"order_id": "o1",
                                                                           "amount": 20})):
            lines.append({"type": kind, "contact_id": contact_id, "properties": properties,
                          "timestamp": (T0 + timedelta(minutes=1)).isoformat()})
    results = await Simulator(example_catalog(), AutomationSettings()).run(
        parse_lines(orjson.dumps(line) for line in lines), timedelta(hours=1))
    return {(r["contact_id"], r["step"]): "sent" if r.get("template") else
            f"skipped: {r['skipped']}" for r in results if r["step"] in FIRST_STEPS}


async def live(database: Database, database_url: str) -> dict[tuple[str, str], str]:
    async with automation_service(database):
        for contact_id, attributes, before in SCENARIO:
            email = f"{contact_id}@example.com"
            async with database.transaction() as connection:
                await connection.execute(
                    "INSERT INTO contacts (contact_id, email, attributes) VALUES ($1, $2, $3)",
                    contact_id, email, attributes)
            for kind, properties in before:
                async with database.transaction() as connection:
                    await append_events(connection, [LogEvent(
                        kind, contact_id, email, properties, datetime.now(UTC), "test")])
            await post_event(database, contact_id, "signed_up", email=email)
            await post_event(database, contact_id, "order_completed", email=email,
                             order_id="o1", amount=20)

        async def decided(connection: Any) -> bool:
            count = await connection.fetchval(
                "SELECT count(*) FROM workflow_log WHERE step = ANY($1::text[]) "
                "AND action IN ('sent', 'skipped')", list(FIRST_STEPS))
            return bool(count == 2 * len(SCENARIO))

        await wait_for(database_url, decided)
    async with database.connection() as connection:
        rows = await connection.fetch(
            "SELECT contact_id, step, action, detail FROM workflow_log "
            "WHERE step = ANY($1::text[]) AND action IN ('sent', 'skipped')", list(FIRST_STEPS))
    return {(r["contact_id"], r["step"]): outcome(r["step"], r["action"], r["detail"])
            for r in rows}


async def test_simulator_and_live_engine_agree_send_by_send(
        database: Database, database_url: str) -> None:
    expected = await simulated()
    assert await live(database, database_url) == expected
    # and what they agree on is right:
    assert expected[("ok", "welcome-1")] == "sent"
    assert expected[("posted-unsubscribe", "welcome-1")] == "skipped: suppressed: unsubscribe"
    assert expected[("posted-unsubscribe", "order-thanks")] == "sent"  # transactional
    assert expected[("one-click", "welcome-1")] == "skipped: suppressed: unsubscribe"
    assert expected[("news-only", "welcome-1")] == "sent"
    assert expected[("complained", "order-thanks")] == "skipped: suppressed: complaint"
    assert expected[("hard", "welcome-1")] == "skipped: suppressed: hard_bounce"
    assert expected[("async-hard", "order-thanks")] == "skipped: suppressed: hard_bounce"
    assert expected[("soft", "welcome-1")] == "sent"
    assert expected[("attribute", "welcome-1")] == "skipped: unsubscribed"
    assert expected[("attribute", "order-thanks")] == "sent"
    assert len(expected) == 2 * len(SCENARIO)
