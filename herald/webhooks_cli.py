"""``herald webhooks add|list|remove|test|step-secret`` and ``herald outbox list|retry``:
outcome-webhook subscriptions and the outbox from the shell, through the same functions as
``/v1/webhooks`` and ``/v1/outbox``. Bad input (a URL that cannot be called, an unknown event
type or id) is one line on standard error and exit 2."""

from __future__ import annotations

import argparse

import asyncpg
import orjson

from engine.database import connect_one
from engine.db_errors import database_errors
from engine.outbox import admin, store, subscriptions
from engine.outbox.events import EVENT_TYPES
from engine.outbox.service import step_secret
from engine.outbox.subscriptions import NewSubscription, parse_subscription
from herald.database import database_url, migrate
from herald.settings import Settings


def add_parser(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = commands.add_parser("webhooks", help="outcome-webhook subscriptions")
    actions = parser.add_subparsers(dest="webhooks_command", required=True, metavar="ACTION")
    add = actions.add_parser("add", help="subscribe a URL; prints the id and, once, the secret")
    add.add_argument("--url", required=True)
    add.add_argument("--event", action="append", required=True, metavar="TYPE",
                     help=f"repeatable: {', '.join(EVENT_TYPES)}")
    add.add_argument("--secret", help="whsec_<base64> (default: a new one is generated)")
    actions.add_parser("list", help="the subscriptions (tab-separated: id, url, events)")
    remove = actions.add_parser("remove", help="remove a subscription")
    remove.add_argument("id")
    test = actions.add_parser("test", help="queue a signed webhook_test request to it")
    test.add_argument("id")
    actions.add_parser("step-secret", help="the secret that signs webhook-step requests")

    outbox = commands.add_parser("outbox", help="outbound HTTP requests and their state")
    outbox_actions = outbox.add_subparsers(dest="outbox_command", required=True,
                                           metavar="ACTION")
    listing = outbox_actions.add_parser("list", help="rows, oldest first, as JSON lines")
    listing.add_argument("--state", choices=store.STATES)
    listing.add_argument("--limit", type=int, default=100)
    retry = outbox_actions.add_parser("retry", help="send a dead-lettered row again")
    retry.add_argument("id", type=int)


def parsed_subscription(args: argparse.Namespace) -> NewSubscription | None:
    """``webhooks add``'s subscription, checked before the database is touched."""
    if args.command == "webhooks" and args.webhooks_command == "add":
        return parse_subscription(args.url, args.event, args.secret)
    return None


def _line(value: object) -> str:
    return orjson.dumps(value).decode()


async def run(settings: Settings, args: argparse.Namespace,
              new: NewSubscription | None) -> int:
    async with database_url(settings) as url:
        await migrate(url)
        connection = await connect_one(url)
        try:
            with database_errors():
                if args.command == "outbox":
                    await _outbox(connection, args)
                else:
                    await _webhooks(connection, settings, args, new)
        finally:
            await connection.close()
    return 0


async def _webhooks(connection: asyncpg.Connection, settings: Settings, args: argparse.Namespace,
                    new: NewSubscription | None) -> None:
    action = args.webhooks_command
    if action == "add":
        assert new is not None
        created = await admin.add(connection, new,
                                  admin.Vetter.from_settings(settings.webhooks))
        print(f"webhook {created['id']} -> {created['url']} ({', '.join(created['events'])})")
        if not new.secret_given:
            print("signing secret (shown once):")
            print(created["secret"])
        else:
            print(created["id"])
    elif action == "list":
        for row in await subscriptions.list_all(connection):
            print(f"{row['id']}\t{row['url']}\t{','.join(row['event_types'])}")
    elif action == "remove":
        await admin.remove(connection, args.id)
        print(f"removed {args.id}")
    elif action == "test":
        row = await admin.send_test(connection, args.id)
        print(f"queued outbox row {row['id']} (webhook-id {row['webhook_id']})")
    elif action == "step-secret":
        print(await step_secret(connection, settings.webhooks))


async def _outbox(connection: asyncpg.Connection, args: argparse.Namespace) -> None:
    if args.outbox_command == "list":
        limit = max(1, min(args.limit, 100_000))
        for row in await store.list_rows(connection, args.state, limit,
                                         None):
            print(_line(store.row_json(row)))
    else:
        print(_line(await admin.retry(connection, args.id)))
