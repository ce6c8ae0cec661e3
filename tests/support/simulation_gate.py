"""A simulation job held at a gate in its worker process, so a test can prove by ordering
(never timing) that the serving loop answers while a simulation is in flight.

Two named pipes form the handshake: the worker opens ``started`` for writing (which returns
once the test reads it), then blocks reading ``release`` until the test writes to it.
"""

from __future__ import annotations

import asyncio
import functools
import os
from pathlib import Path
from typing import Any

from automation.tools.simulation_pool import SimulationJob, run_job


def gated_job(directory: str, job: SimulationJob) -> list[dict[str, Any]]:
    Path(directory, "started").write_text("started")
    Path(directory, "release").read_text()
    return run_job(job)


class Gate:
    def __init__(self, directory: Path) -> None:
        self.directory = directory
        os.mkfifo(directory / "started")
        os.mkfifo(directory / "release")
        self.job = functools.partial(gated_job, str(directory))

    async def started(self, timeout: float = 60.0) -> None:
        await asyncio.wait_for(asyncio.to_thread((self.directory / "started").read_text),
                               timeout)

    async def release(self, timeout: float = 60.0) -> None:
        await asyncio.wait_for(asyncio.to_thread((self.directory / "release").write_text,
                                                 "go"), timeout)
