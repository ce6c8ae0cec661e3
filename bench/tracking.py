"""``herald bench tracking``: tracked clicks and opens per second beside their anchors.

Starts ``herald run --role http`` (embedded Postgres in a temporary directory unless
``--database-url`` is given), stores ``--messages`` delivered messages with three tracked links
each, then drives, in rounds, with N keep-alive clients: ``GET /t/c/{token}`` over every
message's links (a click: token check, the message's links, one ``email_clicked`` event through
the intake's group commit, a 302), ``GET /t/o/{token}`` (an open), and the anchors measured in
the same round: ``POST /v1/events`` with one event (the same group commit) and ``GET
/healthz`` (no database). Prints the medians over the rounds on stderr and one JSON line.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import asyncpg
import orjson
import uvloop

from bench.herald_process import HeraldProcess, create_key, free_port
from bench.loadclient import HttpConnection
from engine.link_keys import LinkKeys
from mta.tracking.tokens import tracking_token

KEY = "bench:" + "b" * 32
BROWSER = "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 Chrome/120.0 Safari/537.36"


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="herald bench tracking", description=__doc__)
    parser.add_argument("--database-url", help="use this Postgres (default: embedded, temporary)")
    parser.add_argument("--duration", type=float, default=5.0, help="seconds per phase")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--messages", type=int, default=5000)
    parser.add_argument("--log", type=Path, help="write the server's log here")
    return parser.parse_args(argv)


async def load(port: int, headers: dict[str, str], method: str, paths: list[str], body: bytes,
               concurrency: int, duration: float) -> dict[str, Any]:
    deadline = time.perf_counter() + duration
    statuses: dict[int, int] = {}
    count = 0

    async def worker(index: int) -> None:
        nonlocal count
        connection = HttpConnection("127.0.0.1", port, headers)
        position = index
        try:
            while time.perf_counter() < deadline:
                status, _ = await connection.request(method, paths[position % len(paths)], body)
                position += concurrency
                statuses[status] = statuses.get(status, 0) + 1
                count += 1
        finally:
            connection.close()

    started = time.perf_counter()
    await asyncio.gather(*(worker(i) for i in range(concurrency)))
    return {"per_s": round(count / (time.perf_counter() - started)), "statuses": statuses}


async def store_messages(url: str, count: int) -> list[uuid.UUID]:
    connection = await asyncpg.connect(url)
    try:
        ids = [uuid.uuid4() for _ in range(count)]
        await connection.executemany(
            """INSERT INTO outbound_messages (id, header_from, envelope_from, recipient,
                   recipient_domain, contact_id, body, expires_at, state, finished_at, metadata,
                   tracked_links)
               VALUES ($1, 'news@shop.test', 'b@bounces.test', 'c@example.org', 'example.org',
                   $2, '', now() + interval '1 day', 'delivered', now() - interval '1 hour',
                   '{"workflow": "bench", "step": "s1", "run_id": 1}', $3)""",
            [(i, f"c{n}", [f"https://shop.test/{n}/{k}" for k in range(3)])
             for n, i in enumerate(ids)])
    finally:
        await connection.close()
    return ids


async def drive(port: int, api_key: str, ids: list[uuid.UUID],
                args: argparse.Namespace) -> list[dict[str, Any]]:
    keys = LinkKeys.parse([KEY])
    clicks = [f"/t/c/{tracking_token(keys, 'click', i, k)}" for k in range(3) for i in ids]
    opens = [f"/t/o/{tracking_token(keys, 'open', i)}" for i in ids]
    event = orjson.dumps({"type": "page_viewed", "contact_id": "c1"})
    browser = {"User-Agent": BROWSER}
    phases = [("click", browser, "GET", clicks, b""), ("open", browser, "GET", opens, b""),
              ("events", {"Authorization": f"Bearer {api_key}",
                          "Content-Type": "application/json"}, "POST", ["/v1/events"], event),
              ("healthz", {}, "GET", ["/healthz"], b"")]
    rounds = []
    for number in range(args.rounds):
        row = {}
        for name, headers, method, paths, body in phases:
            row[name] = await load(port, headers, method, paths, body, args.concurrency,
                                   args.duration)
        print(f"round {number + 1}: " + "  ".join(
            f"{name} {result['per_s']}/s {result['statuses']}" for name, result in row.items()),
            file=sys.stderr)
        rounds.append(row)
    return rounds


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    workdir = Path(tempfile.mkdtemp(prefix="herald-bench-"))
    port = free_port()
    env = {"HERALD_DATA_DIR": str(workdir / "data"), "HERALD_ENGINE_LOG_LEVEL": "warning",
           "HERALD_HTTP_LISTEN": f"127.0.0.1:{port}", "HERALD_HTTP_RATE_LIMIT_PER_SECOND": "0",
           "HERALD_TRACKING_CLIENT_RATE_PER_SECOND": "0",
           "HERALD_HTTP_MAX_CONNECTIONS_PER_CLIENT": "0",
           "HERALD_HTTP_LINK_KEYS": orjson.dumps([KEY]).decode()}
    if args.database_url:
        env["HERALD_DATABASE_URL"] = args.database_url
    server = HeraldProcess(["run", "--role", "http"], env, args.log)
    server.start()
    try:
        api_key = create_key(env, "events:write")
        url = args.database_url or _embedded_url(workdir / "data")
        ids = uvloop.run(store_messages(url, args.messages))
        rounds = uvloop.run(drive(port, api_key, ids, args))
    finally:
        server.stop()
    medians = {name: statistics.median(r[name]["per_s"] for r in rounds) for name in rounds[0]}
    summary = {"bench": "tracking", "concurrency": args.concurrency, "rounds": len(rounds),
               "median_per_s": medians,
               "click_vs_events": round(medians["click"] / medians["events"], 2),
               "open_vs_events": round(medians["open"] / medians["events"], 2),
               "click_vs_healthz": round(medians["click"] / medians["healthz"], 2)}
    print(f"medians of {len(rounds)}: " + "  ".join(f"{k} {v:.0f}/s" for k, v in medians.items())
          + f"  click/events {summary['click_vs_events']}", file=sys.stderr)
    print(orjson.dumps(summary).decode())
    return 0


def _embedded_url(data_dir: Path) -> str:
    from engine.embedded_postgres import start_embedded

    return start_embedded(data_dir).url


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
