"""``herald bench mta``: queue N messages (DKIM-signed unless ``--no-dkim``) and deliver them
to a local sink.

Starts ``herald run --role mta`` against a temporary embedded Postgres (or ``--database-url``)
with an RSA-2048 DKIM key, routes all mail to Postfix's ``smtp-sink`` (or Herald's own sink when
smtp-sink is not installed), then measures:

- throughput: N messages copied into the queue in one transaction once the engine is up and
  idle, delivered with durable state, messages/s from that commit until none waits (the wait
  polls an EXISTS on the queue's partial index, never a count over the table);
- latency: messages injected at a steady rate while the engine runs, enqueue -> delivered p50/p99;
- baseline (``--postfix``, the default where Postfix is installed): after Herald has stopped, the
  same number and size of messages sent by ``smtp-source`` through a throw-away Postfix instance
  (bench/postfix.py, no DKIM) to the same sink over as many sessions, timed until its queue is
  empty; the JSON line gets ``postfix_messages_per_s`` and ``ratio_to_postfix`` (null without it).

``--reply-latency 20ms`` makes Herald's sink (used then) answer every command that much later,
as a network round trip would; ``--no-sink-pipelining`` hides its PIPELINING, so the two runs
show what pipelining MAIL, RCPT and DATA saves (RFC 2920).

Prints a table on stderr and one JSON line on stdout.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import orjson
import uvloop

from bench import postfix
from bench.herald_process import HeraldProcess, free_port
from engine.addresses import parse_address
from engine.database import connect_one
from engine.values import parse_duration
from herald.database import migrate
from mta.compose import compose
from mta.dkim.keys import write_keypair
from mta.queue.enqueue import (
    OUTBOUND_CHANNEL,
    OutboundMessage,
    QueueIdentity,
    enqueue,
    load_bounce_secret,
)
from mta.queue.return_paths import bounce_address

SMTP_SINK = shutil.which("smtp-sink") or "/usr/sbin/smtp-sink"


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="herald bench mta", description=__doc__)
    parser.add_argument("--messages", type=int, default=20_000, help="preloaded messages")
    parser.add_argument("--size", type=int, default=3072, help="approximate message size")
    parser.add_argument("--rate", type=float, default=300.0, help="latency phase: msgs/s")
    parser.add_argument("--latency-seconds", type=float, default=10.0)
    parser.add_argument("--connections", type=int, default=20, help="SMTP connections")
    parser.add_argument("--database-url", help="use this Postgres (default: embedded, temporary)")
    parser.add_argument("--sink", choices=("auto", "smtp-sink", "herald"), default="auto")
    parser.add_argument("--reply-latency", type=parse_duration, default=0.0,
                        help="the sink delays every reply this long, e.g. 20ms (Herald's sink)")
    parser.add_argument("--sink-pipelining", action=argparse.BooleanOptionalAction,
                        default=True, help="the sink advertises PIPELINING (Herald's sink)")
    parser.add_argument("--no-dkim", action="store_true", help="deliver unsigned (comparison)")
    parser.add_argument("--log", type=Path, help="write the engine's log here")
    parser.add_argument("--postfix", action=argparse.BooleanOptionalAction,
                        help="also measure unsigned Postfix relaying to the same sink "
                             "(default: on; a note and null figures without Postfix)")
    parser.add_argument("--postfix-timeout", type=float, default=300.0,
                        help="give up on the Postfix baseline after this many seconds")
    return parser.parse_args(argv)


def body_text(size: int) -> str:
    line = "Lorem ipsum dolor sit amet, consectetur adipiscing elit, sed do eiusmod tempor.\n"
    return line * max(1, (size - 600) // len(line))


class Sink:
    """Postfix's smtp-sink (or Herald's sink) on a free loopback port. ``dump_dir`` (smtp-sink
    only) keeps every message there as one file, so a bench can count and check what arrived
    (``dumped``)."""

    def __init__(self, kind: str, reply_latency: float = 0.0, pipelining: bool = True,
                 dump_dir: Path | None = None) -> None:
        if kind == "auto":
            plain = reply_latency == 0 and pipelining
            kind = "smtp-sink" if plain and os.path.exists(SMTP_SINK) else "herald"
        if kind == "smtp-sink" and (reply_latency or not pipelining):
            raise SystemExit("--reply-latency and --no-sink-pipelining need --sink herald")
        if dump_dir is not None and kind != "smtp-sink":
            raise SystemExit("keeping the sink's messages needs smtp-sink")
        self.kind = kind
        self.dump_dir = dump_dir
        self.reply_latency = reply_latency
        self.pipelining = pipelining
        self.port = free_port()
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        if self.kind == "smtp-sink":
            user = ["-u", "root"] if os.getuid() == 0 else []
            dump = ["-d", f"{self.dump_dir}/%H%M%S."] if self.dump_dir is not None else []
            command = [SMTP_SINK, *user, *dump, f"127.0.0.1:{self.port}", "1000"]
        else:
            command = [sys.executable, "-m", "herald.cli", "sink", "--listen",
                       f"127.0.0.1:{self.port}", "--reply-latency", f"{self.reply_latency}s"]
            if not self.pipelining:
                command.append("--no-pipelining")
        self.process = subprocess.Popen(command, stdout=subprocess.DEVNULL,
                                        stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 20
        import socket
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                    return
            except OSError:
                time.sleep(0.05)
        raise TimeoutError(f"the {self.kind} sink did not start")

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            self.process.wait(10)

    def dumped(self) -> tuple[int, int]:
        """Messages kept in ``dump_dir`` so far, and how many of them carry a DKIM-Signature
        header (looked for in each file's header block)."""
        assert self.dump_dir is not None
        files = signed = 0
        for path in self.dump_dir.glob("*"):
            files += 1
            with open(path, "rb") as handle:
                head = handle.read(65536).replace(b"\r\n", b"\n").split(b"\n\n", 1)[0]
            signed += head.startswith(b"DKIM-Signature:") or b"\nDKIM-Signature:" in head
        return files, signed


def preload_records(identity: QueueIdentity, count: int, size: int) -> list[tuple[Any, ...]]:
    """The rows ``preload`` copies in, built before the clock starts."""
    composed = compose({"from": "Bench <news@bench.test>", "to": "user@example.test",
                        "subject": "Your weekly picks", "text": body_text(size)})
    now = datetime.now(UTC)
    records = []
    for i in range(count):
        message_id = uuid.uuid4()
        records.append((message_id, "news@bench.test",
                        bounce_address(identity.bounce_secret, message_id,
                                       identity.bounce_domain),
                        f"user{i}@example.test", "example.test", f"c{i}", composed.body, now,
                        now + identity.expire))
    return records


async def preload(url: str, records: list[tuple[Any, ...]]) -> float:
    """Copy the messages into the queue in one transaction and wake the MTA (NOTIFY, as
    enqueue does); returns the moment the commit was acknowledged: the work starts then."""
    connection = await asyncpg.connect(url)
    try:
        async with connection.transaction():
            await connection.copy_records_to_table(
                "outbound_messages", records=records,
                columns=["id", "header_from", "envelope_from", "recipient", "recipient_domain",
                         "contact_id", "body", "next_attempt_at", "expires_at"])
            await connection.execute(f"NOTIFY {OUTBOUND_CHANNEL}")
        return time.monotonic()
    finally:
        await connection.close()


async def count_final(url: str) -> tuple[int, int]:
    """Delivered and waiting messages: one query once a phase is over, never polled."""
    connection = await asyncpg.connect(url)
    try:
        row = await connection.fetchrow(
            "SELECT count(*) FILTER (WHERE state = 'delivered') AS delivered, "
            "count(*) FILTER (WHERE state IN ('queued', 'deferred')) AS waiting "
            "FROM outbound_messages")
    finally:
        await connection.close()
    return int(row["delivered"]), int(row["waiting"])


# Answered from the first entry of the queue's partial index (outbound_due): polling it costs
# the database being measured next to nothing, unlike a count over the table.
ANY_WAITING = ("SELECT EXISTS (SELECT 1 FROM outbound_messages "
               "WHERE state IN ('queued', 'deferred'))")


async def wait_drained(connection: asyncpg.Connection, timeout: float) -> float:
    """The moment no message is queued or deferred any more."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not await connection.fetchval(ANY_WAITING):
            return time.monotonic()
        await asyncio.sleep(0.05)
    raise TimeoutError(f"messages were still queued after {timeout:.0f}s")


async def wait_delivered(url: str, timeout: float) -> float:
    connection = await asyncpg.connect(url)
    try:
        return await wait_drained(connection, timeout)
    finally:
        await connection.close()


async def latency_phase(url: str, identity: QueueIdentity, rate: float, seconds: float,
                        size: int) -> dict[str, Any]:
    composed = compose({"from": "Bench <news@bench.test>", "to": "user@example.test",
                        "subject": "Your receipt", "text": body_text(size)})
    connection = await connect_one(url)
    ids = []
    try:
        started = time.monotonic()
        sent = 0
        while time.monotonic() - started < seconds:
            due = int((time.monotonic() - started) * rate) - sent
            for _ in range(max(0, due)):
                message = OutboundMessage(composed.header_from,
                                          parse_address(f"late{sent}@example.test"),
                                          composed.body, source="bench")
                async with connection.transaction():
                    ids.append((await enqueue(connection, identity, message)).id)
                sent += 1
            await asyncio.sleep(0.005)
        try:
            await wait_drained(connection, 60)
        except TimeoutError:
            pass  # the late ones are reported as injected but not delivered
        rows = await connection.fetch(
            "SELECT extract(epoch FROM finished_at - created_at) AS s FROM outbound_messages "
            "WHERE id = ANY($1::uuid[]) AND state = 'delivered' ORDER BY 1", ids)
    finally:
        await connection.close()
    values = [float(r["s"]) for r in rows]

    def pct(p: float) -> float:
        return round(values[min(len(values) - 1, int(p * (len(values) - 1)))] * 1000, 1)

    return {"injected": len(ids), "delivered": len(values), "rate": rate,
            "p50_ms": pct(0.5) if values else None, "p99_ms": pct(0.99) if values else None}


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    workdir = Path(tempfile.mkdtemp(prefix="herald-bench-mta-"))
    url = args.database_url
    embedded = None
    sink = Sink(args.sink, args.reply_latency, args.sink_pipelining)
    try:
        if url is None:
            from engine.embedded_postgres import start_embedded

            embedded = start_embedded(workdir / "data")
            url = embedded.url
        key_path, _record = write_keypair("bench.test", "b1", "rsa", workdir / "dkim")
        sink.start()
        env = {"HERALD_DATABASE_URL": url, "HERALD_ENGINE_LOG_LEVEL": "warning",
               "HERALD_MTA_ROUTE": f"127.0.0.1:{sink.port}", "HERALD_MTA_SHAPING_FILE": "",
               "HERALD_MTA_MAX_CONNECTIONS_PER_SITE": str(args.connections),
               "HERALD_MTA_MAX_MESSAGES_PER_CONNECTION": "1000",
               "HERALD_MTA_DKIM": "[]" if args.no_dkim else orjson.dumps([{
                   "domain": "bench.test", "selector": "b1",
                   "key_file": str(key_path)}]).decode()}
        engine = HeraldProcess(["run", "--role", "mta"], env, args.log)
        try:
            uvloop.run(migrate(url))
            identity = uvloop.run(_identity(url))
            records = preload_records(identity, args.messages, args.size)
            spawned = time.monotonic()
            engine.start()  # idle: the queue is empty until the preload commits
            ready = time.monotonic()
            started = uvloop.run(preload(url, records))  # the clock starts with the work
            finished = uvloop.run(wait_delivered(url, timeout=600))
            elapsed = finished - started
            delivered, waiting = uvloop.run(count_final(url))
            if delivered < args.messages:
                raise SystemExit(f"only {delivered} of {args.messages} messages were "
                                 f"delivered ({waiting} waiting)")
            latency = uvloop.run(latency_phase(url, identity, args.rate, args.latency_seconds,
                                               args.size))
        finally:
            if engine.process is not None:
                engine.stop()
        if embedded is not None:  # the baseline runs on a machine Herald has left alone
            embedded.stop()
            embedded = None
        baseline = postfix_baseline(args, sink.port)
    finally:
        sink.stop()
        if embedded is not None:
            embedded.stop()
    result = {
        "bench": "mta",
        "sink": sink.kind,
        "messages": args.messages,
        "message_bytes": args.size,
        "dkim": None if args.no_dkim else "rsa-sha256 2048",
        "signed": not args.no_dkim,
        "connections": args.connections,
        "sink_reply_latency_ms": round(args.reply_latency * 1000, 1),
        "sink_pipelining": args.sink_pipelining if sink.kind == "herald" else True,
        "startup_s": round(ready - spawned, 2),
        "messages_per_s": round(args.messages / elapsed, 1),
        "latency": latency,
    }
    result.update(baseline_fields(baseline, float(result["messages_per_s"])))
    signed = "UNSIGNED (--no-dkim)" if args.no_dkim else "DKIM-signed"
    print(f"{result['messages']} messages in {elapsed:.1f}s: {result['messages_per_s']} msg/s "
          f"({signed}, {args.size} B, {sink.kind}, reply latency "
          f"{result['sink_reply_latency_ms']} ms, sink PIPELINING "
          f"{'on' if result['sink_pipelining'] else 'off'}); latency at {args.rate}/s: "
          f"p50 {latency['p50_ms']} ms, p99 {latency['p99_ms']} ms", file=sys.stderr)
    if baseline is not None:
        print(f"Postfix baseline: {baseline.messages} messages in {baseline.seconds:.1f}s: "
              f"{result['postfix_messages_per_s']} msg/s (unsigned, smtp-source -> Postfix -> "
              f"{sink.kind}, {baseline.sessions} sessions); Herald/Postfix "
              f"{result['ratio_to_postfix']}", file=sys.stderr)
    print(orjson.dumps(result).decode())
    return 0


def postfix_baseline(args: argparse.Namespace, sink_port: int) -> postfix.RelayResult | None:
    """The unsigned Postfix run for comparison, or None (with a note on stderr) without one."""
    if args.postfix is False:  # --no-postfix
        return None
    if not postfix.installed():
        print(f"note: Postfix is not installed ({postfix.POSTFIX}, {postfix.SMTP_SOURCE}); "
              "no baseline, postfix_messages_per_s and ratio_to_postfix are null",
              file=sys.stderr)
        return None
    try:
        result = postfix.measure(sink_port, args.messages, args.size, args.connections,
                                 timeout=args.postfix_timeout)
    except postfix.PostfixError as error:
        print(f"note: no Postfix baseline: {error}", file=sys.stderr)
        return None
    if result.delivered < result.messages:
        print(f"note: Postfix logged only {result.delivered} of {result.messages} messages as "
              "sent", file=sys.stderr)
    return result


def baseline_fields(baseline: postfix.RelayResult | None,
                    herald_per_s: float) -> dict[str, Any]:
    if baseline is None:
        return {"postfix_messages_per_s": None, "ratio_to_postfix": None, "postfix": None}
    postfix_per_s = round(baseline.messages_per_s, 1)
    return {"postfix_messages_per_s": postfix_per_s,
            "ratio_to_postfix": round(herald_per_s / postfix_per_s, 2),
            "postfix": {"sessions": baseline.sessions, "message_bytes": baseline.message_bytes,
                        "seconds": round(baseline.seconds, 2),
                        "delivered": baseline.delivered, "dkim": None}}


async def _identity(url: str) -> QueueIdentity:
    connection = await connect_one(url)
    try:
        secret = await load_bounce_secret(connection, None)
    finally:
        await connection.close()
    return QueueIdentity("bounces.bench.test", secret, timedelta(days=4))


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
