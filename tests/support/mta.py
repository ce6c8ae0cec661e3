"""Run the MTA's delivery service in-process against a test database, and wait on outcomes."""

from __future__ import annotations

import asyncio
import dataclasses
import uuid
from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager
from datetime import timedelta
from pathlib import Path
from typing import Any

import asyncpg

from engine.addresses import parse_address
from engine.database import Database, connect_one
from engine.eventlog import EVENTS_CHANNEL
from mta.compose import compose
from mta.delivery.service import DeliveryService
from mta.dkim.keys import generate_key
from mta.dkim.signer import DkimKeyConfig
from mta.dkim.signing_pool import SigningPool
from mta.dns.resolver import MxResolver
from mta.dns.routing import Router
from mta.queue.enqueue import OutboundMessage, QueueIdentity, enqueue, load_bounce_secret
from mta.settings import MtaSettings
from mta.shaping.rules import ShapingRule
from mta.tls.service import TransportSecurity

FINAL = ("delivered", "bounced", "expired", "suppressed")


def mta_settings(**overrides: Any) -> MtaSettings:
    base = MtaSettings(ehlo_name="herald.test", bounce_domain="bounces.herald.test",
                       shaping_file=None, connection_idle_timeout=5.0)
    return dataclasses.replace(base, **overrides)


def rsa_signer(tmp_path: Path, domain: str = "shop.test") -> tuple[SigningPool, bytes]:
    pem = generate_key("rsa")
    key_file = tmp_path / f"{domain}.pem"
    key_file.write_bytes(pem)
    return SigningPool([DkimKeyConfig(domain, "s1", key_file, "rsa")], processes=1), pem


@asynccontextmanager
async def delivery_service(database: Database, settings: MtaSettings,
                           signer: SigningPool | None = None,
                           rules: tuple[ShapingRule, ...] = (),
                           security: list[TransportSecurity] | None = None,
                           ) -> AsyncIterator[DeliveryService]:
    """The delivery service as the mta role builds it (transport security included); the
    TransportSecurity is appended to ``security`` when given."""
    resolver = MxResolver(
        nameserver=(settings.resolver.host, settings.resolver.port) if settings.resolver else None,
        timeout=settings.dns_timeout)
    tls = TransportSecurity(database, settings, resolver,
                            lambda: identity_for(database, settings))
    if security is not None:
        security.append(tls)
    service = DeliveryService(database, settings, Router(settings, resolver), signer, rules,
                              tls.policies, tls.observer)
    await service.start()
    try:
        yield service
    finally:
        await service.stop(grace=5.0)
        await tls.stop()
        await resolver.aclose()


async def identity_for(database: Database, settings: MtaSettings) -> QueueIdentity:
    async with database.connection() as connection:
        secret = await load_bounce_secret(connection, settings.bounce_secret)
    return QueueIdentity(settings.bounce_domain, secret, timedelta(seconds=settings.expire))


async def queue_message(database: Database, identity: QueueIdentity, to: str,
                        sender: str = "Shop <news@shop.test>", subject: str = "Hello",
                        **extra: Any) -> uuid.UUID:
    composed = compose({"from": sender, "to": to, "subject": subject,
                        "text": "Hello there.\n", "html": "<p>Hello there.</p>"})
    message = OutboundMessage(composed.header_from, parse_address(to), composed.body, **extra)
    async with database.transaction() as connection:
        return (await enqueue(connection, identity, message)).id


async def wait_for_states(database_url: str, ids: Iterable[uuid.UUID],
                          states: tuple[str, ...] = FINAL, timeout: float = 30.0
                          ) -> dict[uuid.UUID, str]:
    """Wait (woken by each outcome event) until every message is in one of ``states``."""
    wanted = list(ids)
    woken = asyncio.Event()
    listener = await connect_one(database_url)

    def notified(*_args: object) -> None:
        woken.set()

    await listener.add_listener(EVENTS_CHANNEL, notified)
    try:
        async with asyncio.timeout(timeout):
            while True:
                woken.clear()
                rows = await listener.fetch(
                    "SELECT id, state FROM outbound_messages WHERE id = ANY($1::uuid[])", wanted)
                current = {row["id"]: row["state"] for row in rows}
                if len(current) == len(wanted) and all(s in states for s in current.values()):
                    return current
                await woken.wait()
    finally:
        await listener.close()


async def fetch(database: Database, query: str, *args: Any) -> list[asyncpg.Record]:
    async with database.connection() as connection:
        return list(await connection.fetch(query, *args))
