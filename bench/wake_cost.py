"""What waiting costs on this machine: two anchors for the benches that hand work between
processes.

On a machine whose idle CPUs halt (a VM's ``haltpoll`` idle driver, a host's deep C-states),
each sleep costs the sleeper CPU of its own once it runs again, and each hand-off to another
process waits for that process's CPU to wake. A server whose requests cross several
processes pays this many times per request; a CPU-bound one hardly at all. These anchors make
the price visible beside the figures it explains (docs/PERFORMANCE.md, "Ninth pass").
"""

from __future__ import annotations

import asyncio
import os
import socket
import time

import uvloop


def wake_anchors(wakes: int = 500, trips: int = 5_000) -> dict[str, float]:
    """This process's CPU per wake-up from a 1 ms event-loop sleep (run in a fresh loop, in
    this thread), and the wall time of a one-byte round trip to a forked child."""
    async def sleep_wakes() -> float:
        started = time.process_time()
        for _ in range(wakes):
            await asyncio.sleep(0.001)
        return (time.process_time() - started) / wakes

    wake_cpu = uvloop.run(sleep_wakes())
    ours, theirs = socket.socketpair()
    child = os.fork()
    if child == 0:  # pragma: no cover - the child answers each byte, then leaves
        ours.close()
        for _ in range(trips):
            theirs.recv(1)
            theirs.send(b"x")
        os._exit(0)
    theirs.close()
    started = time.perf_counter()
    for _ in range(trips):
        ours.send(b"x")
        ours.recv(1)
    round_trip = (time.perf_counter() - started) / trips
    ours.close()
    os.waitpid(child, 0)
    return {"wake_cpu_us_per_1ms_sleep": round(wake_cpu * 1e6, 1),
            "process_round_trip_us": round(round_trip * 1e6, 1)}
