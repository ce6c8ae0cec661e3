"""The roles one ``herald run`` process can play, each startable alone with ``--role``."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from datetime import timedelta
from typing import Any, Protocol

from starlette.routing import BaseRoute, Route

from automation import api as automation_api
from automation.content.link_policy import normalize_domains
from automation.content.templates import TemplateSet
from automation.live.service import AutomationService
from automation.loading.catalog import Catalog
from automation.model.goals import Goals
from automation.privacy import AutomationRecords
from automation.runtime.guards import parse_quiet_hours
from automation.runtime.interpreter import Policy
from automation.stats import api as stats_api
from automation.stats.follower import StatsFollower
from automation.stores.postgres import PgStore
from automation.tools.simulation_pool import SimulationPool
from engine import gc_policy
from engine.database import Database
from engine.errors import ConfigError
from engine.http import privacy_routes, segment_routes
from engine.http.access_log import AccessLog
from engine.http.app import FastPaths, build_app
from engine.http.auth import Authenticator
from engine.http.contacts_routes import routes as contact_routes
from engine.http.direct_routes import DirectRoute
from engine.http.endpoint import HttpContext
from engine.http.events_routes import direct_route as direct_event_route
from engine.http.events_routes import routes as event_routes
from engine.http.openapi import build_document, engine_paths, merge_paths
from engine.http.ratelimit import RateLimiter
from engine.http.server import HttpServer
from engine.http.slow_clients import ClientLimits
from engine.intake.writer import EventWriter
from engine.link_keys import LinkKeys
from engine.notifications import Notifications
from engine.outbox import admin as outbox_admin
from engine.outbox import api as outbox_api
from engine.outbox.service import OutboxService
from engine.outbox.transport import OutboundPolicy
from engine.privacy.service import Privacy
from herald.retention import RetentionRole
from herald.settings import Settings, resolve_path
from mta import api as mta_api
from mta.delivery.service import DeliveryService
from mta.dkim.signer import DkimKeyConfig
from mta.dkim.signing_pool import SigningPool
from mta.dns.resolver import MxResolver
from mta.dns.routing import Router
from mta.inbound.service import InboundService
from mta.privacy import MtaRecords
from mta.queue import api as queue_api
from mta.queue.enqueue import QueueIdentity, load_bounce_secret
from mta.queue.overview import LimitDefaults
from mta.senders import SenderPolicy
from mta.settings import MtaSettings
from mta.shaping.rules import ShapingRule, load_rules
from mta.submission.service import SubmissionService
from mta.suppression import api as suppression_api
from mta.suppression import one_click
from mta.suppression.api import contact_suppression
from mta.suppression.unsubscribe import load_link_keys
from mta.tls.service import TransportSecurity
from mta.tracking import routes as tracking
from mta.tracking.rewrite import tracker

log = logging.getLogger("herald.roles")

VERSION = "0.1.0"


class Role(Protocol):
    name: str

    async def start(self) -> None: ...

    async def stop(self) -> None: ...


async def queue_identity(settings: Settings, database: Database) -> QueueIdentity:
    async with database.connection() as connection:
        secret = await load_bounce_secret(connection, settings.mta.bounce_secret)
    return QueueIdentity(settings.mta.bounce_domain, secret,
                         timedelta(seconds=settings.mta.expire))


def load_catalog(settings: Settings) -> Catalog:
    """The workflows and templates; a missing default directory means no workflows."""
    workflows_dir = resolve_path(settings, settings.automation.workflows_dir)
    templates_dir = resolve_path(settings, settings.automation.templates_dir)
    if not workflows_dir.is_dir():
        log.warning("no workflows directory; automation has nothing to run",
                    extra={"path": str(workflows_dir)})
        return Catalog([], TemplateSet.from_sources({}))
    return Catalog.load(workflows_dir, templates_dir)


def privacy_service() -> Privacy:
    """GDPR export and erase over every layer's records (the engine's come last)."""
    return Privacy([AutomationRecords(), MtaRecords()])


async def link_keys(settings: Settings, database: Database) -> LinkKeys:
    async with database.connection() as connection:
        return await load_link_keys(connection, settings.http.link_keys)


class HttpRole:
    """The HTTP API: event intake, contacts, pixel, message injection, health and metrics."""

    name = "http"

    def __init__(self, settings: Settings, database: Database,
                 catalog: Catalog | None = None) -> None:
        self.settings = settings
        self.database = database
        self.catalog = catalog
        self.writer = EventWriter(database, settings.intake)
        self.simulations = SimulationPool(settings.automation.simulation_workers,
                                          settings.automation.simulation_queue)
        self.server: HttpServer | None = None
        self.app: Any = None
        self.direct_routes: list[DirectRoute] = []  # answered from the protocol (build's)

    async def build(self) -> Any:
        settings = self.settings
        limiter = RateLimiter(settings.http.rate_limit_per_second, settings.http.rate_limit_burst)
        client_limiter = RateLimiter(settings.http.pixel_client_rate_per_second,
                                     settings.http.pixel_client_rate_burst)
        context = HttpContext(settings.http, self.database, self.writer,
                              Authenticator(self.database, limiter,
                                            client_limiter=client_limiter))
        identity = await queue_identity(settings, self.database)
        catalog = self.catalog or load_catalog(settings)
        keys = await link_keys(settings, self.database)
        routes: list[BaseRoute] = [
            *event_routes(context), *segment_routes.routes(context),
            *contact_routes(context, [contact_suppression]),
            *mta_api.routes(context, identity, settings.mta.max_message_size,
                            SenderPolicy.from_dkim([key.domain for key in settings.mta.dkim]),
                            tracker(settings.http.public_url, keys)
                            if settings.http.public_url and settings.tracking.enabled else None),
            *suppression_api.routes(context), *one_click.routes(context, keys),
            *tracking.routes(context, keys, settings.tracking),
            *queue_api.routes(context, shaping_rules(settings), limit_defaults(settings)),
            *automation_api.routes(context, catalog, settings.automation, self.simulations),
            *stats_api.routes(context, catalog, settings.stats),
            *outbox_api.routes(context, outbox_admin.Vetter.from_settings(settings.webhooks)),
            *privacy_routes.routes(context, privacy_service(), keys, settings.privacy)]
        document = build_document(merge_paths({
            **engine_paths(), **segment_routes.openapi_paths(), **mta_api.openapi_paths(),
            **suppression_api.openapi_paths(), **tracking.openapi_paths(),
            **queue_api.openapi_paths(), **automation_api.openapi_paths(),
            **stats_api.openapi_paths(), **outbox_api.openapi_paths()},
            privacy_routes.openapi_paths()), VERSION)
        app = build_app(self.database, routes, document)
        hot = {(method, route.path): route.endpoint for route in routes
               if isinstance(route, Route) and route.path in ("/v1/events", "/v1/batch")
               for method in (route.methods or ())}
        fast = FastPaths(app, hot)
        self.direct_routes = [direct_event_route(context)] if settings.http.direct_intake else []
        return AccessLog(fast, app.routes) if settings.http.access_log else fast

    async def start(self) -> None:
        self.app = await self.build()
        http = self.settings.http
        self.server = HttpServer(self.app, http.listen,
                                 graceful_timeout=self.settings.engine.shutdown_timeout / 2,
                                 reuse_port=http.reuse_port,
                                 limits=ClientLimits(http.header_timeout, http.body_timeout,
                                                     http.max_header_size,
                                                     http.max_connections_per_client),
                                 keep_alive_timeout=http.keep_alive_timeout,
                                 direct_routes=self.direct_routes, access_log=http.access_log)
        await self.writer.start()
        # what start-up built lives as long as the process: out of the collector's way before
        # the first request (herald run settles again once every role has started)
        gc_policy.tune()
        gc_policy.settle()
        await self.server.start()
        log.info("http listening", extra={"address": f"{self.settings.http.listen.host}:"
                                                     f"{self.server.port}"})

    async def stop(self) -> None:
        if self.server is not None:
            await self.server.stop()  # stop accepting; in-flight requests finish
        await self.writer.stop()  # commit what they queued
        await asyncio.to_thread(self.simulations.close)


def build_signer(settings: Settings) -> SigningPool | None:
    if not settings.mta.dkim:
        log.warning("no [[mta.dkim]] keys configured: mail goes out unsigned")
        return None
    configs = [DkimKeyConfig(key.domain, key.selector, resolve_path(settings, key.key_file),
                             key.algorithm) for key in settings.mta.dkim]
    return SigningPool(configs, processes=settings.mta.dkim_workers)


def shaping_rules(settings: Settings) -> tuple[ShapingRule, ...]:
    if settings.mta.shaping_file is None:
        return ()
    path = resolve_path(settings, settings.mta.shaping_file)
    if not path.exists():
        log.warning("shaping file not found; using [mta] defaults for every site",
                    extra={"path": str(path)})
        return ()
    return load_rules(path)


def limit_defaults(settings: Settings) -> LimitDefaults:
    """Where a site's limits come from when no shaping rule sets them (queue explain)."""
    shaping = settings.mta.shaping_file
    return LimitDefaults(settings.mta.max_connections_per_site,
                         settings.mta.max_messages_per_connection,
                         str(resolve_path(settings, shaping)) if shaping else "no shaping file")


