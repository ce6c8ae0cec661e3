"""A non-editable install (what `pip install .` puts on a server), run from another directory:
`herald --version`, the shipped workflows and templates load, and a role starts to READY=1."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from bench.herald_process import free_port

ROOT = Path(__file__).resolve().parents[1]
SKIP = shutil.ignore_patterns(".git", "build", "*.egg-info", "__pycache__", ".mypy_cache",
                              ".ruff_cache", ".pytest_cache", "herald-data", "tests")


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """The wheel built from a copy of the source, installed into a fresh target directory;
    dependencies come from this Python's site-packages (offline, nothing downloaded)."""
    base = tmp_path_factory.mktemp("packaging")
    source = base / "src"
    shutil.copytree(ROOT, source, symlinks=True, ignore=SKIP)
    target = base / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-index",
                    "--no-build-isolation", "--target", str(target), str(source)],
                   check=True, capture_output=True, timeout=300)
    yield target


def run(installed: Path, *args: str, cwd: Path, **env: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("HERALD_")}
    clean.pop("PYTHONPATH", None)
    return subprocess.run([str(installed / "bin" / "herald"), *args], cwd=cwd, text=True,
                          capture_output=True, timeout=120,
                          env={**clean, "PYTHONPATH": str(installed), **env})


def test_the_installed_herald_is_the_one_running(installed: Path, tmp_path: Path) -> None:
    where = subprocess.run([sys.executable, "-c", "import herald; print(herald.__file__)"],
                           env={**os.environ, "PYTHONPATH": str(installed)}, cwd=tmp_path,
                           capture_output=True, text=True, check=True).stdout.strip()
    assert Path(where).is_relative_to(installed)
    assert (installed / "herald" / "defaults" / "workflows" / "welcome.yaml").is_file()
    assert not (installed / "herald" / "defaults").is_symlink()  # real files in the wheel
    result = run(installed, "--version", cwd=tmp_path)
    assert result.returncode == 0 and result.stdout.startswith("herald ")


def test_the_shipped_workflows_load_from_any_directory(installed: Path, tmp_path: Path) -> None:
    events = tmp_path / "events.jsonl"
    events.write_text(
        '{"kind": "contact", "contact_id": "42", "email": "ann@example.com"}\n'
        '{"type": "signed_up", "contact_id": "42", "timestamp": "2026-03-02T09:00:00Z"}\n')
    result = run(installed, "simulate", "--events", str(events), "--horizon", "2d", cwd=tmp_path,
                 HERALD_ENGINE_LOG_LEVEL="warning")
    assert result.returncode == 0, result.stderr
    assert '"workflow":"welcome"' in result.stdout.replace(" ", "")


def test_a_role_starts_from_the_installed_package(installed: Path, tmp_path: Path,
                                                  database_url: str) -> None:
    notify_path = str(tmp_path / "notify.sock")
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as notify:
        notify.bind(notify_path)
        notify.settimeout(1.0)
        clean = {k: v for k, v in os.environ.items() if not k.startswith("HERALD_")}
        clean.pop("PYTHONPATH", None)
        env = {**clean, "PYTHONPATH": str(installed), "NOTIFY_SOCKET": notify_path,
               "HERALD_DATABASE_URL": database_url, "HERALD_ENGINE_LOG_LEVEL": "warning",
               "HERALD_HTTP_LISTEN": f"127.0.0.1:{free_port()}",
               "HERALD_MTA_EHLO_NAME": "mail.herald.test",
               "HERALD_MTA_BOUNCE_DOMAIN": "bounces.herald.test",
               "HERALD_AUTOMATION_FROM_ADDRESS": "Shop <news@herald.test>"}
        process = subprocess.Popen([str(installed / "bin" / "herald"), "run", "--role", "http",
                                    "--role", "automation"], cwd=tmp_path, env=env,
                                   stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        try:
            deadline = time.monotonic() + 90
            states: list[str] = []
            while "READY=1" not in states and time.monotonic() < deadline:
                assert process.poll() is None, process.stderr.read() if process.stderr else ""
                try:
                    states.append(notify.recv(4096).decode())
                except TimeoutError:
                    continue
            assert "READY=1" in states
            process.terminate()
            assert process.wait(30) == 0
        finally:
            if process.poll() is None:
                process.kill()
                process.wait(10)
    assert not (tmp_path / "herald-data").exists()  # the database was the configured one
