"""Links in automation mail: the List-Unsubscribe URL names the very message it is in, under
[http] public_url; without public_url sends are skipped with a reason explain shows."""

from __future__ import annotations

import email
import logging
import uuid
from typing import Any

import pytest

from automation.tools.explain import explain, render_text
from engine.database import Database
from herald.roles import AutomationRole
from herald.settings import Settings
from mta.suppression.tokens import read_unsubscribe_token, token_from_mailto_address
from tests.support.automation import (
    PUBLIC_URL,
    TEST_LINK_KEYS,
    automation_service,
    example_catalog,
    post_event,
    wait_for,
)


async def test_unsubscribe_url_and_mailto_name_the_message(
        database: Database, database_url: str) -> None:
    async with automation_service(database):
        await post_event(database, "c1", "signed_up", email="ann@example.com")

        async def queued(connection: Any) -> bool:
            return bool(await connection.fetchval("SELECT count(*) FROM outbound_messages"))

        await wait_for(database_url, queued)
    async with database.connection() as connection:
        row = await connection.fetchrow("SELECT id, body FROM outbound_messages")
    parsed = email.message_from_bytes(bytes(row["body"]))
    header = " ".join(str(parsed["List-Unsubscribe"]).split())
    url, mailto = (part.strip().strip("<>") for part in header.split(","))
    assert url.startswith(f"{PUBLIC_URL}/v1/unsubscribe/")
    assert read_unsubscribe_token(TEST_LINK_KEYS, url.rsplit("/", 1)[1]) == row["id"]
    token = token_from_mailto_address(mailto.removeprefix("mailto:"))
    assert token is not None and read_unsubscribe_token(TEST_LINK_KEYS, token) == row["id"]
    assert mailto.endswith("@bounces.herald.test")
    assert parsed["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    assert isinstance(row["id"], uuid.UUID)


async def test_without_public_url_sends_are_skipped_and_explained(
        database: Database, database_url: str) -> None:
    async with automation_service(database, public_url=None):
        await post_event(database, "c1", "signed_up", email="ann@example.com")

        async def decided(connection: Any) -> bool:
            return bool(await connection.fetchval(
                "SELECT count(*) FROM workflow_log WHERE action = 'skipped'"))

        await wait_for(database_url, decided)
        async with database.connection() as connection:
            assert await connection.fetchval("SELECT count(*) FROM outbound_messages") == 0
            report = await explain(connection, example_catalog(), "c1")
    text = render_text(report)
    assert "skipped: not sent: [http] public_url is not set" in text


async def test_start_up_warns_naming_the_key(database: Database,
                                             caplog: pytest.LogCaptureFixture) -> None:
    role = AutomationRole(Settings(), database, example_catalog())
    caplog.set_level(logging.WARNING, logger="herald.roles")
    await role.start()
    try:
        assert any("[http] public_url is not set" in r.getMessage() for r in caplog.records)
    finally:
        await role.stop()
