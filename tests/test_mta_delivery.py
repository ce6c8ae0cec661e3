"""The delivery service against real SMTP servers and a real DNS server on loopback."""

from __future__ import annotations

import asyncio
import email
from datetime import UTC, datetime
from pathlib import Path

import dkim
import pytest

from engine.database import Database
from engine.values import HostPort
from mta.delivery import service as delivery_module
from mta.delivery.service import DeliveryService
from mta.dkim.keys import dns_txt_record
from mta.queue.return_paths import message_id_from
from mta.sink import CaptureSink
from tests.support.dns_server import DnsTestServer, zone_text
from tests.support.mta import (
    delivery_service,
    fetch,
    identity_for,
    mta_settings,
    queue_message,
    rsa_signer,
    wait_for_states,
)
from tests.support.smtp_servers import Script, ScriptedSmtpServer


async def test_delivers_signed_mail_with_a_verp_return_path(
        database: Database, database_url: str, tmp_path: Path) -> None:
    signer, pem = rsa_signer(tmp_path)
    async with CaptureSink(keep=10) as sink:
        settings = mta_settings(routes={"example.org": f"127.0.0.1:{sink.port}"})
        identity = await identity_for(database, settings)
        message_id = await queue_message(database, identity, "ann@example.org",
                                         contact_id="c-ann", tags=("welcome",))
        async with delivery_service(database, settings, signer):
            states = await wait_for_states(database_url, [message_id])
    assert states == {message_id: "delivered"}
    [captured] = sink.messages
    assert message_id_from(identity.bounce_secret, captured.mail_from) == message_id
    assert captured.mail_from.endswith("@bounces.herald.test")
    assert captured.rcpt_tos == ("ann@example.org",) or list(captured.rcpt_tos) == [
        "ann@example.org"]
    txt = dns_txt_record(pem, "rsa").encode()
    assert dkim.verify(captured.data, dnsfunc=lambda name, timeout=5: txt)
    [event] = await fetch(database, "SELECT * FROM events WHERE type = 'email_delivered'")
    assert event["contact_id"] == "c-ann"
    assert event["properties"]["message_id"] == str(message_id)
    assert event["properties"]["code"] == 250
    assert event["properties"]["remote_host"] == "127.0.0.1"
    assert event["properties"]["tags"] == ["welcome"]
    [attempt] = await fetch(database, "SELECT * FROM delivery_attempts")
    assert attempt["outcome"] == "delivered" and attempt["attempt"] == 1


async def test_hard_bounce_suppresses_the_address_for_good(
        database: Database, database_url: str) -> None:
    script = Script(rcpt={"gone@example.org": "550 5.1.1 The email account that you tried to "
                                              "reach does not exist."})
    async with ScriptedSmtpServer(script) as server:
        settings = mta_settings(routes={"example.org": f"127.0.0.1:{server.port}"})
        identity = await identity_for(database, settings)
        first = await queue_message(database, identity, "gone@example.org")
        async with delivery_service(database, settings):
            assert await wait_for_states(database_url, [first]) == {first: "bounced"}
            second = await queue_message(database, identity, "Gone@example.org")
            assert await wait_for_states(database_url, [second]) == {second: "suppressed"}
    assert server.record.messages == []
    [suppression] = await fetch(database, "SELECT * FROM suppressions")
    assert suppression["email"] == "gone@example.org"
    assert suppression["reason"] == "hard_bounce"
    bounced = await fetch(database, "SELECT properties FROM events WHERE type = 'email_bounced'")
    assert bounced[0]["properties"]["category"] == "hard"
    assert bounced[0]["properties"]["enhanced"] == "5.1.1"
    assert len(await fetch(database, "SELECT 1 FROM events WHERE type = 'email_suppressed'")) == 1


async def test_policy_block_bounces_without_suppressing(
        database: Database, database_url: str) -> None:
    script = Script(final="550 5.7.1 Our system has detected that this message is likely "
                          "unsolicited mail.")
    async with ScriptedSmtpServer(script) as server:
        settings = mta_settings(routes={"example.org": f"127.0.0.1:{server.port}"})
        identity = await identity_for(database, settings)
        message_id = await queue_message(database, identity, "bob@example.org")
        async with delivery_service(database, settings):
            assert await wait_for_states(database_url, [message_id]) == {message_id: "bounced"}
    assert await fetch(database, "SELECT * FROM suppressions") == []
    [event] = await fetch(database, "SELECT properties FROM events WHERE type = 'email_bounced'")
    assert event["properties"]["category"] == "block"


