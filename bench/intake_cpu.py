"""``herald bench intake-cpu``: the HTTP server's own CPU per single-event request, in this
process, split into what the HTTP path, the group commit's hand-off and the database write cost.

``herald bench intake`` measures rates, with the server, Postgres and the load client sharing
the machine's cores; where the server's CPU goes is hard to see there (each process slows the
others). Here one process drives uvicorn's own protocol (the class ``herald run`` serves with)
through in-memory transports, ``--connections`` keep-alive clients posting single events back to
back, and counts this process's CPU (user and system) per answered request, for four stacks:

* ``bare``: the bare stack of ``herald bench intake`` (Starlette, orjson, 202, no database);
* ``http``: Herald's app with a writer that answers every request at once (authentication,
  body, strict JSON, validation, the answer: Herald's HTTP path alone); like the two below,
  served as ``herald run`` serves it, ``POST /v1/events`` answered from the protocol
  (:mod:`engine.http.direct_routes`) unless ``--no-direct`` (``[http] direct_intake =
  false``);
* ``handoff``: Herald's app and its group-commit writer, the database write replaced by a
  sleep of ``--commit-ms`` (default 0: one turn of the event loop): the future, the queue,
  the batches, the answers;
* ``full``: Herald's app and writer on a real Postgres (the embedded one unless
  ``--database-url``), every request durable before its 202.

The stacks take turns for ``--rounds`` rounds of ``--requests`` requests each (after a
warm-up); each figure is the median over the rounds, and ``share_of_bare`` the stack's CPU per
request over the bare stack's (medians).

Two anchors say what waiting costs on this machine (on some VMs much more than on bare
metal): this process's CPU per wake-up from a 1 ms sleep of the event loop, and the round trip
of one byte between this process and a child over a socket pair (two hand-offs between
processes, as each request's commit makes). A stack whose process waits between bursts of
work (``full``: for its commits) pays the first per wait; the bare stack never waits.

For ``full`` the bench also reports the group sizes
and the writer's CPU per group around its database write (thread CPU from the write's start to
its end: close to the write's own while every request waits in that group, as it does here).

Prints a table on stderr and one JSON line on stdout.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
import uvloop
from uvicorn.config import Config
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
from uvicorn.server import ServerState

from bench.args import OneLineParser, positive_int
from bench.bare_http import build_app as build_bare_app
from bench.databases import migrated_database
from bench.loadclient import take_answer
from bench.wake_cost import wake_anchors
from engine import gc_policy
from engine.config import EngineSettings, HttpSettings, IntakeSettings
from engine.database import Database, connect_one
from engine.http.direct_routes import DirectRoute, direct_protocol
from engine.http.slow_clients import ClientLimits, guarded_protocol
from engine.intake.validation import EventIn
from engine.intake.writer import EventWriter, StoreResult
from engine.keys import create_key
from engine.values import HostPort
from herald.roles import HttpRole
from herald.settings import Settings

STACKS = ("bare", "http", "handoff", "full")
CONTACTS = 100_000


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = OneLineParser(prog="herald bench intake-cpu", description=__doc__.split("\n")[0])
    parser.add_argument("--database-url", help="Postgres to write to (default: an embedded "
                                               "one in a temporary directory)")
    parser.add_argument("--connections", type=positive_int, default=64,
                        help="keep-alive clients posting single events")
    parser.add_argument("--requests", type=positive_int, default=30_000,
                        help="requests per stack per round")
    parser.add_argument("--rounds", type=positive_int, default=3)
    parser.add_argument("--warm-up", type=positive_int, default=5_000,
                        help="requests per stack before the first round")
    parser.add_argument("--commit-ms", type=float, default=0.0,
                        help="the handoff stack's stand-in for a commit: a sleep of this "
                             "long (0: one turn of the event loop; uvloop's timers count "
                             "whole milliseconds)")
    parser.add_argument("--no-direct", action="store_true",
                        help="serve Herald's stacks through the app only ([http] "
                             "direct_intake = false)")
    parser.add_argument("--stacks", default=",".join(STACKS),
                        help=f"which stacks, comma-separated (of {', '.join(STACKS)})")
    args = parser.parse_args(argv)
    args.stacks = [name.strip() for name in args.stacks.split(",") if name.strip()]
    unknown = sorted(set(args.stacks) - set(STACKS))
    if unknown or not args.stacks:
        parser.error(f"--stacks: unknown {', '.join(unknown) or '(none given)'}; "
                     f"choose from {', '.join(STACKS)}")
    if args.commit_ms < 0:
        parser.error("--commit-ms must be 0 or more")
    return args


# --- the writers the stacks use ----------------------------------------------------------

class AnsweringWriter(EventWriter):
    """Answers every request at once: nothing is stored (the ``http`` stack)."""

    async def store(self, events: list[EventIn], source: str = "api") -> StoreResult:
        return StoreResult(len(events), 0)

    def submit(self, events: list[EventIn], source: str = "api") -> asyncio.Future[StoreResult]:
        future: asyncio.Future[StoreResult] = asyncio.get_running_loop().create_future()
        future.set_result(StoreResult(len(events), 0))
        return future


class WaitingWriter(EventWriter):
    """The group commit with the database write replaced by a fixed wait (``handoff``)."""

    def __init__(self, database: Database, settings: IntakeSettings,
                 commit_seconds: float) -> None:
        super().__init__(database, settings)
        self.commit_seconds = commit_seconds

    async def _write(self, database: Database, batch: list[Any],
                     commit: bool = True) -> list[StoreResult]:
        for request in batch:
            request.duplicate_flags = [False] * len(request.events)
        await asyncio.sleep(self.commit_seconds)
        return self._results(batch)


@dataclass
class GroupRecord:
    sizes: list[int] = field(default_factory=list)
    cpu: list[float] = field(default_factory=list)  # thread CPU seconds around each write


class RecordingWriter(EventWriter):
    """The real writer, recording each group's size and the CPU around its write (``full``)."""

    def __init__(self, database: Database, settings: IntakeSettings) -> None:
        super().__init__(database, settings)
        self.record = GroupRecord()

    async def _write(self, database: Database, batch: list[Any],
                     commit: bool = True) -> list[StoreResult]:
        started = time.thread_time()
        results = await super()._write(database, batch, commit)
        self.record.cpu.append(time.thread_time() - started)
        self.record.sizes.append(sum(len(request.events) for request in batch))
        return results


