"""Property tests of the trigger index against brute-force models of the trigger semantics.

* count: at least N events of a group within [t - W, t], unless a correlated event in the same
  window (two workflows sharing the state with their own N and W; many groups, so pruning runs);
* absence: the latest A per key fires at A + W unless superseded by a newer A before that, or
  cancelled by a correlated B in [A, A + W); however often (or seldom) the clock ticks;
* inactivity: each activity fires at t + P unless the next activity comes before.
"""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime, timedelta
from typing import Any

from hypothesis import example, given, settings
from hypothesis import strategies as st

from automation.index.trigger_index import Fire, IndexEvent, TriggerIndex
from automation.model import definitions as d
from automation.model.filters import MATCH_ALL, compile_filter, parse_path

T0 = datetime(2026, 1, 1, tzinfo=UTC)
SKUS = [f"s{n}" for n in range(12)]


def path(text: str) -> Any:
    return parse_path(text, "test")


def flow(name: str, trigger: d.Trigger) -> d.Workflow:
    return d.Workflow(name=name, version="1", source="test", trigger=trigger, steps=())


def minute(n: int) -> datetime:
    return T0 + timedelta(minutes=n)


# --- count ----------------------------------------------------------------------------------

count_events = st.lists(st.tuples(
    st.sampled_from([0, 0, 1, 5, 30, 60, 120, 700]),  # minutes since the previous event
    st.sampled_from(["view", "view", "view", "cart"]),
    st.sampled_from([*SKUS[:3], *SKUS[:3], *SKUS, None]),
    st.lists(st.sampled_from([*SKUS[:3], 1]), max_size=2),  # a cart's items' skus
), max_size=80)
rules = st.tuples(st.integers(1, 4), st.sampled_from([1, 30, 60, 120, 1440]))


@settings(max_examples=400, deadline=None)
@given(count_events, rules, rules, st.booleans())
@example([(0, "cart", None, ["s0"]), (30, "view", "s0", []), (0, "view", "s0", [])],
         (2, 30), (1, 1), True)  # a cart exactly at the window's start still suppresses
@example([(0, "view", "s0", []), (60, "view", "s0", []), (1, "view", "s0", [])],
         (2, 60), (3, 60), False)  # a view exactly at the window's start still counts
def test_count_fires_exactly_when_brute_force_says(
        events: list[tuple[int, str, str | None, list[Any]]], first: tuple[int, int],
        second: tuple[int, int], with_unless: bool) -> None:
    unless = d.EventCondition(frozenset({"cart"}), MATCH_ALL, d.Correlation(
        path("items.*.sku"), path("sku"))) if with_unless else None
    condition = d.EventCondition(frozenset({"view"}), MATCH_ALL)
    workflows = [flow(f"w{n}", d.CountTrigger(condition, at_least, within * 60.0, path("sku"),
                                               unless))
                 for n, (at_least, within) in enumerate([first, second])]
    index = TriggerIndex(workflows)
    seen: list[tuple[int, str, Any]] = []  # (minute, kind, sku or cart skus)
    now = 0
    for gap, kind, sku, cart in events:
        now += gap
        props = {"items": [{"sku": s} for s in cart]} if kind == "cart" else (
            {"sku": sku} if sku is not None else {"other": 1})
        fires = index.observe(IndexEvent("c", kind, props, minute(now)))
        seen.append((now, kind, cart if kind == "cart" else sku))
        expected = []
        if kind == "view" and sku is not None:
            for n, (at_least, within) in enumerate([first, second]):
                start = now - within
                count = sum(1 for t, k, s in seen if k == "view" and s == sku and start <= t)
                blocked = with_unless and any(k == "cart" and sku in s and start <= t
                                              for t, k, s in seen)
                if count >= at_least and not blocked:
                    expected.append(f"w{n}")
        assert sorted(f.workflow for f in fires) == expected
        assert all(f.at == minute(now) and f.trigger_properties == props for f in fires)


# --- absence --------------------------------------------------------------------------------

absence_events = st.lists(st.tuples(
    st.sampled_from([0, 1, 5, 10, 29, 30, 31, 60]),
    st.sampled_from(["cart", "cart", "order", "tick"]),
    st.sampled_from(["k1", "k1", "k2", None]),
    st.booleans(),  # cart passes where / the clock ticks before the event
), max_size=60)


@settings(max_examples=300, deadline=None)
@given(absence_events, st.sampled_from([10, 30, 45]), st.sampled_from([30, 60]))
def test_absence_deadlines_match_brute_force(
        events: list[tuple[int, str, str | None, bool]], first: int, second: int) -> None:
    condition = d.EventCondition(frozenset({"cart"}), compile_filter({"ok": True}))
    missing = d.EventCondition(frozenset({"order"}), MATCH_ALL,
                               d.Correlation(path("cart_id"), path("cart_id")))
    withins = {"w0": first, "w1": second}
    index = TriggerIndex([flow(name, d.AbsenceTrigger(condition, missing, within * 60.0))
                          for name, within in withins.items()])
    got: list[Fire] = []
    log: list[tuple[int, str, str | None, bool]] = []
    now = 0
    for gap, kind, key, flag in events:
        now += gap
        if kind == "tick" or flag:
            ticked = index.fire_due(minute(now))
            assert all(f.at <= minute(now) for f in ticked)
            assert [f.at for f in ticked] == sorted(f.at for f in ticked)
            got += ticked
        if kind == "tick":
            continue
        props: dict[str, Any] = {"ok": flag} if key is None else {"cart_id": key, "ok": flag}
        observed = index.observe(IndexEvent("c", kind, props, minute(now)))
        assert all(f.at <= minute(now) for f in observed)
        got += observed
        log.append((now, kind, key, flag))
    got += index.fire_due(minute(now + 1000))
    expected = Counter()
    for i, (t, kind, key, ok) in enumerate(log):
        if kind != "cart" or key is None or not ok:
            continue
        for name, within in withins.items():
            later = log[i + 1:]
            superseded = any(k == "cart" and c == key and u < t + within for u, k, c, _ in later)
            cancelled = any(k == "order" and c == key and u < t + within for u, k, c, _ in later)
            if not superseded and not cancelled:
                expected[(name, key, minute(t + within), minute(t))] += 1
    assert Counter((f.workflow, f.trigger_properties["cart_id"], f.at, f.trigger_at)
                   for f in got) == expected
    assert index.next_due() is None


# --- inactivity -----------------------------------------------------------------------------


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.sampled_from([0, 1, 13, 14, 15, 40]), st.booleans(),
                          st.booleans()), max_size=40))
def test_inactivity_fires_once_per_quiet_period(events: list[tuple[int, bool, bool]]) -> None:
    index = TriggerIndex([flow("quiet", d.InactivityTrigger(frozenset({"visit"}), 14 * 86400.0))])
    got: list[Fire] = []
    visits: list[int] = []
    day = 0
    for gap, visit, tick in events:
        day += gap
        if tick:
            got += index.fire_due(T0 + timedelta(days=day))
        if visit:
            got += index.observe(IndexEvent("c", "visit", {"day": day}, T0 + timedelta(days=day)))
            visits.append(day)
    got += index.fire_due(T0 + timedelta(days=day + 100))
    expected = [T0 + timedelta(days=v + 14) for n, v in enumerate(visits)
                if n + 1 == len(visits) or visits[n + 1] >= v + 14]
    assert sorted(f.at for f in got) == expected
    assert all(f.trigger_properties["day"] == (f.at - T0).days - 14 for f in got)
