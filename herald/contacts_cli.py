"""``herald contacts export ID`` and ``herald contacts erase ID --yes``: GDPR export and erase
from the shell, through the same service as the HTTP API (each recorded in the privacy audit
log, actor ``cli``). Export writes the JSON document to standard output; an unknown contact
exits 2 with one line on standard error."""

from __future__ import annotations

import argparse
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime

import asyncpg
import orjson

from engine.database import connect_one
from engine.errors import HeraldError
from herald.database import database_url, migrate
from herald.roles import privacy_service
from herald.settings import Settings

ACTOR = "cli"


class ContactsUsageError(HeraldError):
    """A contacts command argument is wrong, or names no contact."""


def add_parser(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = commands.add_parser("contacts", help="GDPR export and erase of one contact")
    actions = parser.add_subparsers(dest="contacts_command", required=True, metavar="ACTION")
    export = actions.add_parser("export", help="write everything held about a contact as "
                                               "JSON to standard output")
    export.add_argument("contact_id")
    erase = actions.add_parser("erase", help="remove a contact's personal data and events; "
                                             "its addresses stay suppressed (as hashes)")
    erase.add_argument("contact_id")
    erase.add_argument("--yes", action="store_true", help="really erase (required)")


def check(args: argparse.Namespace) -> None:
    if args.contacts_command == "erase" and not args.yes:
        raise ContactsUsageError("erase cannot be undone: add --yes to erase "
                                 f"{args.contact_id!r}")


async def run(settings: Settings, args: argparse.Namespace) -> int:
    privacy = privacy_service()
    async with database_url(settings) as url:
        await migrate(url)
        connection = await connect_one(url)

        @asynccontextmanager
        async def same() -> AsyncIterator[asyncpg.Connection]:
            yield connection

        try:
            now = datetime.now(UTC)
            if args.contacts_command == "export":
                async with connection.transaction():
                    subject = await privacy.open_export(connection, args.contact_id, ACTOR, now)
                if subject is None:
                    raise ContactsUsageError(f"no contact with contact_id {args.contact_id!r}")
                out = sys.stdout.buffer
                async for chunk in privacy.export_chunks(same, subject, now):
                    out.write(chunk)
                out.write(b"\n")
                out.flush()
            else:
                erased = await privacy.erase(connection, args.contact_id, ACTOR, now)
                if erased is None:
                    raise ContactsUsageError(f"no contact with contact_id {args.contact_id!r}")
                print(orjson.dumps(erased.to_json()).decode())
        finally:
            await connection.close()
    return 0
