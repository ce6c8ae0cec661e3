"""Delivery to a sink: the delivery log line, the site the MTA publishes, the queue summary and
explain report, the /v1/queue endpoints, the HTTP access log, and the MTA metrics moving."""

from __future__ import annotations

import io
import logging
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import httpx
import orjson
import pytest

from engine.database import Database
from engine.http.metrics_server import MetricsServer
from engine.log import configure_separate_log
from engine.values import HostPort
from mta.delivery.delivery_log import DELIVERY_LOGGER
from mta.sink import CaptureSink
from tests.support.app import running_app
from tests.support.mta import (
    delivery_service,
    fetch,
    identity_for,
    mta_settings,
    queue_message,
    wait_for_states,
)


@pytest.fixture
def delivery_lines() -> Iterator[io.StringIO]:
    stream = io.StringIO()
    configure_separate_log(DELIVERY_LOGGER, stream=stream)
    try:
        yield stream
    finally:
        configure_separate_log(DELIVERY_LOGGER, enabled=False)


def sample(text: str, name: str, **labels: str) -> float:
    """One sample's value from Prometheus text (0 when absent)."""
    for line in text.splitlines():
        if line.startswith(name + ("{" if labels else " ")) and all(
                f'{k}="{v}"' in line for k, v in labels.items()):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


async def test_a_delivery_is_logged_published_explained_and_counted(
        database: Database, database_url: str, delivery_lines: io.StringIO) -> None:
    metrics = MetricsServer(HostPort("127.0.0.1", 0))
    await metrics.start()
    scrape = httpx.AsyncClient(base_url=f"http://127.0.0.1:{metrics.port}")
    try:
        before = (await scrape.get("/metrics")).text
        async with CaptureSink(keep=10) as sink:
            route = f"127.0.0.1:{sink.port}"
            settings = mta_settings(routes={"example.org": route})
            identity = await identity_for(database, settings)
            delivered = await queue_message(database, identity, "ann@example.org")
            async with delivery_service(database, settings) as service:
                await wait_for_states(database_url, [delivered])
                # Not due for an hour, so the service leaves it alone while it is held.
                held = await queue_message(database, identity, "bob@example.org",
                                           send_at=datetime.now(UTC) + timedelta(hours=1),
                                           contact_id="c-bob")
                async with running_app(database_url) as app:
                    async with app.client() as client:
                        hold = await client.post("/v1/queue/hold", json={"message": str(held)})
                    await service.publish_state()
                    after = (await scrape.get("/metrics")).text
                    reader = await app.new_key("queue:read")
                    async with app.client(reader) as client:
                        summary = (await client.get("/v1/queue")).json()
                        explained = (await client.get("/v1/queue/explain",
                                                      params={"domain": "example.org"})).json()
                        unknown = await client.get("/v1/queue/explain",
                                                   params={"site": "nowhere"})
                        forbidden = await client.post("/v1/queue/release",
                                                      json={"domain": "example.org"})
                    async with app.client() as client:
                        released = await client.post("/v1/queue/retry",
                                                     json={"domain": "example.org"})
                        bad = await client.post("/v1/queue/purge", json={})
                        missing = await client.post(
                            "/v1/queue/hold",
                            json={"message": "00000000-0000-0000-0000-000000000000"})
                        no_action = await client.post("/v1/queue/explode", json={})
                    await wait_for_states(database_url, [held])
    finally:
        await scrape.aclose()
        await metrics.stop()

    [line] = [orjson.loads(raw) for raw in delivery_lines.getvalue().splitlines()
              if orjson.loads(raw)["queue_id"] == str(delivered)]
    assert line["logger"] == "herald.delivery" and line["msg"] == "delivered"
    assert line["outcome"] == "delivered" and line["code"] == 250
    assert line["recipient_domain"] == "example.org"
    assert line["site"] == f"route:{route}"
    assert line["remote_ip"] == "127.0.0.1" and line["remote_host"] == "127.0.0.1"
    assert line["attempt"] == 1 and line["delay_s"] >= 0
    assert "tls" in line and "ann@" not in delivery_lines.getvalue()

    site = f"route:{route}"
    [entry] = [s for s in summary["sites"] if s["site"] == site]
    assert entry["held"] == 1 and entry["per_minute"]["delivered"] > 0
    assert summary["totals"]["held"] == 1 and summary["mta"][0]["stale"] is False
    assert explained["site"] == site and explained["domains"] == ["example.org"]
    assert explained["queue"]["held"] == 1
    assert explained["limits"]["max_connections"] == {
        "value": 10, "from": "[mta] max_connections_per_site"}
    assert explained["last_replies"][0]["outcome"] == "delivered"
    assert any("held by an operator" in reason for reason in explained["reasons"])
    assert unknown.status_code == 404 and unknown.json()["error"] == "not_found"
    assert forbidden.status_code == 403
    assert hold.status_code == 200 and hold.json()["affected"] == 1
    assert released.status_code == 200 and released.json()["affected"] == 1
    assert bad.status_code == 422 and "purge needs a selector" in bad.json()["message"]
    assert missing.status_code == 404
    assert no_action.status_code == 404

    assert sample(after, "herald_mta_outcomes_total", outcome="delivered", category="none") \
        == sample(before, "herald_mta_outcomes_total", outcome="delivered", category="none") + 1
    assert sample(after, "herald_mta_queue_depth", site=site, state="held") == 1
    assert sample(after, "herald_mta_queue_oldest_age_seconds", site=site) >= 0
    assert sample(after, "process_cpu_seconds_total") > 0
    [row] = await fetch(database, "SELECT site FROM mta_domain_sites WHERE domain = $1",
                        "example.org")
    assert row["site"] == site
    # A stopped service withdraws its live state.
    assert not await fetch(database, "SELECT 1 FROM mta_site_state")


async def test_http_access_log_names_the_route_not_the_path(
        database_url: str, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="herald.http.access")
    async with running_app(database_url, access_log=True) as app, app.client() as client:
        await client.get("/v1/messages/8b1e4a1e-0000-4000-8000-000000000000?secret=x")
        await client.get("/healthz")
    records = [r for r in caplog.records if r.name == "herald.http.access"]
    assert [(r.method, r.route, r.status) for r in records] == [  # type: ignore[attr-defined]
        ("GET", "/v1/messages/{id}", 404), ("GET", "/healthz", 200)]
    assert all("secret" not in r.getMessage() and "Bearer" not in str(r.__dict__)
               for r in records)
