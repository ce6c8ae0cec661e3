"""Process lifecycle: systemd notifications, the watchdog, and signal-driven shutdown."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
from collections.abc import Mapping

from engine.values import ASCII_DIGITS


def sd_notify(state: str) -> bool:
    """Send ``state`` (``READY=1``, ``STOPPING=1``...) to systemd when NOTIFY_SOCKET is set."""
    address = os.environ.get("NOTIFY_SOCKET")
    if not address:
        return False
    if address.startswith("@"):
        address = "\0" + address[1:]  # abstract namespace socket
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        try:
            sock.connect(address)
            sock.sendall(state.encode())
        except OSError:
            return False
    return True


def watchdog_interval(environ: Mapping[str, str] | None = None) -> float | None:
    """Seconds between ``WATCHDOG=1`` pings: half of ``WATCHDOG_USEC`` when systemd asks for
    them (``WatchdogSec=``) and ``WATCHDOG_PID``, if set, is this process; else None."""
    environ = os.environ if environ is None else environ
    usec = environ.get("WATCHDOG_USEC", "")
    pid = environ.get("WATCHDOG_PID", "")
    if not ASCII_DIGITS.match(usec) or int(usec) == 0:
        return None
    if pid and (not ASCII_DIGITS.match(pid) or int(pid) != os.getpid()):
        return None
    return int(usec) / 2_000_000


async def watchdog_pings(interval: float) -> None:
    """Send ``WATCHDOG=1`` every ``interval`` seconds from the event loop until cancelled, so a
    loop that stalls stops the pings and systemd restarts the service."""
    while True:
        sd_notify("WATCHDOG=1")
        await asyncio.sleep(interval)


def install_stop_signals(stop: asyncio.Event) -> None:
    """SIGTERM and SIGINT set ``stop``; a second signal exits at once."""
    loop = asyncio.get_running_loop()

    def on_signal(signum: int) -> None:
        if stop.is_set():
            os._exit(128 + signum)
        stop.set()

    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, on_signal, signum)
