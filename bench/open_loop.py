"""An open-loop HTTP load generator: requests at a fixed arrival rate, whatever the answers.

Request ``i`` is due at ``start + i / rate``. It is sent then, or as soon as one of
``connections`` keep-alive connections is free, and its latency counts from the moment it was
DUE: a server that falls behind cannot slow the load down and hide its own delay (no
coordinated omission). The bodies carry their sequence number and due time, so later stages
can be measured from the same instant.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from rich.progress import Progress

from bench.loadclient import HttpConnection


@dataclass
class LoadOutcome:
    """What the load generator saw: per sequence number, the intended time and the answer."""
    intended: dict[int, float] = field(default_factory=dict)
    acked: set[int] = field(default_factory=set)  # answered with ``ok_status``
    statuses: dict[int, int] = field(default_factory=dict)
    ack_latencies: list[float] = field(default_factory=list)
    errors: int = 0
    started: float = 0.0  # wall clock of slot 0
    finished: float = 0.0  # wall clock when the last request was answered


async def open_loop(port: int, headers: dict[str, str], path: str, rate: float, total: int,
                    connections: int, make_body: Callable[[int, float], bytes],
                    progress: Progress | None = None, label: str = "requests",
                    first_seq: int = 0, ok_status: int = 202) -> LoadOutcome:
    """POST ``total`` requests to ``path`` at ``rate`` per second; ``make_body(seq,
    intended_wall_time)`` makes each body."""
    pool: asyncio.Queue[HttpConnection] = asyncio.Queue()
    for _ in range(connections):
        pool.put_nowait(HttpConnection("127.0.0.1", port, headers))
    outcome = LoadOutcome()
    task_id = progress.add_task(label, total=total) if progress else None
    loop = asyncio.get_running_loop()

    async def send(seq: int, intended: float) -> None:
        connection = await pool.get()
        try:
            status, _ = await connection.request("POST", path, make_body(seq, intended))
        except (OSError, ConnectionError, asyncio.IncompleteReadError, ValueError):
            outcome.errors += 1
            connection.close()
            return
        finally:
            pool.put_nowait(connection)
        outcome.statuses[status] = outcome.statuses.get(status, 0) + 1
        outcome.ack_latencies.append(time.time() - intended)
        if status == ok_status:
            outcome.acked.add(seq)
        if progress is not None and task_id is not None:
            progress.advance(task_id)

    lead = 0.05  # schedule from a moment just ahead, so slot 0 is not already late
    start_loop = loop.time() + lead
    outcome.started = time.time() + lead
    tasks = []
    for index in range(total):
        offset = index / rate
        delay = start_loop + offset - loop.time()
        if delay > 0:
            await asyncio.sleep(delay)
        seq = first_seq + index
        intended = outcome.started + offset
        outcome.intended[seq] = intended
        tasks.append(asyncio.create_task(send(seq, intended)))
    await asyncio.gather(*tasks)
    outcome.finished = time.time()
    while not pool.empty():
        pool.get_nowait().close()
    return outcome
