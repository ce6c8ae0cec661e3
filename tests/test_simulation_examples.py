"""The shipped example workflows on the simulator (the real core on a virtual clock): every
branch of every example, and each trigger missed by a little."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest

from automation.loading.catalog import Catalog
from automation.settings import AutomationSettings
from automation.tools.simulate import Simulator, output_line, parse_lines

REPO = Path(__file__).resolve().parent.parent
T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)


@pytest.fixture(scope="module")
def catalog() -> Catalog:
    return Catalog.load(REPO / "config" / "workflows", REPO / "config" / "templates")


def at(**delta: float) -> str:
    return (T0 + timedelta(**delta)).isoformat().replace("+00:00", "Z")


def contact(cid: str, **attributes: Any) -> dict[str, Any]:
    return {"kind": "contact", "contact_id": cid, "email": f"{cid}@example.com",
            "attributes": {"first_name": cid.title(), **attributes}, "timezone": "Europe/Paris"}


def event(cid: str, kind: str, when: str, **properties: Any) -> dict[str, Any]:
    return {"type": kind, "contact_id": cid, "timestamp": when, "properties": properties}


async def run(catalog: Catalog, lines: list[dict[str, Any]], horizon: float = 30,
              workflow: str | None = None) -> list[tuple[str, str, str, str]]:
    """(time offset, contact, step, template or 'skipped: ...') for one workflow's output."""
    parsed = parse_lines(orjson.dumps(line) for line in lines)
    results = await Simulator(catalog, AutomationSettings()).run(parsed,
                                                                 timedelta(days=horizon))
    out = []
    for result in results:
        if workflow is not None and result["workflow"] != workflow:
            continue
        offset = result["at"] - T0
        what = result.get("template") or f"skipped: {result['skipped']}"
        out.append((_fmt(offset), result["contact_id"], result["step"], what))
    return out