# --- driving uvicorn's protocol in memory ------------------------------------------------

class MemoryTransport(asyncio.Transport):
    """What uvicorn's protocol needs of a transport; written bytes go to the client."""

    def __init__(self, client: Client) -> None:
        super().__init__()
        self._client = client
        self._closing = False

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self._client.received(bytes(data))

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return {"sockname": ("127.0.0.1", 8025),
                "peername": ("127.0.0.1", 40_000 + self._client.index)}.get(name, default)

    def is_closing(self) -> bool:
        return self._closing

    def close(self) -> None:
        self._closing = True
        self._client.load.failed(f"the server closed connection {self._client.index}")

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass


class Load:
    """``requests`` single events over the clients, each sending its next when answered."""

    def __init__(self, head: bytes, prefix: str, requests: int) -> None:
        self.head = head
        self.prefix = prefix
        self.requests = requests
        self.sent = 0
        self.reserved = 0  # requests sent or scheduled to be: never more than ``requests``
        self.answered = 0
        self.done: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def next_request(self) -> bytes:
        n = self.sent
        self.sent += 1
        body = orjson.dumps({"type": "product_viewed", "contact_id": f"c{n % CONTACTS}",
                             "id": f"{self.prefix}{n}",
                             "properties": {"sku": f"sku-{n % 500}", "price": 19.9}})
        return b"%sContent-Length: %d\r\n\r\n%s" % (self.head, len(body), body)

    def answer(self, client: Client, status: bytes) -> None:
        if status != b"202":
            self.failed(f"an answer with status {status.decode()}")
            return
        self.answered += 1
        if self.reserve():
            asyncio.get_running_loop().call_soon(client.send)
        elif self.answered == self.requests and not self.done.done():
            self.done.set_result(None)

    def reserve(self) -> bool:
        """Whether a client may send one more request (counted now, sent later)."""
        if self.reserved == self.requests:
            return False
        self.reserved += 1
        return True

    def failed(self, reason: str) -> None:
        if not self.done.done():
            self.done.set_exception(RuntimeError(reason))


