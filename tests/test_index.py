"""The trigger index: every trigger type (hits and near misses), timers, snapshots, reloads."""

from __future__ import annotations

import dataclasses
import random
import textwrap
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from automation.content.templates import TemplateSet
from automation.index.trigger_index import ContactView, Fire, IndexEvent, TriggerIndex
from automation.loading.loader import load_workflows, parse_workflow
from automation.model.definitions import Workflow

ROOT = Path(__file__).resolve().parent.parent
T0 = datetime(2026, 3, 2, 10, 0, tzinfo=UTC)
TEMPLATES = TemplateSet.from_sources({f"hello/{part}": "x" for part in ("subject.txt",
                                                                         "body.txt")})


@pytest.fixture(scope="module")
def examples() -> dict[str, Workflow]:
    loaded = load_workflows(ROOT / "config" / "workflows",
                            TemplateSet.load(ROOT / "config" / "templates"))
    return {workflow.name: workflow for workflow in loaded}


def workflow(trigger: str, name: str = "test", head: str = "") -> Workflow:
    text = (f"name: {name}\n{textwrap.dedent(head)}trigger:\n"
            + textwrap.indent(textwrap.dedent(trigger), "  ")
            + "steps:\n  - id: hello\n    send: hello\n")
    return parse_workflow(text, f"{name}.yaml", TEMPLATES)


def at(**delta: float) -> datetime:
    return T0 + timedelta(**delta)


def ev(event_type: str, when: datetime, props: dict[str, Any] | None = None,
       contact: str = "c1", position: int | None = None) -> IndexEvent:
    return IndexEvent(contact, event_type, props or {}, when, position)


def drive(index: TriggerIndex, events: Iterable[IndexEvent],
          until: datetime | None = None) -> list[Fire]:
    """As the runtime does: timers due by an event's time fire before the event is observed."""
    fires: list[Fire] = []
    for event in events:
        fires += index.fire_due(event.occurred_at)
        fires += index.observe(event)
    if until is not None:
        fires += index.fire_due(until)
    return fires


def names(fires: Sequence[Fire]) -> list[str]:
    return [fire.workflow for fire in fires]


def updated(when: datetime, attributes: dict[str, Any], changed: Sequence[str] = (),
            previous: dict[str, Any] | None = None, timezone: str | None = None,
            contact: str = "c1") -> IndexEvent:
    return ev("contact_updated", when, {
        "created": False, "changed": list(changed), "previous": previous or {},
        "attributes": attributes, "email": f"{contact}@example.com", "timezone": timezone},
        contact)


CART = {"cart_id": "k1", "items": [{"sku": "S1", "name": "Shoe", "price": 59.0}], "total": 59.0}


# --- event ---------------------------------------------------------------------------------


def test_event_trigger_fires_on_matching_events_only() -> None:
    index = TriggerIndex([workflow("event: signed_up\nwhere: {plan: pro}\n")])
    assert index.observe(ev("signed_up", T0, {"plan": "free"}, position=1)) == []
    [fire] = index.observe(ev("signed_up", at(minutes=1), {"plan": "pro"}, position=2))
    assert fire == Fire("test", "c1", at(minutes=1), "signed_up", {"plan": "pro"},
                        at(minutes=1), "event:p2")
    assert index.stats()["contacts"] == 0  # stateless


def test_unwatched_event_types_cost_a_lookup_and_keep_nothing(
        examples: dict[str, Workflow]) -> None:
    index = TriggerIndex(list(examples.values()), keep_contacts=False)
    for n in range(100):
        assert index.observe(ev("email_bounced", at(seconds=n), {"category": "hard"},
                                contact=f"c{n}", position=n)) == []
    stats = index.stats()
    assert stats["contacts"] == 0 and stats["events_used"] == 0 and stats["events_seen"] == 100
    assert index.position == 99


def test_disabled_workflows_produce_no_fires_and_keep_no_state(
        examples: dict[str, Workflow]) -> None:
    off = [dataclasses.replace(w, enabled=False) for w in examples.values()]
    index = TriggerIndex(off, keep_contacts=False)
    fires = drive(index, [ev("signed_up", T0), ev("cart_updated", T0, CART),
                          ev("order_completed", at(hours=1), {"amount": 900})], at(days=400))
    assert fires == [] and index.stats()["contacts"] == 0 and index.next_due() is None


# --- absence: abandoned-cart ---------------------------------------------------------------