class MtaRole:
    """Delivery: the outbound queue to the recipients' MX hosts."""

    name = "mta"

    def __init__(self, settings: Settings, database: Database,
                 held: str | None = None, notifications: Notifications | None = None) -> None:
        """``held``: why delivery must not start (mail stays queued, nothing is lost);
        ``notifications``: the process's LISTEN connection."""
        mta = mta_settings(settings)
        self.held = held
        resolver = MxResolver(
            nameserver=(mta.resolver.host, mta.resolver.port) if mta.resolver else None,
            timeout=mta.dns_timeout)
        self.security = transport_security(settings, database, resolver)
        self.service = DeliveryService(database, mta, Router(mta, resolver),
                                       build_signer(settings), shaping_rules(settings),
                                       self.security.policies, self.security.observer,
                                       notifications)
        self.resolver = resolver
        self.grace = settings.engine.shutdown_timeout / 2

    async def start(self) -> None:
        if self.held is not None:
            log.error("mta: delivery held, messages stay queued: " + self.held)
            return
        await self.security.start()
        await self.service.start()
        log.info("mta delivering", extra={"owner": self.service.owner})

    async def stop(self) -> None:
        if self.held is None:
            await self.service.stop(self.grace)
            await self.security.stop()
        await self.resolver.aclose()


