"""Capture sink: an SMTP server (aiosmtpd) that accepts any mail and keeps it.

Each message is written to a Maildir (stdlib ``mailbox.Maildir``, which fsyncs the file) in a
worker thread BEFORE the 250 reply; a failed write answers 451 instead. For tests and benchmarks
``CaptureSink`` also counts messages and can keep the last few in memory. ``herald sink`` runs
``run_sink`` until its stop event is set.

It advertises PIPELINING (aiosmtpd reads pipelined commands in order; ``pipelining=False`` hides
it). ``reply_latency`` delays every reply by that many seconds without holding the session up,
as a network round trip would: commands that arrived together are answered together, one
latency later. ``herald bench mta --reply-latency`` uses it to show what pipelining saves.
"""

from __future__ import annotations

import asyncio
import logging
import mailbox
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, cast

from aiosmtpd.smtp import SMTP, Envelope, Session

log = logging.getLogger(__name__)

_CLASH_RETRIES = 3  # Maildir names are unique per (time, pid, counter); retry a rare clash
_MAX_ENVELOPE_HEADERS = 100
_STOP_TIMEOUT = 5.0  # seconds for open sessions to wind down on stop


@dataclass(frozen=True, slots=True)
class CapturedMessage:
    mail_from: str
    rcpt_tos: tuple[str, ...]
    data: bytes


class _SinkState:
    """Counters and storage shared by every session of one sink."""

    def __init__(self, maildir: mailbox.Maildir | None, keep: int, max_sessions: int) -> None:
        self.maildir = maildir
        self.kept: deque[CapturedMessage] = deque(maxlen=keep)
        self.received = 0
        self.max_sessions = max_sessions
        self.sessions: dict[_SinkSMTP, asyncio.Task[Any]] = {}  # session -> its handler task
        self.arrived = asyncio.Event()  # replaced after each message: waiters re-check

    def count(self, message: CapturedMessage) -> None:
        self.kept.append(message)
        self.received += 1
        self.arrived.set()
        self.arrived = asyncio.Event()

    def store(self, mail_from: str, rcpt_tos: tuple[str, ...], data: bytes) -> None:
        """Write one message to the Maildir (runs in a worker thread)."""
        assert self.maildir is not None
        headers = [f"Return-Path: <{mail_from}>"]
        headers += [f"X-Envelope-To: <{rcpt}>" for rcpt in rcpt_tos[:_MAX_ENVELOPE_HEADERS]]
        prefix = ("\n".join(headers) + "\n").encode("utf-8", "surrogateescape")
        body = prefix + data.replace(b"\r\n", b"\n")
        for attempt in range(_CLASH_RETRIES):
            try:
                self.maildir.add(body)
                return
            except mailbox.ExternalClashError:
                if attempt == _CLASH_RETRIES - 1:
                    raise


class _SinkHandler:
    def __init__(self, state: _SinkState, pipelining: bool) -> None:
        self._state = state
        self._pipelining = pipelining

    async def handle_EHLO(self, server: SMTP, session: Session, envelope: Envelope,
                          hostname: str, responses: list[str]) -> list[str]:
        session.host_name = hostname
        if self._pipelining:
            return [*responses[:-1], "250-PIPELINING", responses[-1]]
        return responses

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        state = self._state
        data = envelope.original_content or b""
        mail_from = envelope.mail_from or ""
        rcpt_tos = tuple(envelope.rcpt_tos)
        if state.maildir is not None:
            try:
                await asyncio.to_thread(state.store, mail_from, rcpt_tos, data)
            except (OSError, mailbox.Error) as exc:
                log.warning("sink: cannot store message: %s", exc)
                return "451 4.3.0 Cannot store the message now"
        state.count(CapturedMessage(mail_from, rcpt_tos, data))
        return "250 2.0.0 Ok: stored"