def test_cart_absence_fires_30_minutes_after_the_cart(examples: dict[str, Workflow]) -> None:
    index = TriggerIndex([examples["abandoned-cart"]])
    assert drive(index, [ev("cart_updated", T0, CART, position=7)], at(minutes=29)) == []
    assert index.next_due() == at(minutes=30)
    [fire] = index.fire_due(at(minutes=31))
    assert fire == Fire("abandoned-cart", "c1", at(minutes=30), "cart_updated", CART, T0,
                        'absence:"k1":2026-03-02T10:00:00+00:00')
    assert index.fire_due(at(days=30)) == [] and index.stats()["contacts"] == 0


@pytest.mark.parametrize(("order_after", "fires"), [(29, 0), (31, 1)])
def test_an_order_for_the_cart_within_30_minutes_cancels(
        examples: dict[str, Workflow], order_after: int, fires: int) -> None:
    index = TriggerIndex([examples["abandoned-cart"]])
    events = [ev("cart_updated", T0, CART),
              ev("order_completed", at(minutes=order_after), {"cart_id": "k1", "amount": 59})]
    assert len(drive(index, events, at(days=2))) == fires


def test_an_order_at_the_very_deadline_is_too_late_whichever_comes_first(
        examples: dict[str, Workflow]) -> None:
    order = ev("order_completed", at(minutes=30), {"cart_id": "k1"})
    timers_first = TriggerIndex([examples["abandoned-cart"]])
    assert len(drive(timers_first, [ev("cart_updated", T0, CART), order], at(hours=1))) == 1
    events_first = TriggerIndex([examples["abandoned-cart"]])
    events_first.observe(ev("cart_updated", T0, CART))
    events_first.observe(order)
    assert len(events_first.fire_due(at(hours=1))) == 1


def test_orders_for_other_carts_do_not_cancel_and_carts_are_independent(
        examples: dict[str, Workflow]) -> None:
    index = TriggerIndex([examples["abandoned-cart"]])
    other = {**CART, "cart_id": "k2"}
    fires = drive(index, [ev("cart_updated", T0, CART), ev("cart_updated", at(minutes=5), other),
                          ev("order_completed", at(minutes=10), {"cart_id": "k2"}),
                          ev("order_completed", at(minutes=11), {"cart_id": 1})], at(hours=2))
    assert [f.trigger_properties["cart_id"] for f in fires] == ["k1"]


def test_the_latest_cart_update_rearms_and_is_the_trigger_event(
        examples: dict[str, Workflow]) -> None:
    index = TriggerIndex([examples["abandoned-cart"]])
    bigger = {**CART, "items": [*CART["items"], {"sku": "S2"}], "total": 99.0}
    fires = drive(index, [ev("cart_updated", T0, CART), ev("cart_updated", at(minutes=20), bigger)],
                  at(minutes=49))
    assert fires == []
    [fire] = index.fire_due(at(minutes=50))
    assert fire.at == at(minutes=50) and fire.trigger_properties == bigger
    assert fire.trigger_at == at(minutes=20)


def test_carts_without_a_cart_id_are_ignored(examples: dict[str, Workflow]) -> None:
    index = TriggerIndex([examples["abandoned-cart"]], keep_contacts=False)
    assert drive(index, [ev("cart_updated", T0, {"items": []})], at(days=1)) == []
    assert index.stats()["contacts"] == 0


def test_an_overdue_cart_fires_when_a_newer_one_replaces_it(
        examples: dict[str, Workflow]) -> None:
    index = TriggerIndex([examples["abandoned-cart"]])
    index.observe(ev("cart_updated", T0, CART))
    [fire] = index.observe(ev("cart_updated", at(minutes=40), CART))  # no fire_due in between
    assert fire.at == at(minutes=30) and fire.trigger_at == T0
    [second] = index.fire_due(at(hours=2))
    assert second.at == at(minutes=70)


def test_absence_fires_only_if_the_latest_a_passes_where() -> None:
    index = TriggerIndex([workflow("""\
        type: absence
        event: cart_updated
        where: {total: {gt: 0}}
        missing: {event: order_completed, correlate: cart_id}
        within: 1h
        """)])
    fires = drive(index, [ev("cart_updated", T0, CART),
                          ev("cart_updated", at(minutes=10), {**CART, "total": 0})], at(hours=3))
    assert fires == []
    assert len(drive(index, [ev("cart_updated", at(hours=4), CART)], at(hours=6))) == 1


