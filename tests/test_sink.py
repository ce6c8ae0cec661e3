"""The capture sink: stores to a Maildir before 250, counts, keeps a bounded list, bounds sessions;
swaks and the pooled client deliver to it."""

from __future__ import annotations

import asyncio
import mailbox
from pathlib import Path

import aiosmtplib
import pytest
import uvloop

from mta.sink import CaptureSink, run_sink
from mta.smtp.pool import ConnectionPool, PoolSettings
from mta.smtp.session import SmtpTemporaryFailure
from tests.support.smtp_servers import SWAKS, read_greeting, requires_swaks

MESSAGE = b"From: a@sender.test\r\nTo: b@rcpt.test\r\nSubject: sink\r\n\r\nHello.\r\n.dot\r\n"


def pool_for(sink: CaptureSink, **overrides: object) -> ConnectionPool:
    values: dict[str, object] = {"ehlo_name": "client.test", "close_grace": 1.0}
    values.update(overrides)
    return ConnectionPool(sink.host, sink.port, PoolSettings(**values))  # type: ignore[arg-type]


async def test_sink_stores_to_maildir_before_250_and_counts(tmp_path: Path) -> None:
    maildir = tmp_path / "Maildir"
    async with CaptureSink(maildir=maildir, keep=2) as sink:
        pool = pool_for(sink)
        for i in range(3):
            await pool.send("a@sender.test", [f"r{i}@rcpt.test", "x@rcpt.test"], MESSAGE)
        await pool.close()
        # the 250 came after the write: everything is on disk already
        stored = list(mailbox.Maildir(maildir, create=False))
        assert sink.received == 3 and len(stored) == 3
        kept = sink.messages
    assert [m.rcpt_tos[0] for m in kept] == ["r1@rcpt.test", "r2@rcpt.test"]
    assert kept[-1].data == MESSAGE and kept[-1].mail_from == "a@sender.test"
    files = sorted((maildir / "new").iterdir())
    assert len(files) == 3
    raw = files[0].read_bytes()
    assert raw.startswith(b"Return-Path: <a@sender.test>\nX-Envelope-To: <")
    assert raw.endswith(b"Subject: sink\n\nHello.\n.dot\n")


async def test_sink_without_maildir_counts_and_accepts_utf8(tmp_path: Path) -> None:
    body = "Subject: café\r\n\r\nCrème.\r\n".encode()
    async with CaptureSink(keep=10) as sink:
        pool = pool_for(sink)
        await pool.send("a@sender.test", ["jöran@exämple.de"], body)
        await pool.close()
        await sink.wait_for(1, timeout=2.0)
    assert sink.messages[0].rcpt_tos == ("jöran@exämple.de",)
    assert sink.messages[0].data == body


async def test_sink_answers_451_when_it_cannot_store(tmp_path: Path) -> None:
    maildir = tmp_path / "Maildir"
    async with CaptureSink(maildir=maildir) as sink:
        (maildir / "tmp").rmdir()
        (maildir / "tmp").write_text("not a directory")  # every write now fails
        pool = pool_for(sink)
        with pytest.raises(SmtpTemporaryFailure) as caught:
            await pool.send("a@sender.test", ["b@rcpt.test"], MESSAGE)
        await pool.close()
    assert caught.value.phase == "data_final" and caught.value.reply.code == 451
    assert sink.received == 0


async def test_sink_bounds_concurrent_sessions() -> None:
    async with CaptureSink(max_sessions=1) as sink:
        reader, writer = await asyncio.open_connection(sink.host, sink.port)
        assert (await reader.readline()).startswith(b"220 ")
        reply = await read_greeting(sink.host, sink.port)
        writer.close()
    assert reply.code == 421 and reply.enhanced == "4.3.2"


