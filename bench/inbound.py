"""``herald bench inbound``: DSNs/s accepted (SMTP 250, each one committed) and processed
(parsed, suppressions and events written) by ``herald run --role inbound``.

Starts the inbound role against a temporary embedded Postgres (or ``--database-url``) with N
outbound messages preloaded, so every DSN names a real message through its signed return path.
C aiosmtplib clients on loopback, each on one reused connection, send one DSN per message
(half hard bounces, half mailbox-full soft bounces); the run ends when every stored message is
processed. Anchor, measured in the same run with the same clients and messages: a bare aiosmtpd
server that accepts and stores nothing (``herald sink``), i.e. what the SMTP layer costs with
no database and no checks.

Prints a summary on stderr and one JSON line on stdout.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

import aiosmtplib
import asyncpg
import orjson
import uvloop

from bench.databases import migrated_database
from bench.herald_process import HeraldProcess, free_port
from bench.mta import preload, preload_records
from engine.database import connect_one
from mta.inbound.store import PROCESSED_CHANNEL
from mta.queue.enqueue import QueueIdentity, load_bounce_secret

BOUNCE_DOMAIN = "bounces.bench.test"


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="herald bench inbound", description=__doc__)
    parser.add_argument("--messages", type=int, default=5000, help="DSNs to send")
    parser.add_argument("--clients", type=int, default=20, help="concurrent SMTP clients")
    parser.add_argument("--database-url", help="use this Postgres (default: embedded, temporary)")
    parser.add_argument("--no-anchor", action="store_true",
                        help="skip the bare aiosmtpd anchor")
    parser.add_argument("--log", type=Path, help="write the engine's log here")
    return parser.parse_args(argv)


def dsn(return_path: str, recipient: str, hard: bool) -> bytes:
    status, diagnostic = (("5.1.1", "550 5.1.1 <{r}>: Recipient address rejected: User unknown")
                          if hard else ("5.2.2", "552 5.2.2 <{r}>: Mailbox full"))
    text = (
        "From: MAILER-DAEMON@mx.example.test\r\n"
        f"To: {return_path}\r\n"
        "Subject: Undelivered Mail Returned to Sender\r\n"
        "Auto-Submitted: auto-replied\r\nMIME-Version: 1.0\r\n"
        'Content-Type: multipart/report; report-type=delivery-status; boundary="B"\r\n\r\n'
        "--B\r\nContent-Type: text/plain\r\n\r\n"
        "This is the mail system at host mx.example.test.\r\n\r\n"
        "I'm sorry to have to inform you that your message could not\r\n"
        "be delivered to one or more recipients.\r\n\r\n"
        "--B\r\nContent-Type: message/delivery-status\r\n\r\n"
        "Reporting-MTA: dns; mx.example.test\r\n\r\n"
        f"Final-Recipient: rfc822; {recipient}\r\nAction: failed\r\nStatus: {status}\r\n"
        f"Diagnostic-Code: smtp; {diagnostic.format(r=recipient)}\r\n\r\n"
        "--B\r\nContent-Type: text/rfc822-headers\r\n\r\n"
        f"Return-Path: <{return_path}>\r\nFrom: Bench <news@bench.test>\r\n"
        f"To: {recipient}\r\nSubject: Your weekly picks\r\n\r\n--B--\r\n")
    return text.encode()


async def messages(url: str, count: int) -> list[tuple[str, bytes]]:
    """Preload ``count`` outbound messages; one DSN (return path, bytes) for each."""
    connection = await connect_one(url)
    try:
        secret = await load_bounce_secret(connection, None)
        identity = QueueIdentity(BOUNCE_DOMAIN, secret, timedelta(days=4))
        await preload(url, preload_records(identity, count, 2000))
        rows = await connection.fetch("SELECT envelope_from, recipient FROM outbound_messages")
    finally:
        await connection.close()
    return [(r["envelope_from"], dsn(r["envelope_from"], r["recipient"], i % 2 == 0))
            for i, r in enumerate(rows)]


async def send_all(port: int, items: list[tuple[str, bytes]], clients: int
                   ) -> tuple[float, int, dict[int, int]]:
    """Send every item over ``clients`` reused connections; (seconds, 250s, other codes)."""
    queue: asyncio.Queue[tuple[str, bytes]] = asyncio.Queue()
    for item in items:
        queue.put_nowait(item)
    accepted = 0
    refused: dict[int, int] = {}

    async def client() -> None:
        nonlocal accepted
        async with aiosmtplib.SMTP(hostname="127.0.0.1", port=port, timeout=60) as smtp:
            while not queue.empty():
                recipient, data = queue.get_nowait()
                try:
                    await smtp.sendmail("", [recipient], data)
                    accepted += 1
                except aiosmtplib.SMTPResponseException as exc:
                    refused[exc.code] = refused.get(exc.code, 0) + 1
                    await smtp.rset()

    started = time.perf_counter()
    await asyncio.gather(*(client() for _ in range(clients)))
    return time.perf_counter() - started, accepted, refused


async def wait_processed(url: str, count: int, timeout: float) -> float:
    """Wait (woken by each processed batch) until ``count`` rows are no longer pending."""
    connection: asyncpg.Connection = await connect_one(url)
    woken = asyncio.Event()
    await connection.add_listener(PROCESSED_CHANNEL, lambda *_: woken.set())
    try:
        async with asyncio.timeout(timeout):
            while True:
                woken.clear()
                done = await connection.fetchval(
                    "SELECT count(*) FROM inbound_messages WHERE state <> 'pending'")
                if done >= count:
                    return time.perf_counter()
                await woken.wait()
    finally:
        await connection.close()


async def outcomes(url: str) -> dict[str, Any]:
    connection = await connect_one(url)
    try:
        rows = await connection.fetch(
            "SELECT state, r->>'outcome' AS outcome, count(*) AS n FROM inbound_messages, "
            "jsonb_array_elements(coalesce(result, '[]'::jsonb)) AS r GROUP BY 1, 2")
        suppressed = await connection.fetchval("SELECT count(*) FROM suppressions")
        bounced = await connection.fetchval(
            "SELECT count(*) FROM events WHERE type = 'email_bounced'")
    finally:
        await connection.close()
    return {"outcomes": {f"{r['state']}:{r['outcome']}": r["n"] for r in rows},
            "suppressions": suppressed, "email_bounced_events": bounced}


async def measure_herald(url: str, port: int, items: list[tuple[str, bytes]],
                         clients: int) -> dict[str, Any]:
    started = time.perf_counter()
    seconds, accepted, refused = await send_all(port, items, clients)
    finished = await wait_processed(url, accepted, timeout=600)
    return {"accepted": accepted, "refused": refused,
            "accepted_per_s": round(accepted / seconds, 1),
            "processed_per_s": round(accepted / (finished - started), 1),
            "processing_lag_s": round(finished - started - seconds, 2)}


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    workdir = Path(tempfile.mkdtemp(prefix="herald-bench-inbound-"))
    with migrated_database(args.database_url, workdir) as url:
        items = uvloop.run(messages(url, args.messages))
        port = free_port()
        env = {"HERALD_DATABASE_URL": url, "HERALD_ENGINE_LOG_LEVEL": "warning",
               "HERALD_MTA_BOUNCE_DOMAIN": BOUNCE_DOMAIN,
               "HERALD_INBOUND_LISTEN": f"127.0.0.1:{port}",
               "HERALD_INBOUND_MAX_SESSIONS": str(max(200, args.clients * 2))}
        engine = HeraldProcess(["run", "--role", "inbound"], env, args.log)
        try:
            engine.start()
            herald = uvloop.run(measure_herald(url, port, items, args.clients))
        finally:
            if engine.process is not None:
                engine.stop()
        checked = uvloop.run(outcomes(url))
        anchor = None if args.no_anchor else measure_anchor(items, args.clients, args.log)
    result: dict[str, Any] = {
        "bench": "inbound", "messages": args.messages, "clients": args.clients,
        "message_bytes": round(sum(len(d) for _, d in items) / len(items)),
        **herald, **checked,
        "anchor": anchor,
        "ratio_to_anchor": round(herald["accepted_per_s"] / anchor["accepted_per_s"], 2)
        if anchor else None,
    }
    print(f"{herald['accepted']} DSNs over {args.clients} connections: "
          f"{herald['accepted_per_s']} accepted/s (250 after commit), "
          f"{herald['processed_per_s']} processed/s end to end", file=sys.stderr)
    if anchor:
        print(f"anchor, bare aiosmtpd storing nothing: {anchor['accepted_per_s']} accepted/s; "
              f"Herald/anchor {result['ratio_to_anchor']}", file=sys.stderr)
    print(orjson.dumps(result).decode())
    return 0


def measure_anchor(items: list[tuple[str, bytes]], clients: int,
                   log: Path | None) -> dict[str, Any]:
    port = free_port()
    sink = HeraldProcess(["sink", "--listen", f"127.0.0.1:{port}"], {}, log)
    try:
        sink.start()
        seconds, accepted, refused = uvloop.run(send_all(port, items, clients))
    finally:
        if sink.process is not None:
            sink.stop()
    return {"server": "aiosmtpd, no database, no checks (herald sink)", "accepted": accepted,
            "refused": refused, "accepted_per_s": round(accepted / seconds, 1)}


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