def _fmt(delta: timedelta) -> str:
    minutes = int(delta.total_seconds() // 60)
    return f"{minutes // 1440}d{minutes % 1440 // 60:02d}h{minutes % 60:02d}m"


# --- welcome ---------------------------------------------------------------------------------

async def test_welcome_series_without_clicks_ends_with_the_offer(catalog: Catalog) -> None:
    lines = [contact("ann"), event("ann", "signed_up", at())]
    assert await run(catalog, lines, workflow="welcome") == [
        ("0d00h00m", "ann", "welcome-1", "welcome-1"),
        ("1d00h00m", "ann", "welcome-2", "welcome-2"),
        ("3d00h00m", "ann", "welcome-3", "welcome-3"),
        ("4d00h00m", "ann", "welcome-offer", "welcome-offer"),
    ]


async def test_welcome_click_tags_engaged_and_sends_no_offer(catalog: Catalog) -> None:
    lines = [contact("bob"), event("bob", "signed_up", at()),
             event("bob", "email_clicked", at(days=1, hours=2), workflow="welcome",
                   step="welcome-2", url="https://shop.example.com/new")]
    simulator = Simulator(catalog, AutomationSettings())
    results = await simulator.run(parse_lines(orjson.dumps(x) for x in lines),
                                  timedelta(days=30))
    sent = [r["template"] for r in results if r["workflow"] == "welcome"]
    assert sent == ["welcome-1", "welcome-2", "welcome-3"]
    assert "engaged" in simulator.store.contacts["bob"].attributes["tags"]


async def test_welcome_runs_once_ever(catalog: Catalog) -> None:
    lines = [contact("cy"), event("cy", "signed_up", at()),
             event("cy", "signed_up", at(days=10))]
    sends = await run(catalog, lines, workflow="welcome")
    assert [s[2] for s in sends] == ["welcome-1", "welcome-2", "welcome-3", "welcome-offer"]


# --- abandoned cart --------------------------------------------------------------------------

async def test_cart_reminders_when_no_order_follows(catalog: Catalog) -> None:
    lines = [contact("dee"), event("dee", "cart_updated", at(), cart_id="A",
                                   items=[{"sku": "S1", "name": "Shoe", "price": 80,
                                           "quantity": 1}])]
    assert await run(catalog, lines, workflow="abandoned-cart") == [
        ("0d00h30m", "dee", "cart-reminder-1", "cart-reminder-1"),
        ("1d00h30m", "dee", "cart-reminder-2", "cart-reminder-2"),
    ]


@pytest.mark.parametrize(("order_after", "expected"), [
    ({"minutes": 29}, []),
    ({"minutes": 31}, ["cart-reminder-1"]),
    ({"hours": 24, "minutes": 29}, ["cart-reminder-1"]),
    ({"hours": 24, "minutes": 31}, ["cart-reminder-1", "cart-reminder-2"]),
])
async def test_cart_order_timing(catalog: Catalog, order_after: dict[str, float],
                                 expected: list[str]) -> None:
    lines = [contact("eve"), event("eve", "cart_updated", at(), cart_id="A", items=[]),
             event("eve", "order_completed", at(**order_after), cart_id="A", amount=10)]
    sends = await run(catalog, lines, workflow="abandoned-cart")
    assert [s[3] for s in sends] == expected


async def test_cart_deadline_counts_from_the_latest_update(catalog: Catalog) -> None:
    lines = [contact("fay"), event("fay", "cart_updated", at(), cart_id="A", items=[]),
             event("fay", "cart_updated", at(minutes=20), cart_id="A", items=[])]
    sends = await run(catalog, lines, horizon=0.5, workflow="abandoned-cart")
    assert sends[0][:3] == ("0d00h50m", "fay", "cart-reminder-1")


async def test_an_order_for_another_cart_does_not_cancel(catalog: Catalog) -> None:
    lines = [contact("gus"), event("gus", "cart_updated", at(), cart_id="A", items=[]),
             event("gus", "order_completed", at(minutes=10), cart_id="B", amount=5)]
    sends = await run(catalog, lines, workflow="abandoned-cart")
    assert [s[3] for s in sends] == ["cart-reminder-1", "cart-reminder-2"]


# --- browse abandonment ----------------------------------------------------------------------

def views(cid: str, sku: str, *hours: float) -> list[dict[str, Any]]:
    return [event(cid, "product_viewed", at(hours=h), sku=sku, name="Lamp", price=40)
            for h in hours]


@pytest.mark.parametrize(("hours", "fires"), [
    ((0, 1, 2), True),
    ((0, 1), False),
    ((0, 12, 23), True),
    ((0, 12, 25), False),
])
async def test_browse_needs_three_views_within_24h(catalog: Catalog, hours: tuple[float, ...],
                                                   fires: bool) -> None:
    lines = [contact("hal"), *views("hal", "L1", *hours)]
    sends = await run(catalog, lines, workflow="browse-abandonment")
    assert [s[2] for s in sends] == (["browse-followup"] if fires else [])


async def test_browse_is_suppressed_by_a_cart_with_that_sku(catalog: Catalog) -> None:
    lines = [contact("ida"), *views("ida", "L1", 0, 1),
             event("ida", "cart_updated", at(hours=1.5), cart_id="C",
                   items=[{"sku": "L1", "name": "Lamp", "price": 40, "quantity": 1}]),
             *views("ida", "L1", 2)]
    assert await run(catalog, lines, horizon=0.1, workflow="browse-abandonment") == []


async def test_browse_once_per_sku_per_seven_days(catalog: Catalog) -> None:
    lines = [contact("jo"), *views("jo", "L1", 0, 1, 2), *views("jo", "L1", 50, 51, 52),
             *views("jo", "L2", 53, 54, 55), *views("jo", "L1", 200, 201, 202)]
    sends = await run(catalog, lines, horizon=1, workflow="browse-abandonment")
    assert [s[0] for s in sends] == ["0d02h00m", "2d07h00m", "8d10h00m"]


# --- post purchase ---------------------------------------------------------------------------

async def test_post_purchase_thanks_then_review(catalog: Catalog) -> None:
    lines = [contact("kim"), event("kim", "order_completed", at(), order_id="O1", amount=30)]
    assert await run(catalog, lines, workflow="post-purchase") == [
        ("0d00h00m", "kim", "order-thanks", "order-thanks"),
        ("3d00h00m", "kim", "review-request", "review-request"),
    ]


# --- win-back --------------------------------------------------------------------------------

async def test_win_back_two_mails_then_inactive(catalog: Catalog) -> None:
    lines = [contact("lea"), event("lea", "page_viewed", at(), path="/")]
    simulator = Simulator(catalog, AutomationSettings())
    results = await simulator.run(parse_lines(orjson.dumps(x) for x in lines),
                                  timedelta(days=90))
    sends = [(r["at"] - T0).days for r in results if r["workflow"] == "win-back"]
    assert sends == [60, 67]
    assert simulator.store.contacts["lea"].attributes["status"] == "inactive"


@pytest.mark.parametrize(("activity_day", "expected"), [
    (59, []),                 # active again a day before the 60 quiet days: no win-back yet
    (62, [60]),               # back after winback-1: the run ends, no winback-2
    (66, [60]),
    (68, [60, 67]),           # back after winback-2: ends before status=inactive
])
async def test_win_back_ends_on_activity(catalog: Catalog, activity_day: int,
                                         expected: list[int]) -> None:
    lines = [contact("max"), event("max", "page_viewed", at(), path="/"),
             event("max", "email_opened", at(days=activity_day), workflow="x", step="y")]
    simulator = Simulator(catalog, AutomationSettings())
    results = await simulator.run(parse_lines(orjson.dumps(x) for x in lines),
                                  timedelta(days=0.5))
    assert [(r["at"] - T0).days for r in results if r["workflow"] == "win-back"] == expected
    assert simulator.store.contacts["max"].attributes.get("status") is None


# --- loyalty milestone -----------------------------------------------------------------------

async def test_loyalty_at_500_once_ever(catalog: Catalog) -> None:
    lines = [contact("ned"),
             event("ned", "order_completed", at(), order_id="1", amount=200),
             event("ned", "order_completed", at(days=1), order_id="2", amount=250),
             event("ned", "order_completed", at(days=2), order_id="3", amount=100),
             event("ned", "order_completed", at(days=3), order_id="4", amount=600)]
    sends = await run(catalog, lines, workflow="loyalty-milestone")
    assert sends == [("2d00h00m", "ned", "loyalty-welcome", "loyalty-welcome")]


async def test_loyalty_not_reached_at_499(catalog: Catalog) -> None:
    lines = [contact("ola"), event("ola", "order_completed", at(), order_id="1", amount=499)]
    assert await run(catalog, lines, workflow="loyalty-milestone") == []


# --- guards and determinism ------------------------------------------------------------------

async def test_suppressed_and_unsubscribed_contacts_are_skipped_with_reasons(
        catalog: Catalog) -> None:
    lines = [contact("pam", unsubscribed=True), event("pam", "signed_up", at()),
             {"kind": "contact", "contact_id": "quinn", "attributes": {}},
             event("quinn", "signed_up", at())]
    sends = await run(catalog, lines, horizon=0.1, workflow="welcome")
    assert sends == [("0d00h00m", "pam", "welcome-1", "skipped: unsubscribed"),
                     ("0d00h00m", "quinn", "welcome-1", "skipped: no email address")]


async def test_same_input_same_output(catalog: Catalog) -> None:
    lines = [contact(f"c{i}") for i in range(20)]
    for i in range(20):
        lines += [event(f"c{i}", "signed_up", at(minutes=i)),
                  event(f"c{i}", "cart_updated", at(hours=i), cart_id=f"k{i}", items=[]),
                  *views(f"c{i}", "S", i, i + 1, i + 2)]
    payload = [orjson.dumps(x) for x in lines]
    first = await Simulator(catalog, AutomationSettings()).run(parse_lines(payload),
                                                               timedelta(days=10))
    second = await Simulator(catalog, AutomationSettings()).run(parse_lines(payload),
                                                                timedelta(days=10))
    assert [output_line(r) for r in first] == [output_line(r) for r in second]
    assert len(first) > 60


# --- double opt-in ---------------------------------------------------------------------------

async def test_double_opt_in_confirmed_unconfirmed_and_confirmed_then_withdrawn(
        catalog: Catalog) -> None:
    out = await run(catalog, [
        contact("ann"), contact("bo"), contact("cy"),
        event("ann", "consent_requested", at()), event("ann", "consent_given", at(hours=2)),
        event("bo", "consent_requested", at()),
        event("cy", "consent_requested", at()), event("cy", "consent_withdrawn", at(hours=1)),
        event("cy", "consent_given", at(days=8))], workflow="double-opt-in")
    assert out == [("0d00h00m", "ann", "confirm", "confirm-subscription"),
                   ("0d00h00m", "bo", "confirm", "confirm-subscription"),
                   ("0d00h00m", "cy", "confirm", "confirm-subscription"),
                   ("0d02h00m", "ann", "subscribed", "subscription-confirmed")]
