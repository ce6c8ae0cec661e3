"""Reading the replies to a pipelined command group (RFC 2920) on an aiosmtplib connection.

aiosmtplib reads one reply per command it sent and drops bytes that arrive while no command of
its own waits, so the replies to MAIL, RCPT... and DATA written in one go would be lost. For the
length of one pipelined transaction :class:`ReplyReader` takes the connection's transport over
(``transport.set_protocol``), splits whatever arrives into replies with the pure
:func:`mta.smtp.reply.split_replies` and hands them out in order; on leaving, aiosmtplib's
protocol is put back. A connection lost meanwhile is passed on to it, so the client knows.
Errors are aiosmtplib's (``SMTPResponseException`` for a malformed reply) or ``OSError``, which
:mod:`mta.smtp.session` translates like every other.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import cast

from aiosmtplib.errors import SMTPResponseException
from aiosmtplib.protocol import SMTPProtocol

from mta.smtp.reply import MalformedReply, SmtpReply, split_replies


class ReplyReader(asyncio.Protocol):
    """The transport's protocol during a pipelined transaction: every reply, in order."""

    def __init__(self, transport: asyncio.WriteTransport, owner: SMTPProtocol) -> None:
        self._transport = transport
        self._owner = owner
        self._buffer = bytearray()
        self._replies: deque[SmtpReply] = deque()
        self._error: BaseException | None = None
        self._waiter: asyncio.Future[None] | None = None

    def write(self, data: bytes) -> None:
        if self._error is not None:
            raise self._error
        if self._transport.is_closing():
            raise ConnectionResetError("connection lost")
        self._transport.write(data)

    async def next_reply(self) -> SmtpReply:
        """The next reply; raises once the connection is gone or the server talks nonsense."""
        while not self._replies:
            if self._error is not None:
                raise self._error
            self._waiter = asyncio.get_running_loop().create_future()
            await self._waiter
        return self._replies.popleft()

    # --- asyncio.Protocol ---------------------------------------------------------------------

    def data_received(self, data: bytes) -> None:
        if self._error is not None:
            return
        self._buffer.extend(data)
        try:
            replies, used = split_replies(self._buffer)
        except MalformedReply as exc:
            self._fail(SMTPResponseException(-1, str(exc)))
            self._transport.close()
            return
        del self._buffer[:used]
        if replies:
            self._replies.extend(replies)
            self._wake()

    def eof_received(self) -> bool:
        self._fail(ConnectionResetError("connection closed by the server"))
        return False  # close the transport

    def connection_lost(self, exc: Exception | None) -> None:
        self._fail(ConnectionResetError("connection lost"))
        self._owner.connection_lost(exc)

    def _fail(self, error: BaseException) -> None:
        if self._error is None:
            self._error = error
        self._wake()

    def _wake(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)


@asynccontextmanager
async def pipelined(owner: SMTPProtocol | None) -> AsyncIterator[ReplyReader]:
    """Take the connection of ``owner`` (aiosmtplib's protocol) over for one transaction."""
    transport = owner.transport if owner is not None else None
    if owner is None or transport is None or transport.is_closing():
        raise ConnectionResetError("connection lost")
    writable = cast(asyncio.WriteTransport, transport)
    reader = ReplyReader(writable, owner)
    writable.set_protocol(reader)
    try:
        yield reader
    finally:
        if writable.get_protocol() is reader:
            writable.set_protocol(owner)