@pytest.mark.parametrize("phase", ["mail", "rcpt", "data", "final"])
async def test_temporary_failure_defers_with_the_retry_schedule(
        database: Database, database_url: str, phase: str) -> None:
    reply = "451 4.3.0 Temporary local problem, try later"
    script = Script(**{phase: ({"bob@example.org": reply} if phase == "rcpt" else reply)})
    async with ScriptedSmtpServer(script) as server:
        settings = mta_settings(routes={"example.org": f"127.0.0.1:{server.port}"},
                                retry_initial=300.0)
        identity = await identity_for(database, settings)
        message_id = await queue_message(database, identity, "bob@example.org")
        started = datetime.now(UTC)
        async with delivery_service(database, settings):
            states = await wait_for_states(database_url, [message_id], ("deferred",))
    assert states == {message_id: "deferred"}
    [row] = await fetch(database, "SELECT * FROM outbound_messages")
    assert row["attempts"] == 1
    delay = (row["next_attempt_at"] - started).total_seconds()
    assert 295 <= delay <= 330
    assert row["last_code"] == 451
    [event] = await fetch(database, "SELECT properties FROM events WHERE type = 'email_deferred'")
    assert event["properties"]["reply"].startswith("451 4.3.0")


async def test_disconnect_during_data_defers(database: Database, database_url: str) -> None:
    async with ScriptedSmtpServer(Script(drop=frozenset({"."}))) as server:
        settings = mta_settings(routes={"example.org": f"127.0.0.1:{server.port}"})
        identity = await identity_for(database, settings)
        message_id = await queue_message(database, identity, "bob@example.org")
        async with delivery_service(database, settings):
            states = await wait_for_states(database_url, [message_id], ("deferred",))
    assert states == {message_id: "deferred"}


async def test_expired_message_is_not_tried(database: Database, database_url: str) -> None:
    async with ScriptedSmtpServer() as server:
        settings = mta_settings(routes={"example.org": f"127.0.0.1:{server.port}"})
        identity = await identity_for(database, settings)
        message_id = await queue_message(database, identity, "bob@example.org")
        await fetch(database, "UPDATE outbound_messages SET expires_at = now() - interval '1s' "
                              "RETURNING id")
        async with delivery_service(database, settings):
            assert await wait_for_states(database_url, [message_id]) == {message_id: "expired"}
    assert server.record.connections == 0
    assert len(await fetch(database, "SELECT 1 FROM events WHERE type = 'email_expired'")) == 1


async def test_throttled_site_backs_off_while_other_sites_flow(
        database: Database, database_url: str) -> None:
    async with ScriptedSmtpServer(Script(mail="421 4.7.28 Our system has detected an unusual "
                                              "rate of unsolicited mail")) as slow, \
            CaptureSink() as fast:
        settings = mta_settings(routes={"slow.example": f"127.0.0.1:{slow.port}",
                                        "fast.example": f"127.0.0.1:{fast.port}"},
                                max_connections_per_site=2, throttle_backoff=600.0)
        identity = await identity_for(database, settings)
        slow_ids = [await queue_message(database, identity, f"u{i}@slow.example")
                    for i in range(20)]
        fast_ids = [await queue_message(database, identity, f"u{i}@fast.example")
                    for i in range(20)]
        async with delivery_service(database, settings) as service:
            delivered = await wait_for_states(database_url, fast_ids, ("delivered",))
            rows = await fetch(database, "SELECT state, attempts, next_attempt_at FROM "
                                         "outbound_messages WHERE id = ANY($1::uuid[])", slow_ids)
            site = service._scheduler.sites[f"route:127.0.0.1:{slow.port}"]
            assert site.governor.backoff_until > 0
            assert site.governor.allowed_connections == 1
    assert set(delivered.values()) == {"delivered"}
    # Only the sessions started before the first 421 reached the slow site; the rest wait.
    assert slow.record.connections <= 2
    tried = [r for r in rows if r["attempts"] > 0]
    assert 1 <= len(tried) <= 2
    assert all(r["state"] in ("queued", "deferred") for r in rows)


MX_ZONE = {"test.": zone_text("""
    good.test. 300 IN MX 10 mx1.good.test.
    good.test. 300 IN MX 20 mx2.good.test.
    mx1.good.test. 300 IN A 127.0.0.2
    mx2.good.test. 300 IN A 127.0.0.1
    implicit.test. 300 IN A 127.0.0.1
    nullmx.test. 300 IN MX 0 .
    broken.test. 300 IN MX 10 mx.broken.test.
""")}  # nothing listens on 127.0.0.2: mx1 refuses the connection


