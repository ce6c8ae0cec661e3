"""Bounded pools of reusable SMTP sessions, one per destination (host, port).

A pool opens at most ``max_connections`` sessions; a session carries at most
``max_messages_per_connection`` transactions and then QUITs; idle sessions are closed after
``idle_timeout`` by a reaper task the pool owns (and lazily on checkout). Senders waiting for a
session queue FIFO in a bounded queue; a released session (or a free slot) goes to the longest
waiter. A session that errored at the transport level (timeout, disconnect, 421, cancellation
mid-transaction) is closed, never reused; a reply-level refusal leaves it reusable (the dialogue is
in sync and any open transaction has been RSET).

Between two messages on one session there is an RSET (after a refusal it closes the open
transaction; otherwise it probes a session that idled ``rset_before_reuse`` seconds or more, by
default always). A reused session found dead by that probe or at MAIL is replaced transparently:
nothing was sent for the message yet.

``PoolSettings.peer`` is the TLS policy every session of the pool must meet (mta.tls.policy);
under MTA-STS ``testing`` a failed verification is reported and the session is opened again
unverified, as before the policy. ``on_tls`` hears about every session opened or refused under
a policy that TLS-RPT counts.
"""

from __future__ import annotations

import asyncio
import dataclasses
import math
import time
from collections import deque
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass, field
from typing import Any

from engine.errors import ConfigError
from mta.errors import TemporaryFailure
from mta.smtp.reply import SmtpReply, check_envelope, prepare_message
from mta.smtp.session import (
    SendResult,
    SessionSettings,
    SmtpConnectFailure,
    SmtpSession,
    SmtpSessionFailure,
    SmtpTemporaryFailure,
    SmtpTimeouts,
    TlsMode,
    open_session,
)
from mta.smtp.types import SmtpLogin, TlsAuthFailure
from mta.tls.peer import PeerPolicy

Clock = Callable[[], float]
# (policy, None for a good session or the RFC 8460 result type, the receiving address)
TlsObserver = Callable[[PeerPolicy, str | None, str], None]

# After a failed STARTTLS handshake in opportunistic mode, talk plaintext to the host this long.
TLS_FALLBACK_SECONDS = 3600.0
# A reused session found dead before MAIL is replaced at most this many times per message.
_STALE_RETRIES = 2


@dataclass(frozen=True, slots=True, kw_only=True)
class PoolSettings:
    ehlo_name: str
    max_connections: int = 10
    max_messages_per_connection: int = 100
    idle_timeout: float = 30.0
    tls: TlsMode = "opportunistic"
    tls_verify: bool = False
    timeouts: SmtpTimeouts = field(default_factory=SmtpTimeouts)
    # Probe a reused session with RSET when it idled this long (0: before every reused message).
    rset_before_reuse: float = 0.0
    max_waiters: int = 10_000
    max_message_bytes: int = 50 * 1024 * 1024
    # close(): how long in-flight transactions may finish before their connections are cut.
    close_grace: float = 10.0
    peer: PeerPolicy | None = None  # the TLS policy for this destination host (overrides tls)
    implicit_tls: bool = False  # a smarthost route's smtps://
    login: SmtpLogin | None = None  # a smarthost route's AUTH

    def __post_init__(self) -> None:
        checks = {
            "max_connections": 1 <= self.max_connections <= 10_000,
            "max_messages_per_connection": 1 <= self.max_messages_per_connection <= 1_000_000,
            "idle_timeout": 0 < self.idle_timeout <= 3600,
            "rset_before_reuse": 0 <= self.rset_before_reuse <= 3600,
            "max_waiters": 0 <= self.max_waiters <= 1_000_000,
            "max_message_bytes": 1 <= self.max_message_bytes <= 1 << 31,
            "close_grace": 0 <= self.close_grace <= 3600,
        }
        for key, ok in checks.items():
            if not ok:
                raise ConfigError(f"smtp pool {key}: out of range ({getattr(self, key)!r})")
        self.session_settings()  # validates ehlo_name and tls

    def session_settings(self) -> SessionSettings:
        return SessionSettings(
            ehlo_name=self.ehlo_name,
            tls=self.peer.tls if self.peer is not None else self.tls,
            tls_verify=self.tls_verify,
            timeouts=self.timeouts,
            peer=self.peer,
            implicit_tls=self.implicit_tls,
            login=self.login,
        )


@dataclass(frozen=True, slots=True)
class PoolStats:
    open: int  # sessions open or being opened (never above max_connections)
    idle: int
    in_use: int
    waiting: int
    connections_opened: int
    messages_sent: int


class PoolClosed(TemporaryFailure):
    """The pool was closed; nothing was sent."""