def test_absence_without_correlation_is_one_key_per_contact() -> None:
    index = TriggerIndex([workflow("""\
        type: absence
        event: signed_up
        missing: {event: order_completed, where: {amount: {gt: 0}}}
        within: 7d
        """)])
    events = [ev("signed_up", T0, contact="a"), ev("signed_up", T0, contact="b"),
              ev("order_completed", at(days=1), {"amount": 0}, contact="a"),
              ev("order_completed", at(days=2), {"amount": 5}, contact="b")]
    assert [f.contact_id for f in drive(index, events, at(days=8))] == ["a"]


# --- count: browse-abandonment -------------------------------------------------------------


def views(sku: str, *hours: float, contact: str = "c1") -> list[IndexEvent]:
    return [ev("product_viewed", at(hours=h), {"sku": sku, "name": "Shoe"}, contact)
            for h in hours]


def test_three_views_of_a_sku_fire_two_do_not(examples: dict[str, Workflow]) -> None:
    index = TriggerIndex([examples["browse-abandonment"]])
    assert drive(index, views("S1", 0, 1)) == []
    [fire] = drive(index, views("S1", 2))
    assert fire.trigger_properties == {"sku": "S1", "name": "Shoe"}
    assert fire.at == fire.trigger_at == at(hours=2)
    assert len(drive(index, views("S1", 3))) == 1  # the 4th also qualifies (re-entry decides)


@pytest.mark.parametrize(("last", "fires"), [(23, 1), (24, 1), (25, 0)])
def test_views_spread_over_23_hours_fire_over_25_do_not(
        examples: dict[str, Workflow], last: float, fires: int) -> None:
    index = TriggerIndex([examples["browse-abandonment"]])
    assert len(drive(index, views("S1", 0, 12, last))) == fires


def test_views_of_different_skus_do_not_add_up(examples: dict[str, Workflow]) -> None:
    index = TriggerIndex([examples["browse-abandonment"]])
    events = [*views("S1", 0), *views("S2", 1), *views("S1", 2),
              ev("product_viewed", at(hours=3), {"name": "no sku"})]
    assert drive(index, events) == []
    assert len(drive(index, views("S1", 4))) == 1


def test_a_cart_containing_the_sku_within_the_window_suppresses(
        examples: dict[str, Workflow]) -> None:
    def run(cart_hour: float, skus: list[Any]) -> int:
        index = TriggerIndex([examples["browse-abandonment"]])
        cart = ev("cart_updated", at(hours=cart_hour),
                  {"cart_id": "k", "items": [{"sku": s} for s in skus]})
        return len(drive(index, sorted([*views("S1", 5, 6, 7), cart],
                                       key=lambda e: e.occurred_at)))
    assert run(6.5, ["S0", "S1"]) == 0  # in the cart
    assert run(6.5, ["S2"]) == 1  # another product in the cart
    assert run(6.5, [1]) == 1  # a number never equals the string
    assert run(-17, ["S1"]) == 0  # exactly 24 h before the third view: still in the window
    assert run(-17.5, ["S1"]) == 1  # more than 24 h before


def test_count_windows_stay_bounded_per_contact(examples: dict[str, Workflow]) -> None:
    index = TriggerIndex([examples["browse-abandonment"]])
    for n in range(2000):
        index.observe(ev("product_viewed", at(minutes=n), {"sku": f"S{n}"}))
    stats = index.stats()
    assert stats["window_groups"] <= 256 and stats["window_entries"] <= 256


# --- inactivity: win-back --------------------------------------------------------------------


def test_win_back_fires_60_days_after_the_latest_activity(
        examples: dict[str, Workflow]) -> None:
    index = TriggerIndex([examples["win-back"]])
    visit = ev("page_viewed", T0, {"url": "https://shop.example.com/"})
    assert drive(index, [visit], at(days=59)) == []
    [fire] = index.fire_due(at(days=61))
    assert fire == Fire("win-back", "c1", at(days=60), "page_viewed", visit.properties, T0,
                        "inactivity:2026-03-02T10:00:00+00:00")


def test_win_back_fires_once_per_quiet_period_and_rearms(examples: dict[str, Workflow]) -> None:
    index = TriggerIndex([examples["win-back"]])
    assert len(drive(index, [ev("email_opened", T0)], at(days=200))) == 1
    assert index.next_due() is None
    fires = drive(index, [ev("order_completed", at(days=210), {"amount": 5}),
                          ev("page_viewed", at(days=269))], at(days=400))
    assert [f.at for f in fires] == [at(days=329)]


