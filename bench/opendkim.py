"""A throw-away OpenDKIM milter for the signed Postfix baseline of ``herald bench
compare-postfix``.

``running_milter`` writes an ``opendkim.conf`` into a temporary directory (sign mode, one key
for one domain, an inet socket on a free loopback port, nothing to syslog), runs ``opendkim -f``
in the foreground as a child, waits for its socket, and ends it on the way out. ``postfix_settings``
are the ``main.cf`` lines that make a Postfix instance (bench/postfix.py) sign through it: a
milter that fails answers tempfail, so an unsigned message is never counted as signed.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from bench.herald_process import free_port

OPENDKIM = shutil.which("opendkim") or "/usr/sbin/opendkim"
START_TIMEOUT = 20.0


class MilterError(Exception):
    """OpenDKIM could not be started."""


def installed() -> bool:
    return os.path.exists(OPENDKIM)


def config(domain: str, selector: str, key_file: Path, port: int, pid_file: Path) -> str:
    settings = {
        "Syslog": "no",
        "Mode": "s",
        "Domain": domain,
        "Selector": selector,
        "KeyFile": str(key_file),
        "Socket": f"inet:{port}@127.0.0.1",
        "PidFile": str(pid_file),
        "Canonicalization": "relaxed/relaxed",
        "SignatureAlgorithm": "rsa-sha256",
        "InternalHosts": "127.0.0.0/8",
        "RequireSafeKeys": "false",  # the bench's key lives in a temporary directory
    }
    return "".join(f"{key} {value}\n" for key, value in settings.items())


def postfix_settings(port: int) -> dict[str, str]:
    return {"smtpd_milters": f"inet:127.0.0.1:{port}", "non_smtpd_milters": "$smtpd_milters",
            "milter_default_action": "tempfail"}


@contextmanager
def running_milter(domain: str, selector: str, key_file: Path,
                   directory: Path) -> Iterator[int]:
    """Run OpenDKIM signing for ``domain``; yields the port Postfix's milter client uses."""
    if not installed():
        raise MilterError(f"OpenDKIM is not installed ({OPENDKIM})")
    port = free_port()
    conf = directory / "opendkim.conf"
    conf.write_text(config(domain, selector, key_file, port, directory / "opendkim.pid"))
    process = subprocess.Popen([OPENDKIM, "-f", "-x", str(conf)], stdout=subprocess.DEVNULL,
                               stderr=subprocess.PIPE)
    try:
        _wait_listening(process, port)
        yield port
    finally:
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(5)
        if process.stderr is not None:
            process.stderr.close()


def _wait_listening(process: subprocess.Popen[bytes], port: int) -> None:
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if process.poll() is not None:
            error = process.stderr.read().decode(errors="replace") if process.stderr else ""
            raise MilterError(f"opendkim exited with {process.returncode}: {error[-300:]}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise MilterError(f"opendkim did not listen on 127.0.0.1:{port} in {START_TIMEOUT:.0f}s")
