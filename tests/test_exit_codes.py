"""Exit codes systemd can act on, the watchdog interval, and the start-up refusal of localhost
identities: every failure is one line on stderr."""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from bench.herald_process import HeraldProcess
from engine.database import Database
from engine.lifecycle import watchdog_interval
from herald.identity import identity_problems, is_local_name
from herald.settings import load_settings
from tests.support.mta import fetch, identity_for, mta_settings, queue_message

HERALD_VERSION = "0.1.0"


def herald(*args: str, cwd: Path | None = None, **env: str) -> subprocess.CompletedProcess[str]:
    clean = {key: value for key, value in os.environ.items() if not key.startswith("HERALD_")}
    clean["HERALD_ENGINE_LOG_LEVEL"] = "warning"
    return subprocess.run([sys.executable, "-m", "herald.cli", *args], env={**clean, **env},
                          cwd=cwd, capture_output=True, text=True, timeout=120)


def one_line(result: subprocess.CompletedProcess[str]) -> str:
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    return lines[0]


def test_version() -> None:
    result = herald("--version")
    assert result.returncode == 0 and result.stdout.strip() == f"herald {HERALD_VERSION}"


def test_usage_errors_exit_2() -> None:
    assert herald("frobnicate").returncode == 2
    assert herald("run", "--role", "nope").returncode == 2
    assert herald("sink", "--listen", "nowhere").returncode == 2


def test_a_missing_config_file_exits_78(tmp_path: Path) -> None:
    result = herald("--config", str(tmp_path / "nope.toml"), "migrate")
    assert result.returncode == 78
    assert one_line(result) == f"herald: error: config file {tmp_path / 'nope.toml'} does not exist"


def test_a_bad_workflow_exits_78(tmp_path: Path, database_url: str) -> None:
    workflows = tmp_path / "workflows"
    workflows.mkdir()
    (workflows / "broken.yaml").write_text("name: broken\n")
    result = herald("run", "--role", "http", HERALD_DATABASE_URL=database_url,
                    HERALD_AUTOMATION_WORKFLOWS_DIR=str(workflows))
    assert result.returncode == 78, result.stderr
    assert "broken.yaml" in result.stderr and "Traceback" not in result.stderr


def test_an_unreachable_database_exits_69() -> None:
    result = herald("run", "--role", "http", HERALD_DATABASE_URL="postgresql://x@127.0.0.1:1/x")
    assert result.returncode == 69
    assert one_line(result).startswith("herald: error: cannot connect to Postgres")


def test_a_taken_listening_address_exits_69(database_url: str) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = herald("run", "--role", "http", HERALD_DATABASE_URL=database_url,
                        HERALD_HTTP_LISTEN=f"127.0.0.1:{port}")
    assert result.returncode == 69
    assert one_line(result) == "herald: error: role http cannot start: Address already in use"


async def test_localhost_identities_hold_delivery_naming_the_keys(
        tmp_path: Path, database: Database, database_url: str) -> None:
    """Every role starts (a first `herald run` works), but the mta role keeps mail queued and
    the log says which keys to set."""
    identity = await identity_for(database, mta_settings(bounce_domain="localhost"))
    message_id = await queue_message(database, identity, "ann@example.com")
    clean = {key: value for key, value in os.environ.items() if not key.startswith("HERALD_")}
    log_path = tmp_path / "herald.log"
    process = HeraldProcess(["run", "--role", "mta", "--role", "automation"],
                            {**clean, "HERALD_DATABASE_URL": database_url,
                             "HERALD_HTTP_PUBLIC_URL": "http://127.0.0.1:8025"}, log_path)
    await asyncio.to_thread(process.start)
    assert process.stop() == 0
    log = await asyncio.to_thread(log_path.read_text)  # complete once the process has exited
    assert "refusing to send mail as localhost" in log and "delivery held" in log
    for key in ("[mta] ehlo_name", "[mta] bounce_domain", "[automation] from_address",
                "[mta] route"):
        assert key in log
    rows = await fetch(database, "SELECT state, attempts FROM outbound_messages WHERE id = $1",
                       message_id)
    assert (rows[0]["state"], rows[0]["attempts"]) == ("queued", 0)


def test_identity_rules() -> None:
    assert all(is_local_name(name) for name in ("localhost", "LOCALHOST.", "a.localhost", ""))
    assert not is_local_name("mail.example.com")
    defaults = load_settings(None, environ={})
    assert len(identity_problems(defaults, ["http", "mta", "automation"])) == 3
    assert identity_problems(defaults, ["http"]) == []  # the API alone sends nothing
    routed = load_settings(None, environ={"HERALD_MTA_ROUTE": "127.0.0.1:2525"})
    assert identity_problems(routed, ["mta", "automation"]) == []
    per_domain = load_settings(None, environ={"HERALD_MTA_ROUTES": '{"a.test": "127.0.0.1:25"}'})
    assert identity_problems(per_domain, ["mta"]) == []
    real = load_settings(None, environ={
        "HERALD_MTA_EHLO_NAME": "mail.example.com", "HERALD_MTA_BOUNCE_DOMAIN": "b.example.com",
        "HERALD_AUTOMATION_FROM_ADDRESS": "Shop <news@example.com>"})
    assert identity_problems(real, ["mta", "automation"]) == []


def test_the_http_role_alone_starts_with_the_defaults(database_url: str, tmp_path: Path) -> None:
    """README's first step: no config, only the API."""
    server = HeraldProcess(["run", "--role", "http"],
                           {"HERALD_DATABASE_URL": database_url, "HERALD_HTTP_LISTEN":
                            "127.0.0.1:0", "HERALD_ENGINE_LOG_LEVEL": "warning"},
                           tmp_path / "herald.log")
    server.start()
    assert server.stop() == 0


@pytest.mark.parametrize(("environ", "interval"), [
    ({}, None), ({"WATCHDOG_USEC": "0"}, None), ({"WATCHDOG_USEC": "30000000"}, 15.0),
    ({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": str(os.getpid())}, 15.0),
    ({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "1"}, None),  # meant for another process
    ({"WATCHDOG_USEC": "soon"}, None)])
def test_watchdog_interval_is_half_of_watchdog_usec(environ: dict[str, str],
                                                    interval: float | None) -> None:
    assert watchdog_interval(environ) == interval


async def test_herald_run_with_nothing_configured_starts_every_role(
        tmp_path: Path, database_url: str) -> None:
    """README's install command: `herald run` with no config reaches READY with every role."""
    clean = {key: value for key, value in os.environ.items() if not key.startswith("HERALD_")}
    log_path = tmp_path / "herald.log"
    process = HeraldProcess(["run"], {**clean, "HERALD_DATABASE_URL": database_url}, log_path)
    await asyncio.to_thread(process.start)
    assert process.stop() == 0
    log = await asyncio.to_thread(log_path.read_text)  # complete once the process has exited
    ready = [line for line in log.splitlines() if '"herald ready"' in line]
    assert len(ready) == 1
    for role in ("http", "mta", "automation", "inbound", "submission"):
        assert f'"{role}"' in ready[0]