def test_activity_at_59_days_postpones_win_back(examples: dict[str, Workflow]) -> None:
    index = TriggerIndex([examples["win-back"]])
    fires = drive(index, [ev("page_viewed", T0), ev("email_clicked", at(days=59))], at(days=118))
    assert fires == [] and index.next_due() == at(days=119)


def test_contacts_without_any_activity_never_become_inactive(
        examples: dict[str, Workflow]) -> None:
    index = TriggerIndex([examples["win-back"]], keep_contacts=False)
    assert drive(index, [ev("signed_up", T0), ev("email_delivered", T0)], at(days=400)) == []
    assert index.stats()["contacts"] == 0


# --- milestone: loyalty ---------------------------------------------------------------------


def test_loyalty_fires_once_when_spend_crosses_500(examples: dict[str, Workflow]) -> None:
    index = TriggerIndex([examples["loyalty-milestone"]])
    orders = [ev("order_completed", at(days=n), {"amount": amount})
              for n, amount in enumerate([200, 250, "lots", True, 49.5])]
    assert drive(index, orders) == []  # 499.5
    [fire] = drive(index, [ev("order_completed", at(days=9), {"amount": 0.5, "order_id": "o"})])
    assert fire.trigger_properties["order_id"] == "o"
    assert drive(index, [ev("order_completed", at(days=10), {"amount": 100})]) == []  # 600


def test_one_big_order_crosses_at_once(examples: dict[str, Workflow]) -> None:
    index = TriggerIndex([examples["loyalty-milestone"]])
    assert len(drive(index, [ev("order_completed", T0, {"amount": 600})])) == 1


def test_count_milestone_fires_on_the_fifth_order() -> None:
    index = TriggerIndex([workflow("type: milestone\nevent: order_completed\nreaches: 5\n")])
    fires = drive(index, [ev("order_completed", at(days=n), {"n": n}) for n in range(8)])
    assert [f.trigger_properties["n"] for f in fires] == [4]


# --- attribute change -----------------------------------------------------------------------


def test_attribute_change_from_and_to() -> None:
    index = TriggerIndex([workflow("type: attribute_change\nattribute: plan\n"
                                   "from: {exists: false}\nto: {in: [pro, team]}\n")])
    assert len(index.observe(updated(T0, {"plan": "pro"}, ["plan"], {"plan": None}))) == 1
    assert index.observe(updated(T0, {"plan": "pro"}, ["plan"], {"plan": "free"})) == []
    assert index.observe(updated(T0, {"plan": "free"}, ["plan"], {"plan": None})) == []
    assert index.observe(updated(T0, {"plan": "pro"}, ["email"], {})) == []


def test_contact_views_follow_contact_updated_events() -> None:
    index = TriggerIndex([])
    assert index.contact("c1") is None
    index.observe(updated(T0, {"first_name": "Ann"}, timezone="Europe/Paris"))
    assert index.contact("c1") == ContactView({"first_name": "Ann"}, "c1@example.com",
                                              "Europe/Paris")
    assert TriggerIndex([], keep_contacts=False).observe(updated(T0, {})) == []


# --- segment entry --------------------------------------------------------------------------

BIG_SPENDERS = """\
    type: segment_entry
    segment:
      name: big-spenders
      aggregates:
        spend_90d: {event: order_completed, measure: sum, property: amount, within: 90d}
      condition:
        all:
          - aggregates.spend_90d: {gte: 1000}
          - attributes.country: FR
    """


def test_segment_entry_is_incremental() -> None:
    index = TriggerIndex([workflow(BIG_SPENDERS)], keep_contacts=False)
    assert drive(index, [updated(T0, {"country": "FR", "name": "A"}),
                         ev("order_completed", at(days=1), {"amount": 600})]) == []
    [fire] = drive(index, [ev("order_completed", at(days=2), {"amount": 400, "order_id": "o2"})])
    assert fire.trigger_type == "order_completed" and fire.trigger_properties["order_id"] == "o2"
    assert drive(index, [ev("order_completed", at(days=3), {"amount": 10}),
                         updated(at(days=4), {"country": "FR", "name": "B"})]) == []
    stats = index.stats()
    assert stats["segment_states"] == 1 and stats["segment_members"] == 1
    # another contact's orders never touch c1, and FR alone is not enough
    assert drive(index, [updated(at(days=5), {"country": "FR"}, contact="c2"),
                         ev("order_completed", at(days=5), {"amount": 999}, contact="c2")]) == []


