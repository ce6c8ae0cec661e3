"""Simulations in worker processes, so the loop that serves intake, delivery and automation
never runs one.

A simulation is pure CPU (seconds for a large history). It runs in a small pool of worker
processes started with ``forkserver`` (``spawn`` where that is missing), never ``fork`` from
this threaded process. The pool is bounded: ``workers`` simulations run and ``queue`` more may
wait; one more is refused with :class:`SimulationBusy` (503). Compiled workflows and templates
cannot cross a process boundary, so a job carries their source texts and the worker compiles
them (keeping the last catalog it built).
"""

from __future__ import annotations

import asyncio
import hashlib
import multiprocessing
from collections.abc import Callable
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import orjson

from automation.content.templates import TemplateSet
from automation.errors import AutomationError
from automation.loading.catalog import Catalog
from automation.loading.loader import parse_workflow
from automation.settings import AutomationSettings
from automation.tools.simulate import Line, Simulator, output_line


class SimulationBusy(AutomationError):
    """Every worker is busy and the queue is full: retry later."""


@dataclass(frozen=True, slots=True)
class SimulationJob:
    workflow: str
    workflow_source: str
    templates: dict[str, str]
    settings: AutomationSettings
    lines: list[Line]
    horizon: timedelta


_catalog: tuple[str, Catalog] | None = None  # in a worker: the last catalog it compiled


def _catalog_for(job: SimulationJob) -> Catalog:
    global _catalog
    digest = hashlib.sha256(orjson.dumps([job.workflow, job.workflow_source, job.templates],
                                         option=orjson.OPT_SORT_KEYS)).hexdigest()
    if _catalog is None or _catalog[0] != digest:
        templates = TemplateSet.from_sources(job.templates)
        workflow = parse_workflow(job.workflow_source, job.workflow, templates,
                                  default_name=job.workflow)
        _catalog = (digest, Catalog([workflow], templates))
    return _catalog[1]


def run_job(job: SimulationJob) -> list[dict[str, Any]]:
    """Run in a worker: the simulation's sends and skips, as JSON-ready objects."""
    simulator = Simulator(_catalog_for(job), job.settings)
    results = asyncio.run(simulator.run(job.lines, job.horizon))
    return [orjson.loads(output_line(result)) for result in results]


def _context() -> multiprocessing.context.BaseContext:
    methods = multiprocessing.get_all_start_methods()
    return multiprocessing.get_context("forkserver" if "forkserver" in methods else "spawn")


class SimulationPool:
    def __init__(self, workers: int = 1, queue: int = 2) -> None:
        self.workers = max(1, workers)
        self.queue = max(0, queue)
        # What a worker runs; a test may swap in a wrapper (a picklable module-level callable).
        self.job: Callable[[SimulationJob], list[dict[str, Any]]] = run_job
        self._executor: ProcessPoolExecutor | None = None
        self._active = 0  # submitted and not finished (running or queued)

    @property
    def active(self) -> int:
        return self._active

    async def run(self, job: SimulationJob) -> list[dict[str, Any]]:
        if self._active >= self.workers + self.queue:
            raise SimulationBusy(f"{self._active} simulations are running or waiting; "
                                 "retry later")
        if self._executor is None:
            self._executor = ProcessPoolExecutor(self.workers, mp_context=_context())
        loop = asyncio.get_running_loop()
        try:
            future: Future[list[dict[str, Any]]] = self._executor.submit(self.job, job)
        except BrokenProcessPool:
            self._restart()
            raise SimulationBusy("the simulation worker was restarted; retry") from None
        self._active += 1
        # The slot is held until the worker is done with the job, even if the caller leaves.
        future.add_done_callback(lambda _: loop.call_soon_threadsafe(self._finished))
        try:
            return await asyncio.wrap_future(future)
        except BrokenProcessPool:
            self._restart()
            raise SimulationBusy("the simulation worker died; retry") from None

    def _finished(self) -> None:
        self._active -= 1

    def _restart(self) -> None:
        if self._executor is not None:
            self._executor.shutdown(wait=False, cancel_futures=True)
            self._executor = None

    def close(self) -> None:
        if self._executor is not None:
            self._executor.shutdown(wait=True, cancel_futures=True)
            self._executor = None
