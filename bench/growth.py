"""``herald bench growth``: the database's growth per million messages, with and without
retention, measured in real bytes (``pg_total_relation_size``, ``pg_database_size``).

On a scratch database (created on ``--database-url``'s server and dropped after; default: the
embedded Postgres in a temporary directory) it loads a representative load through Herald's own
write paths: per message ``--events-per-message`` events (behavioural events with ids, then
outcome events; engine.eventlog) and one queued message with a ``--body-size`` body
(mta.queue.enqueue), then marks it delivered with one attempt row, as the MTA does.

1. *Without retention*: ``--messages`` messages whose events were received and whose delivery
   finished 500 days ago (their own partition); the growth of each table is measured.
2. A retention pass (``[retention]`` defaults: events 400d, bodies 30d) then drops that
   partition whole and the bodies; ``VACUUM`` makes the bodies' space reusable.
3. *With retention, steady state*: as many messages again, finished long ago, their bodies
   dropped by a pass and vacuumed; what remains is what grows forever (message rows without
   bodies, attempts). Events and bodies stop growing at a plateau: the daily volume times the
   retention period, printed for ``--daily-messages``.

The classes (events with their ids, message bodies, what stays: message rows and attempts) are
those ``herald bench report`` plans the disk with (bench/sizing.py), each for the days
``[retention]`` keeps it.

Figures for a million messages are extrapolated linearly from ``--messages`` (said in the
output); tables grow linearly in rows, so a few tens of thousands of messages give them well.
"""

from __future__ import annotations

import argparse
import os
import random
import sys
import tempfile
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import orjson
import uvloop

from engine import partitions
from engine.addresses import parse_address
from engine.database import connect_one
from engine.database_creation import create_database
from engine.migrations import apply_migrations
from herald.database import MIGRATION_SOURCES
from herald.retention import RetentionSettings, run_pass
from mta.queue.enqueue import OutboundMessage, QueueIdentity, enqueue_many

MILLION = 1_000_000
BATCH = 500
AGE = timedelta(days=500)
# The rows of engine.eventlog.INSERT_EVENTS, with the time they were received given ($2).
INSERT_EVENTS_AT = """
    WITH batch AS (
        SELECT r, n FROM jsonb_array_elements($1::jsonb) WITH ORDINALITY AS b(r, n)
    ), claimed AS (
        INSERT INTO event_ids (event_id, received_at)
        SELECT r->>0, $2 FROM batch WHERE r->>0 IS NOT NULL
        ON CONFLICT (event_id) DO NOTHING RETURNING event_id
    )
    INSERT INTO events (event_id, type, contact_id, email, properties, occurred_at, source,
                        received_at)
    SELECT r->>0, r->>1, r->>2, r->>3, r->4, (r->>5)::timestamptz, r->>6, $2
    FROM batch WHERE r->>0 IS NULL OR r->>0 IN (SELECT event_id FROM claimed) ORDER BY n
"""
DELIVERED = """
    UPDATE outbound_messages SET state = 'delivered', attempts = 1, finished_at = $2,
           last_code = 250, last_reply = '250 2.0.0 Ok: queued as ' || left(id::text, 8),
           lease_owner = NULL
    WHERE id = ANY($1::uuid[])
"""
ATTEMPTS = """
    INSERT INTO delivery_attempts (message_id, attempt, at, outcome, remote_host, code, enhanced,
                                   reply, tls_policy)
    SELECT id, 1, $2, 'delivered', 'mx1.' || recipient_domain, 250, '2.0.0',
           '250 2.0.0 Ok: queued as ' || left(id::text, 8), 'opportunistic'
    FROM outbound_messages WHERE id = ANY($1::uuid[])
"""
SIZES = """
    SELECT (SELECT coalesce(sum(pg_total_relation_size(relid)), 0)
            FROM pg_partition_tree('events') WHERE isleaf) AS events,
           pg_total_relation_size('event_ids') AS event_ids,
           pg_total_relation_size('outbound_messages') AS outbound_messages,
           pg_total_relation_size('delivery_attempts') AS delivery_attempts,
           pg_database_size(current_database()) AS database
"""
TABLES = ("events", "event_ids", "outbound_messages", "delivery_attempts")  # measured
WORDS = ("your", "order", "cart", "items", "still", "waiting", "free", "shipping", "today",
         "discover", "new", "arrivals", "offer", "ends", "soon", "size", "colour", "stock",
         "back", "favourite", "recommended", "for", "you", "view", "in", "browser")


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="herald bench growth", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--database-url", help="a Postgres server to create a scratch "
                                               "database on (default: embedded, temporary)")
    parser.add_argument("--messages", type=int, default=10_000,
                        help="messages per phase (figures are extrapolated to 1M)")
    parser.add_argument("--events-per-message", type=int, default=5)
    parser.add_argument("--body-size", type=int, default=16 * 1024, help="bytes per body")
    parser.add_argument("--daily-messages", type=int, default=MILLION,
                        help="for the plateau figures")
    return parser.parse_args(argv)


