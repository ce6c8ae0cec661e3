"""The delivery client against real servers on loopback: the scripted aiosmtpd server and
Postfix's smtp-sink. One session per test unless the test is about reuse."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import re
import socket
import time
from collections.abc import AsyncIterator, Callable

import pytest
import uvloop
from hypothesis import given
from hypothesis import strategies as st

from mta.errors import InvalidMessage, PermanentFailure, TemporaryFailure
from mta.smtp.pool import ConnectionPool, PoolSettings
from mta.smtp.reply import (
    MAX_LINE_OCTETS,
    ServerExtensions,
    SmtpReply,
    UnsendableMessage,
    check_envelope,
    parse_reply,
    prepare_message,
)
from mta.smtp.session import (
    SendResult,
    SmtpConnectFailure,
    SmtpPermanentFailure,
    SmtpSessionFailure,
    SmtpTemporaryFailure,
    SmtpTimeouts,
)
from tests.support.smtp_servers import (
    Script,
    ScriptedSmtpServer,
    SmtpSinkProcess,
    requires_smtp_sink,
)

FAST = SmtpTimeouts(**{name: 2.0 for name in SmtpTimeouts.__dataclass_fields__})
MESSAGE = b"From: a@sender.test\r\nTo: b@rcpt.test\r\nSubject: hello\r\n\r\nHello.\r\n"


def settings(**overrides: object) -> PoolSettings:
    values: dict[str, object] = {"ehlo_name": "client.test", "timeouts": FAST, "close_grace": 1.0}
    values.update(overrides)
    return PoolSettings(**values)  # type: ignore[arg-type]


@contextlib.asynccontextmanager
async def pool_to(
    server: ScriptedSmtpServer | SmtpSinkProcess, **overrides: object
) -> AsyncIterator[ConnectionPool]:
    pool = ConnectionPool(server.host, server.port, settings(**overrides))
    try:
        yield pool
    finally:
        await pool.close()


async def send_one(script: Script, recipients: tuple[str, ...] = ("b@rcpt.test",)) -> SendResult:
    async with ScriptedSmtpServer(script) as server, pool_to(server) as pool:
        return await pool.send("a@sender.test", recipients, MESSAGE)


# --- pure helpers -----------------------------------------------------------------------------


def test_parse_reply_splits_enhanced_code_on_every_line() -> None:
    assert parse_reply(250, "2.0.0 Ok: queued as 4F") == SmtpReply(250, "2.0.0", "Ok: queued as 4F")
    assert parse_reply(550, "5.1.1 no such\n5.1.1 user") == SmtpReply(550, "5.1.1", "no such\nuser")
    assert parse_reply(220, "mx.example ESMTP") == SmtpReply(220, None, "mx.example ESMTP")
    assert str(parse_reply(451, "4.7.1 later")) == "451 4.7.1 later"


def test_extensions_from_keywords() -> None:
    ext = ServerExtensions.from_keywords({"8BITMIME": "", "size": "1000", "STARTTLS": ""})
    assert (ext.eightbitmime, ext.starttls, ext.smtputf8) == (True, True, False)
    assert ext.size_limit == 1000
    text = "mx.example\nPIPELINING\nSMTPUTF8\nSIZE"
    assert ServerExtensions.from_ehlo_text(text).size_limit == 0
    assert ServerExtensions.from_ehlo_text(text).smtputf8


@pytest.mark.parametrize(
    "address", ["a\r\nRCPT TO:<x@y>", "a@b>", "<a@b>", "a\x00@b", "a b@c", "a\n@b", "x" * 300]
)
def test_envelope_refuses_injection(address: str) -> None:
    with pytest.raises(UnsendableMessage) as caught:
        check_envelope("a@sender.test", [address])
    assert caught.value.reason == "bad_address"
    assert isinstance(caught.value, InvalidMessage) and isinstance(caught.value, PermanentFailure)


def test_envelope_accepts_null_sender_quoted_local_part_and_flags_utf8() -> None:
    assert check_envelope("", ['"john smith"@example.com']) is False
    assert check_envelope("a@b.c", ["jöran@exämple.de"]) is True
    with pytest.raises(UnsendableMessage):
        check_envelope("a@b.c", [])


def test_line_length_limit_is_998_octets() -> None:
    prepare_message(b"x" * MAX_LINE_OCTETS + b"\r\n", max_bytes=10_000)
    with pytest.raises(UnsendableMessage) as caught:
        prepare_message(b"ok\r\n" + b"x" * (MAX_LINE_OCTETS + 1) + b"\r\n", max_bytes=10_000)
    assert caught.value.reason == "line_too_long" and "line 2" in str(caught.value)


def _unstuff(wire: bytes) -> bytes:
    assert wire.endswith(b"\r\n.\r\n") or wire == b".\r\n"
    lines = wire[:-3].split(b"\r\n")
    return b"\r\n".join(line[1:] if line.startswith(b".") else line for line in lines)


@given(st.lists(st.sampled_from([b".", b"..", b"a", b".a", b"\r", b"\n", b"\r\n", b"\xc3\xa9"])))
def test_prepare_message_round_trips(parts: list[bytes]) -> None:
    message = b"".join(parts)
    prepared = prepare_message(message, max_bytes=10_000)
    body = prepared.wire[:-3]
    assert b"\r\n.\r\n" not in b"\r\n" + body  # no line is a lone "." before the end
    assert b"\n" not in body.replace(b"\r\n", b"") and b"\r" not in body.replace(b"\r\n", b"")
    expected = re.sub(rb"\r\n|\r|\n", b"\r\n", message)
    if not expected.endswith(b"\r\n"):
        expected += b"\r\n"
    assert _unstuff(prepared.wire) == expected
    assert prepared.size == len(expected)
    assert prepared.eight_bit == (b"\xc3" in message)


# --- delivery -----------------------------------------------------------------------------------


async def test_plain_delivery_to_scripted_server() -> None:
    async with ScriptedSmtpServer() as server, pool_to(server, tls="none") as pool:
        result = await pool.send("a@sender.test", ["b@rcpt.test", "c@rcpt.test"], MESSAGE)
    assert result.data_reply == SmtpReply(250, "2.0.0", "Ok: queued")
    assert result.accepted == ("b@rcpt.test", "c@rcpt.test")
    assert result.tls is False and result.remote_port == server.port
    [received] = server.record.messages
    assert received.mail_from == "a@sender.test" and received.data == MESSAGE
    assert f"SIZE={len(MESSAGE)}" in received.mail_options


async def test_dot_stuffing_and_crlf_round_trip() -> None:
    message = b"Subject: dots\n\n.leading dot\n..two dots\n.\nbare\rcr\r\nend"
    async with ScriptedSmtpServer() as server, pool_to(server) as pool:
        await pool.send("a@sender.test", ["b@rcpt.test"], message)
    assert server.record.messages[0].data == (
        b"Subject: dots\r\n\r\n.leading dot\r\n..two dots\r\n.\r\nbare\r\ncr\r\nend\r\n"
    )


async def test_long_line_is_refused_before_any_connection() -> None:
    async with ScriptedSmtpServer() as server, pool_to(server) as pool:
        with pytest.raises(UnsendableMessage):
            await pool.send("a@sender.test", ["b@rcpt.test"], b"x" * 999 + b"\r\n")
    assert server.record.connections == 0


async def test_partial_rcpt_rejection_rejects_only_that_recipient() -> None:
    script = Script(
        rcpt={"gone@rcpt.test": "550 5.1.1 No such user", "full@rcpt.test": "452 4.2.2 Full"}
    )
    result = await send_one(script, ("gone@rcpt.test", "b@rcpt.test", "full@rcpt.test"))
    gone, ok, full = result.recipients
    assert not gone.accepted and gone.reply == SmtpReply(550, "5.1.1", "No such user")
    assert gone.reply.permanent
    assert not full.accepted and full.reply.transient
    assert ok.accepted and result.accepted == ("b@rcpt.test",)


async def test_no_data_when_every_recipient_is_rejected() -> None:
    script = Script(rcpt={"x@rcpt.test": "550 5.1.1 No", "y@rcpt.test": "550 5.1.1 No"})
    async with ScriptedSmtpServer(script) as server, pool_to(server) as pool:
        result = await pool.send("a@sender.test", ["x@rcpt.test", "y@rcpt.test"], MESSAGE)
        again = await pool.send("a@sender.test", ["b@rcpt.test"], MESSAGE)
    assert result.data_reply is None and result.accepted == ()
    assert server.record.commands == [
        "EHLO", "MAIL", "RCPT", "RCPT", "RSET", "MAIL", "RCPT", "DATA", "QUIT"
    ]
    assert again.accepted == ("b@rcpt.test",) and server.record.connections == 1


PHASE_FAILURES = [
    # script, phase, code, enhanced
    (Script(greeting="554 5.7.1 Go away"), "connect", 554, "5.7.1"),
    (Script(greeting="421 4.3.2 Busy"), "connect", 421, "4.3.2"),
    (Script(ehlo="421 4.3.2 Closing"), "ehlo", 421, "4.3.2"),
    (Script(ehlo="550 5.5.1 No EHLO", helo="550 5.5.1 No HELO"), "ehlo", 550, "5.5.1"),
    (Script(mail="451 4.3.0 Try later"), "mail", 451, "4.3.0"),
    (Script(mail="553 5.7.1 Sender refused"), "mail", 553, "5.7.1"),
    (Script(data="451 4.3.0 Not now"), "data", 451, "4.3.0"),
    (Script(data="554 5.5.1 No valid recipients"), "data", 554, "5.5.1"),
    (Script(final="452 4.3.1 Insufficient storage"), "data_final", 452, "4.3.1"),
    (Script(final="554 5.7.1 Spam"), "data_final", 554, "5.7.1"),
]


@pytest.mark.parametrize(("script", "phase", "code", "enhanced"), PHASE_FAILURES)
async def test_refusal_at_each_phase(script: Script, phase: str, code: int, enhanced: str) -> None:
    with pytest.raises(SmtpSessionFailure) as caught:
        await send_one(script)
    failure = caught.value
    assert (failure.phase, failure.reply.code, failure.reply.enhanced) == (phase, code, enhanced)
    assert failure.remote
    assert failure.permanent == (code >= 500)
    assert isinstance(failure, PermanentFailure if code >= 500 else TemporaryFailure)


async def test_helo_fallback_when_ehlo_is_refused() -> None:
    script = Script(ehlo="502 5.5.2 Command not recognized")
    async with ScriptedSmtpServer(script) as server, pool_to(server) as pool:
        result = await pool.send("a@sender.test", ["b@rcpt.test"], MESSAGE)
    assert result.accepted == ("b@rcpt.test",)
    assert server.record.commands[:2] == ["EHLO", "HELO"]
    assert server.record.messages[0].mail_options == ()  # no SIZE without ESMTP


async def test_refused_mail_keeps_the_connection_in_sync() -> None:
    script = Script(mail="451 4.3.0 Later")
    async with ScriptedSmtpServer(script) as server, pool_to(server) as pool:
        for _ in range(2):
            with pytest.raises(SmtpTemporaryFailure):
                await pool.send("a@sender.test", ["b@rcpt.test"], MESSAGE)
    assert server.record.connections == 1
    assert server.record.commands.count("RSET") >= 2


async def test_disconnect_during_data_is_temporary_and_connection_discarded() -> None:
    async with ScriptedSmtpServer(Script(drop=frozenset({"."}))) as server, pool_to(server) as pool:
        with pytest.raises(SmtpTemporaryFailure) as caught:
            await pool.send("a@sender.test", ["b@rcpt.test"], MESSAGE)
        assert caught.value.phase == "data_final" and caught.value.connection_lost
        assert not caught.value.remote and caught.value.reply.enhanced == "4.4.2"
        with pytest.raises(SmtpTemporaryFailure):
            await pool.send("a@sender.test", ["b@rcpt.test"], MESSAGE)
    assert server.record.connections == 2


async def test_slow_final_reply_honours_data_final_timeout() -> None:
    release = asyncio.Event()
    fast_final = dataclasses.replace(FAST, data_final=0.2)
    script = Script(holds={".": release})
    async with ScriptedSmtpServer(script) as server, pool_to(server, timeouts=fast_final) as pool:
        started = time.monotonic()
        with pytest.raises(SmtpTemporaryFailure) as caught:
            await pool.send("a@sender.test", ["b@rcpt.test"], MESSAGE)
        elapsed = time.monotonic() - started
        release.set()
    assert caught.value.phase == "data_final" and "timed out after 0.2s" in caught.value.reply.text
    assert 0.2 <= elapsed < 1.5


async def test_greeting_timeout_is_temporary() -> None:
    release = asyncio.Event()
    fast_greeting = dataclasses.replace(FAST, greeting=0.2)
    async with ScriptedSmtpServer(Script(holds={"CONNECT": release})) as server:
        async with pool_to(server, timeouts=fast_greeting) as pool:
            with pytest.raises(SmtpTemporaryFailure) as caught:
                await pool.send("a@sender.test", ["b@rcpt.test"], MESSAGE)
        release.set()
    assert caught.value.phase == "connect"
    assert pool.stats().open == 0


async def test_421_throttling_is_temporary_with_the_reply() -> None:
    async with ScriptedSmtpServer(Script(throttle_after=2)) as server, pool_to(server) as pool:
        for _ in range(2):
            await pool.send("a@sender.test", ["b@rcpt.test"], MESSAGE)
        with pytest.raises(SmtpTemporaryFailure) as caught:
            await pool.send("a@sender.test", ["b@rcpt.test"], MESSAGE)
        assert pool.stats().open == 0  # a 421 closes the session
    assert caught.value.phase == "mail"
    assert caught.value.reply.code == 421 and caught.value.reply.enhanced == "4.7.0"


async def test_connection_refused() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    pool = ConnectionPool("127.0.0.1", port, settings())
    with pytest.raises(SmtpConnectFailure) as caught:
        await pool.send("a@sender.test", ["b@rcpt.test"], MESSAGE)
    await pool.close()
    assert caught.value.reason == "refused" and isinstance(caught.value, TemporaryFailure)


async def test_dns_failure_of_the_host(monkeypatch: pytest.MonkeyPatch) -> None:
    loop = asyncio.get_running_loop()

    async def no_such_host(*args: object, **kwargs: object) -> list[object]:
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    monkeypatch.setattr(loop, "getaddrinfo", no_such_host)
    pool = ConnectionPool("mx.nowhere.test", 25, settings())
    with pytest.raises(SmtpConnectFailure) as caught:
        await pool.send("a@sender.test", ["b@rcpt.test"], MESSAGE)
    await pool.close()
    assert caught.value.reason == "dns"


# --- TLS ----------------------------------------------------------------------------------------


async def test_starttls_is_used_when_offered() -> None:
    async with ScriptedSmtpServer(Script(starttls=True)) as server, pool_to(server) as pool:
        result = await pool.send("a@sender.test", ["b@rcpt.test"], MESSAGE)
    assert result.tls and server.record.tls_handshakes == 1
    assert server.record.messages[0].tls
    assert server.record.commands[:3] == ["EHLO", "STARTTLS", "EHLO"]


async def test_tls_none_ignores_starttls() -> None:
    script = Script(starttls=True)
    async with ScriptedSmtpServer(script) as server, pool_to(server, tls="none") as pool:
        result = await pool.send("a@sender.test", ["b@rcpt.test"], MESSAGE)
    assert not result.tls and "STARTTLS" not in server.record.commands


async def test_required_tls_without_starttls_fails() -> None:
    async with ScriptedSmtpServer() as server, pool_to(server, tls="required") as pool:
        with pytest.raises(SmtpConnectFailure) as caught:
            await pool.send("a@sender.test", ["b@rcpt.test"], MESSAGE)
    assert caught.value.reason == "tls_required_unavailable"
    assert "MAIL" not in server.record.commands


async def test_required_tls_with_broken_handshake_fails() -> None:
    script = Script(starttls=True, break_tls=True)
    async with ScriptedSmtpServer(script) as server, pool_to(server, tls="required") as pool:
        with pytest.raises(SmtpConnectFailure) as caught:
            await pool.send("a@sender.test", ["b@rcpt.test"], MESSAGE)
    assert caught.value.reason == "tls_required_unavailable"
    assert server.record.connections == 1 and not server.record.messages


async def test_opportunistic_tls_falls_back_to_plaintext_after_failed_handshake() -> None:
    script = Script(starttls=True, break_tls=True)
    async with ScriptedSmtpServer(script) as server:
        async with pool_to(server, max_messages_per_connection=1) as pool:
            first = await pool.send("a@sender.test", ["b@rcpt.test"], MESSAGE)
            second = await pool.send("a@sender.test", ["b@rcpt.test"], MESSAGE)
    assert not first.tls and not second.tls
    assert len(server.record.messages) == 2
    # one failed handshake, then plaintext connections that no longer try STARTTLS
    assert server.record.commands.count("STARTTLS") == 1
    assert server.record.connections == 3


# --- 8BITMIME and SMTPUTF8 ------------------------------------------------------------------------

EIGHT_BIT = "Subject: café\r\n\r\nCafé crème.\r\n".encode()


async def test_8bit_message_uses_body_8bitmime_when_offered() -> None:
    async with ScriptedSmtpServer() as server, pool_to(server) as pool:
        await pool.send("a@sender.test", ["b@rcpt.test"], EIGHT_BIT)
    assert "BODY=8BITMIME" in server.record.messages[0].mail_options
    assert server.record.messages[0].data == EIGHT_BIT


async def test_8bit_message_fails_permanently_without_8bitmime() -> None:
    script = Script(eightbitmime=False)
    async with ScriptedSmtpServer(script) as server, pool_to(server) as pool:
        with pytest.raises(SmtpPermanentFailure) as caught:
            await pool.send("a@sender.test", ["b@rcpt.test"], EIGHT_BIT)
        await pool.send("a@sender.test", ["b@rcpt.test"], MESSAGE)  # the session is still fine
    assert caught.value.reply.enhanced == "5.6.3" and not caught.value.remote
    assert "8BITMIME" in caught.value.reply.text
    assert server.record.commands.count("MAIL") == 1 and server.record.connections == 1


async def test_utf8_address_uses_smtputf8_when_offered() -> None:
    async with ScriptedSmtpServer() as server, pool_to(server) as pool:
        result = await pool.send("a@sender.test", ["jöran@exämple.de"], MESSAGE)
    assert result.accepted == ("jöran@exämple.de",)
    assert "SMTPUTF8" in server.record.messages[0].mail_options
    assert server.record.messages[0].rcpt_tos == ("jöran@exämple.de",)


async def test_utf8_address_fails_permanently_without_smtputf8() -> None:
    async with ScriptedSmtpServer(Script(smtputf8=False)) as server, pool_to(server) as pool:
        with pytest.raises(SmtpPermanentFailure) as caught:
            await pool.send("a@sender.test", ["jöran@exämple.de"], MESSAGE)
    assert caught.value.reply.enhanced == "5.6.7"
    assert "MAIL" not in server.record.commands


UTF8_HEADER = "From: Jöran <a@sender.test>\r\nSubject: ok\r\n\r\nplain body\r\n".encode()
UTF8_BODY_ONLY = "Subject: ok\r\n\r\nCafé crème.\r\n".encode()


async def test_utf8_header_uses_smtputf8_with_an_ascii_envelope() -> None:
    """RFC 6531/6532: unencoded UTF-8 in a header needs SMTPUTF8, not just 8BITMIME."""
    async with ScriptedSmtpServer() as server, pool_to(server) as pool:
        await pool.send("a@sender.test", ["b@rcpt.test"], UTF8_HEADER)
        await pool.send("a@sender.test", ["b@rcpt.test"], UTF8_BODY_ONLY)
    header, body_only = server.record.messages
    assert "SMTPUTF8" in header.mail_options and "BODY=8BITMIME" in header.mail_options
    assert "SMTPUTF8" not in body_only.mail_options


async def test_utf8_header_fails_permanently_without_smtputf8() -> None:
    async with ScriptedSmtpServer(Script(smtputf8=False)) as server, pool_to(server) as pool:
        with pytest.raises(SmtpPermanentFailure) as caught:
            await pool.send("a@sender.test", ["b@rcpt.test"], UTF8_HEADER)
    assert caught.value.reply.enhanced == "5.6.7" and "header" in caught.value.reply.text
    assert "MAIL" not in server.record.commands


# --- the fake and the real thing agree ------------------------------------------------------------


def client_view(result: SendResult) -> tuple[object, ...]:
    recipients = tuple(
        (r.recipient, r.accepted, r.reply.code, r.reply.enhanced) for r in result.recipients
    )
    final = result.data_reply
    data = None if final is None else (final.code, final.enhanced)
    return recipients, data, result.tls


@requires_smtp_sink
@pytest.mark.parametrize(
    ("sink_options", "script"),
    [
        ((), Script()),
        (("-f", "RCPT"), Script(rcpt={"b@rcpt.test": "500 5.3.0 Error: command failed"})),
        (("-r", "RCPT"), Script(rcpt={"b@rcpt.test": "450 4.3.0 Error: command failed"})),
    ],
    ids=["success", "rcpt-5xx", "rcpt-4xx"],
)
async def test_scripted_server_and_smtp_sink_agree(
    sink_options: tuple[str, ...], script: Script
) -> None:
    async with SmtpSinkProcess(*sink_options) as sink, pool_to(sink) as pool:
        real = await pool.send("a@sender.test", ["b@rcpt.test"], MESSAGE)
    fake = await send_one(script)
    assert client_view(fake) == client_view(real)


@requires_smtp_sink
async def test_smtp_sink_reuse_and_421() -> None:
    async with SmtpSinkProcess() as sink, pool_to(sink, max_connections=2) as pool:
        results = await asyncio.gather(
            *(pool.send("a@sender.test", ["b@rcpt.test"], MESSAGE) for _ in range(20))
        )
        assert all(r.accepted for r in results)
        assert pool.stats().connections_opened == 2
    async with SmtpSinkProcess("-Q", "MAIL") as sink, pool_to(sink) as pool:
        with pytest.raises(SmtpTemporaryFailure) as caught:
            await pool.send("a@sender.test", ["b@rcpt.test"], MESSAGE)
    assert caught.value.reply.code == 421


# --- uvloop ---------------------------------------------------------------------------------------


async def _scenario_plain_tls_partial_and_drop() -> type[asyncio.AbstractEventLoop]:
    """Each scenario asserts its own outcome; returns the loop type they ran on."""
    await test_plain_delivery_to_scripted_server()
    await test_starttls_is_used_when_offered()
    await test_partial_rcpt_rejection_rejects_only_that_recipient()
    await test_disconnect_during_data_is_temporary_and_connection_discarded()
    await test_opportunistic_tls_falls_back_to_plaintext_after_failed_handshake()
    await test_slow_final_reply_honours_data_final_timeout()
    return type(asyncio.get_running_loop())


@pytest.mark.parametrize(
    "loop_factory", [asyncio.new_event_loop, uvloop.new_event_loop], ids=["asyncio", "uvloop"]
)
def test_client_scenarios_on_both_loops(
    loop_factory: Callable[[], asyncio.AbstractEventLoop],
) -> None:
    with asyncio.Runner(loop_factory=loop_factory) as runner:
        ran_on = runner.run(asyncio.wait_for(_scenario_plain_tls_partial_and_drop(), timeout=20))
    probe = loop_factory()
    probe.close()
    assert ran_on is type(probe)
