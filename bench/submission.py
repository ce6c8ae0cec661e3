"""``herald bench submission``: Postfix's ``smtp-source`` -> Herald's SMTP submission ->
``smtp-sink``, DKIM-signed and durable, against ``smtp-source`` -> Postfix -> ``smtp-sink`` in
the same run.

Starts ``--processes`` (1) ``herald run --role submission`` processes sharing the port
(``reuse_port``) and one ``herald run --role mta`` (one process per role, as the systemd
units run them) against a temporary embedded Postgres (or
``--database-url``) with an RSA-2048 DKIM key for ``bench.test``, every message routed to
``smtp-sink``. ``smtp-source`` cannot log in, so the loopback network is a ``trusted_clients``
entry naming a ``messages:write`` key limited to ``bench.test``: each message still passes the
sender-domain check, the raw MIME rules and the group commit before its 250, then DKIM signing
and delivery. Herald's figure runs from the start of ``smtp-source`` (the processes are up by
then) until no message waits in the queue (accepted_per_s: until ``smtp-source`` has its last
250). Then, with Herald stopped, the same messages go through a throw-away unsigned Postfix
(bench/postfix.py) to the same sink over as many sessions, timed until its queue is empty.

Prints a summary on stderr and one JSON line on stdout.
"""

from __future__ import annotations

import argparse
import asyncio
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg
import orjson
import uvloop

from bench import postfix
from bench.databases import migrated_database
from bench.herald_process import HeraldProcess, free_port, start_all
from bench.mta import Sink, baseline_fields, postfix_baseline
from engine.keys import create_key
from mta.dkim.keys import write_keypair

SENDER = "news@bench.test"
RECIPIENT = "user@example.test"


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="herald bench submission", description=__doc__)
    parser.add_argument("--messages", type=int, default=10_000)
    parser.add_argument("--size", type=int, default=3072, help="message size (smtp-source -l)")
    parser.add_argument("--sessions", type=int, default=20,
                        help="concurrent smtp-source sessions (and delivery connections)")
    parser.add_argument("--processes", type=int, default=1,
                        help="submission processes sharing the port (SO_REUSEPORT)")
    parser.add_argument("--database-url", help="use this Postgres (default: embedded, temporary)")
    parser.add_argument("--no-dkim", action="store_true", help="deliver unsigned (comparison)")
    parser.add_argument("--log", type=Path, help="write the engine's log here")
    parser.add_argument("--postfix", action=argparse.BooleanOptionalAction,
                        help="also measure unsigned Postfix (default: on where installed)")
    parser.add_argument("--postfix-timeout", type=float, default=300.0)
    parser.add_argument("--timeout", type=float, default=600.0)
    return parser.parse_args(argv)


async def bench_key(url: str) -> str:
    connection = await asyncpg.connect(url)
    try:
        key = await create_key(connection, "bench submission", ("messages:write",),
                               from_domains=("bench.test",))
    finally:
        await connection.close()
    return key.key_id


async def counts(url: str) -> tuple[int, int]:
    """Queued and delivered messages: one query once the run is over."""
    connection = await asyncpg.connect(url)
    try:
        row = await connection.fetchrow(
            "SELECT count(*) AS queued, count(*) FILTER (WHERE state = 'delivered') "
            "AS delivered FROM outbound_messages")
    finally:
        await connection.close()
    return int(row["queued"]), int(row["delivered"])


async def wait_drained(url: str, timeout: float) -> float:
    """The moment no message waits any more (none queued or deferred). Polls an EXISTS that
    the queue's own partial index (``outbound_due``) answers from its first entry, never a
    count over the table being measured."""
    connection = await asyncpg.connect(url)
    try:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not await connection.fetchval(
                    "SELECT EXISTS (SELECT 1 FROM outbound_messages "
                    "WHERE state IN ('queued', 'deferred'))"):
                return time.monotonic()
            await asyncio.sleep(0.05)
    finally:
        await connection.close()
    raise TimeoutError(f"messages were still queued after {timeout:.0f}s")


def smtp_source(port: int, messages: int, size: int, sessions: int, timeout: float) -> None:
    subprocess.run([postfix.SMTP_SOURCE, "-c", "-l", str(size), "-m", str(messages),
                    "-s", str(sessions), "-f", SENDER, "-t", RECIPIENT, f"127.0.0.1:{port}"],
                   stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, timeout=timeout,
                   check=True)


@dataclass(frozen=True)
class HeraldStack:
    url: str
    port: int  # the submission listener
    processes: tuple[HeraldProcess, ...]


@dataclass(frozen=True)
class HeraldRelay:
    messages: int
    sessions: int
    seconds: float  # smtp-source's start until no message waits
    accepted_seconds: float  # smtp-source's start until its last 250
    delivered: int