def body(rng: random.Random, size: int, n: int) -> bytes:
    """An HTML mail of about ``size`` bytes: personalised words, so it compresses like mail."""
    head = (f"From: Shop <news@shop.example>\r\nTo: c{n}@dest.example\r\n"
            f"Subject: Your cart is waiting {n}\r\nMIME-Version: 1.0\r\n"
            "Content-Type: text/html; charset=utf-8\r\n\r\n<html><body>")
    parts = [head]
    length = len(head)
    while length < size:
        words = " ".join(rng.choice(WORDS) for _ in range(12))
        line = f"<p>{words} {rng.randrange(10**6)}</p>\r\n"
        parts.append(line)
        length += len(line)
    return "".join(parts).encode()[:size]


def events_of(n: int, count: int, message_id: uuid.UUID, at: datetime) -> list[list[Any]]:
    """``count`` events of one message: behavioural ones (with ids), then its outcomes."""
    contact = f"c{n}"
    rows: list[list[Any]] = []
    behavioural = max(count - 2, 0)
    for k in range(behavioural):
        rows.append([f"ev-{n}-{k}", ("page_viewed", "product_viewed", "added_to_cart")[k % 3],
                     contact, None, {"path": f"/p/{n % 1000}", "sku": f"sku-{n % 500}",
                                     "price": 19.9}, at.isoformat(), "api"])
    for kind in ("email_sent", "email_delivered")[:count - behavioural]:
        rows.append([None, kind, contact, f"{contact}@dest.example",
                     {"message_id": str(message_id), "workflow": "abandoned_cart",
                      "step": "reminder", "site": "dest.example"}, at.isoformat(), "mta"])
    return rows


async def load(connection: asyncpg.Connection, args: argparse.Namespace, start: int,
               received: datetime, finished: datetime, identity: QueueIdentity) -> None:
    rng = random.Random(start)
    sender = parse_address("news@shop.example")
    for first in range(start, start + args.messages, BATCH):
        numbers = range(first, min(first + BATCH, start + args.messages))
        messages = [OutboundMessage(sender, parse_address(f"c{n}@dest{n % 50}.example"),
                                    body(rng, args.body_size, n), f"c{n}", ("cart",),
                                    {"workflow": "abandoned_cart", "step": "reminder",
                                     "run": str(uuid.uuid4())}, "automation",
                                    f"run-{n}-reminder", id=uuid.uuid4())
                    for n in numbers]
        ids = [m.id for m in messages]
        events = [row for n, m in zip(numbers, messages, strict=True)
                  for row in events_of(n, args.events_per_message, m.id or uuid.uuid4(),
                                       received)]
        async with connection.transaction():
            await connection.execute(INSERT_EVENTS_AT, events, received)
            await enqueue_many(connection, identity, messages, notify=False)
        async with connection.transaction():
            await connection.execute(DELIVERED, ids, finished)
            await connection.execute(ATTEMPTS, ids, finished)


async def sizes(connection: asyncpg.Connection) -> dict[str, int]:
    row = await connection.fetchrow(SIZES)
    return {key: int(row[key]) for key in (*TABLES, "database")}


def per_million(before: dict[str, int], after: dict[str, int], messages: int) -> dict[str, int]:
    return {key: round((after[key] - before[key]) * MILLION / messages) for key in after}


def gib(value: float) -> str:
    return f"{value / 2**30:.2f} GiB"


