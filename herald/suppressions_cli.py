"""``herald suppressions list|add|remove|import|export``: the suppression list from the shell,
through the same store functions as the HTTP API (every change is logged as an event)."""

from __future__ import annotations

import argparse
import sys
from datetime import UTC, datetime
from pathlib import Path

from engine.addresses import AddressError
from engine.database import connect_one
from engine.errors import HeraldError
from herald.database import database_url, migrate
from herald.settings import Settings
from mta.suppression import store
from mta.suppression.addresses import normalise
from mta.suppression.csv_format import CsvError, export_header, export_rows, parse_import
from mta.suppression.rules import MANUAL, REASONS, Suppression

PAGE = 1000


class SuppressionUsageError(HeraldError):
    """A suppressions command argument is wrong."""


def add_parser(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = commands.add_parser("suppressions", help="the suppression list")
    actions = parser.add_subparsers(dest="suppressions_command", required=True,
                                    metavar="ACTION")
    listing = actions.add_parser("list", help="list entries, oldest first (tab-separated)")
    listing.add_argument("--reason", choices=REASONS)
    listing.add_argument("--limit", type=int, default=100)
    add = actions.add_parser("add", help="suppress an address")
    add.add_argument("email")
    add.add_argument("--reason", choices=REASONS, default=MANUAL)
    add.add_argument("--category", default="", help="unsubscribe from this category only")
    add.add_argument("--detail", default="")
    remove = actions.add_parser("remove", help="remove an address (all its entries)")
    remove.add_argument("email")
    remove.add_argument("--category", help="remove only this category's entry")
    imp = actions.add_parser("import", help="add entries from a CSV file (header with 'email')")
    imp.add_argument("file", help="CSV file, or - for standard input")
    exp = actions.add_parser("export", help="write every entry as CSV to standard output")
    exp.add_argument("--reason", choices=REASONS)


def _address(text: str) -> str:
    try:
        return normalise(text)
    except AddressError as exc:
        raise SuppressionUsageError(f"{text!r}: {exc}") from None


def entries_from(args: argparse.Namespace) -> list[Suppression]:
    """The entries ``add`` and ``import`` will add (files are read before the loop starts)."""
    action = args.suppressions_command
    entries: list[Suppression] = []
    if action == "add":
        try:
            entries = [Suppression(_address(args.email), args.reason, args.category, "cli",
                                   detail=args.detail)]
        except ValueError as exc:
            raise SuppressionUsageError(str(exc)) from None
    elif action == "import":
        try:
            text = sys.stdin.read() if args.file == "-" else \
                Path(args.file).read_text("utf-8-sig")
            entries = parse_import(text, "import")
        except (OSError, UnicodeDecodeError) as exc:
            raise SuppressionUsageError(f"{args.file}: {exc}") from None
        except CsvError as exc:
            raise SuppressionUsageError(f"{args.file}: {exc}") from None
    return entries


async def run(settings: Settings, args: argparse.Namespace,
              entries: list[Suppression]) -> int:
    action = args.suppressions_command
    async with database_url(settings) as url:
        await migrate(url)
        connection = await connect_one(url)
        try:
            now = datetime.now(UTC)
            if action in ("add", "import"):
                async with connection.transaction():
                    added = await store.add(connection, entries, now)
                print(f"added {len(added)} of {len(entries)} (others were already suppressed)")
            elif action == "remove":
                async with connection.transaction():
                    removed = await store.remove(connection, _address(args.email),
                                                 args.category, "cli", now)
                if not removed:
                    raise SuppressionUsageError(f"{args.email} is not suppressed")
                print(f"removed {len(removed)} entr{'y' if len(removed) == 1 else 'ies'}")
            elif action == "list":
                for entry in await store.page(connection, 0, max(1, args.limit), args.reason):
                    print("\t".join((entry.email, entry.reason, entry.category or "*",
                                     entry.source, entry.created_at.isoformat(),
                                     entry.detail)))
            elif action == "export":
                sys.stdout.write(export_header())
                after = 0
                while batch := await store.page(connection, after, PAGE, args.reason):
                    sys.stdout.write("".join(export_rows(batch)))
                    after = batch[-1].id
        finally:
            await connection.close()
    return 0