class _DelayedReplies:
    """Writes each reply ``latency`` seconds after it was made, in order (a simulated network
    delay: the session goes on meanwhile)."""

    def __init__(self, transport: asyncio.WriteTransport, latency: float) -> None:
        self._transport = transport
        self._latency = latency
        self._due: deque[tuple[float, bytes, asyncio.Future[None]]] = deque()
        self._queued = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def send(self, data: bytes) -> asyncio.Future[None]:
        loop = asyncio.get_running_loop()
        written = loop.create_future()
        self._due.append((loop.time() + self._latency, data, written))
        self._queued.set()
        if self._task is None:
            self._task = asyncio.create_task(self._write_when_due(), name="sink-replies")
        return written

    async def _write_when_due(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            if not self._due:
                self._queued.clear()
                await self._queued.wait()
                continue
            due, data, written = self._due[0]
            await asyncio.sleep(max(0.0, due - loop.time()))  # the latency being simulated
            self._due.popleft()
            if not self._transport.is_closing():
                self._transport.write(data)
            if not written.done():
                written.set_result(None)

    def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
        for _, _, written in self._due:
            written.cancel()


class _SinkSMTP(SMTP):
    """aiosmtpd's server with a bound on concurrent sessions (421 beyond it) and an optional
    latency on every reply."""

    def __init__(self, handler: _SinkHandler, state: _SinkState, reply_latency: float = 0.0,
                 **kwargs: Any) -> None:
        super().__init__(handler, **kwargs)
        self._state = state
        self._reply_latency = reply_latency
        self._delayed: _DelayedReplies | None = None

    async def push(self, status: Any) -> None:
        if not self._reply_latency or self.transport is None:
            await super().push(status)
            return
        if self._delayed is None:
            self._delayed = _DelayedReplies(cast(asyncio.WriteTransport, self.transport),
                                            self._reply_latency)
        data = status.encode("utf-8") if isinstance(status, str) else bytes(status)
        written = self._delayed.send(data + b"\r\n")
        if data[:3] in (b"221", b"421"):  # the session closes after these: let them out first
            await written

    def connection_lost(self, error: Exception | None) -> None:
        if self._delayed is not None:
            self._delayed.close()
        super().connection_lost(error)

    async def _handle_client(self) -> None:
        state = self._state
        if len(state.sessions) >= state.max_sessions:
            await self.push("421 4.3.2 Too many sessions, try again later")
            if self.transport is not None:
                self.transport.close()
            return
        task = asyncio.current_task()
        assert task is not None
        state.sessions[self] = task
        try:
            await super()._handle_client()
        finally:
            state.sessions.pop(self, None)


class CaptureSink:
    """An accept-everything SMTP server on ``host``:``port`` (0: an ephemeral port).

    ``async with CaptureSink() as sink:`` returns once the socket listens; then ``sink.port`` is
    the bound port, ``sink.received`` counts stored messages and ``sink.messages`` holds the
    last ``keep`` of them.
    """

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        maildir: Path | None = None,
        keep: int = 0,
        max_sessions: int = 1000,
        max_message_bytes: int = 64 * 1024 * 1024,
        hostname: str = "herald-sink",
        pipelining: bool = True,
        reply_latency: float = 0.0,
    ) -> None:
        if not 0 <= reply_latency <= 10:
            raise ValueError("reply latency must be between 0 and 10 seconds")
        self.host = host
        self.port = port
        self._maildir_path = maildir
        self._keep = keep
        self._max_sessions = max_sessions
        self._max_message_bytes = max_message_bytes
        self._hostname = hostname
        self._pipelining = pipelining
        self._reply_latency = reply_latency
        self._server: asyncio.Server | None = None
        self._state: _SinkState | None = None

    @property
    def received(self) -> int:
        return self._state.received if self._state else 0

    @property
    def messages(self) -> list[CapturedMessage]:
        return list(self._state.kept) if self._state else []

    async def start(self) -> None:
        maildir = None
        if self._maildir_path is not None:
            maildir = await asyncio.to_thread(mailbox.Maildir, self._maildir_path, None, True)
        state = self._state = _SinkState(maildir, self._keep, self._max_sessions)
        handler = _SinkHandler(state, self._pipelining)
        loop = asyncio.get_running_loop()

        def factory() -> _SinkSMTP:
            return _SinkSMTP(
                handler,
                state,
                self._reply_latency,
                hostname=self._hostname,
                ident="Herald capture sink",
                enable_SMTPUTF8=True,
                data_size_limit=self._max_message_bytes,
                loop=loop,
            )

        self._server = await loop.create_server(factory, self.host, self.port)
        self.port = self._server.sockets[0].getsockname()[1]
        log.info("sink: listening on %s:%d", self.host, self.port)

    async def stop(self) -> None:
        server, self._server = self._server, None
        if server is None:
            return
        server.close()
        handlers: list[asyncio.Task[Any]] = []
        if self._state is not None:
            for session, handler in list(self._state.sessions.items()):
                if session.transport is not None:
                    session.transport.close()  # connection_lost cancels the handler
                handlers.append(handler)
        if handlers:
            await asyncio.wait(handlers, timeout=_STOP_TIMEOUT)
        await server.wait_closed()

    async def wait_for(self, count: int, timeout: float) -> None:
        """Wait until ``count`` messages were received (TimeoutError after ``timeout``)."""
        assert self._state is not None, "sink not started"
        state = self._state
        async with asyncio.timeout(timeout):
            while True:
                arrived = state.arrived
                if state.received >= count:
                    return
                await arrived.wait()

    async def __aenter__(self) -> CaptureSink:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await asyncio.shield(self.stop())


async def run_sink(
    listen_host: str,
    listen_port: int,
    maildir: Path | None,
    stop: asyncio.Event,
    *,
    ready: asyncio.Future[int] | None = None,
) -> None:
    """Serve until ``stop`` is set (the ``herald sink`` command). ``ready`` gets the bound port
    once the socket listens (a readiness handshake, e.g. for sd_notify or tests)."""
    async with CaptureSink(listen_host, listen_port, maildir=maildir) as sink:
        if ready is not None and not ready.done():
            ready.set_result(sink.port)
        await stop.wait()
