"""The roles one ``herald run`` process can play, each startable alone with ``--role``."""

from __future__ import annotations

import logging
from typing import Protocol

from starlette.routing import Route

from engine.database import Database
from engine.http.app import FastPaths, build_app
from engine.http.auth import Authenticator
from engine.http.contacts_routes import routes as contact_routes
from engine.http.endpoint import HttpContext
from engine.http.events_routes import routes as event_routes
from engine.http.openapi import build_document, engine_paths
from engine.http.ratelimit import RateLimiter
from engine.http.server import HttpServer
from engine.intake.writer import EventWriter
from herald.settings import Settings

log = logging.getLogger("herald.roles")

VERSION = "0.1.0"


class Role(Protocol):
    name: str

    async def start(self) -> None: ...

    async def stop(self) -> None: ...


class HttpRole:
    """The HTTP API: event intake, contacts, tracking pixel, health and metrics."""

    name = "http"

    def __init__(self, settings: Settings, database: Database) -> None:
        self.settings = settings
        self.database = database
        self.writer = EventWriter(database, settings.intake)
        limiter = RateLimiter(settings.http.rate_limit_per_second, settings.http.rate_limit_burst)
        context = HttpContext(settings.http, database, self.writer,
                              Authenticator(database, limiter))
        routes = [*event_routes(context), *contact_routes(context)]
        app = build_app(database, routes, build_document(engine_paths(), VERSION))
        hot = {(method, route.path): route.endpoint for route in routes
               if isinstance(route, Route) and route.path == "/v1/events"
               for method in (route.methods or ())}
        self.app = FastPaths(app, hot)
        self.server = HttpServer(self.app, settings.http.listen,
                                 graceful_timeout=settings.engine.shutdown_timeout / 2)

    async def start(self) -> None:
        await self.writer.start()
        await self.server.start()
        log.info("http listening", extra={"address": f"{self.settings.http.listen.host}:"
                                                     f"{self.server.port}"})

    async def stop(self) -> None:
        await self.server.stop()  # stop accepting; in-flight requests finish
        await self.writer.stop()  # commit what they queued


ROLE_NAMES = ("http",)


def build_roles(names: list[str], settings: Settings, database: Database) -> list[Role]:
    roles: list[Role] = []
    for name in names:
        if name == "http":
            roles.append(HttpRole(settings, database))
        else:
            raise ValueError(f"unknown role {name!r} (known: {', '.join(ROLE_NAMES)})")
    return roles