async def measure(url: str, args: argparse.Namespace) -> dict[str, Any]:
    connection = await connect_one(url, command_timeout=600)
    try:
        await apply_migrations(connection, MIGRATION_SOURCES)
        identity = QueueIdentity("bounce.shop.example", os.urandom(32), timedelta(days=5))
        now = datetime.now(UTC)
        old = now - AGE
        part = partitions.partition_for(partitions.aligned_start(old.date(), 7), 7)
        await partitions.create(connection, part)
        settings = RetentionSettings()
        await connection.execute("VACUUM ANALYZE")
        start = await sizes(connection)

        await load(connection, args, 0, old, old, identity)
        await connection.execute("VACUUM ANALYZE")
        loaded = await sizes(connection)
        without = per_million(start, loaded, args.messages)

        report = await run_pass(connection, settings, now)
        await connection.execute("VACUUM ANALYZE")
        retained = await sizes(connection)
        freed = {key: loaded[key] - retained[key] for key in loaded}

        await load(connection, args, args.messages, now, old, identity)
        dropped = await run_pass(connection, settings, now)
        await connection.execute("VACUUM ANALYZE")
        steady = await sizes(connection)
        forever = per_million(retained, steady, args.messages)
    finally:
        await connection.close()
    days_events = settings.events / 86400
    days_bodies = settings.message_bodies / 86400
    per = {
        "events_and_ids": without["events"] + without["event_ids"],
        "message_bodies": max(without["outbound_messages"] - forever["outbound_messages"], 0),
        "message_rows": forever["outbound_messages"],
        "delivery_attempts": forever["delivery_attempts"],
    }
    daily = args.daily_messages / MILLION
    plateau = {"events_and_ids": round(per["events_and_ids"] * daily * days_events),
               "message_bodies": round(per["message_bodies"] * daily * days_bodies)}
    # Without retention every byte stays; with it only message rows and attempts keep growing.
    grow_without = sum(per.values())
    grow_with = per["message_rows"] + per["delivery_attempts"]
    return {
        "bench": "growth",
        "messages_per_phase": args.messages,
        "extrapolated": f"linearly from {args.messages:,} messages to 1,000,000",
        "events_per_message": args.events_per_message,
        "body_bytes": args.body_size,
        "bytes_per_million": per,
        "measured_without_retention": without,
        "measured_with_retention": forever,
        "without_retention_per_million": grow_without,
        "with_retention_per_million": grow_with,
        "plateau_bytes": plateau,
        "daily_messages": args.daily_messages,
        "retention_pass": {"partitions_dropped": [p.name for p in report.dropped],
                           "bodies_dropped": report.bodies_dropped + dropped.bodies_dropped,
                           "database_bytes_freed": freed["database"]},
        "summary": (f"per 1M messages: {gib(grow_without)} without retention, "
                    f"{gib(grow_with)} with it (message rows and attempts); events level off "
                    f"at {gib(plateau['events_and_ids'])} ({days_events:.0f} days) and bodies "
                    f"at {gib(plateau['message_bodies'])} ({days_bodies:.0f} days) for "
                    f"{args.daily_messages:,} messages a day"),
    }


def _with_database(url: str, name: str) -> str:
    from urllib.parse import urlsplit, urlunsplit

    return urlunsplit(urlsplit(url)._replace(path="/" + name))


async def on_server(admin_url: str, args: argparse.Namespace) -> dict[str, Any]:
    name = f"herald_bench_growth_{os.getpid()}"
    admin = await asyncpg.connect(admin_url)
    try:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}"')
        await create_database(admin, name)
    finally:
        await admin.close()
    try:
        return await measure(_with_database(admin_url, name), args)
    finally:
        admin = await asyncpg.connect(admin_url)
        try:
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await admin.close()


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    if args.messages < BATCH or args.events_per_message < 2 or args.body_size < 512:
        print("herald bench growth: need --messages >= 500, --events-per-message >= 2, "
              "--body-size >= 512", file=sys.stderr)
        return 2
    if args.database_url:
        result = uvloop.run(on_server(args.database_url, args))
    else:
        from engine.embedded_postgres import start_embedded

        embedded = start_embedded(Path(tempfile.mkdtemp(prefix="herald-growth-")))
        try:
            result = uvloop.run(on_server(embedded.url, args))
        finally:
            embedded.stop()
    per = result["bytes_per_million"]
    plateau = result["plateau_bytes"]
    rows = [("events + ids", per["events_and_ids"], "0 (partitions dropped)",
             gib(plateau["events_and_ids"])),
            ("message bodies", per["message_bodies"], "0 (bodies dropped)",
             gib(plateau["message_bodies"])),
            ("message rows", per["message_rows"], gib(per["message_rows"]), "-"),
            ("delivery attempts", per["delivery_attempts"], gib(per["delivery_attempts"]), "-"),
            ("total", result["without_retention_per_million"],
             gib(result["with_retention_per_million"]), "")]
    print(f"{'per 1M messages':<18} {'no retention':>13} {'with retention':>24} "
          f"{'plateau':>12}", file=sys.stderr)
    for name, no_retention, with_retention, level in rows:
        print(f"{name:<18} {gib(no_retention):>13} {with_retention:>24} {level:>12}",
              file=sys.stderr)
    print(result["summary"] + f" ({result['extrapolated']})", file=sys.stderr)
    print(orjson.dumps(result).decode())
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
