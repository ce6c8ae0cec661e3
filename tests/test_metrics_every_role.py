"""Every role, run alone as its unit would run it, serves /metrics on its own `[metrics]` port
with process metrics and the build info; the mta's outcome counter moves after a delivery,
which also leaves a line in the delivery log file. And ``herald queue`` from the shell."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import httpx
import orjson

from bench.herald_process import HeraldProcess, free_port
from engine.database import Database
from mta.sink import CaptureSink
from tests.support.mta import identity_for, mta_settings, queue_message, wait_for_states
from tests.test_queue_http_and_log import sample

ROLE_SERIES = {
    "http": ["herald_http_requests", "herald_intake_queue_events"],
    "mta": ["herald_mta_active_messages", "herald_mta_dkim_sign_batch_seconds",
            "herald_mta_queue_depth", "herald_mta_queue_oldest_age_seconds",
            "herald_mta_outcomes", "herald_mta_dns_lookup_seconds"],
    "automation": ["herald_automation_lag_seconds", "herald_automation_timers_due",
                   "herald_automation_timers_pending", "herald_automation_leader"],
    "inbound": ["process_resident_memory_bytes"],
    "submission": ["herald_submission_messages_total"],
    "outbox": ["herald_outbox_depth"],
}


def herald(database_url: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {key: value for key, value in os.environ.items() if not key.startswith("HERALD_")}
    env.update(HERALD_DATABASE_URL=database_url, HERALD_ENGINE_LOG_LEVEL="warning")
    return subprocess.run([sys.executable, "-m", "herald.cli", *args], env=env,
                          capture_output=True, text=True, timeout=120)


async def scrape_until(port: int, done: object, tries: int = 200) -> str:
    """Scrape until ``done(text)`` holds (each scrape is a round trip to the process)."""
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=10) as client:
        for _ in range(tries):
            text = (await client.get("/metrics")).text
            if done(text):  # type: ignore[operator]
                return text
    raise AssertionError(f"metrics on port {port} never showed what was expected:\n{text}")


async def test_each_role_serves_its_own_metrics(
        database: Database, database_url: str, tmp_path: Path) -> None:
    identity = await identity_for(database, mta_settings())
    mail_log = tmp_path / "log" / "mail.log"
    async with CaptureSink(keep=10) as sink:
        ports = {role: free_port() for role in ROLE_SERIES}
        env = {"HERALD_DATABASE_URL": database_url, "HERALD_ENGINE_LOG_LEVEL": "warning",
               "HERALD_MTA_ROUTE": f"127.0.0.1:{sink.port}", "HERALD_MTA_SHAPING_FILE": "",
               "HERALD_MTA_EHLO_NAME": "herald.test",
               "HERALD_MTA_BOUNCE_DOMAIN": "bounces.herald.test",
               "HERALD_HTTP_LISTEN": f"127.0.0.1:{free_port()}",
               "HERALD_INBOUND_LISTEN": f"127.0.0.1:{free_port()}",
               "HERALD_SUBMISSION_LISTEN": f"127.0.0.1:{free_port()}",
               "HERALD_LOG_DELIVERY_FILE": str(mail_log),
               **{f"HERALD_METRICS_{role.upper()}_LISTEN": f"127.0.0.1:{port}"
                  for role, port in ports.items()}}
        processes = []
        try:
            for role in ROLE_SERIES:
                process = HeraldProcess(["run", "--role", role], env, tmp_path / f"{role}.log")
                process.start()
                processes.append(process)
            for role, series in ROLE_SERIES.items():
                text = await scrape_until(ports[role], lambda t: True)
                assert sample(text, "herald_build_info", roles=role) == 1, role
                assert sample(text, "process_cpu_seconds_total") > 0, role
                for name in series:
                    assert f"\n# TYPE {name}" in text, (role, name)
            message = await queue_message(database, identity, "ann@example.org")
            await wait_for_states(database_url, [message], ("delivered",))
            await scrape_until(ports["mta"], lambda t: sample(
                t, "herald_mta_outcomes_total", outcome="delivered", category="none") == 1)
            await scrape_until(ports["automation"],
                               lambda t: sample(t, "herald_automation_leader") == 1)
        finally:
            for process in reversed(processes):
                assert process.stop() == 0
    [line] = [orjson.loads(raw) for raw in mail_log.read_text().splitlines()]
    assert line["queue_id"] == str(message) and line["outcome"] == "delivered"
    assert str(message) not in (tmp_path / "mta.log").read_text()  # not mixed into stderr


async def test_herald_queue_from_the_shell(database: Database, database_url: str) -> None:
    identity = await identity_for(database, mta_settings())
    await queue_message(database, identity, "ann@example.org")
    empty_hold = herald(database_url, "queue", "hold", "--domain", "example.org")
    assert empty_hold.returncode == 0, empty_hold.stderr
    assert empty_hold.stdout.strip() == "held 1 message(s)"
    summary = herald(database_url, "queue")
    assert summary.returncode == 0, summary.stderr
    assert "queued 0, deferred 0, held 1" in summary.stdout
    assert "example.org (not routed yet)" in summary.stdout
    explained = herald(database_url, "queue", "explain", "--domain", "example.org")
    assert explained.returncode == 0, explained.stderr
    assert "held by an operator" in explained.stdout
    assert herald(database_url, "queue", "release", "--all").stdout.strip() == \
        "released 1 message(s)"
    for args, message in [
        (["hold", "--message", "42"], "message: '42' is not a message id (a UUID)"),
        (["purge"], "purge needs a selector: --site, --domain, --workflow, --contact or "
                    "--message"),
        (["explain", "--site", "mx.nowhere.example"],
         "unknown site 'mx.nowhere.example': no running MTA has routed mail to it "
         "(`herald queue` lists sites)"),
        (["retry", "--domain", "nowhere.example"],
         "unknown domain 'nowhere.example': no mail for it in the queue"),
    ]:
        result = herald(database_url, "queue", *args)
        assert result.returncode == 2, (args, result.stderr)
        assert result.stderr.strip() == f"herald: error: {message}", args