def mta_settings(settings: Settings) -> MtaSettings:
    """``[mta]`` with its file paths resolved against the config file."""
    mta = settings.mta
    if mta.tls_ca_file is not None:
        mta = dataclasses.replace(mta, tls_ca_file=resolve_path(settings, mta.tls_ca_file))
    return mta


def transport_security(settings: Settings, database: Database,
                       resolver: MxResolver) -> TransportSecurity:
    """MTA-STS, DANE and TLS-RPT for the mta role and ``herald tls``."""
    return TransportSecurity(database, mta_settings(settings), resolver,
                             lambda: queue_identity(settings, database),
                             OutboundPolicy.from_settings(settings.webhooks))


class AutomationRole:
    """Workflows: follow the event log, fire triggers, advance durable runs."""

    name = "automation"

    def __init__(self, settings: Settings, database: Database,
                 catalog: Catalog | None = None) -> None:
        self.settings = settings
        self.database = database
        self.catalog = catalog or load_catalog(settings)
        try:
            self.policy = Policy(self.catalog.templates, settings.automation.frequency_cap,
                                 parse_quiet_hours(settings.automation.quiet_hours),
                                 normalize_domains(settings.automation.link_domains),
                                 settings.privacy.require_consent)
        except ValueError as exc:
            raise ConfigError(f"automation.{exc}") from None
        self.service: AutomationService | None = None
        self.stats = StatsFollower(database, settings.stats, Goals(
            settings.stats.goal, {w.name: w.goal for w in self.catalog.current.values()}))

    async def start(self) -> None:
        identity = await queue_identity(self.settings, self.database)
        keys = await link_keys(self.settings, self.database)
        if not self.settings.http.public_url:
            log.warning("[http] public_url is not set: automation sends are skipped, since "
                        "every message must carry a working unsubscribe link; set it to the "
                        "URL recipients reach this server at (e.g. https://mail.example.com)",
                        extra={"key": "http.public_url"})
        store = PgStore(self.database, self.catalog, self.policy, self.settings.automation,
                        identity, keys, self.settings.http.public_url,
                        track=self.settings.tracking.enabled)
        self.service = AutomationService(self.database, self.catalog, store,
                                         self.settings.automation)
        await self.service.start()
        self.stats.start()
        log.info("automation started", extra={"workflows": sorted(self.catalog.current)})

    async def stop(self) -> None:
        await self.stats.stop()
        if self.service is not None:
            await self.service.stop()


