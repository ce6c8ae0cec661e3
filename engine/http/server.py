"""Serve an ASGI app with uvicorn inside Herald's own event loop and signal handling."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import Generator, Sequence
from typing import Any

import uvicorn

from engine.http.direct_routes import DirectRoute, direct_protocol
from engine.http.slow_clients import ClientLimits, guarded_protocol
from engine.values import HostPort


class _Server(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        # Herald's lifecycle owns SIGTERM/SIGINT; uvicorn must not install its own handlers.
        yield


class HttpServer:
    """Bind first (so the port is known and readiness is real), then serve until stopped."""

    def __init__(self, app: Any, listen: HostPort, graceful_timeout: float = 5.0,
                 reuse_port: bool = False, limits: ClientLimits | None = None,
                 keep_alive_timeout: float = 30.0, direct_routes: Sequence[DirectRoute] = (),
                 access_log: bool = False) -> None:
        """``direct_routes``: answered from the protocol (:mod:`engine.http.direct_routes`);
        ``access_log``: whether the app logs requests (so do the direct routes then)."""
        family = socket.AF_INET6 if ":" in listen.host else socket.AF_INET
        self.socket = socket.socket(family, socket.SOCK_STREAM)
        self.socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if reuse_port:
            self.socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        self.socket.bind((listen.host, listen.port))
        self.socket.listen(2048)
        self.socket.setblocking(False)
        self.port: int = self.socket.getsockname()[1]
        protocol = guarded_protocol(limits or ClientLimits())
        if direct_routes:
            protocol = direct_protocol(protocol, {(route.method, route.path): route
                                                  for route in direct_routes}, access_log)
        config = uvicorn.Config(
            app, loop="none", http=protocol, lifespan="off",
            access_log=False, log_config=None,
            timeout_graceful_shutdown=max(1, round(graceful_timeout)), backlog=2048,
            timeout_keep_alive=max(1, round(keep_alive_timeout)), proxy_headers=False,
            server_header=False,
        )
        self._server = _Server(config)
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self._task = asyncio.create_task(self._server.serve(sockets=[self.socket]),
                                         name="http-server")
        while not self._server.started:
            if self._task.done():
                await self._task  # surfaces the start-up error
                raise RuntimeError("the HTTP server stopped during start-up")
            await asyncio.sleep(0.01)

    async def stop(self) -> None:
        """Stop accepting, let in-flight requests finish (bounded), then close."""
        self._server.should_exit = True
        if self._task is not None:
            await self._task
            self._task = None
