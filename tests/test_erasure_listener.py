"""Every serving process forgets its caches of personal data when any process erases a
contact: the registered caches (parsed addresses, encoded lines, link decisions, DKIM header
fields) are emptied when the erasure's NOTIFY arrives, and when the listener's connection is
lost (an erasure may go unheard meanwhile)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest

from engine import addresses
from engine.database import Database, connect_one
from engine.privacy import forgetting
from engine.privacy.erasure_listener import erasures_heard
from engine.privacy.service import ERASED_CHANNEL
from mta import mime_writer
from mta.dkim.canonical import relaxed_header
from mta.tracking import rewrite


@pytest.fixture
def forgotten() -> Iterator[asyncio.Event]:
    """Set each time the registered caches are emptied (registered last, so it runs after
    every real cache's own forgetter)."""
    event = asyncio.Event()
    forgetting.remembers_personal_data(event.set)
    try:
        yield event
    finally:
        forgetting._FORGETTERS.remove(event.set)


def fill_caches() -> None:
    addresses.parse_address("alice.smith@example.com")
    mime_writer.quoted_printable("Hello Alice Smith,\nyour order\n")
    rewrite.trackable("https://shop.example.com/alice")
    relaxed_header(b"To", b" alice.smith@example.com\r\n")


def cached() -> dict[str, int]:
    return {"addresses": addresses._parse_address.cache_info().currsize,
            "local parts": addresses._is_dot_string.cache_info().currsize,
            "lines": len(mime_writer._qp_lines),
            "links": rewrite.trackable.cache_info().currsize,
            "dkim fields": relaxed_header.cache_info().currsize}


async def test_an_erasure_heard_from_another_process_empties_every_cache(
        database: Database, forgotten: asyncio.Event) -> None:
    async with erasures_heard(database) as listener:
        forgotten.clear()  # (start-up empties them once)
        fill_caches()
        assert all(cached().values()), cached()
        other = await connect_one(database.url)
        try:
            await other.execute("SELECT pg_notify($1, $2)", ERASED_CHANNEL, "contact-1")
        finally:
            await other.close()
        await asyncio.wait_for(forgotten.wait(), 10)
        assert listener.heard == 1
        assert cached() == dict.fromkeys(cached(), 0)


async def test_a_lost_listener_connection_empties_the_caches_and_listens_again(
        database: Database, forgotten: asyncio.Event) -> None:
    async with erasures_heard(database) as listener:
        fill_caches()
        forgotten.clear()
        admin = await connect_one(database.url)
        try:
            pids = await admin.fetch(
                "SELECT pid FROM pg_stat_activity WHERE query LIKE 'LISTEN %' "
                "AND pid <> pg_backend_pid() AND datname = current_database()")
            assert pids
            for row in pids:
                await admin.execute("SELECT pg_terminate_backend($1)", row["pid"])
            await asyncio.wait_for(forgotten.wait(), 10)  # emptied on losing the connection
            assert cached() == dict.fromkeys(cached(), 0)
            assert listener.heard == 0
            await asyncio.wait_for(listener.listening(), 30)  # back again
            fill_caches()
            forgotten.clear()
            await admin.execute("SELECT pg_notify($1, $2)", ERASED_CHANNEL, "contact-2")
            await asyncio.wait_for(forgotten.wait(), 10)
            assert listener.heard == 1  # a later erasure is heard
            assert cached() == dict.fromkeys(cached(), 0)
        finally:
            await admin.close()