def test_segment_entry_on_an_attribute_change() -> None:
    index = TriggerIndex([workflow(BIG_SPENDERS)])
    drive(index, [ev("order_completed", T0, {"amount": 2000}), updated(T0, {"country": "DE"})])
    [fire] = drive(index, [updated(at(days=1), {"country": "FR"}, ["country"])])
    assert fire.trigger_type == "contact_updated"


def test_segment_membership_expires_with_the_window_and_reenters() -> None:
    index = TriggerIndex([workflow(BIG_SPENDERS)])
    assert len(drive(index, [updated(T0, {"country": "FR"}),
                             ev("order_completed", T0, {"amount": 1000})])) == 1
    assert index.next_due() == at(days=90, microseconds=1)  # the order leaves the window
    assert drive(index, [], at(days=91)) == [] and index.stats()["segment_members"] == 0
    assert len(drive(index, [ev("order_completed", at(days=95), {"amount": 1500})])) == 1


def test_segment_entry_by_time_alone() -> None:
    index = TriggerIndex([workflow("""\
        type: segment_entry
        segment:
          name: lapsed
          aggregates:
            quiet: {event: page_viewed, measure: days_since}
          condition: {aggregates.quiet: {gt: 30}}
        """)])
    assert drive(index, [ev("page_viewed", T0)], at(days=30)) == []
    [fire] = index.fire_due(at(days=31))
    assert fire.at == at(days=30, microseconds=1) and fire.trigger_type == "segment_entry"
    assert fire.trigger_properties["segment"] == "lapsed"
    assert fire.entry_key == f"segment:{at(days=30, microseconds=1).isoformat()}"
    assert drive(index, [ev("page_viewed", at(days=40))], at(days=70)) == []  # left, not back
    assert [f.at for f in index.fire_due(at(days=80))] == [at(days=70, microseconds=1)]


# --- date -----------------------------------------------------------------------------------


def test_birthday_fires_at_local_time_every_year_across_dst() -> None:
    index = TriggerIndex([workflow("type: date\nattribute: birthday\nat: '09:00'\n")])
    index.observe(updated(datetime(2023, 1, 1, tzinfo=UTC), {"birthday": "1990-03-10"},
                          timezone="America/New_York"))
    fires = index.fire_due(datetime(2025, 12, 31, tzinfo=UTC))
    # 09:00 EST (UTC-5) in 2023; DST started on 10 March 2024 and 9 March 2025 (UTC-4)
    assert [f.at for f in fires] == [datetime(2023, 3, 10, 14, tzinfo=UTC),
                                     datetime(2024, 3, 10, 13, tzinfo=UTC),
                                     datetime(2025, 3, 10, 13, tzinfo=UTC)]
    assert fires[0].trigger_type == "date" and fires[0].entry_key == "date:2023-03-10"
    assert fires[0].trigger_properties == {"attribute": "birthday", "value": "1990-03-10",
                                           "date": "2023-03-10"}
    assert index.next_due() == datetime(2026, 3, 10, 13, tzinfo=UTC)


def test_date_is_rescheduled_when_the_timezone_or_date_changes() -> None:
    index = TriggerIndex([workflow("type: date\nattribute: birthday\nat: '09:00'\n")])
    index.observe(updated(T0, {"birthday": "1990-06-01"}, timezone="America/New_York"))
    assert index.next_due() == datetime(2026, 6, 1, 13, tzinfo=UTC)
    index.observe(updated(at(days=1), {"birthday": "1990-06-01"}, timezone="Europe/Paris"))
    assert index.next_due() == datetime(2026, 6, 1, 7, tzinfo=UTC)
    index.observe(updated(at(days=2), {"birthday": "1990-06-02"}, timezone="Europe/Paris"))
    assert index.next_due() == datetime(2026, 6, 2, 7, tzinfo=UTC)
    index.observe(updated(at(days=3), {"name": "no birthday"}))
    assert index.next_due() is None and index.fire_due(at(days=800)) == []


@pytest.mark.parametrize(("hour", "expected"), [(8, datetime(2026, 3, 2, 9, tzinfo=UTC)),
                                                (10, datetime(2027, 3, 2, 9, tzinfo=UTC))])
