"""Bounds on what one client connection may hold: a slow-client (slowloris) guard.

uvicorn's httptools protocol, subclassed: a request's headers must arrive within
``header_timeout`` of its first byte (or of the connection's start) and within
``max_header_size`` bytes, its body within ``body_timeout`` of the headers; past a bound the
client gets 408 (or 431) and the connection is closed. Each client address may hold at most
``max_connections_per_client`` connections at once; one more is answered 503 and closed.
Between requests the connection may idle for uvicorn's keep-alive timeout, then it is closed
(quietly, as uvicorn does).

The bounds cost a request a few attribute writes, not a timer each: a connection keeps at most
one timer, which on firing checks the current deadline and sleeps again if it moved (the
keep-alive wait too, which uvicorn would give a timer of its own after every response).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from engine.metrics import HTTP_CONNECTIONS_CLOSED


@dataclass(frozen=True, slots=True)
class ClientLimits:
    header_timeout: float = 10.0
    body_timeout: float = 30.0
    max_header_size: int = 64 * 1024
    max_connections_per_client: int = 256  # 0: no cap


def _reply(status: str, reason: str) -> bytes:
    body = reason.encode()
    return (f"HTTP/1.1 {status}\r\ncontent-type: text/plain; charset=utf-8\r\n"
            f"content-length: {len(body)}\r\nconnection: close\r\n\r\n").encode() + body


REQUEST_TIMEOUT = _reply("408 Request Timeout", "request not received in time")
HEADERS_TOO_LARGE = _reply("431 Request Header Fields Too Large", "request headers too large")
TOO_MANY_CONNECTIONS = _reply("503 Service Unavailable", "too many connections from your "
                                                         "address")


def guarded_protocol(limits: ClientLimits) -> type[HttpToolsProtocol]:
    """A protocol class for ``uvicorn.Config(http=...)`` enforcing ``limits``; the
    per-address connection counts are shared by the connections of this one server."""
    open_connections: dict[str, int] = {}

    class GuardedHttpToolsProtocol(HttpToolsProtocol):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self._guard_timer: asyncio.TimerHandle | None = None
            self._deadline: float | None = None  # loop time; None: nothing is being awaited
            self._idle = False  # the deadline is the keep-alive one (expiry closes quietly)
            self._awaiting_headers = True
            self._header_bytes = 0
            self._address: str | None = None
            self._refused = False

        # --- connections per address -----------------------------------------------------

        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            peer = transport.get_extra_info("peername")
            address = str(peer[0]) if isinstance(peer, tuple) and peer else None
            cap = limits.max_connections_per_client
            if cap and address is not None and open_connections.get(address, 0) >= cap:
                self._refused = True
                self.transport = transport
                HTTP_CONNECTIONS_CLOSED.labels("too_many_connections").inc()
                transport.write(TOO_MANY_CONNECTIONS)
                transport.close()
                return
            if address is not None:
                open_connections[address] = open_connections.get(address, 0) + 1
                self._address = address
            super().connection_made(transport)
            self._arm(limits.header_timeout)

        def connection_lost(self, exc: Exception | None) -> None:
            if self._refused:
                return
            self._stop_timer()
            if self._address is not None:
                left = open_connections.get(self._address, 1) - 1
                if left > 0:
                    open_connections[self._address] = left
                else:
                    open_connections.pop(self._address, None)
                self._address = None
            super().connection_lost(exc)

        def data_received(self, data: bytes) -> None:
            if self._refused:
                return
            if self._awaiting_headers:
                if self._deadline is None or self._idle:  # the first byte of a new request
                    self._arm(limits.header_timeout)
                self._header_bytes += len(data)
            super().data_received(data)
            if self._awaiting_headers and self._header_bytes > limits.max_header_size \
                    and not self.transport.is_closing():
                self._give_up(HEADERS_TOO_LARGE, "headers_too_large")

        # --- parser callbacks ------------------------------------------------------------

        def on_message_begin(self) -> None:
            self._awaiting_headers = True
            if self._idle:  # begun in the read that ended the last answer's request
                self._arm(limits.header_timeout)
            super().on_message_begin()

        def on_headers_complete(self) -> None:
            self.headers_done()
            super().on_headers_complete()

        def headers_done(self) -> None:
            """The headers are in: the body's bound starts (also for engine.http.direct_routes,
            which serves some requests without uvicorn's on_headers_complete)."""
            self._awaiting_headers = False
            self._header_bytes = 0
            self._arm(limits.body_timeout)  # disarmed at once when there is no body

        def on_message_complete(self) -> None:
            self._disarm()
            self._awaiting_headers = True  # what follows is the next request's
            super().on_message_complete()

        def on_response_complete(self) -> None:
            """uvicorn's, with its keep-alive timer replaced by this connection's one timer."""
            self.server_state.total_requests += 1
            if self.transport.is_closing():
                return
            self.flow.resume_reading()
            if self.pipeline:  # a request queued behind the one answered starts now
                cycle, app = self.pipeline.pop()
                self._start_asgi_task(cycle, app)
            elif self._deadline is None:  # nothing of a next request has arrived
                self._arm_idle()

        # --- timers ----------------------------------------------------------------------

        def _arm(self, seconds: float) -> None:
            self._idle = False
            self._deadline = self.loop.time() + seconds
            self._wake_by(self._deadline)

        def _arm_idle(self) -> None:
            """Between requests: the keep-alive deadline, with the timer set no later than a
            next request's header deadline could be, so that its first byte (which sets that
            deadline) finds the timer early enough and need not replace it."""
            now = self.loop.time()
            self._idle = True
            self._deadline = now + self.timeout_keep_alive
            self._wake_by(min(self._deadline, now + limits.header_timeout))

        def _wake_by(self, when: float) -> None:
            timer = self._guard_timer
            if timer is None or timer.when() > when:
                if timer is not None:
                    timer.cancel()
                self._guard_timer = self.loop.call_at(when, self._check_deadline)

        def _disarm(self) -> None:
            self._idle = False
            self._deadline = None  # a running timer finds nothing to do

        def _stop_timer(self) -> None:
            self._deadline = None
            if self._guard_timer is not None:
                self._guard_timer.cancel()
                self._guard_timer = None

        def _check_deadline(self) -> None:
            self._guard_timer = None
            if self._deadline is None:
                return
            if self.loop.time() < self._deadline:  # moved since the timer was set
                self._guard_timer = self.loop.call_at(self._deadline, self._check_deadline)
                return
            self._deadline = None
            if self.transport.is_closing():
                return
            if self._idle:  # kept alive long enough: closed quietly, as uvicorn does
                self._idle = False
                self.transport.close()
            else:
                self._give_up(REQUEST_TIMEOUT, "request_timeout")

        def _give_up(self, reply: bytes, reason: str) -> None:
            HTTP_CONNECTIONS_CLOSED.labels(reason).inc()
            cycle = self.cycle
            if cycle is None or cycle.response_complete or not cycle.response_started:
                self.transport.write(reply)
            if cycle is not None and not cycle.response_complete:
                # The application sees a disconnect and its response goes nowhere.
                cycle.disconnected = True
                cycle.message_event.set()
            self.transport.close()

    return GuardedHttpToolsProtocol
