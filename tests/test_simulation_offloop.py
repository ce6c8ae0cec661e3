"""Simulations run in a worker process: intake keeps answering while one is in flight, the
pool is bounded, and the input is capped with a clear 4xx."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path

import pytest

from automation.loading.catalog import Catalog
from automation.settings import AutomationSettings
from automation.tools.simulation_pool import (
    SimulationBusy,
    SimulationJob,
    SimulationPool,
    run_job,
)
from tests.support.app import RunningApp, running_app
from tests.support.simulation_gate import Gate

WAIT = 60.0
REPO = Path(__file__).resolve().parent.parent


@pytest.fixture
async def app(database_url: str) -> AsyncIterator[RunningApp]:
    async with running_app(database_url) as running:
        yield running


async def store_history(app: RunningApp, contacts: int, per_contact: int) -> None:
    async with app.client() as client:
        for first in range(0, contacts, 100):
            events = [{"type": "cart_updated", "contact_id": f"c{c}",
                       "timestamp": f"2026-03-02T09:{m:02d}:00Z",
                       "properties": {"cart_id": f"A{c}", "items": []}}
                      for c in range(first, min(first + 100, contacts))
                      for m in range(per_contact)]
            response = await client.post("/v1/events", json={"events": events})
            assert response.status_code == 202, response.text


async def test_intake_answers_while_a_large_simulation_is_in_flight(
        app: RunningApp, tmp_path: Path) -> None:
    await store_history(app, contacts=500, per_contact=6)  # 3,000 events
    gate = Gate(tmp_path)
    app.role.simulations.job = gate.job
    async with app.client(timeout=WAIT) as client:
        simulation = asyncio.create_task(client.post(
            "/v1/workflows/abandoned-cart/simulate", json={"horizon": "3d"}))
        await gate.started()  # the simulation is now in its worker, held at the gate
        health = await client.get("/healthz")
        intake = await client.post("/v1/events", json={"type": "t", "contact_id": "x"})
        assert not simulation.done()  # both answered while the simulation was in flight
        await gate.release()
        simulated = await asyncio.wait_for(simulation, WAIT)
    assert health.status_code == 200
    assert intake.status_code == 202
    assert simulated.status_code == 200, simulated.text
    results = simulated.json()["results"]
    assert len({r["contact_id"] for r in results}) == 500  # every contact got its reminders


async def test_simulation_input_is_capped_with_a_clear_4xx(app: RunningApp) -> None:
    limit = AutomationSettings().simulation_max_contacts
    async with app.client() as client:
        for first in range(0, limit + 1, 1000):  # one contact more than the cap
            response = await client.post("/v1/events", json={"events": [
                {"type": "t", "contact_id": f"c{c}"}
                for c in range(first, min(first + 1000, limit + 1))]})
            assert response.status_code == 202, response.text
        everyone = await client.post("/v1/workflows/abandoned-cart/simulate", json={})
        chosen = await client.post("/v1/workflows/abandoned-cart/simulate",
                                   json={"contact_ids": ["c1", "c2"]})
        too_many = await client.post("/v1/workflows/abandoned-cart/simulate",
                                     json={"contact_ids": [f"c{c}" for c in range(limit + 1)]})
    assert everyone.status_code == 422, everyone.text
    assert everyone.json()["error"] == "too_much_history"
    assert "contact_ids" in everyone.json()["message"]
    assert chosen.status_code == 200, chosen.text
    assert too_many.status_code == 422 and too_many.json()["message"].startswith("contact_ids")


async def test_the_pool_is_bounded(tmp_path: Path) -> None:
    pool = SimulationPool(workers=1, queue=0)
    gate = Gate(tmp_path)
    pool.job = gate.job
    catalog = Catalog.load(REPO / "config/workflows", REPO / "config/templates")
    workflow = catalog.current["abandoned-cart"]
    job = SimulationJob(workflow.name, catalog.sources[(workflow.name, workflow.version)],
                        catalog.templates.sources, AutomationSettings(), [], timedelta(0))
    try:
        first = asyncio.create_task(pool.run(job))
        await gate.started()
        with pytest.raises(SimulationBusy):
            await pool.run(job)
        await gate.release()
        assert await asyncio.wait_for(first, WAIT) == []
        assert pool.active == 0
        pool.job = run_job
        assert await asyncio.wait_for(pool.run(job), WAIT) == []  # the slot was given back
    finally:
        await asyncio.to_thread(pool.close)
