"""SMTP PIPELINING (RFC 2920): MAIL, RCPT... and DATA in one write where the server advertises
it, every reply judged on its own; one command at a time where it does not. Real aiosmtpd
servers on loopback (and Postfix's smtp-sink, which advertises PIPELINING, in
test_smtp_client.py), on asyncio and uvloop, in plaintext and under STARTTLS."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Callable

import pytest
import uvloop

from mta.smtp.reply import MalformedReply, SmtpReply, split_replies
from mta.smtp.session import SmtpSessionFailure, SmtpTemporaryFailure
from tests.support.smtp_servers import Script, ScriptedSmtpServer
from tests.test_smtp_client import FAST, MESSAGE, PHASE_FAILURES, pool_to, send_one

PIPELINED = Script(pipelining=True)
GROUP = b"MAIL FROM:<a@sender.test> SIZE=%d\r\nRCPT TO:<b@rcpt.test>\r\n" \
        b"RCPT TO:<c@rcpt.test>\r\nDATA\r\n" % len(MESSAGE)

# --- the pure reply splitter ------------------------------------------------------------------


def test_split_replies_takes_every_complete_reply_and_leaves_the_rest() -> None:
    data = b"250 2.1.0 Ok\r\n550-5.1.1 no such\r\n550 5.1.1 user\r\n354 go ahead\r\n250-part"
    replies, used = split_replies(data)
    assert replies == [SmtpReply(250, "2.1.0", "Ok"), SmtpReply(550, "5.1.1", "no such\nuser"),
                       SmtpReply(354, None, "go ahead")]
    assert data[used:] == b"250-part"
    assert split_replies(b"250") == ([], 0)
    assert split_replies(b"250\n") == ([SmtpReply(250, None, "")], 4)


@pytest.mark.parametrize("data", [
    b"hello\r\n", b"25 ok\r\n", b"250x\r\n", b"250-one\r\n251 two\r\n",
    b"250 " + b"x" * 9000 + b"\r\n", b"250 " + b"x" * 9000,
    b"250-" + b"x" * 8000 + b"\r\n" + b"250-" + b"x" * 8000 + b"\r\n" * 5,
])
def test_split_replies_refuses_what_is_not_a_reply(data: bytes) -> None:
    with pytest.raises(MalformedReply):
        split_replies(data * 3)


# --- on the wire ------------------------------------------------------------------------------


async def test_the_group_goes_out_before_the_first_reply() -> None:
    release = asyncio.Event()
    script = dataclasses.replace(PIPELINED, holds={"MAIL": release})
    async with ScriptedSmtpServer(script) as server, pool_to(server) as pool:
        sending = asyncio.create_task(
            pool.send("a@sender.test", ["b@rcpt.test", "c@rcpt.test"], MESSAGE))
        # The server holds its reply to MAIL: a client waiting for it would never send DATA.
        await server.record.wait_until(lambda: server.record.received.endswith(GROUP))
        release.set()
        result = await sending
    assert result.accepted == ("b@rcpt.test", "c@rcpt.test")
    assert server.record.messages[0].data == MESSAGE
    assert server.record.commands == ["EHLO", "MAIL", "RCPT", "RCPT", "DATA", "QUIT"]


async def test_without_pipelining_each_command_waits_for_its_reply() -> None:
    async with ScriptedSmtpServer(Script()) as server, pool_to(server) as pool:
        result = await pool.send("a@sender.test", ["b@rcpt.test", "c@rcpt.test"], MESSAGE)
    assert result.accepted == ("b@rcpt.test", "c@rcpt.test")
    before = server.record.received_before
    assert before["MAIL"].endswith(b"SIZE=%d\r\n" % len(MESSAGE)) and b"RCPT" not in before["MAIL"]
    assert b"DATA" not in before["RCPT"]


async def test_a_refused_recipient_is_refused_alone() -> None:
    script = dataclasses.replace(PIPELINED, rcpt={"gone@rcpt.test": "550 5.1.1 No such user",
                                                  "full@rcpt.test": "452 4.2.2 Full"})
    result = await send_one(script, ("gone@rcpt.test", "b@rcpt.test", "full@rcpt.test"))
    gone, ok, full = result.recipients
    assert not gone.accepted and gone.reply == SmtpReply(550, "5.1.1", "No such user")
    assert not full.accepted and full.reply.transient
    assert ok.accepted and result.accepted == ("b@rcpt.test",)


async def test_every_recipient_refused_resets_and_the_session_goes_on() -> None:
    script = dataclasses.replace(PIPELINED, rcpt={"x@rcpt.test": "550 5.1.1 No",
                                                  "y@rcpt.test": "550 5.1.1 No"})
    async with ScriptedSmtpServer(script) as server, pool_to(server) as pool:
        result = await pool.send("a@sender.test", ["x@rcpt.test", "y@rcpt.test"], MESSAGE)
        again = await pool.send("a@sender.test", ["b@rcpt.test"], MESSAGE)
    assert result.data_reply is None and result.accepted == ()
    assert [r.reply.code for r in result.recipients] == [550, 550]
    # DATA went out with the group; the server refused it (no recipient), then RSET.
    assert server.record.commands == [
        "EHLO", "MAIL", "RCPT", "RCPT", "DATA", "RSET", "MAIL", "RCPT", "DATA", "QUIT"]
    assert again.accepted == ("b@rcpt.test",) and server.record.connections == 1
    assert len(server.record.messages) == 1


@pytest.mark.parametrize(("script", "phase", "code", "enhanced"), [
    (dataclasses.replace(script, pipelining=True), phase, code, enhanced)
    for script, phase, code, enhanced in PHASE_FAILURES
    if phase in ("mail", "data", "data_final")])
async def test_refusal_at_each_pipelined_phase(script: Script, phase: str, code: int,
                                               enhanced: str) -> None:
    with pytest.raises(SmtpSessionFailure) as caught:
        await send_one(script)
    failure = caught.value
    assert (failure.phase, failure.reply.code, failure.reply.enhanced) == (phase, code, enhanced)
    assert failure.remote and failure.permanent == (code >= 500)


async def test_a_refused_mail_keeps_the_pipelined_session_in_sync() -> None:
    script = dataclasses.replace(PIPELINED, mail="451 4.3.0 Later")
    async with ScriptedSmtpServer(script) as server, pool_to(server) as pool:
        for _ in range(2):
            with pytest.raises(SmtpTemporaryFailure) as caught:
                await pool.send("a@sender.test", ["b@rcpt.test"], MESSAGE)
            assert caught.value.phase == "mail" and caught.value.remote
    assert server.record.connections == 1
    assert server.record.commands.count("RSET") == 2 and server.record.messages == []


async def test_421_in_a_group_breaks_the_session() -> None:
    script = dataclasses.replace(PIPELINED, throttle_after=1)
    async with ScriptedSmtpServer(script) as server, pool_to(server) as pool:
        await pool.send("a@sender.test", ["b@rcpt.test"], MESSAGE)
        with pytest.raises(SmtpTemporaryFailure) as caught:
            await pool.send("a@sender.test", ["b@rcpt.test"], MESSAGE)
        assert pool.stats().open == 0
    assert (caught.value.phase, caught.value.reply.code) == ("mail", 421)
    assert caught.value.remote


async def test_a_connection_dropped_mid_group_is_temporary() -> None:
    script = dataclasses.replace(PIPELINED, drop=frozenset({"RCPT"}))
    async with ScriptedSmtpServer(script) as server, pool_to(server) as pool:
        with pytest.raises(SmtpTemporaryFailure) as caught:
            await pool.send("a@sender.test", ["b@rcpt.test"], MESSAGE)
        assert pool.stats().open == 0
    assert caught.value.phase == "rcpt" and caught.value.connection_lost
    assert not caught.value.remote


async def test_a_slow_reply_in_a_group_honours_its_phase_timeout() -> None:
    release = asyncio.Event()
    script = dataclasses.replace(PIPELINED, holds={"DATA": release})
    slow = dataclasses.replace(FAST, data_init=0.2)
    async with ScriptedSmtpServer(script) as server, pool_to(server, timeouts=slow) as pool:
        with pytest.raises(SmtpTemporaryFailure) as caught:
            await pool.send("a@sender.test", ["b@rcpt.test"], MESSAGE)
        release.set()
    assert caught.value.phase == "data" and "timed out after 0.2s" in caught.value.reply.text


async def _pipelined_scenario(starttls: bool) -> tuple[int, int, str]:
    script = dataclasses.replace(PIPELINED, starttls=starttls,
                                 rcpt={"gone@rcpt.test": "550 5.1.1 No"})
    async with ScriptedSmtpServer(script) as server, pool_to(server) as pool:
        for _ in range(3):  # one session, reused: aiosmtplib gets its connection back each time
            result = await pool.send("a@sender.test", ["gone@rcpt.test", "b@rcpt.test"],
                                     MESSAGE)
            assert result.accepted == ("b@rcpt.test",) and result.tls == starttls
        refused = await pool.send("a@sender.test", ["gone@rcpt.test"], MESSAGE)
        assert refused.accepted == ()
    record = server.record
    return record.connections, len(record.messages), record.commands[-1]


@pytest.mark.parametrize("starttls", [False, True], ids=["plain", "starttls"])
@pytest.mark.parametrize(
    "loop_factory", [asyncio.new_event_loop, uvloop.new_event_loop], ids=["asyncio", "uvloop"])
def test_pipelining_on_both_loops(loop_factory: Callable[[], asyncio.AbstractEventLoop],
                                  starttls: bool) -> None:
    with asyncio.Runner(loop_factory=loop_factory) as runner:
        outcome = runner.run(asyncio.wait_for(_pipelined_scenario(starttls), timeout=20))
    assert outcome == (1, 3, "QUIT")  # one reused connection, three messages, closed politely
