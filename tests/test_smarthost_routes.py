"""Smarthost routes: the forms of a route target, and delivery through a real aiosmtpd
smarthost over implicit TLS and STARTTLS with AUTH (verified certificate, credentials only over
TLS, a refused password defers instead of bouncing)."""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword, Session

from engine.database import Database
from engine.errors import ConfigError
from engine.settings_loader import load_sections
from mta.relays import Relay
from mta.settings import MtaSettings
from tests.support.mta import (
    delivery_service,
    fetch,
    identity_for,
    mta_settings,
    queue_message,
    wait_for_states,
)
from tests.support.submission import certificate_files

PASSWORD = "s3cret pass"


def test_route_targets_in_every_form() -> None:
    assert Relay.parse("127.0.0.1:2525") == Relay("127.0.0.1", 2525)
    relay = Relay.parse("smtps://apikey%40shop.example@smtp.example.com", "pw")
    assert (relay.host, relay.port, relay.tls, relay.login) == (
        "smtp.example.com", 465, "implicit", ("apikey@shop.example", "pw"))
    assert Relay.parse("smtp://relay.example.com").port == 587
    assert Relay.parse("smtp://u@relay.example.com:2587", "pw").tls == "starttls"
    assert "pw" not in repr(relay) and str(relay) == \
        "smtps://apikey@shop.example@smtp.example.com:465"
    for bad, words in [("smtps://u:pw@h", "credential:NAME"), ("http://h", "scheme"),
                       ("smtps://u@h", "needs a password"), ("smtp://h/x", "only"),
                       ("smtps://", "no host")]:
        with pytest.raises(ValueError, match=words):
            Relay.parse(bad)


def test_routes_from_the_config_file_and_credentials(tmp_path: Path) -> None:
    (tmp_path / "credentials").mkdir()
    (tmp_path / "credentials" / "relay-password").write_text("from-a-credential\n")
    config = tmp_path / "herald.toml"
    config.write_text('''
[mta]
route = { url = "smtps://apikey@smtp.provider.example", password = "credential:relay-password" }
[mta.routes]
"example.org" = "127.0.0.1:2525"
"example.net" = "smtp://relay.example.net"
''')
    mta = load_sections({"mta": MtaSettings}, config, environ={})["mta"]
    assert mta.route is not None and mta.route.login == ("apikey", "from-a-credential")
    assert mta.route_for("example.org") == Relay("127.0.0.1", 2525)
    assert mta.route_for("example.net") == Relay("relay.example.net", 587, "starttls")
    assert mta.route_for("other.example") is mta.route
    env = load_sections({"mta": MtaSettings}, None, environ={
        "HERALD_MTA_ROUTE": "smtps://relay.example.com:2465"})["mta"]
    assert env.route == Relay("relay.example.com", 2465, "implicit")
    config.write_text('[mta]\nroute = "smtps://u@h.example"\n')
    with pytest.raises(ConfigError, match=r"mta.route: .*needs a password"):
        load_sections({"mta": MtaSettings}, config, environ={})


class Capture:
    def __init__(self) -> None:
        self.messages: list[tuple[str | None, bytes]] = []
        self.logins: list[bytes] = []

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        login = session.auth_data.login if isinstance(session.auth_data, LoginPassword) \
            else None
        self.messages.append((login.decode() if login else None,
                              envelope.original_content or b""))
        return "250 2.0.0 Ok: relayed"


def authenticator(capture: Capture) -> Any:
    def check(server: SMTP, session: Session, envelope: Envelope, mechanism: str,
              data: Any) -> AuthResult:
        assert isinstance(data, LoginPassword)
        capture.logins.append(data.login)
        return AuthResult(success=data.password == PASSWORD.encode(), handled=False,
                          auth_data=data)
    return check


@asynccontextmanager
async def smarthost(tmp_path: Path, implicit: bool) -> AsyncIterator[tuple[int, Capture]]:
    cert, key = certificate_files(tmp_path)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    capture = Capture()
    loop = asyncio.get_running_loop()
    server = await loop.create_server(
        lambda: SMTP(capture, hostname="relay.test", authenticator=authenticator(capture),
                     auth_required=True, auth_require_tls=not implicit,
                     tls_context=None if implicit else context, loop=loop),
        "127.0.0.1", 0, ssl=context if implicit else None)
    try:
        yield server.sockets[0].getsockname()[1], capture
    finally:
        server.close()
        await server.wait_closed()


def routed(tmp_path: Path, url: str, password: str, trusted: bool = True) -> MtaSettings:
    return mta_settings(route=Relay.parse(url, password),
                        tls_ca_file=tmp_path / "cert.pem" if trusted else None)


@pytest.mark.parametrize("implicit", [True, False], ids=["smtps", "starttls"])
async def test_delivery_through_an_authenticated_smarthost(
        database: Database, database_url: str, tmp_path: Path, implicit: bool) -> None:
    async with smarthost(tmp_path, implicit) as (port, capture):
        scheme = "smtps" if implicit else "smtp"
        settings = routed(tmp_path, f"{scheme}://apikey@127.0.0.1:{port}", PASSWORD)
        identity = await identity_for(database, settings)
        message_id = await queue_message(database, identity, "ann@example.com")
        async with delivery_service(database, settings):
            states = await wait_for_states(database_url, [message_id])
    assert states == {message_id: "delivered"}
    assert [login for login, _ in capture.messages] == ["apikey"]
    [attempt] = await fetch(database, "SELECT tls_policy FROM delivery_attempts")
    assert attempt["tls_policy"] == \
        f"route: {'implicit tls' if implicit else 'starttls'}, verified"


async def test_a_refused_password_defers_and_an_unverified_server_gets_no_password(
        database: Database, database_url: str, tmp_path: Path) -> None:
    async with smarthost(tmp_path, True) as (port, capture):
        wrong = routed(tmp_path, f"smtps://apikey@127.0.0.1:{port}", "wrong")
        identity = await identity_for(database, wrong)
        first = await queue_message(database, identity, "ann@example.com")
        async with delivery_service(database, wrong):
            assert await wait_for_states(database_url, [first], ("deferred",)) == \
                {first: "deferred"}
        logins = len(capture.logins)  # aiosmtplib tries PLAIN, then LOGIN
        untrusted = routed(tmp_path, f"smtps://apikey@127.0.0.1:{port}", PASSWORD,
                           trusted=False)
        second = await queue_message(database, identity, "bob@example.com")
        async with delivery_service(database, untrusted):
            assert await wait_for_states(database_url, [second], ("deferred",)) == \
                {second: "deferred"}
    rows = {row["recipient"]: row for row in await fetch(
        database, "SELECT recipient, last_reply FROM outbound_messages")}
    assert "AUTH refused: 535" in rows["ann@example.com"]["last_reply"]
    assert "certificate" in rows["bob@example.com"]["last_reply"]
    assert logins >= 1 and set(capture.logins) == {b"apikey"}
    assert len(capture.logins) == logins and capture.messages == []  # no password sent