def test_a_date_set_on_the_day_fires_that_day_if_the_time_is_still_ahead(
        hour: int, expected: datetime) -> None:
    index = TriggerIndex([workflow("type: date\nattribute: signup\nat: '09:00'\n")])
    index.observe(updated(datetime(2026, 3, 2, hour, tzinfo=UTC), {"signup": "2020-03-02"}))
    assert index.next_due() == expected


def test_one_off_date_with_offset_fires_once() -> None:
    index = TriggerIndex([workflow("type: date\nattribute: trial_ends\nanniversary: false\n"
                                   "offset_days: -1\nat: '10:30'\n")])
    index.observe(updated(T0, {"trial_ends": "2026-04-10T00:00:00Z"}, timezone="Asia/Tokyo"))
    [fire] = index.fire_due(datetime(2030, 1, 1, tzinfo=UTC))
    assert fire.at == datetime(2026, 4, 9, 1, 30, tzinfo=UTC)  # 10:30 in Tokyo (UTC+9)
    assert index.next_due() is None


# --- email engagement -----------------------------------------------------------------------

SENT = {"workflow": "welcome", "step": "welcome-1", "run_id": 7}


def engagement(action: str, extra: str = "") -> Workflow:
    return workflow(f"type: email_engagement\naction: {action}\nworkflow: welcome\n"
                    f"step: welcome-1\n{extra}", name=f"on-{action}")


def test_opened_and_clicked_a_link_of_a_given_send() -> None:
    index = TriggerIndex([engagement("opened"),
                          engagement("clicked", "link: 'https://shop.example.com/sale/*'\n")])
    assert names(index.observe(ev("email_opened", T0, SENT))) == ["on-opened"]
    assert index.observe(ev("email_opened", T0, {**SENT, "step": "welcome-2"})) == []
    sale = {**SENT, "url": "https://shop.example.com/sale/shoes"}
    assert names(index.observe(ev("email_clicked", T0, sale))) == ["on-clicked"]
    assert index.observe(ev("email_clicked", T0, {**sale, "url": "https://x.example/"})) == []


@pytest.mark.parametrize(("open_after", "fires"), [(47, 1), (49, 0)])
def test_opened_within_a_window_of_the_send(open_after: float, fires: int) -> None:
    index = TriggerIndex([engagement("opened", "within: 2d\n")])
    events = [ev("email_delivered", T0, SENT), ev("email_opened", at(hours=open_after), SENT)]
    assert len(drive(index, events)) == fires


@pytest.mark.parametrize(("engaged", "fires"), [
    (None, 1), (("email_opened", 47), 0), (("email_clicked", 47), 0), (("email_opened", 48), 1),
    (("email_opened", 49), 1)])
def test_not_opened_within_two_days(engaged: tuple[str, float] | None, fires: int) -> None:
    index = TriggerIndex([engagement("not_opened", "within: 2d\n")])
    events = [ev("automation_sent", T0, SENT)]
    if engaged is not None:
        events.append(ev(engaged[0], at(hours=engaged[1]), SENT))
    result = drive(index, events, at(days=5))
    assert len(result) == fires
    if fires:
        assert result[0].at == at(days=2) and result[0].trigger_type == "automation_sent"
        assert result[0].trigger_properties == SENT
        assert result[0].entry_key == f"not_opened:{T0.isoformat()}"


def test_not_opened_is_a_timer_per_send() -> None:
    index = TriggerIndex([engagement("not_opened", "within: 1d\n")], keep_contacts=False)
    events = [ev("email_delivered", T0, SENT), ev("email_delivered", at(hours=12), SENT),
              ev("email_opened", at(hours=13), SENT),  # opens both (13 h < 24 h after each)
              ev("email_delivered", at(days=2), SENT),
              ev("email_delivered", at(days=2), {**SENT, "step": "other"})]
    assert [f.at for f in drive(index, events, at(days=9))] == [at(days=3)]
    assert index.stats()["contacts"] == 0


# --- fire order, snapshots, determinism, reloads -------------------------------------------

