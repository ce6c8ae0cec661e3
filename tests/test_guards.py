"""Send guards: pure checks, and their effect on the simulator (waits, skips with reasons)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson
import pytest

from automation.loading.catalog import Catalog
from automation.runtime.guards import GuardInputs, check_send, parse_quiet_hours
from automation.settings import AutomationSettings
from automation.tools.simulate import Simulator, parse_lines

REPO = Path(__file__).resolve().parent.parent
NOON = datetime(2026, 3, 2, 12, 0, tzinfo=UTC)


def inputs(**overrides: object) -> GuardInputs:
    base = {"email": "a@example.com", "attributes": {}, "timezone": "Europe/Paris",
            "suppressions": (), "recent_sends": 0}
    base.update(overrides)
    return GuardInputs(**base)  # type: ignore[arg-type]


@pytest.mark.parametrize(("overrides", "transactional", "reason"), [
    ({"email": None}, False, "no email address"),
    ({"suppressions": (("hard_bounce", ""),)}, True, "suppressed: hard_bounce"),
    ({"suppressions": (("complaint", ""),)}, True, "suppressed: complaint"),
    ({"suppressions": (("unsubscribe", ""),)}, False, "suppressed: unsubscribe"),
    ({"attributes": {"unsubscribed": True}}, False, "unsubscribed"),
    ({"attributes": {"status": "inactive"}}, False, "contact is inactive"),
    ({"recent_sends": 3}, False, "frequency cap (3 per window) reached"),
])
def test_skips_with_reasons(overrides: dict[str, object], transactional: bool,
                            reason: str) -> None:
    verdict = check_send(inputs(**overrides), already_sent=False, transactional=transactional,
                         frequency_cap=3, allowed_window=None, now=NOON)
    assert not verdict.send and verdict.skip_reason == reason


def test_transactional_mail_ignores_cap_unsubscribe_and_quiet_hours() -> None:
    verdict = check_send(inputs(recent_sends=99, attributes={"unsubscribed": True}),
                         already_sent=False, transactional=True, frequency_cap=3,
                         allowed_window=parse_quiet_hours("00:00-23:59"), now=NOON)
    assert verdict.send


def test_transactional_mail_ignores_an_unsubscribe_but_not_a_bounce() -> None:
    unsubscribed = inputs(suppressions=(("unsubscribe", ""), ("unsubscribe", "news")))
    assert check_send(unsubscribed, already_sent=False, transactional=True, frequency_cap=3,
                      allowed_window=None, now=NOON).send
    both = inputs(suppressions=(("unsubscribe", ""), ("soft_bounces", "")))
    verdict = check_send(both, already_sent=False, transactional=True, frequency_cap=3,
                         allowed_window=None, now=NOON)
    assert verdict.skip_reason == "suppressed: soft_bounces"


def test_an_unsubscribe_from_one_category_does_not_stop_other_marketing() -> None:
    verdict = check_send(inputs(suppressions=(("unsubscribe", "news"),)), already_sent=False,
                         transactional=False, frequency_cap=3, allowed_window=None, now=NOON)
    assert verdict.send


def test_never_twice_in_one_run() -> None:
    verdict = check_send(inputs(), already_sent=True, transactional=True, frequency_cap=3,
                         allowed_window=None, now=NOON)
    assert verdict.skip_reason == "already sent in this run"


def test_quiet_hours_make_the_send_wait_until_local_morning() -> None:
    window = parse_quiet_hours("21:00-08:00")
    late = datetime(2026, 3, 2, 22, 30, tzinfo=UTC)  # 23:30 in Paris
    verdict = check_send(inputs(), already_sent=False, transactional=False, frequency_cap=3,
                         allowed_window=window, now=late)
    assert not verdict.send and verdict.skip_reason is None
    assert verdict.wait_until == datetime(2026, 3, 3, 7, 0, tzinfo=UTC)  # 08:00 Paris


def test_bad_quiet_hours_are_refused() -> None:
    with pytest.raises(ValueError, match="quiet_hours"):
        parse_quiet_hours("late")


async def simulate(settings: AutomationSettings, lines: list[dict[str, object]]
                   ) -> list[dict[str, object]]:
    catalog = Catalog.load(REPO / "config" / "workflows", REPO / "config" / "templates")
    return await Simulator(catalog, settings).run(
        parse_lines(orjson.dumps(line) for line in lines), timedelta(days=5))


async def test_frequency_cap_across_workflows_in_the_simulator() -> None:
    lines: list[dict[str, object]] = [
        {"kind": "contact", "contact_id": "c", "email": "c@example.com"},
        {"type": "signed_up", "contact_id": "c", "timestamp": "2026-03-02T09:00:00Z"},
        *({"type": "product_viewed", "contact_id": "c",
           "timestamp": f"2026-03-02T09:0{i}:00Z", "properties": {"sku": "S"}}
          for i in range(1, 4)),
        {"type": "order_completed", "contact_id": "c", "timestamp": "2026-03-02T09:05:00Z",
         "properties": {"order_id": "1", "amount": 20}},
    ]
    results = await simulate(AutomationSettings(frequency_cap=1), lines)
    first_day = [r for r in results if r["at"] < datetime(2026, 3, 3, tzinfo=UTC)]
    assert [r.get("template") or r.get("skipped") for r in first_day] == [
        "welcome-1", "frequency cap (1 per window) reached",
        "order-thanks"]  # transactional: exempt from the cap


async def test_quiet_hours_delay_but_do_not_drop_in_the_simulator() -> None:
    lines: list[dict[str, object]] = [
        {"kind": "contact", "contact_id": "n", "email": "n@example.com",
         "timezone": "Europe/Paris"},
        {"type": "signed_up", "contact_id": "n", "timestamp": "2026-03-02T22:30:00Z"},
    ]
    results = await simulate(AutomationSettings(quiet_hours="21:00-08:00"), lines)
    first = results[0]
    assert first["template"] == "welcome-1"
    assert first["at"] == datetime(2026, 3, 3, 7, 0, tzinfo=UTC)