class Client:
    """One keep-alive connection: a protocol instance fed one request at a time."""

    def __init__(self, index: int, load: Load, protocol: asyncio.Protocol) -> None:
        self.index = index
        self.load = load
        self._buffer = bytearray()
        self._protocol = protocol
        protocol.connection_made(MemoryTransport(self))

    def send(self) -> None:
        self._protocol.data_received(self.load.next_request())

    def hang_up(self) -> None:
        """Closes the connection from the client's side, as a real client would at the end:
        the server's guard stops counting it against the address's connection limit."""
        self._protocol.connection_lost(None)

    def received(self, data: bytes) -> None:
        self._buffer += data
        answer = take_answer(self._buffer)
        if answer is not None:
            self.load.answer(self, answer[0][9:12])


@dataclass(frozen=True)
class Measure:
    cpu_us: float  # this process's CPU per request (user + system)
    system_us: float
    requests_per_s: float


async def drive(protocol: Callable[[], asyncio.Protocol], headers: dict[str, str],
                prefix: str, connections: int, requests: int) -> Measure:
    head = ("POST /v1/events HTTP/1.1\r\nHost: bench\r\n" + "".join(
        f"{name}: {value}\r\n" for name, value in headers.items())).encode()
    load = Load(head, prefix, requests)
    clients = [Client(index, load, protocol()) for index in range(connections)]
    before, cpu, started = os.times(), time.process_time(), time.perf_counter()
    for client in clients:
        if load.reserve():
            client.send()
    try:
        await load.done
    finally:
        elapsed, cpu = time.perf_counter() - started, time.process_time() - cpu
        system = os.times().system - before.system  # in ticks of 10 ms: a rough split only
        for client in clients:
            client.hang_up()
    return Measure(cpu / requests * 1e6, system / requests * 1e6, requests / elapsed)


def protocol_factory(app: Any, guarded: bool, direct_routes: Sequence[DirectRoute] = ()
                     ) -> Callable[[], asyncio.Protocol]:
    """uvicorn's httptools protocol for ``app``; ``guarded``: Herald's subclass of it (the
    slow-client guard ``herald run`` serves with, answering ``direct_routes`` from the
    protocol as it does), else uvicorn's own (the bare stack's)."""
    # As each server is configured: Herald's (engine.http.server) trusts no proxy headers, the
    # bare stack (bench.bare_http) keeps uvicorn's default.
    config = Config(app, loop="none", http="httptools", lifespan="off", access_log=False,
                    log_config=None, server_header=False, proxy_headers=not guarded)
    config.load()
    state = ServerState()
    protocol_class: Any = guarded_protocol(ClientLimits()) if guarded else HttpToolsProtocol
    if direct_routes:
        protocol_class = direct_protocol(protocol_class, {(route.method, route.path): route
                                                          for route in direct_routes})
    loop = asyncio.get_running_loop()
    return lambda: protocol_class(config=config, server_state=state, app_state={}, _loop=loop)


# --- the run -----------------------------------------------------------------------------

async def herald_stacks(database_url: str, stacks: list[str], commit_seconds: float,
                        direct: bool = True) -> tuple[dict[str, HttpRole], str]:
    """An app per Herald stack (each with its writer started) and a key to call them with."""
    settings = Settings(engine=EngineSettings(database_url=database_url),
                        http=HttpSettings(listen=HostPort("127.0.0.1", 0), direct_intake=direct,
                                          rate_limit_per_second=0),
                        intake=IntakeSettings())
    connection = await connect_one(database_url)
    try:
        key = (await create_key(connection, "bench intake-cpu", ("events:write",))).token
    finally:
        await connection.close()
    def writer(name: str, database: Database) -> EventWriter:
        if name == "handoff":
            return WaitingWriter(database, settings.intake, commit_seconds)
        if name == "full":
            return RecordingWriter(database, settings.intake)
        return AnsweringWriter(database, settings.intake)

    roles = {}
    for name in stacks:
        if name == "bare":
            continue
        database = await Database.connect(database_url, min_size=1, max_size=8)
        role = HttpRole(settings, database)
        role.writer = writer(name, database)
        role.app = await role.build()
        await role.writer.start()
        roles[name] = role
    gc_policy.tune()  # as herald run does once it has started
    gc_policy.settle()
    return roles, key


