"""``herald bench intake``'s load phases: the events each phase posts (ids unique to the run
and phase), and each phase taking turns with its ceiling in slices of the same run: single
events with the bare HTTP stack, batches with raw COPY (bare, and into the log's shape)."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any

import orjson

from bench.bare_http import BareHttpProcess
from bench.copy_ceiling import BARE, LOG, copy_rows
from bench.cpu_account import CpuAccounts
from bench.intake_accounts import Processes
from bench.loadclient import LoadResult, percentile, run_load
from bench.resources import Part

HOST = "127.0.0.1"
PATH = "/v1/events"
WARM_UP_CLIENTS = 8


# --- load ------------------------------------------------------------------------------------

class EventSource:
    """Events whose ids are ``<prefix><n>``: the prefix names the run and the phase."""

    def __init__(self, prefix: str, contacts: int) -> None:
        self.prefix = prefix
        self.contacts = contacts
        self.next = 0

    def single(self, worker: int) -> tuple[bytes, range]:
        n = self.next
        self.next += 1
        body = orjson.dumps({"type": "product_viewed", "contact_id": f"c{n % self.contacts}",
                             "id": f"{self.prefix}{n}",
                             "properties": {"sku": f"sku-{n % 500}", "price": 19.9}})
        return body, range(n, n + 1)

    def batch(self, size: int) -> Callable[[int], tuple[bytes, range]]:
        def make(worker: int) -> tuple[bytes, range]:
            start = self.next
            self.next += size
            return orjson.dumps({"events": [
                {"type": "page_viewed", "contact_id": f"c{n % self.contacts}",
                 "id": f"{self.prefix}{n}", "properties": {"path": f"/p/{n % 1000}"}}
                for n in range(start, start + size)]}), range(start, start + size)
        return make

    def acknowledged_ids(self, result: LoadResult) -> set[str]:
        return {f"{self.prefix}{n}" for numbers in result.acknowledged for n in numbers}


def summarise(name: str, result: LoadResult, elapsed: float,
              events_per_request: int) -> dict[str, Any]:
    ok = result.statuses.get(202, 0)
    return {
        "phase": name,
        "requests": ok,
        "elapsed_s": round(elapsed, 3),
        "requests_per_s": round(ok / elapsed, 1),
        "events_per_s": round(ok * events_per_request / elapsed, 1),
        "p50_ms": round(percentile(result.latencies, 0.50) * 1000, 2),
        "p99_ms": round(percentile(result.latencies, 0.99) * 1000, 2),
        "non_202": {str(k): v for k, v in result.statuses.items() if k != 202},
        "errors": result.errors,
    }


def merge(into: LoadResult, result: LoadResult) -> None:
    into.latencies.extend(result.latencies)
    for status, count in result.statuses.items():
        into.statuses[status] = into.statuses.get(status, 0) + count
    into.errors += result.errors
    into.acknowledged.extend(result.acknowledged)


async def single_phases(targets: dict[str, tuple[int, list[Part]]], headers: dict[str, str],
                        run: str, args: argparse.Namespace, accounts: CpuAccounts
                        ) -> dict[str, tuple[dict[str, Any], EventSource, LoadResult]]:
    """The single-event load on each target (name: port): a brief warm-up each (ids of their
    own, not measured), then ``args.slices`` rounds in which each target gets
    ``duration / slices`` seconds in turn (who goes first alternates), so that a change in the
    neighbours' load falls on all of them alike. A target's rate is its answers over the sum of
    its slices' elapsed times (each from its first request to its last answer). Each slice's
    CPU goes to the target's account (name: its port and the processes to count)."""
    sources = {name: EventSource(f"{run}{name}-", args.contacts) for name in targets}
    results = {name: LoadResult() for name in targets}
    elapsed = dict.fromkeys(targets, 0.0)
    for name, (port, _) in targets.items():
        warm_up = EventSource(f"{run}warm-{name}-", args.contacts)
        await run_load(HOST, port, headers, WARM_UP_CLIENTS, args.warm_up, warm_up.single, PATH)
    slices = max(1, args.slices)
    order = list(targets)
    for turn in range(slices):
        for name in order if turn % 2 == 0 else reversed(order):
            port, parts = targets[name]
            with accounts.slice(name, parts):
                result, seconds = await run_load(HOST, port, headers, args.concurrency,
                                                 args.duration / slices, sources[name].single,
                                                 PATH)
            merge(results[name], result)
            elapsed[name] += seconds
    return {name: (summarise(name, results[name], elapsed[name], 1), sources[name],
                   results[name]) for name in targets}


# --- the single-event phase, in turns with the bare HTTP stack ---------------------------------

async def single_and_bare_http(port: int, headers: dict[str, str], run: str,
                               args: argparse.Namespace, processes: Processes
                               ) -> tuple[dict[str, Any], tuple[dict[str, Any], EventSource,
                                                                LoadResult]]:
    """The bare stack's summary and Herald's single-event phase, measured in turns."""
    bare = BareHttpProcess()
    bare.start()
    assert bare.process is not None
    targets = {"bare_http": (bare.port, processes.bare(bare.process.pid)),
               "single": (port, processes.herald())}
    try:
        phases = await single_phases(targets, headers, run, args, processes.accounts)
    finally:
        bare.stop()
    return phases["bare_http"][0], phases["single"]


# --- the batch phase, in turns with raw COPY ---------------------------------------------------

async def batch_and_copy(port: int, headers: dict[str, str], run: str,
                         args: argparse.Namespace, database_url: str, processes: Processes
                         ) -> tuple[dict[str, dict[str, Any]], dict[str, Any],
                                    tuple[EventSource, LoadResult]]:
    """Raw COPY's ceilings (into a bare table; unless ``--no-log-floor``, into tables of the
    log's shape) and Herald's batch phase, measured in turns: ``args.slices`` rounds in which
    each gets ``duration / slices`` seconds (who goes first rotates). Each rate is its rows (or
    events answered) over the sum of its slices' elapsed times. A COPY slice's CPU is counted
    up to its last commit, before its connections (and their backends) close."""
    accounts = processes.accounts
    batch = EventSource(f"{run}batch-", args.contacts)
    result = LoadResult()
    copies = {"copy": BARE, **({} if args.no_log_floor else {"copy_log": LOG})}
    elapsed = dict.fromkeys(["batch", *copies], 0.0)
    copied = dict.fromkeys(copies, 0)
    names = list(elapsed)
    slices = max(1, args.slices)
    for turn in range(slices):
        shift = turn % len(names)
        for name in names[shift:] + names[:shift]:
            if name == "batch":
                with accounts.slice("batch", processes.herald()):
                    part, seconds = await run_load(HOST, port, headers, args.batch_concurrency,
                                                   args.duration / slices,
                                                   batch.batch(args.batch_size), PATH)
                merge(result, part)
            else:
                with accounts.slice(name, processes.copy()) as pending:
                    rows, seconds = await copy_rows(database_url, args.duration / slices,
                                                    args.copy_connections, args.contacts,
                                                    committed=pending.end,
                                                    target=copies[name])
                copied[name] += rows
            elapsed[name] += seconds
    ceilings = {name: {"phase": name, "rows": copied[name],
                       "rows_per_s": round(copied[name] / elapsed[name], 1),
                       "connections": args.copy_connections, "slices": slices}
                for name in copies}
    summary = summarise(f"batch{args.batch_size}", result, elapsed["batch"], args.batch_size)
    return ceilings, summary, (batch, result)