EXTRA = [
    "type: attribute_change\nattribute: plan\nto: pro\n",
    "type: date\nattribute: birthday\nat: '09:00'\n",
    "type: email_engagement\naction: not_opened\nworkflow: welcome\nstep: welcome-1\n"
    "within: 3d\n",
    "type: email_engagement\naction: clicked\nworkflow: welcome\nstep: welcome-1\nwithin: 7d\n",
    textwrap.dedent(BIG_SPENDERS),
    "type: segment_entry\nsegment:\n  name: lapsed\n  aggregates:\n"
    "    quiet: {event: page_viewed, measure: days_since}\n    views_7d: {event: product_viewed, "
    "measure: count, within: 7d}\n  condition: {any: [{aggregates.quiet: {gte: 20}}, "
    "{aggregates.views_7d: {gte: 4}}]}\n",
    "type: absence\nevent: cart_updated\nmissing: {event: order_completed, correlate: cart_id}\n"
    "within: 2h\n",
    "type: inactivity\nevents: [page_viewed, order_completed]\nfor: 14d\n",
    "type: milestone\nevent: order_completed\nreaches: 3\n",
]


def everything(examples: dict[str, Workflow]) -> list[Workflow]:
    extra = [workflow(text, name=f"extra-{n}") for n, text in enumerate(EXTRA)]
    return [*examples.values(), *extra]


def stream(seed: int, contacts: int = 12, count: int = 3000, positions: bool = True
           ) -> list[IndexEvent]:
    """A mixed event stream over ~100 days exercising every trigger type."""
    rng = random.Random(seed)
    events = []
    when = T0
    for n in range(count):
        when += timedelta(minutes=rng.choice([1, 2, 5, 10, 30, 240]))
        contact = f"c{rng.randrange(contacts)}"
        kind = rng.choice(["product_viewed"] * 4 + [
            "page_viewed", "cart_updated", "order_completed", "email_delivered",
            "email_opened", "email_clicked", "signed_up", "contact_updated", "email_bounced",
            "consent_requested"])
        sku = f"S{rng.randrange(3)}"
        cart = f"k{rng.randrange(3)}"
        props: dict[str, Any] = {
            "product_viewed": {"sku": sku},
            "page_viewed": {"url": f"/p{rng.randrange(9)}"},
            "cart_updated": {"cart_id": cart, "items": [{"sku": sku}]},
            "order_completed": {"cart_id": cart, "amount": rng.choice([20, 150, 400])},
            "contact_updated": {"changed": ["plan"], "previous": {"plan": "free"},
                                "attributes": {"plan": rng.choice(["pro", "free"]),
                                               "country": rng.choice(["FR", "DE"]),
                                               "birthday": f"1990-0{rng.randrange(1, 9)}-15"},
                                "timezone": rng.choice(["Europe/Paris", None, "Asia/Tokyo"])},
        }.get(kind, {**SENT, "url": "https://shop.example.com/"})
        events.append(IndexEvent(contact, kind, props, when, n if positions else None))
    return events


def keyed(fires: Iterable[Fire]) -> list[tuple[Any, ...]]:
    return [(f.workflow, f.contact_id, f.at, f.trigger_type, f.trigger_at, f.entry_key,
             dict(f.trigger_properties)) for f in fires]


def test_a_mixed_stream_exercises_every_trigger(examples: dict[str, Workflow]) -> None:
    workflows = everything(examples)
    fires = drive(TriggerIndex(workflows), stream(1), at(days=400))
    assert {f.workflow for f in fires} == {w.name for w in workflows}
    assert len({(f.workflow, f.contact_id, f.entry_key) for f in fires}) == len(fires)


@pytest.mark.parametrize("positions", [True, False])
def test_snapshot_and_restore_midway_gives_the_same_fires(
        examples: dict[str, Workflow], positions: bool) -> None:
    workflows = everything(examples)
    events = stream(2, positions=positions)
    whole = keyed(drive(TriggerIndex(workflows), events, at(days=400)))
    first = TriggerIndex(workflows)
    half = len(events) // 2
    fires = drive(first, events[:half])
    data = first.snapshot()
    second = TriggerIndex.restore(data, workflows)
    assert second.next_due() == first.next_due()
    assert second.stats() == {**first.stats(), "interned": 0, "timer_heap": second.stats()[
        "timers"]}
    fires += drive(second, events[half:], at(days=400))
    assert keyed(fires) == whole
    assert TriggerIndex.restore(second.snapshot(), workflows).position == second.position