async def run(args: argparse.Namespace, database_url: str) -> dict[str, Any]:
    roles, key = await herald_stacks(database_url, args.stacks, args.commit_ms / 1000,
                                     direct=not args.no_direct)
    headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}
    protocols = {name: protocol_factory(build_bare_app(), guarded=False) if name == "bare"
                 else protocol_factory(roles[name].app, guarded=True,
                                       direct_routes=roles[name].direct_routes)
                 for name in args.stacks}
    run_id = uuid.uuid4().hex[:8]
    try:
        for name in args.stacks:
            await drive(protocols[name], headers, f"{run_id}-warm-{name}-", args.connections,
                        args.warm_up)
        groups = GroupRecord()  # the full stack's, from here on (not the warm-up's)
        full = roles["full"].writer if "full" in roles else None
        if isinstance(full, RecordingWriter):
            full.record = groups
        measures: dict[str, list[Measure]] = {name: [] for name in args.stacks}
        for round_number in range(args.rounds):
            order = args.stacks if round_number % 2 == 0 else list(reversed(args.stacks))
            for name in order:
                measures[name].append(await drive(
                    protocols[name], headers, f"{run_id}-{round_number}-{name}-",
                    args.connections, args.requests))
    finally:
        for role in roles.values():
            await role.writer.stop()
            await role.database.close()
    return summary(args, measures, groups, run_id)


def summary(args: argparse.Namespace, measures: dict[str, list[Measure]],
            groups: GroupRecord, run_id: str) -> dict[str, Any]:
    """The JSON line; ``run``: the prefix of the ids of the events the full stack stored."""
    stacks: dict[str, dict[str, Any]] = {}
    for name, runs in measures.items():
        stacks[name] = {
            "cpu_us_per_request": round(statistics.median(m.cpu_us for m in runs), 1),
            "system_us_per_request": round(statistics.median(m.system_us for m in runs), 1),
            "requests_per_s": round(statistics.median(m.requests_per_s for m in runs), 1),
            "rounds_cpu_us": [round(m.cpu_us, 1) for m in runs]}
    bare = stacks.get("bare", {}).get("cpu_us_per_request")
    for figures in stacks.values():
        figures["share_of_bare"] = round(figures["cpu_us_per_request"] / bare, 3) \
            if bare else None
    result: dict[str, Any] = {"bench": "intake-cpu", "run": f"{run_id}-",
                              "connections": args.connections,
                              "requests": args.requests, "rounds": args.rounds,
                              "commit_ms": args.commit_ms, "direct": not args.no_direct,
                              "stacks": stacks}
    if groups.sizes:
        result["full_groups"] = {
            "groups": len(groups.sizes),
            "median_events": statistics.median(groups.sizes),
            "write_cpu_us_per_group": round(statistics.median(groups.cpu) * 1e6, 1),
            "write_cpu_us_per_event": round(sum(groups.cpu) / sum(groups.sizes) * 1e6, 2)}
    return result


def print_table(result: dict[str, Any]) -> None:
    print(f"{'stack':8} {'CPU µs/request':>15} {'(system)':>9} {'of bare':>7} {'req/s':>9}",
          file=sys.stderr)
    for name, figures in result["stacks"].items():
        share = figures["share_of_bare"]
        print(f"{name:8} {figures['cpu_us_per_request']:>15} "
              f"{figures['system_us_per_request']:>9} "
              f"{share if share is not None else '-':>7} {figures['requests_per_s']:>9}",
              file=sys.stderr)
    anchors = result["anchors"]
    print(f"anchors: {anchors['wake_cpu_us_per_1ms_sleep']} µs of CPU per wake-up from a 1 ms "
          f"sleep; a round trip to another process {anchors['process_round_trip_us']} µs",
          file=sys.stderr)
    groups = result.get("full_groups")
    if groups:
        print(f"full: {groups['groups']} groups, median {groups['median_events']} events; "
              f"the write {groups['write_cpu_us_per_group']} µs of CPU per group, "
              f"{groups['write_cpu_us_per_event']} per event", file=sys.stderr)


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="herald-bench-") as workdir, \
            migrated_database(args.database_url, Path(workdir)) as database_url:
        result = uvloop.run(run(args, database_url))
    result["anchors"] = wake_anchors()  # after the stacks, outside their event loop
    print_table(result)
    print(orjson.dumps(result).decode())
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
