"""One LISTEN connection per process: every channel's subscribers hear their notifications on
it, whenever they subscribed; a lost connection is re-made with every channel, and the
subscribers are told of the gap; a subscriber that fails does not silence the others. A
``herald run`` of the mta and outbox roles keeps one listening backend, not three."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import pytest

from bench.herald_process import HeraldProcess, free_port
from engine.database import Database, connect_one
from engine.notifications import Notifications
from mta.sink import CaptureSink
from tests.support.mta import identity_for, mta_settings, queue_message, wait_for_states
from tests.test_metrics_every_role import scrape_until

LISTENING = ("SELECT pid, query FROM pg_stat_activity WHERE query LIKE 'LISTEN %' "
             "AND pid <> pg_backend_pid() AND datname = current_database()")


class Heard:
    def __init__(self) -> None:
        self.payloads: list[str] = []
        self.changed = asyncio.Event()

    def __call__(self, payload: str) -> None:
        self.payloads.append(payload)
        self.changed.set()

    async def wait_for(self, count: int) -> None:
        while len(self.payloads) < count:
            self.changed.clear()
            await asyncio.wait_for(self.changed.wait(), 10)


async def notify(database: Database, channel: str, payload: str) -> None:
    connection = await connect_one(database.url)
    try:
        await connection.execute("SELECT pg_notify($1, $2)", channel, payload)
    finally:
        await connection.close()


async def test_every_channel_is_heard_on_one_connection(database: Database) -> None:
    notifications = Notifications(database)
    early, late, also_late = Heard(), Heard(), Heard()
    await notifications.subscribe("herald_test_a", early)
    await notifications.start()
    try:
        await notifications.subscribe("herald_test_b", late)  # after the connection is up
        await notifications.subscribe("herald_test_b", also_late)  # a second subscriber
        await notify(database, "herald_test_a", "one")
        await notify(database, "herald_test_b", "two")
        await early.wait_for(1)
        await late.wait_for(1)
        await also_late.wait_for(1)
        assert (early.payloads, late.payloads, also_late.payloads) == (
            ["one"], ["two"], ["two"])
        async with database.connection() as connection:
            assert len(await connection.fetch(LISTENING)) == 1
    finally:
        await notifications.stop()


async def test_a_lost_connection_is_remade_with_every_channel_and_the_gap_is_told(
        database: Database) -> None:
    notifications = Notifications(database)
    heard_a, heard_b = Heard(), Heard()
    gaps = asyncio.Event()
    await notifications.subscribe("herald_test_a", heard_a, on_gap=gaps.set)
    await notifications.start()
    try:
        await notifications.subscribe("herald_test_b", heard_b)
        gaps.clear()  # (the first connection tells of one: anything before it)
        async with database.connection() as connection:
            [listener] = await connection.fetch(LISTENING)
            await connection.execute("SELECT pg_terminate_backend($1)", listener["pid"])
        await asyncio.wait_for(gaps.wait(), 10)
        await asyncio.wait_for(notifications.listening(), 30)
        async with database.connection() as connection:
            [again] = await connection.fetch(LISTENING)
        assert again["pid"] != listener["pid"]
        await notify(database, "herald_test_a", "after-a")
        await notify(database, "herald_test_b", "after-b")
        await heard_a.wait_for(1)
        await heard_b.wait_for(1)
        assert (heard_a.payloads, heard_b.payloads) == (["after-a"], ["after-b"])
    finally:
        await notifications.stop()


async def test_a_failing_subscriber_does_not_silence_the_others(
        database: Database, caplog: pytest.LogCaptureFixture) -> None:
    notifications = Notifications(database)
    heard = Heard()

    def broken(_payload: str) -> None:
        raise RuntimeError("a bug in a subscriber")

    await notifications.subscribe("herald_test_a", broken)
    await notifications.subscribe("herald_test_a", heard)
    await notifications.start()
    try:
        with caplog.at_level(logging.ERROR, logger="herald.notifications"):
            await notify(database, "herald_test_a", "x")
            await heard.wait_for(1)
        assert heard.payloads == ["x"]
        assert [r.message for r in caplog.records] == ["a notification's subscriber failed"]
    finally:
        await notifications.stop()


async def test_a_process_running_the_mta_and_the_outbox_listens_on_one_backend(
        database: Database, database_url: str, tmp_path: Path) -> None:
    identity = await identity_for(database, mta_settings())
    async with CaptureSink(keep=10) as sink:
        port = free_port()
        env = {"HERALD_DATABASE_URL": database_url, "HERALD_ENGINE_LOG_LEVEL": "warning",
               "HERALD_MTA_ROUTE": f"127.0.0.1:{sink.port}", "HERALD_MTA_SHAPING_FILE": "",
               "HERALD_MTA_EHLO_NAME": "herald.test",
               "HERALD_MTA_BOUNCE_DOMAIN": "bounces.herald.test",
               "HERALD_METRICS_MTA_LISTEN": f"127.0.0.1:{port}"}
        process = HeraldProcess(["run", "--role", "mta", "--role", "outbox"], env,
                                tmp_path / "herald.log")
        process.start()
        try:
            await scrape_until(port, lambda text: "\n# TYPE herald_outbox_depth" in text
                               and "\n# TYPE herald_mta_queue_depth" in text)
            async with database.connection() as connection:
                listening = await connection.fetch(LISTENING)
            # the erasures', the MTA's new mail and the outbox's rows, on one connection
            assert len(listening) == 1, listening
            message = await queue_message(database, identity, "ann@example.org")
            await wait_for_states(database_url, [message], ("delivered",))
        finally:
            assert process.stop() == 0