async def test_mx_logic_against_a_real_dns_server(
        database: Database, database_url: str) -> None:
    async with CaptureSink(keep=10) as sink, \
            DnsTestServer(MX_ZONE, servfail={"broken.test"}) as dns:
        settings = mta_settings(resolver=HostPort("127.0.0.1", dns.port), smtp_port=sink.port,
                                dns_timeout=2.0)
        identity = await identity_for(database, settings)
        ids = {name: await queue_message(database, identity, f"x@{name}")
               for name in ("good.test", "implicit.test", "nullmx.test", "missing.test",
                            "broken.test")}
        async with delivery_service(database, settings):
            states = await wait_for_states(database_url, ids.values(),
                                           ("delivered", "bounced", "deferred"))
    assert states[ids["good.test"]] == "delivered"  # after mx1 refused the connection
    assert states[ids["implicit.test"]] == "delivered"
    assert states[ids["nullmx.test"]] == "bounced"
    assert states[ids["missing.test"]] == "bounced"
    assert states[ids["broken.test"]] == "deferred"
    assert sink.received == 2
    suppressed = {r["email"] for r in await fetch(database, "SELECT email FROM suppressions")}
    assert suppressed == {"x@nullmx.test", "x@missing.test"}


async def test_two_workers_on_one_database_never_deliver_twice(
        database: Database, database_url: str) -> None:
    async with CaptureSink(keep=1000) as sink:
        settings = mta_settings(routes={"example.org": f"127.0.0.1:{sink.port}"},
                                claim_batch=20, active_window=40)
        identity = await identity_for(database, settings)
        ids = [await queue_message(database, identity, f"u{i}@example.org") for i in range(300)]
        second_db = await Database.connect(database_url, min_size=1, max_size=4)
        try:
            async with delivery_service(database, settings) as one, \
                    delivery_service(second_db, settings) as two:
                await wait_for_states(database_url, ids, ("delivered",), timeout=60)
            shares = (one.delivered, two.delivered)  # counted once their batches committed
        finally:
            await second_db.close()
    received = [email.message_from_bytes(m.data)["Message-ID"] for m in sink.messages]
    assert len(received) == 300 and len(set(received)) == 300
    assert sum(shares) == 300 and min(shares) > 0


async def test_lease_expiry_hands_a_dead_workers_messages_to_another(
        database: Database, database_url: str) -> None:
    async with CaptureSink() as sink:
        settings = mta_settings(routes={"example.org": f"127.0.0.1:{sink.port}"})
        identity = await identity_for(database, settings)
        message_id = await queue_message(database, identity, "a@example.org")
        # A worker that claimed the message and died: its lease ran out a moment ago.
        await fetch(database, "UPDATE outbound_messages SET lease_owner = 'dead:1', "
                              "next_attempt_at = now() - interval '1s' RETURNING id")
        async with delivery_service(database, settings):
            assert await wait_for_states(database_url, [message_id]) == {message_id:
                                                                          "delivered"}
    [row] = await fetch(database, "SELECT lease_owner FROM outbound_messages")
    assert row["lease_owner"] is None


async def test_wakes_on_notify_without_waiting_for_a_poll(
        database: Database, database_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    # No poll in this test: only the NOTIFY that enqueue sends can wake the claim loop.
    monkeypatch.setattr(delivery_module, "IDLE_POLL", 3600.0)
    parked = asyncio.Event()
    sleep_or_wake = DeliveryService._sleep_or_wake

    async def parking(service: DeliveryService, seconds: float) -> None:
        assert seconds >= 3600.0  # the claim loop would sleep past this test's timeout
        parked.set()
        await sleep_or_wake(service, seconds)

    monkeypatch.setattr(DeliveryService, "_sleep_or_wake", parking)
    async with CaptureSink() as sink:
        settings = mta_settings(routes={"example.org": f"127.0.0.1:{sink.port}"})
        identity = await identity_for(database, settings)
        async with delivery_service(database, settings):
            await asyncio.wait_for(parked.wait(), 10.0)  # the queue was empty: it sleeps
            message_id = await queue_message(database, identity, "a@example.org")
            await asyncio.wait_for(sink.wait_for(1, 10.0), 10.0)
            assert await wait_for_states(database_url, [message_id]) == {message_id:
                                                                          "delivered"}
