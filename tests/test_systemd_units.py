"""The units in systemd/: each ExecStart line, run as systemd would run it (NOTIFY_SOCKET,
WATCHDOG_USEC, STATE_DIRECTORY), reports READY=1 and pings the watchdog, and stops cleanly on
SIGTERM; the unit settings the issue asks for are there. `.ci/verify-units` runs
systemd-analyze verify on the same files."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from herald.exit_codes import CONFIG
from herald.roles import ROLE_NAMES
from tests.support.systemd_units import exec_start, load_unit, target_units

ROOT = Path(__file__).resolve().parents[1]
WATCHDOG_USEC = 200_000  # pings every 0.1 s
START_TIMEOUT = 90.0


class NotifySocket:
    """What systemd listens on: a unix datagram socket the child writes its states to."""

    def __init__(self, directory: Path) -> None:
        self.path = str(directory / "notify.sock")
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(self.path)
        self.messages: list[str] = []

    def wait_for(self, state: str, process: subprocess.Popen[bytes], timeout: float,
                 after: int = 0) -> None:
        """Wait until ``state`` arrives (among the messages from index ``after`` on)."""
        deadline = time.monotonic() + timeout
        while state not in self.messages[after:]:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(f"no {state} within {timeout}s; got {self.messages}")
            if process.poll() is not None and not self.drain():
                raise AssertionError(f"exited {process.returncode} before {state}; "
                                     f"got {self.messages}")
            self.sock.settimeout(min(remaining, 0.5))
            try:
                self.messages += self.sock.recv(4096).decode().split("\n")
            except TimeoutError:
                continue

    def drain(self) -> bool:
        self.sock.setblocking(False)
        got = False
        try:
            while True:
                self.messages += self.sock.recv(4096).decode().split("\n")
                got = True
        except BlockingIOError:
            return got
        finally:
            self.sock.setblocking(True)

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def notify(tmp_path: Path) -> Iterator[NotifySocket]:
    sock = NotifySocket(tmp_path)
    try:
        yield sock
    finally:
        sock.close()


def service_env(tmp_path: Path, notify: NotifySocket, **extra: str) -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if not key.startswith("HERALD_")}
    state = tmp_path / "state"
    state.mkdir(exist_ok=True)
    return {**env, "NOTIFY_SOCKET": notify.path, "WATCHDOG_USEC": str(WATCHDOG_USEC),
            "STATE_DIRECTORY": str(state), "INVOCATION_ID": "0" * 32,
            "HERALD_ENGINE_LOG_LEVEL": "warning", **extra}


def run_until_ready(argv: list[str], env: dict[str, str], cwd: Path,
                    notify: NotifySocket) -> int:
    """Start argv, see READY=1 and a WATCHDOG=1 after it, SIGTERM, return the exit code."""
    log = cwd / "service.log"
    with log.open("wb") as out:
        process = subprocess.Popen(argv, env=env, cwd=cwd, stdout=out, stderr=out)
        try:
            notify.wait_for("READY=1", process, START_TIMEOUT)
            notify.wait_for("WATCHDOG=1", process, 10.0,
                            after=notify.messages.index("READY=1"))
            process.send_signal(signal.SIGTERM)
            code = process.wait(30)
        finally:
            if process.poll() is None:
                process.kill()
                process.wait(10)
    notify.drain()
    assert "STOPPING=1" in notify.messages, (notify.messages, log.read_text())
    return code


ROLE_UNITS = [name for name in target_units() if name.startswith("herald@")]


def test_the_target_starts_the_database_and_every_role() -> None:
    assert "herald-postgres.service" in target_units()
    assert {name.split("@")[1].removesuffix(".service") for name in ROLE_UNITS} >= set(ROLE_NAMES)


@pytest.mark.parametrize("unit_name", ROLE_UNITS)
def test_each_role_unit_starts_reports_ready_pings_the_watchdog_and_stops(
        unit_name: str, database_url: str, tmp_path: Path, notify: NotifySocket) -> None:
    role = unit_name.split("@")[1].removesuffix(".service")
    if role not in ROLE_NAMES:
        pytest.skip(f"role {role} is not in this build yet")
    unit = load_unit(unit_name)
    argv = exec_start(unit)
    assert argv[1:] == ["run", "--role", role]
    env = service_env(tmp_path, notify, HERALD_DATABASE_URL=database_url,
                      HERALD_HTTP_LISTEN="127.0.0.1:0", HERALD_INBOUND_LISTEN="127.0.0.1:0",
                      HERALD_SUBMISSION_LISTEN="127.0.0.1:0",
                      HERALD_MTA_EHLO_NAME="mail.herald.test",
                      HERALD_MTA_BOUNCE_DOMAIN="bounces.herald.test",
                      HERALD_AUTOMATION_FROM_ADDRESS="Shop <news@herald.test>")
    # Run from an empty directory, as systemd does (WorkingDirectory=/var/lib/herald): the
    # shipped workflows and shaping rules are found without a checkout.
    assert run_until_ready(argv, env, tmp_path, notify) == 0, (tmp_path / "service.log").read_text()


def test_the_postgres_unit_runs_the_embedded_server_and_stops_it(
        tmp_path: Path, notify: NotifySocket) -> None:
    argv = exec_start(load_unit("herald-postgres.service"))
    assert argv[1:] == ["postgres"]
    env = service_env(tmp_path, notify)
    assert run_until_ready(argv, env, tmp_path, notify) == 0, (tmp_path / "service.log").read_text()
    pgdata = tmp_path / "state" / "postgres"
    assert (pgdata / "PG_VERSION").exists()  # in $STATE_DIRECTORY
    assert not (pgdata / "postmaster.pid").exists()  # stopped cleanly


def test_a_wrong_config_exits_78_which_the_units_do_not_restart(
        tmp_path: Path, notify: NotifySocket) -> None:
    unit = load_unit("herald@http.service")
    assert unit["Service"]["RestartPreventExitStatus"] == [str(CONFIG)]
    env = service_env(tmp_path, notify, HERALD_HTTP_LISTEN="nowhere")
    result = subprocess.run(exec_start(unit), env=env, cwd=tmp_path, capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == CONFIG
    assert result.stderr.strip() == ("herald: error: http.listen: 'nowhere' has no port; "
                                     "expected HOST:PORT")


def test_unit_settings() -> None:
    for name in [*ROLE_UNITS, "herald-postgres.service"]:
        service = load_unit(name)["Service"]
        assert service["Type"] == ["notify"] and service["WatchdogSec"]
        assert service["KillMode"] == ["mixed"] and service["Restart"] == ["on-failure"]
        assert service["User"] == ["herald"] and service["StateDirectory"] == ["herald"]
        assert service["ConfigurationDirectory"] == ["herald"]
        for key in ("ProtectSystem", "ProtectHome", "PrivateTmp", "NoNewPrivileges"):
            assert service[key], key
        assert int(service["LimitNOFILE"][0]) >= 65536
        binds_smtp = name in ("herald@inbound.service", "herald@submission.service")
        assert service["CapabilityBoundingSet"] == (["CAP_NET_BIND_SERVICE"] if binds_smtp
                                                     else []), name


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="no systemd-analyze")
def test_systemd_analyze_verify_accepts_the_units() -> None:
    result = subprocess.run([str(ROOT / ".ci" / "verify-units")], capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