def test_entry_keys_are_deterministic_and_fires_do_not_depend_on_the_clock_ticks(
        examples: dict[str, Workflow]) -> None:
    workflows = everything(examples)
    events = stream(3, positions=False)
    one = keyed(drive(TriggerIndex(workflows), events, at(days=400)))
    assert keyed(drive(TriggerIndex(workflows), events, at(days=400))) == one
    lazy = TriggerIndex(workflows)
    fires = [fire for event in events for fire in lazy.observe(event)]
    fires += lazy.fire_due(at(days=400))
    assert sorted(keyed(fires), key=repr) == sorted(one, key=repr)


def test_fires_of_one_instant_come_in_priority_order(examples: dict[str, Workflow]) -> None:
    index = TriggerIndex(list(examples.values()))
    fires = index.observe(ev("order_completed", T0, {"amount": 800, "cart_id": "k"}))
    assert names(fires) == ["post-purchase", "loyalty-milestone"]  # priority 70, then 60


def test_set_workflows_keeps_the_state_of_unchanged_triggers(
        examples: dict[str, Workflow]) -> None:
    index = TriggerIndex(list(examples.values()))
    drive(index, [ev("cart_updated", T0, CART), *views("S2", 0, 0.25),
                  ev("order_completed", at(hours=0.25), {"amount": 450})])
    edited = [dataclasses.replace(w, version="v2", description="edited") for w in
              examples.values() if w.name != "win-back"]
    index.set_workflows(edited)
    fires = drive(index, [*views("S2", 1), ev("order_completed", at(hours=1), {"amount": 60})],
                  at(days=100))
    assert sorted(names(fires)) == ["abandoned-cart", "browse-abandonment", "loyalty-milestone",
                                    "post-purchase"]  # and no win-back any more


def test_set_workflows_drops_the_state_of_changed_triggers(
        examples: dict[str, Workflow]) -> None:
    cart = examples["abandoned-cart"]
    index = TriggerIndex([cart])
    drive(index, [ev("cart_updated", T0, CART)])
    slower = dataclasses.replace(cart, version="v2", trigger=dataclasses.replace(
        cart.trigger, within_seconds=2700))
    index.set_workflows([slower, dataclasses.replace(cart, name="copy")])
    fires = drive(index, [ev("cart_updated", at(hours=2), {**CART, "cart_id": "k2"})],
                  at(hours=5))
    assert sorted((f.workflow, f.at) for f in fires) == [
        ("abandoned-cart", at(hours=2, minutes=45)), ("copy", at(minutes=30)),
        ("copy", at(hours=2, minutes=30))]
    index.set_workflows([])
    assert index.stats()["contacts"] == 0 and index.fire_due(at(days=9)) == []


def test_restore_rejects_foreign_bytes() -> None:
    import pickle
    import zlib
    with pytest.raises(ValueError, match="snapshot"):
        TriggerIndex.restore(zlib.compress(pickle.dumps({"format": 99})), [])


def test_restore_with_other_workflows_keeps_only_unchanged_triggers(
        examples: dict[str, Workflow]) -> None:
    index = TriggerIndex(list(examples.values()))
    drive(index, [ev("cart_updated", T0, CART), ev("page_viewed", T0)])
    restored = TriggerIndex.restore(index.snapshot(), [examples["abandoned-cart"]])
    assert names(drive(restored, [], at(days=400))) == ["abandoned-cart"]
    assert restored.stats()["contacts"] == 0


def test_many_rearmed_timers_stay_exact_through_heap_compaction(
        examples: dict[str, Workflow]) -> None:
    index = TriggerIndex([examples["win-back"], examples["abandoned-cart"]])
    contacts = [f"c{n}" for n in range(3000)]
    events = [ev("page_viewed", T0, contact=c) for c in contacts]
    events += [ev("cart_updated", at(minutes=1), {**CART, "cart_id": c}, contact=c)
               for c in contacts]
    fires = drive(index, events, at(days=1))
    assert len(fires) == 3000 and index.stats()["timer_heap"] <= 3000 * 2
    assert index.next_due() == at(days=60)
    fires = index.fire_due(at(days=61))
    assert sorted(f.contact_id for f in fires) == sorted(contacts)
    assert {f.workflow for f in fires} == {"win-back"} and index.next_due() is None


def test_member_progress_is_carried_over_by_parameter() -> None:
    from automation.index.watch_base import remap_mask
    # members (10, 20, 30) -> (20, 40): 20 keeps its bit, 40 is new and starts done
    assert remap_mask(0b010, (10, 20, 30), (20, 40)) == 0b11
    assert remap_mask(0b101, (10, 20, 30), (20, 40)) == 0b10
