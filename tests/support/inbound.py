"""Run the inbound role in-process on an ephemeral loopback port; build DSNs, ARF reports and
auto-replies; wait for stored messages to be processed; talk raw SMTP."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

from engine.database import Database, connect_one
from engine.values import HostPort
from mta.inbound.service import InboundService
from mta.inbound.settings import InboundSettings
from mta.inbound.store import PROCESSED_CHANNEL
from mta.settings import MtaSettings
from tests.support.mta import mta_settings

FEEDBACK = "fbl@feedback.herald.test"
LINK_KEYS = ("t1:" + "k" * 32,)  # the same key as tests.support.automation.TEST_LINK_KEYS


def inbound_settings(**overrides: Any) -> InboundSettings:
    base = InboundSettings(listen=HostPort("127.0.0.1", 0), feedback_addresses=(FEEDBACK,),
                           retry_initial=0.05, retry_max=0.5)
    return dataclasses.replace(base, **overrides)


@asynccontextmanager
async def inbound_service(database: Database, mta: MtaSettings | None = None,
                          **overrides: Any) -> AsyncIterator[InboundService]:
    service = InboundService(database, inbound_settings(**overrides), mta or mta_settings(),
                             LINK_KEYS)
    await service.start()
    try:
        yield service
    finally:
        await service.stop()


def port_of(service: InboundService) -> int:
    assert service.server is not None
    return service.server.port


async def wait_inbound(database_url: str, check: Callable[[Any], Awaitable[bool]],
                       timeout: float = 20.0) -> None:
    """Re-run ``check(connection)`` after every processed batch until it holds."""
    woken = asyncio.Event()
    connection = await connect_one(database_url)

    def wake(*_args: object) -> None:
        woken.set()

    await connection.add_listener(PROCESSED_CHANNEL, wake)
    try:
        async with asyncio.timeout(timeout):
            while True:
                woken.clear()
                if await check(connection):
                    return
                await woken.wait()
    finally:
        await connection.close()


async def wait_all_processed(database_url: str, count: int, timeout: float = 20.0) -> None:
    async def done(connection: Any) -> bool:
        return int(await connection.fetchval(
            "SELECT count(*) FROM inbound_messages WHERE state <> 'pending'")) >= count

    await wait_inbound(database_url, done, timeout)


def crlf(text: str) -> bytes:
    return text.replace("\r\n", "\n").replace("\n", "\r\n").encode()


def dsn(return_path: str, recipient: str, status: str, diagnostic: str,
        action: str = "failed") -> bytes:
    return crlf(
        "From: MAILER-DAEMON@mx.example.org\n"
        f"To: {return_path}\n"
        "Subject: Undelivered Mail Returned to Sender\n"
        "Auto-Submitted: auto-replied\n"
        "MIME-Version: 1.0\n"
        'Content-Type: multipart/report; report-type=delivery-status; boundary="B"\n\n'
        "--B\nContent-Type: text/plain\n\nYour message could not be delivered.\n\n"
        "--B\nContent-Type: message/delivery-status\n\n"
        "Reporting-MTA: dns; mx.example.org\n\n"
        f"Final-Recipient: rfc822; {recipient}\nAction: {action}\nStatus: {status}\n"
        f"Diagnostic-Code: smtp; {diagnostic}\n\n"
        "--B\nContent-Type: text/rfc822-headers\n\n"
        f"Return-Path: <{return_path}>\nTo: {recipient}\nSubject: Hello\n\n"
        "--B--\n")


def arf(return_path: str, recipient: str, feedback_type: str = "abuse") -> bytes:
    return crlf(
        "From: feedback@fbl.example.net\n"
        f"To: {FEEDBACK}\nSubject: complaint\nMIME-Version: 1.0\n"
        'Content-Type: multipart/report; report-type=feedback-report; boundary="F"\n\n'
        "--F\nContent-Type: text/plain\n\nThis is an abuse report.\n\n"
        "--F\nContent-Type: message/feedback-report\n\n"
        f"Feedback-Type: {feedback_type}\nUser-Agent: fbl/1.0\nVersion: 1\n"
        f"Original-Mail-From: <{return_path}>\nOriginal-Rcpt-To: <{recipient}>\n\n"
        "--F\nContent-Type: message/rfc822\n\n"
        f"Return-Path: <{return_path}>\nMessage-ID: <m1@shop.test>\nTo: {recipient}\n"
        "Subject: Hello\n\nHi\n"
        "--F--\n")


def auto_reply(return_path: str, sender: str) -> bytes:
    return crlf(f"From: {sender}\nTo: {return_path}\nSubject: Out of office\n"
                "Auto-Submitted: auto-replied\n\nI am away until Monday.\n")


class RawSmtp:
    """A bare socket SMTP client for probes no real client would send."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    @classmethod
    async def connect(cls, port: int) -> RawSmtp:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        client = cls(reader, writer)
        await client.reply()
        return client

    async def reply(self) -> str:
        """One (possibly multi-line) reply, its lines joined with newlines."""
        lines = []
        while True:
            line = (await asyncio.wait_for(self.reader.readline(), 10)).decode()
            if not line:
                raise ConnectionError("connection closed: " + "".join(lines))
            lines.append(line.rstrip("\r\n"))
            if len(line) < 4 or line[3] != "-":
                return "\n".join(lines)

    async def send(self, data: bytes) -> None:
        self.writer.write(data)
        await self.writer.drain()

    async def command(self, line: str) -> str:
        await self.send(line.encode() + b"\r\n")
        return await self.reply()

    async def close(self) -> None:
        self.writer.close()
        try:
            await self.writer.wait_closed()
        except ConnectionError:
            pass
