"""``herald bench log-shapes``: what each part of the event log's shape costs the database, as a
share of raw COPY into a bare table of the same Postgres.

The batch intake's target (0.70 of raw COPY into a bare table, ``herald bench intake``) meets
the log's own cost first. This bench copies the same event-shaped rows (one commit per 1,000,
``--connections`` connections, :mod:`bench.copy_ceiling`) into each shape in turn, in
``--rounds`` rounds of ``--seconds`` per shape (who goes first rotates), each into new tables:

* ``bare``: the ceiling's table (no index, no identity, no partitions);
* ``ids_key``: the bare table, plus each row's id into a table made ``LIKE event_ids`` (its
  unique key) in the same transaction: idempotency and nothing else;
* ``log_without_txid_index``: the log's shape without its ``(txid, position)`` B-tree;
* ``log_unpartitioned``: the log's shape in one plain table;
* ``log``: the log's shape (``copy_log`` of ``herald bench intake``: ``LIKE events`` with both
  B-trees, the identity and defaults, partitioned, and the ids).

Each shape's rate is its rows over the sum of its turns' seconds, reported with its share of the
bare rate (and each round's share). Needs Herald's migrations (an embedded Postgres in a
temporary directory unless ``--database-url``). Prints a table on stderr and one JSON line on
stdout.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from bench.args import OneLineParser, positive, positive_int
from bench.copy_ceiling import BARE, LOG, CopyTarget, copy_rows
from bench.databases import measure_on_migrated

_IDS_TABLE = "CREATE TABLE bench_copy_log_ids (LIKE event_ids INCLUDING ALL)"
SHAPES: dict[str, CopyTarget] = {
    "bare": BARE,
    "ids_key": CopyTarget(create=(*BARE.create, _IDS_TABLE), rows_table=BARE.rows_table,
                          ids_table="bench_copy_log_ids"),
    # the name Postgres gives the copied (txid, position) index of LOG's table
    "log_without_txid_index": CopyTarget(
        create=(*LOG.create, "DROP INDEX bench_copy_log_txid_position_idx"),
        rows_table=LOG.rows_table, ids_table=LOG.ids_table),
    "log_unpartitioned": CopyTarget(
        create=("CREATE TABLE bench_copy_log (LIKE events INCLUDING DEFAULTS "
                "INCLUDING IDENTITY INCLUDING INDEXES)", _IDS_TABLE),
        rows_table=LOG.rows_table, ids_table=LOG.ids_table),
    "log": LOG,
}


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = OneLineParser(prog="herald bench log-shapes", description=__doc__.split("\n")[0])
    parser.add_argument("--database-url", help="use this Postgres, migrated by Herald "
                                               "(default: embedded, temporary)")
    parser.add_argument("--seconds", type=positive, default=2.0,
                        help="seconds per shape and round")
    parser.add_argument("--rounds", type=positive_int, default=5)
    parser.add_argument("--connections", type=positive_int, default=4,
                        help="COPY connections (herald bench intake --servers 2 commits on 4)")
    parser.add_argument("--contacts", type=positive_int, default=100_000,
                        help="distinct contact ids")
    return parser.parse_args(argv)


async def run(args: argparse.Namespace, url: str) -> dict[str, Any]:
    names = list(SHAPES)
    rows = dict.fromkeys(names, 0)
    seconds = dict.fromkeys(names, 0.0)
    round_rates: list[dict[str, float]] = []
    for turn in range(args.rounds):
        shift = turn % len(names)
        rates: dict[str, float] = {}
        for name in names[shift:] + names[:shift]:
            copied, elapsed = await copy_rows(url, args.seconds, args.connections,
                                              args.contacts, target=SHAPES[name])
            rows[name] += copied
            seconds[name] += elapsed
            rates[name] = copied / elapsed
        round_rates.append(rates)
    bare = rows["bare"] / seconds["bare"]
    shapes = {name: {"rows": rows[name], "rows_per_s": round(rows[name] / seconds[name], 1),
                     "share_of_bare": round(rows[name] / seconds[name] / bare, 3),
                     "rounds_share_of_bare": [round(r[name] / r["bare"], 3)
                                              for r in round_rates]}
              for name in names}
    return {"bench": "log-shapes", "rounds": args.rounds, "seconds_per_turn": args.seconds,
            "connections": args.connections, "shapes": shapes}


def print_table(result: dict[str, Any]) -> None:
    print(f"{'shape':>24}  {'rows/s':>10}  share of bare (rounds)", file=sys.stderr)
    for name, shape in result["shapes"].items():
        rounds = " / ".join(f"{share:.3f}" for share in shape["rounds_share_of_bare"])
        print(f"{name:>24}  {shape['rows_per_s']:>10.0f}  {shape['share_of_bare']:.3f} "
              f"({rounds})", file=sys.stderr)


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    return measure_on_migrated(args.database_url, lambda url: run(args, url), print_table)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
