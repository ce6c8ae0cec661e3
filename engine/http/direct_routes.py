"""Routes answered straight from the HTTP protocol, with no ASGI task per request.

uvicorn serves every request by building an ASGI scope, a request-response cycle with its
event, and a task running the app, which then awaits ``receive`` and calls ``send`` twice:
about 11 µs of the server's CPU per request on the intake's hot route, a fifth of what a
durable single event costs the server (docs/PERFORMANCE.md, "Tenth pass"). A
:class:`DirectRoute` takes the request's headers and complete body as the parser hands them
over, and answers through a callback, now or when its work is done (the intake's group
commit): one write of the whole answer, in the bytes uvicorn would have written.

Only plain requests go this way: the route's method and exact path (no query string), HTTP/1.1
with keep-alive, a ``Content-Length`` within the route's bound (no chunked body, no
``Expect: 100-continue``, no upgrade), and nothing else in flight on the connection. Any other
request, or one the route declines once its body is in (an API key not in the cache, say), is
served by uvicorn and the ASGI app exactly as without this module: the body already read is
handed to the app's ``receive``. A request arriving on the connection while a direct answer is
pending waits in uvicorn's pipeline, so answers keep the requests' order; a graceful shutdown
lets a pending answer go out with ``connection: close``; a client gone before its answer gets
nothing written. The slow-client guard (:mod:`engine.http.slow_clients`) applies as to any
request.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol

from engine.http.access_log import log_request
from engine.metrics import HTTP_DIRECT_REQUESTS

Headers = list[tuple[bytes, bytes]]
# status, headers (lower-case names, as Starlette's raw_headers), body
Reply = tuple[int, Headers, bytes]
Respond = Callable[[Reply], None]
# (the request's headers, the body, respond) -> False to decline
DirectHandler = Callable[[Headers, bytes, Respond], bool]

log = logging.getLogger("herald.http")

_SERVED = HTTP_DIRECT_REQUESTS.labels("served")
_DECLINED = HTTP_DIRECT_REQUESTS.labels("declined")


@dataclass(frozen=True, slots=True)
class DirectRoute:
    method: bytes  # b"POST"
    path: bytes  # the exact request target, e.g. b"/v1/events"
    max_body: int  # larger declared bodies go to the app (which answers 413)
    handler: DirectHandler
    # (when the request began, respond): the client closed the connection before the body
    # was complete; respond (to nobody) as the app would, for its metrics and access log
    gone: Callable[[float, Respond], None]


class _Message:
    """Stands in for uvicorn's message event: nothing awaits a direct request's."""

    __slots__ = ()

    def set(self) -> None:
        pass


_NO_WAITER = _Message()


class DirectRequest:
    """A request answered directly, in uvicorn's ``cycle`` slot while it is in flight (so
    uvicorn queues what arrives behind it, and its shutdown and disconnect handling reach it:
    the attributes are those of uvicorn's ``RequestResponseCycle`` that the protocol reads
    and writes)."""

    __slots__ = (
        "body",
        "disconnected",
        "keep_alive",
        "message_event",
        "more_body",
        "response_complete",
        "response_started",
        "route",
        "started",
    )

    def __init__(self, route: DirectRoute) -> None:
        self.route = route
        self.started = time.perf_counter()
        self.body = bytearray()
        self.more_body = True
        self.keep_alive = True
        self.disconnected = False
        self.response_started = False
        self.response_complete = False
        self.message_event = _NO_WAITER


def direct_protocol(base: type[HttpToolsProtocol],
                    routes: Mapping[tuple[bytes, bytes], DirectRoute],
                    access_log: bool = False) -> type[HttpToolsProtocol]:
    """A subclass of ``base`` (the class :func:`engine.http.slow_clients.guarded_protocol`
    makes) that answers ``routes`` (by (method, path)) directly; ``access_log``: write the
    access log's line for each (:mod:`engine.http.access_log`; declined requests get theirs
    from the app's middleware)."""

    class DirectRoutesProtocol(base):  # type: ignore[misc, valid-type]
        cycle: Any  # uvicorn's RequestResponseCycle, or a DirectRequest

        def on_headers_complete(self) -> None:
            route = self._direct_route()
            if route is None:
                super().on_headers_complete()
                return
            self.headers_done()  # the slow-client guard's bookkeeping (the body's timeout)
            self.cycle = DirectRequest(route)

        def on_body(self, body: bytes) -> None:
            cycle = self.cycle
            # more_body: this request's, not an answered one left in the slot (uvicorn keeps
            # the slot as it is for a request it upgrades)
            if isinstance(cycle, DirectRequest) and cycle.more_body:
                cycle.body += body  # bounded: the parser stops at the declared length
                return
            super().on_body(body)

        def on_message_complete(self) -> None:
            cycle = self.cycle
            direct = isinstance(cycle, DirectRequest) and cycle.more_body
            super().on_message_complete()  # the guard's; uvicorn's marks the body complete
            if direct:
                self._serve_direct(cycle)

        def connection_lost(self, exc: Exception | None) -> None:
            request = self.cycle
            super().connection_lost(exc)
            if isinstance(request, DirectRequest) and request.more_body:
                request.route.gone(request.started,
                                   lambda reply: self._answer_direct(request, reply))

        def _direct_route(self) -> DirectRoute | None:
            route = routes.get((self.parser.get_method(), self.url))
            if route is None or self.expect_100_continue or self.pipeline:
                return None
            if self.cycle is not None and not self.cycle.response_complete:
                return None  # an answer is pending: this request waits in uvicorn's pipeline
            parser = self.parser
            if parser.get_http_version() != "1.1" or not parser.should_keep_alive() \
                    or parser.should_upgrade():
                return None
            length: bytes | None = None
            for name, value in self.headers:
                if name == b"content-length":
                    if length is not None:
                        return None
                    length = value
                elif name == b"transfer-encoding":
                    return None
            if length is None or not length.isdigit() or int(length) > route.max_body:
                return None
            return route

        def _serve_direct(self, request: DirectRequest) -> None:
            body = bytes(request.body)
            request.body = bytearray()
            try:
                handled = request.route.handler(
                    self.headers, body, lambda reply: self._answer_direct(request, reply))
            except Exception:  # a bug: the app serves the request (and reports its own)
                log.exception("a direct route failed; the app serves the request")
                handled = request.response_started
            if not handled:
                self._decline(request, body)

        def _decline(self, request: DirectRequest, body: bytes) -> None:
            """Serve the request through uvicorn and the ASGI app after all: the parser's
            state (method, URL, headers) is still this request's, and nothing was in flight
            before it (_direct_route), so uvicorn starts its task at once."""
            _DECLINED.inc()
            self.cycle = None
            HttpToolsProtocol.on_headers_complete(self)  # the cycle and its task
            cycle = self.cycle
            cycle.body = bytearray(body)
            cycle.more_body = False
            cycle.message_event.set()

        def _answer_direct(self, request: DirectRequest, reply: Reply) -> None:
            if request.response_complete:
                raise RuntimeError("a direct request was answered twice")
            request.response_started = request.response_complete = True
            _SERVED.inc()
            status, headers, body = reply
            if access_log:
                log_request(request.route.method.decode(), request.route.path.decode(), status,
                            len(body), request.started, self.client[0] if self.client else None)
            transport = self.transport
            if request.disconnected or transport.is_closing():
                return  # the client is gone: the answer goes nowhere
            head = [STATUS_LINE[status]]
            for name, value in self.server_state.default_headers:
                head += (name, b": ", value, b"\r\n")
            for name, value in headers:
                head += (name, b": ", value, b"\r\n")
            if not request.keep_alive:  # the server is shutting down
                head.append(b"connection: close\r\n")
            head += (b"\r\n", body)
            transport.write(b"".join(head))
            if not request.keep_alive:
                transport.close()
            self.on_response_complete()  # pipelined requests start; keep-alive timer

    return DirectRoutesProtocol