@requires_swaks
async def test_swaks_delivers_to_the_sink(tmp_path: Path) -> None:
    maildir = tmp_path / "Maildir"
    async with CaptureSink(maildir=maildir) as sink:
        process = await asyncio.create_subprocess_exec(
            SWAKS,
            "--server", f"{sink.host}:{sink.port}",
            "--to", "a@b.c",
            "--from", "x@y.z",
            "--timeout", "5",
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )
        async with asyncio.timeout(10):
            output, _ = await process.communicate()
        assert process.returncode == 0, output.decode(errors="replace")
        await sink.wait_for(1, timeout=2.0)
    assert sink.received == 1
    assert len(list((maildir / "new").iterdir())) == 1
    assert b"250 2.0.0 Ok: stored" in output


async def test_run_sink_serves_until_stopped(tmp_path: Path) -> None:
    stop = asyncio.Event()
    ready: asyncio.Future[int] = asyncio.get_running_loop().create_future()
    task = asyncio.get_running_loop().create_task(
        run_sink("127.0.0.1", 0, tmp_path / "Maildir", stop, ready=ready)
    )
    try:
        async with asyncio.timeout(5):
            port = await ready
        assert (await read_greeting("127.0.0.1", port)).code == 220
    finally:
        stop.set()
        async with asyncio.timeout(5):
            await task
    with pytest.raises(OSError):
        await read_greeting("127.0.0.1", port)


def test_sink_and_pool_on_uvloop(tmp_path: Path) -> None:
    async def scenario() -> int:
        async with CaptureSink(maildir=tmp_path / "Maildir") as sink:
            pool = pool_for(sink, max_connections=4, max_messages_per_connection=10)
            await asyncio.gather(
                *(pool.send("a@sender.test", [f"r{i}@rcpt.test"], MESSAGE) for i in range(40))
            )
            await pool.close()
            return sink.received

    assert uvloop.run(asyncio.wait_for(scenario(), timeout=20)) == 40
    assert len(list((tmp_path / "Maildir" / "new").iterdir())) == 40


async def test_sink_advertises_pipelining_unless_told_not_to() -> None:
    for pipelining in (True, False):
        async with CaptureSink(pipelining=pipelining) as sink:
            client = aiosmtplib.SMTP(hostname=sink.host, port=sink.port)
            await client.connect()
            await client.ehlo()
            offered = client.supports_extension("pipelining")
            await client.quit()
        assert offered == pipelining


async def test_reply_latency_keeps_replies_in_order_and_lets_221_out_before_closing() -> None:
    async with CaptureSink(reply_latency=0.02, keep=5) as sink:
        reader, writer = await asyncio.open_connection(sink.host, sink.port)
        writer.write(b"EHLO client.test\r\nMAIL FROM:<a@sender.test>\r\nRCPT TO:<b@rcpt.test>\r\n"
                     b"DATA\r\n")
        async with asyncio.timeout(5):
            replies = [await reader.readline() for _ in range(2)]
            while not replies[-1].startswith(b"250 "):  # the rest of the EHLO reply
                replies.append(await reader.readline())
            replies += [await reader.readline() for _ in range(3)]
            writer.write(b"Subject: hi\r\n\r\nHello.\r\n.\r\nQUIT\r\n")
            replies += [await reader.readline() for _ in range(2)]
            assert await reader.read() == b""  # closed after the 221
        writer.close()
    codes = [line[:4] for line in replies]
    assert codes[0] == b"220 " and b"250-PIPELINING\r\n" in replies
    assert codes[-5:] == [b"250 ", b"250 ", b"354 ", b"250 ", b"221 "]
    assert sink.received == 1 and sink.messages[0].rcpt_tos == ("b@rcpt.test",)


def test_pipelined_delivery_to_a_slow_sink_on_uvloop() -> None:
    async def scenario() -> int:
        async with CaptureSink(reply_latency=0.01) as sink:
            pool = pool_for(sink, max_connections=2, max_messages_per_connection=10)
            results = await asyncio.gather(
                *(pool.send("a@sender.test", [f"r{i}@rcpt.test", "x@rcpt.test"], MESSAGE)
                  for i in range(10)))
            await pool.close()
            assert all(len(r.accepted) == 2 for r in results)
            return sink.received

    assert uvloop.run(asyncio.wait_for(scenario(), timeout=20)) == 10