class PoolSaturated(TemporaryFailure):
    """Too many senders already wait for a session to this destination; nothing was sent."""


class ConnectionPool:
    """Sessions to ONE destination (host, port). Use from one event loop."""

    def __init__(
        self, host: str, port: int, settings: PoolSettings, *, clock: Clock = time.monotonic,
        on_tls: TlsObserver | None = None,
    ) -> None:
        self.host = host
        self._on_tls = on_tls
        self.port = port
        self.settings = settings
        self._session_settings = settings.session_settings()
        self._clock = clock
        self._idle: deque[SmtpSession] = deque()  # oldest on the left, reuse from the right
        self._in_use: set[SmtpSession] = set()
        self._open = 0  # counted against max_connections from the start of connect to QUIT's end
        self._waiters: deque[asyncio.Future[SmtpSession | None]] = deque()
        self._tasks: set[asyncio.Task[None]] = set()  # the reaper and QUIT tasks, owned here
        self._reaper: asyncio.Task[None] | None = None
        self._drained: asyncio.Event | None = None
        self._closed = False
        self._plaintext_until = -math.inf
        self._connections_opened = 0
        self._messages_sent = 0

    # --- public API ---------------------------------------------------------------------------

    async def send(self, mail_from: str, recipients: Sequence[str], message: bytes) -> SendResult:
        """Deliver one message over a pooled session.

        Raises ``UnsendableMessage`` (bad envelope or message; before any I/O),
        ``SmtpConnectFailure``, ``SmtpSessionFailure``, ``PoolClosed`` or ``PoolSaturated``.
        """
        smtputf8 = check_envelope(mail_from, recipients)
        prepared = prepare_message(message, max_bytes=self.settings.max_message_bytes)
        smtputf8 = smtputf8 or prepared.utf8_headers  # RFC 6532 headers need it too
        for attempt in range(_STALE_RETRIES + 1):
            session = await self._checkout()
            reused = session.transactions > 0
            try:
                if reused and not session.reset_done and self._probe_due(session):
                    if not await session.reset():
                        if attempt < _STALE_RETRIES:
                            continue
                        raise self._stale_failure()
                result = await session.deliver(mail_from, recipients, prepared, smtputf8=smtputf8)
            except SmtpSessionFailure as exc:
                stale = reused and exc.phase == "mail" and exc.connection_lost
                if stale and attempt < _STALE_RETRIES:
                    continue
                raise
            finally:
                self._checkin(session)
            self._messages_sent += 1
            return result
        raise AssertionError("unreachable")  # pragma: no cover

    def _probe_due(self, session: SmtpSession) -> bool:
        return self._clock() - session.last_used >= self.settings.rset_before_reuse

    def reap_idle(self) -> int:
        """Close idle sessions past ``idle_timeout`` (or dead); return how many were closed."""
        now = self._clock()
        keep: deque[SmtpSession] = deque()
        closed = 0
        for session in self._idle:
            if session.reusable and now - session.last_used < self.settings.idle_timeout:
                keep.append(session)
            else:
                self._retire(session)
                closed += 1
        self._idle = keep
        return closed

    def stats(self) -> PoolStats:
        return PoolStats(
            open=self._open,
            idle=len(self._idle),
            in_use=len(self._in_use),
            waiting=sum(1 for w in self._waiters if not w.done()),
            connections_opened=self._connections_opened,
            messages_sent=self._messages_sent,
        )

    @property
    def closed(self) -> bool:
        return self._closed

    async def close(self) -> None:
        """QUIT every session. In-flight transactions get ``close_grace`` seconds to finish, then
        their connections are cut. The QUIT tasks run on if the caller is cancelled (bounded by
        the QUIT timeout)."""
        if not self._closed:
            self._closed = True
            for waiter in self._waiters:
                if not waiter.done():
                    waiter.set_exception(PoolClosed(f"pool for {self.host}:{self.port} closed"))
            self._waiters.clear()
            if self._reaper is not None:
                self._reaper.cancel()
            while self._idle:
                self._retire(self._idle.pop())
        if self._open > 0:
            drained = self._drained = self._drained or asyncio.Event()
            try:
                async with asyncio.timeout(self.settings.close_grace):
                    await drained.wait()
            except TimeoutError:
                for session in list(self._in_use):
                    session.abort()
        if self._tasks:
            await asyncio.shield(asyncio.gather(*self._tasks, return_exceptions=True))

    # --- checkout / checkin -------------------------------------------------------------------

    async def _checkout(self) -> SmtpSession:
        if self._closed:
            raise PoolClosed(f"pool for {self.host}:{self.port} closed")
        while self._idle:
            session = self._idle.pop()
            if session.reusable and self._clock() - session.last_used < self.settings.idle_timeout:
                self._in_use.add(session)
                return session
            self._retire(session)
        if self._open < self.settings.max_connections:
            self._open += 1
            return await self._connect()
        if len(self._waiters) >= self.settings.max_waiters:
            raise PoolSaturated(
                f"{len(self._waiters)} senders already wait for {self.host}:{self.port}"
            )
        waiter: asyncio.Future[SmtpSession | None] = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        try:
            handed = await waiter
        except asyncio.CancelledError:
            if waiter.done() and not waiter.cancelled() and waiter.exception() is None:
                self._give_back(waiter.result())
            elif waiter in self._waiters:
                self._waiters.remove(waiter)
            raise
        if handed is None:  # a free slot was reserved for us
            return await self._connect()
        return handed

    async def _connect(self) -> SmtpSession:
        """Open a session in a slot already counted in ``_open``; the slot is freed on failure."""
        peer = self.settings.peer
        try:
            starttls = self._clock() >= self._plaintext_until
            try:
                session, checked = await self._open_checked(starttls)
            except SmtpConnectFailure as exc:
                if exc.reason != "tls_handshake" or self._session_settings.tls != "opportunistic":
                    raise
                # Like Postfix: a failed opportunistic handshake means plaintext for a while.
                checked = False
                self._plaintext_until = self._clock() + TLS_FALLBACK_SECONDS
                session = await open_session(
                    self.host, self.port, self._session_settings, starttls=False
                )
        except BaseException:
            self._release_slot()
            raise
        if peer is not None and peer.report is not None and checked:
            self._tell(peer, None if session.tls else "starttls-not-supported")
        self._connections_opened += 1
        self._in_use.add(session)
        if self._closed:
            self._checkin(session)
            raise PoolClosed(f"pool for {self.host}:{self.port} closed")
        return session

    async def _open_checked(self, starttls: bool) -> tuple[SmtpSession, bool]:
        """A session under the pool's TLS policy; "sts-testing" retries unverified once."""
        peer = self.settings.peer
        try:
            session = await open_session(
                self.host, self.port, self._session_settings, starttls=starttls
            )
        except TlsAuthFailure as exc:
            if peer is not None:
                self._tell(peer, exc.result_type)
            if peer is None or peer.mode != "sts-testing":
                raise
            fallback = dataclasses.replace(self._session_settings, peer=peer.unverified())
            return await open_session(self.host, self.port, fallback, starttls=starttls), False
        return session, True

    def _tell(self, peer: PeerPolicy, result: str | None) -> None:
        if self._on_tls is not None and peer.report is not None:
            self._on_tls(peer, result, self.host)

    def _checkin(self, session: SmtpSession) -> None:
        self._in_use.discard(session)
        if (
            self._closed
            or not session.reusable
            or session.transactions >= self.settings.max_messages_per_connection
        ):
            self._retire(session)
            return
        session.last_used = self._clock()
        if not self._hand_off(session):
            self._idle.append(session)
            if self._reaper is None:
                self._reaper = self._spawn(self._reap_loop())

    def _give_back(self, handed: SmtpSession | None) -> None:
        if handed is None:
            self._release_slot()
        else:
            self._checkin(handed)

    def _hand_off(self, handed: SmtpSession | None) -> bool:
        """Give a session (or a free slot: None) to the longest waiter still waiting."""
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                if handed is not None:
                    self._in_use.add(handed)
                waiter.set_result(handed)
                return True
        return False

    def _retire(self, session: SmtpSession) -> None:
        """Close a session: QUIT (in an owned task) if healthy, else cut it; then free its slot."""
        if session.reusable:
            self._spawn(self._quit(session))
        else:
            session.abort()
            self._release_slot()

    async def _quit(self, session: SmtpSession) -> None:
        try:
            await session.quit()
        finally:
            self._release_slot()

    def _release_slot(self) -> None:
        self._open -= 1
        if self._waiters and not self._closed:
            self._open += 1
            if not self._hand_off(None):
                self._open -= 1
        if self._open == 0 and self._drained is not None:
            self._drained.set()

    # --- background tasks ---------------------------------------------------------------------

    def _spawn(self, coroutine: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        task = asyncio.get_running_loop().create_task(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def _reap_loop(self) -> None:
        try:
            while self._idle and not self._closed:
                delay = self._idle[0].last_used + self.settings.idle_timeout - self._clock()
                if delay > 0:
                    await asyncio.sleep(delay)
                self.reap_idle()
        finally:
            self._reaper = None

    def _stale_failure(self) -> SmtpSessionFailure:
        reply = SmtpReply(421, "4.4.2", "reused connections kept failing before MAIL")
        return SmtpTemporaryFailure(
            self.host, self.port, "mail", reply, remote=False, connection_lost=True
        )