class InboundRole:
    """Inbound SMTP: DSNs, feedback reports and mailto unsubscribes, stored then processed."""

    name = "inbound"

    def __init__(self, settings: Settings, database: Database) -> None:
        inbound = settings.inbound
        tls = None
        if inbound.tls_cert is not None and inbound.tls_key is not None:
            tls = (resolve_path(settings, inbound.tls_cert),
                   resolve_path(settings, inbound.tls_key))
        self.service = InboundService(database, inbound, settings.mta, settings.http.link_keys,
                                      tls)

    async def start(self) -> None:
        await self.service.start()

    async def stop(self) -> None:
        await self.service.stop()


class SubmissionRole:
    """SMTP submission (587 STARTTLS, 465 implicit TLS) for mailers holding an API key."""

    name = "submission"

    def __init__(self, settings: Settings, database: Database) -> None:
        self.settings = settings
        self.database = database
        self.service: SubmissionService | None = None

    async def start(self) -> None:
        settings = self.settings
        submission = settings.submission
        tls = None
        if submission.tls_cert is not None and submission.tls_key is not None:
            tls = (resolve_path(settings, submission.tls_cert),
                   resolve_path(settings, submission.tls_key))
        if submission.max_message_size > settings.mta.max_message_size:
            raise ConfigError("submission.max_message_size: at most [mta] max_message_size "
                              f"({settings.mta.max_message_size})")
        self.service = SubmissionService(
            self.database, submission, await queue_identity(settings, self.database),
            SenderPolicy.from_dkim([key.domain for key in settings.mta.dkim]),
            settings.mta.ehlo_name, tls)
        await self.service.start()

    async def stop(self) -> None:
        if self.service is not None:
            await self.service.stop()


class OutboxRole:
    """Outbound HTTP: delivers the outbox (webhook steps, outcome webhooks) and turns outcome
    events in the log into outbox rows. Several processes may run it at once."""

    name = "outbox"

    def __init__(self, settings: Settings, database: Database,
                 notifications: Notifications | None = None) -> None:
        self.service = OutboxService(database, settings.webhooks, notifications)
        self.grace = settings.engine.shutdown_timeout / 2

    async def start(self) -> None:
        await self.service.start()

    async def stop(self) -> None:
        await self.service.stop(self.grace)


ROLE_NAMES = ("http", "mta", "automation", "inbound", "submission", "outbox")


def build_roles(names: list[str], settings: Settings, database: Database,
                hold_delivery: str | None = None,
                notifications: Notifications | None = None) -> list[Role]:
    """``notifications``: the process's one LISTEN connection, shared by its roles
    (:mod:`engine.notifications`)."""
    roles: list[Role] = []
    # Workflows and templates are loaded once and shared by the roles that need them.
    catalog = load_catalog(settings) if {"http", "automation"} & set(names) else None
    for name in names:
        if name == "http":
            roles.append(HttpRole(settings, database, catalog))
        elif name == "mta":
            roles.append(MtaRole(settings, database, hold_delivery, notifications))
            # Partitions ahead, old partitions and bodies: one process does it (the mta one).
            roles.append(RetentionRole(settings.retention, database))
        elif name == "automation":
            roles.append(AutomationRole(settings, database, catalog))
        elif name == "inbound":
            roles.append(InboundRole(settings, database))
        elif name == "submission":
            roles.append(SubmissionRole(settings, database))
        elif name == "outbox":
            roles.append(OutboxRole(settings, database, notifications))
        else:
            raise ValueError(f"unknown role {name!r} (known: {', '.join(ROLE_NAMES)})")
    return roles