@contextmanager
def herald_stack(workdir: Path, sink_port: int, sessions: int, processes: int = 1,
                 dkim: bool = True, database_url: str | None = None,
                 log: Path | None = None) -> Iterator[HeraldStack]:
    """``processes`` submission processes and one mta process on a temporary embedded Postgres
    (or ``database_url``) with an RSA-2048 DKIM key for bench.test, every message routed to
    ``sink_port``; stopped (and the embedded Postgres with them) on the way out."""
    started: list[HeraldProcess] = []
    with migrated_database(database_url, workdir) as url:
        try:
            key_id = uvloop.run(bench_key(url))
            key_path, _record = write_keypair("bench.test", "b1", "rsa", workdir / "dkim")
            port = free_port()
            env = {"HERALD_DATABASE_URL": url, "HERALD_ENGINE_LOG_LEVEL": "warning",
                   "HERALD_MTA_EHLO_NAME": "herald.bench.test",
                   "HERALD_MTA_BOUNCE_DOMAIN": "bounces.bench.test",
                   "HERALD_MTA_ROUTE": f"127.0.0.1:{sink_port}", "HERALD_MTA_SHAPING_FILE": "",
                   "HERALD_MTA_MAX_CONNECTIONS_PER_SITE": str(sessions),
                   "HERALD_MTA_MAX_MESSAGES_PER_CONNECTION": "1000",
                   "HERALD_MTA_DKIM": orjson.dumps([{
                       "domain": "bench.test", "selector": "b1",
                       "key_file": str(key_path)}]).decode() if dkim else "[]",
                   "HERALD_SUBMISSION_LISTEN": f"127.0.0.1:{port}",
                   "HERALD_SUBMISSION_TRUSTED_CLIENTS": orjson.dumps(
                       {"127.0.0.1/32": key_id}).decode(),
                   "HERALD_SUBMISSION_RATE_LIMIT_PER_SECOND": "0",
                   "HERALD_SUBMISSION_REUSE_PORT": "true",
                   "HERALD_SUBMISSION_MAX_SESSIONS": str(max(200, sessions * 2))}
            # One process per role, as the systemd units run them.
            started += [HeraldProcess(["run", "--role", role], env, log)
                        for role in ["mta"] + ["submission"] * processes]
            start_all(started)
            yield HeraldStack(url, port, tuple(started))
        finally:
            for process in started:
                if process.process is not None:
                    process.stop()


def relay(stack: HeraldStack, messages: int, size: int, sessions: int,
          timeout: float) -> HeraldRelay:
    """Time ``smtp-source`` -> Herald submission -> sink until no message waits; the clock
    starts as smtp-source starts (the processes are already up)."""
    _queued, before = uvloop.run(counts(stack.url))
    started = time.monotonic()
    try:
        smtp_source(stack.port, messages, size, sessions, timeout)
    except subprocess.CalledProcessError as error:
        raise postfix.PostfixError(
            f"smtp-source failed: {error.stderr.decode(errors='replace')[-300:]}") from None
    accepted_at = time.monotonic()
    finished = uvloop.run(wait_drained(stack.url, timeout))
    _queued, delivered = uvloop.run(counts(stack.url))
    return HeraldRelay(messages, sessions, finished - started, accepted_at - started,
                       delivered - before)


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    if not postfix.installed():
        raise SystemExit(f"herald bench submission needs Postfix's smtp-source "
                         f"({postfix.SMTP_SOURCE})")
    workdir = Path(tempfile.mkdtemp(prefix="herald-bench-submission-"))
    sink = Sink("auto")
    try:
        sink.start()
        with herald_stack(workdir, sink.port, args.sessions, args.processes,
                          not args.no_dkim, args.database_url, args.log) as stack:
            herald = relay(stack, args.messages, args.size, args.sessions, args.timeout)
        # The baseline runs on a machine Herald (and its embedded Postgres) has left alone.
        baseline = postfix_baseline(argparse.Namespace(
            postfix=args.postfix, messages=args.messages, size=args.size,
            connections=args.sessions, postfix_timeout=args.postfix_timeout), sink.port)
    except postfix.PostfixError as error:
        raise SystemExit(str(error)) from None
    finally:
        sink.stop()
    signed = "DKIM-signed" if not args.no_dkim else "UNSIGNED (--no-dkim)"
    result: dict[str, Any] = {
        "bench": "submission",
        "sink": sink.kind,
        "messages": args.messages,
        "message_bytes": args.size,
        "sessions": args.sessions,
        "submission_processes": args.processes,
        "dkim": None if args.no_dkim else "rsa-sha256 2048",
        "signed": not args.no_dkim,
        "delivered": herald.delivered,
        "accepted_per_s": round(args.messages / herald.accepted_seconds, 1),
        "messages_per_s": round(args.messages / herald.seconds, 1),
    }
    result.update(baseline_fields(baseline, float(result["messages_per_s"])))
    print(f"{args.messages} messages smtp-source -> Herald submission -> {sink.kind} in "
          f"{herald.seconds:.1f}s: {result['messages_per_s']} msg/s end to end ({signed}, "
          f"durable, {args.size} B, {args.sessions} sessions); accepted "
          f"{result['accepted_per_s']} msg/s", file=sys.stderr)
    if baseline is not None:
        print(f"Postfix baseline: {baseline.messages} messages in {baseline.seconds:.1f}s: "
              f"{result['postfix_messages_per_s']} msg/s (unsigned, smtp-source -> Postfix -> "
              f"{sink.kind}); Herald/Postfix {result['ratio_to_postfix']}", file=sys.stderr)
    print(orjson.dumps(result).decode())
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
