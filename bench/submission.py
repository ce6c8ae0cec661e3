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
and delivery. Herald's figure runs from the start of ``smtp-source`` until every message is
``delivered`` (accepted_per_s: until ``smtp-source`` has its last 250). Then, with Herald
stopped, the same messages go through a throw-away unsigned Postfix (bench/postfix.py) to the
same sink over as many sessions, timed until its queue is empty.

Prints a summary on stderr and one JSON line on stdout.
"""

from __future__ import annotations

import argparse
import asyncio
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import asyncpg
import orjson
import uvloop

from bench import postfix
from bench.herald_process import HeraldProcess, free_port
from bench.mta import Sink, baseline_fields, postfix_baseline
from engine.keys import create_key
from herald.database import migrate
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
    connection = await asyncpg.connect(url)
    try:
        row = await connection.fetchrow(
            "SELECT count(*) AS queued, count(*) FILTER (WHERE state = 'delivered') "
            "AS delivered FROM outbound_messages")
    finally:
        await connection.close()
    return int(row["queued"]), int(row["delivered"])


async def wait_delivered(url: str, total: int, timeout: float) -> float:
    """The moment all ``total`` messages are delivered (woken by polling; the bench owns no
    event that would say so)."""
    connection = await asyncpg.connect(url)
    try:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            delivered = await connection.fetchval(
                "SELECT count(*) FROM outbound_messages WHERE state = 'delivered'")
            if delivered >= total:
                return time.monotonic()
            await asyncio.sleep(0.05)
    finally:
        await connection.close()
    raise TimeoutError(f"not all {total} messages were delivered in {timeout:.0f}s")


def smtp_source(port: int, messages: int, size: int, sessions: int, timeout: float) -> None:
    subprocess.run([postfix.SMTP_SOURCE, "-c", "-l", str(size), "-m", str(messages),
                    "-s", str(sessions), "-f", SENDER, "-t", RECIPIENT, f"127.0.0.1:{port}"],
                   stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, timeout=timeout,
                   check=True)


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    if not postfix.installed():
        raise SystemExit(f"herald bench submission needs Postfix's smtp-source "
                         f"({postfix.SMTP_SOURCE})")
    workdir = Path(tempfile.mkdtemp(prefix="herald-bench-submission-"))
    url = args.database_url
    embedded = None
    sink = Sink("auto")
    try:
        if url is None:
            from engine.embedded_postgres import start_embedded

            embedded = start_embedded(workdir / "data")
            url = embedded.url
        uvloop.run(migrate(url))
        key_id = uvloop.run(bench_key(url))
        key_path, _record = write_keypair("bench.test", "b1", "rsa", workdir / "dkim")
        sink.start()
        port = free_port()
        env = {"HERALD_DATABASE_URL": url, "HERALD_ENGINE_LOG_LEVEL": "warning",
               "HERALD_MTA_EHLO_NAME": "herald.bench.test",
               "HERALD_MTA_BOUNCE_DOMAIN": "bounces.bench.test",
               "HERALD_MTA_ROUTE": f"127.0.0.1:{sink.port}", "HERALD_MTA_SHAPING_FILE": "",
               "HERALD_MTA_MAX_CONNECTIONS_PER_SITE": str(args.sessions),
               "HERALD_MTA_MAX_MESSAGES_PER_CONNECTION": "1000",
               "HERALD_MTA_DKIM": "[]" if args.no_dkim else orjson.dumps([{
                   "domain": "bench.test", "selector": "b1",
                   "key_file": str(key_path)}]).decode(),
               "HERALD_SUBMISSION_LISTEN": f"127.0.0.1:{port}",
               "HERALD_SUBMISSION_TRUSTED_CLIENTS": orjson.dumps(
                   {"127.0.0.1/32": key_id}).decode(),
               "HERALD_SUBMISSION_RATE_LIMIT_PER_SECOND": "0",
               "HERALD_SUBMISSION_REUSE_PORT": "true",
               "HERALD_SUBMISSION_MAX_SESSIONS": str(max(200, args.sessions * 2))}
        # One process per role, as the systemd units run them.
        servers = [HeraldProcess(["run", "--role", "submission"], env, args.log)
                   for _ in range(args.processes)]
        delivery = HeraldProcess(["run", "--role", "mta"], env, args.log)
        try:
            delivery.start()
            for server in servers:
                server.start()
            started = time.monotonic()
            smtp_source(port, args.messages, args.size, args.sessions, args.timeout)
            accepted_at = time.monotonic()
            finished = uvloop.run(wait_delivered(url, args.messages, args.timeout))
            queued, delivered = uvloop.run(counts(url))
        finally:
            for process in (*servers, delivery):
                if process.process is not None:
                    process.stop()
        if embedded is not None:  # the baseline runs on a machine Herald has left alone
            embedded.stop()
            embedded = None
        baseline = postfix_baseline(argparse.Namespace(
            postfix=args.postfix, messages=args.messages, size=args.size,
            connections=args.sessions, postfix_timeout=args.postfix_timeout), sink.port)
    except subprocess.CalledProcessError as error:
        raise SystemExit(f"smtp-source failed: {error.stderr.decode(errors='replace')[-300:]}") \
            from None
    finally:
        sink.stop()
        if embedded is not None:
            embedded.stop()
    elapsed = finished - started
    result: dict[str, Any] = {
        "bench": "submission",
        "sink": sink.kind,
        "messages": args.messages,
        "message_bytes": args.size,
        "sessions": args.sessions,
        "submission_processes": args.processes,
        "dkim": None if args.no_dkim else "rsa-sha256 2048",
        "queued": queued,
        "delivered": delivered,
        "accepted_per_s": round(args.messages / (accepted_at - started), 1),
        "messages_per_s": round(args.messages / elapsed, 1),
    }
    result.update(baseline_fields(baseline, float(result["messages_per_s"])))
    print(f"{args.messages} messages smtp-source -> Herald submission -> {sink.kind} in "
          f"{elapsed:.1f}s: {result['messages_per_s']} msg/s end to end (DKIM-signed, durable, "
          f"{args.size} B, {args.sessions} sessions); accepted {result['accepted_per_s']} "
          "msg/s", file=sys.stderr)
    if baseline is not None:
        print(f"Postfix baseline: {baseline.messages} messages in {baseline.seconds:.1f}s: "
              f"{result['postfix_messages_per_s']} msg/s (unsigned, smtp-source -> Postfix -> "
              f"{sink.kind}); Herald/Postfix {result['ratio_to_postfix']}", file=sys.stderr)
    print(orjson.dumps(result).decode())
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
