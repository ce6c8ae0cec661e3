"""``herald bench suppression``: the enqueue path's suppression look-up with many erased
addresses.

Every message the queue or the automation enqueues is checked against the suppression list
and against the hashes of erased contacts' addresses (``mta.suppression.store.lookup``: the
entries of the addresses, plus one index probe into ``erased_addresses`` per address, whose
key is the HMAC of the address). This bench measures what that look-up costs per 1,000
addresses, beside its anchor in the same run: the same addresses looked up in the
suppression list alone (``SELECT … FROM suppressions WHERE email = ANY($1)``), the query the
look-up would be without erasure.

1. Fills the suppression list with ``--suppressed`` entries (in SQL).
2. Phase ``none``: no erased addresses. ``--rounds`` rounds, each looking up a fresh set of
   ``--addresses`` addresses (1 % of them suppressed, 1 % erased once phase 2 fills them, the
   rest unknown) with the look-up and with the anchor, which goes first alternating.
3. Fills ``erased_addresses`` with ``--erased`` hashes (in SQL, the same HMAC as erasure).
4. Phase ``erased``: the same rounds again.

Each round's answer is checked: the look-up must name exactly the round's suppressed
addresses (and, in phase ``erased``, its erased ones with reason ``erased``); the run exits 1
otherwise. The JSON line gives medians in ms per 1,000 addresses and the ratios.

Uses the embedded Postgres in a temporary directory unless ``--database-url`` is given.
"""

from __future__ import annotations

import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import asyncpg
import orjson
import uvloop

from bench.args import OneLineParser, positive_int
from bench.databases import migrated_database
from engine.privacy.hashing import hash_sql, load_key
from mta.suppression import store
from mta.suppression.rules import ERASED

FILL_SUPPRESSED = """
    INSERT INTO suppressions (email, category, reason, source)
    SELECT 'suppressed' || i || '@example.com', '', 'hard_bounce', 'bench'
    FROM generate_series(1, $1::int) AS i
    ON CONFLICT DO NOTHING
"""
FILL_ERASED = f"""
    INSERT INTO erased_addresses (hash)
    SELECT {hash_sql("'erased' || i || '@example.com'")}
    FROM generate_series(1, $1::int) AS i CROSS JOIN privacy_key k
    ON CONFLICT DO NOTHING
"""
ANCHOR = "SELECT email, reason, category FROM suppressions WHERE email = ANY($1::text[])"


def parse_args(argv: list[str]) -> Any:
    parser = OneLineParser(prog="herald bench suppression",
                           description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--erased", type=positive_int, default=100_000,
                        help="erased addresses (hashes) in phase 2 (default 100000)")
    parser.add_argument("--suppressed", type=positive_int, default=100_000,
                        help="entries of the suppression list (default 100000)")
    parser.add_argument("--addresses", type=positive_int, default=1000,
                        help="addresses per look-up (default 1000)")
    parser.add_argument("--rounds", type=positive_int, default=15,
                        help="look-ups per phase and query (default 15)")
    parser.add_argument("--database-url", default=None,
                        help="an existing database (default: a temporary embedded Postgres)")
    return parser.parse_args(argv)


def round_addresses(args: Any, round_number: int) -> tuple[list[str], set[str], set[str]]:
    """A round's addresses, its suppressed ones and its erased ones (erased in phase 2)."""
    per_hundred = max(1, args.addresses // 100)
    suppressed = {f"suppressed{1 + (round_number * per_hundred + i) % args.suppressed}"
                  "@example.com" for i in range(per_hundred)}
    erased = {f"erased{1 + (round_number * per_hundred + i) % args.erased}@example.com"
              for i in range(per_hundred)}
    unknown = [f"unknown{round_number}.{i}@example.com"
               for i in range(args.addresses - len(suppressed) - len(erased))]
    return [*suppressed, *erased, *unknown], suppressed, erased


async def timed(call: Callable[[], Awaitable[Any]]) -> tuple[float, Any]:
    started = time.perf_counter()
    result = await call()
    return time.perf_counter() - started, result


async def phase(connection: asyncpg.Connection, args: Any, with_erased: bool,
                problems: list[str]) -> dict[str, float]:
    per_thousand = 1000 / args.addresses
    lookups: list[float] = []
    anchors: list[float] = []
    for number in range(args.rounds):
        addresses, suppressed, erased = round_addresses(args, number)

        async def look_up(addresses: list[str] = addresses) -> Any:
            return await store.lookup(connection, addresses)

        async def anchor(addresses: list[str] = addresses) -> Any:
            return await connection.fetch(ANCHOR, addresses)

        order = [(look_up, lookups), (anchor, anchors)]
        for call, times in order if number % 2 == 0 else reversed(order):
            elapsed, result = await timed(call)
            times.append(elapsed * 1000 * per_thousand)
            if call is look_up:
                expected = {email: [("hard_bounce", "")] for email in suppressed}
                if with_erased:
                    expected.update({email: [(ERASED, "")] for email in erased})
                if result != expected:
                    problems.append(f"round {number}: the look-up answered {len(result)} "
                                    f"addresses, expected {len(expected)}")
            elif {row["email"] for row in result} != suppressed:
                problems.append(f"round {number}: the anchor missed suppressed addresses")
    lookup_ms, anchor_ms = statistics.median(lookups), statistics.median(anchors)
    return {"lookup_ms_per_1000": round(lookup_ms, 3), "anchor_ms_per_1000": round(anchor_ms, 3),
            "lookup_to_anchor": round(lookup_ms / anchor_ms, 2)}


async def measure(url: str, args: Any) -> dict[str, Any]:
    connection = await asyncpg.connect(url)
    try:
        await load_key(connection)
        await connection.execute(FILL_SUPPRESSED, args.suppressed)
        await connection.execute("ANALYZE suppressions")
        problems: list[str] = []
        await phase(connection, args, False, problems)  # warm-up: caches, plans
        none = await phase(connection, args, False, problems)
        started = time.perf_counter()
        await connection.execute(FILL_ERASED, args.erased)
        await connection.execute("ANALYZE erased_addresses")
        fill_s = time.perf_counter() - started
        erased = await phase(connection, args, True, problems)
    finally:
        await connection.close()
    return {
        "bench": "suppression", "addresses": args.addresses, "rounds": args.rounds,
        "suppressed": args.suppressed, "erased": args.erased,
        "erased_fill_s": round(fill_s, 2), "none": none, "with_erased": erased,
        "ratios": {"erased_to_none": round(erased["lookup_ms_per_1000"]
                                           / none["lookup_ms_per_1000"], 2),
                   "lookup_to_anchor": erased["lookup_to_anchor"]},
        "verification": {"ok": not problems, "problems": problems[:5]},
    }


def main(argv: list[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    workdir = Path(tempfile.mkdtemp(prefix="herald-bench-suppression-"))
    try:
        with migrated_database(args.database_url, workdir) as url:
            result = uvloop.run(measure(url, args))
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    print(orjson.dumps(result).decode(), flush=True)
    return 0 if result["verification"]["ok"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
