"""Browser-sourced events and triggers: only triggers that opt in see them, never anonymous ones;
the trigger index (live engine) and the simulator agree."""

from __future__ import annotations

import textwrap
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest

from automation.content.templates import TemplateSet
from automation.errors import DefinitionError
from automation.index.trigger_index import IndexEvent, TriggerIndex
from automation.loading.catalog import Catalog
from automation.loading.loader import parse_workflow
from automation.model.definitions import Workflow
from automation.settings import AutomationSettings
from automation.tools.simulate import SimulationInputError, Simulator, parse_lines
from engine.sources import API, PIXEL, PIXEL_ANONYMOUS

ROOT = Path(__file__).resolve().parent.parent
T0 = datetime(2026, 3, 2, 10, 0, tzinfo=UTC)
TEMPLATES = TemplateSet.from_sources({f"hello/{part}": "x" for part in ("subject.txt",
                                                                         "body.txt")})


def workflow(name: str, trigger: str) -> Workflow:
    text = (f"name: {name}\ntrigger:\n" + textwrap.indent(textwrap.dedent(trigger), "  ")
            + "steps:\n  - id: hello\n    send: hello\n")
    return parse_workflow(text, f"{name}.yaml", TEMPLATES)


def view(n: int, source: str, contact: str = "c1") -> IndexEvent:
    return IndexEvent(contact, "product_viewed", {"sku": "Z1"}, T0 + timedelta(minutes=n),
                      position=None, source=source)


COUNT = """\
type: count
event: product_viewed
group_by: sku
at_least: 3
within: 24h
"""


def fired(index: TriggerIndex, events: list[IndexEvent]) -> list[str]:
    return [fire.workflow for event in events for fire in index.observe(event)]


def test_browser_events_reach_only_the_triggers_that_accept_them() -> None:
    trusting = workflow("trusting", COUNT + "accept_browser_events: true\n")
    strict = workflow("strict", COUNT)
    on_view = workflow("on-view", "event: product_viewed\n")
    index = TriggerIndex([trusting, strict, on_view])
    assert fired(index, [view(n, PIXEL) for n in range(3)]) == ["trusting"]
    # The strict count never saw the browser's views: it needs three trusted ones.
    assert [sorted(fired(index, [view(n, API)])) for n in range(3, 6)] == [
        ["on-view", "trusting"], ["on-view", "trusting"], ["on-view", "strict", "trusting"]]


def test_anonymous_browser_events_fire_nothing() -> None:
    index = TriggerIndex([workflow("trusting", COUNT + "accept_browser_events: true\n")])
    assert fired(index, [view(n, PIXEL_ANONYMOUS) for n in range(5)]) == []
    assert index.events_seen == 5


def test_opting_in_is_part_of_the_state_key_and_loads_only_where_it_means_something() -> None:
    strict = workflow("w", COUNT)
    index = TriggerIndex([strict])
    fired(index, [view(n, API) for n in range(2)])
    index.set_workflows([workflow("w", COUNT + "accept_browser_events: true\n")])
    assert fired(index, [view(2, API)]) == []  # a different state: the count restarted
    with pytest.raises(DefinitionError, match="accept_browser_events"):
        workflow("e", "type: email_engagement\naction: opened\nworkflow: x\nstep: y\n"
                      "accept_browser_events: true\n")


@pytest.fixture(scope="module")
def catalog() -> Catalog:
    return Catalog.load(ROOT / "config" / "workflows", ROOT / "config" / "templates")


def line(kind: str, minutes: int, source: str | None, **properties: Any) -> bytes:
    item: dict[str, Any] = {"type": kind, "contact_id": "ann", "properties": properties,
                            "timestamp": (T0 + timedelta(minutes=minutes)).isoformat()}
    if source is not None:
        item["source"] = source
    return orjson.dumps(item)


async def simulate(catalog: Catalog, source: str | None, kind: str = "product_viewed"
                   ) -> list[str]:
    contact = orjson.dumps({"kind": "contact", "contact_id": "ann", "email": "ann@example.com",
                            "attributes": {"first_name": "Ann"}})
    lines = [contact, *(line(kind, n, source, sku="Z1") for n in range(3))]
    results = await Simulator(catalog, AutomationSettings()).run(parse_lines(lines),
                                                                 timedelta(hours=1))
    return sorted(result["workflow"] for result in results)


async def test_the_simulator_plays_browser_events_like_the_live_engine(
        catalog: Catalog) -> None:
    assert await simulate(catalog, None) == ["browse-abandonment"]
    assert await simulate(catalog, PIXEL) == ["browse-abandonment"]  # the shipped one opts in
    assert await simulate(catalog, PIXEL_ANONYMOUS) == []
    assert await simulate(catalog, API, kind="signed_up") == ["welcome"]
    assert await simulate(catalog, PIXEL, kind="signed_up") == []  # welcome does not opt in
    with pytest.raises(SimulationInputError, match=r"line 1\.source"):
        parse_lines([line("signed_up", 0, "mta")])
