"""SMTP submission on loopback with real clients (smtplib, swaks, a raw socket): AUTH over TLS
only, the key's sender domains, SIZE, bare line endings, pipelining, many recipients, rate
limits, and 250 only once every copy is in the queue."""

from __future__ import annotations

import asyncio
import base64
import smtplib
import ssl
import subprocess
from email.message import EmailMessage
from pathlib import Path

import pytest

from engine.database import Database
from tests.support.inbound import RawSmtp
from tests.support.mta import fetch
from tests.support.smtp_servers import SWAKS, requires_swaks
from tests.support.submission import new_key, ports, submission_service

FROM = "Shop <news@shop.test>"


def client_context() -> ssl.SSLContext:
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context


def message(to: str = "ann@example.com", sender: str = FROM, body: str = "Hello Ann\n",
            **headers: str) -> EmailMessage:
    mail = EmailMessage()
    mail["From"] = sender
    mail["To"] = to
    mail["Subject"] = "Hello"
    for name, value in headers.items():
        mail[name.replace("_", "-")] = value
    mail.set_content(body)
    return mail


async def queued(database: Database) -> list[dict[str, object]]:
    return [dict(row) for row in await fetch(
        database, "SELECT id, header_from, recipient, source, state, body FROM "
                  "outbound_messages ORDER BY recipient")]


def starttls_send(port: int, key: str, mail: EmailMessage, mechanism: str = "PLAIN",
                  to: list[str] | None = None) -> dict[str, tuple[int, bytes]]:
    with smtplib.SMTP("127.0.0.1", port, timeout=10) as client:
        client.starttls(context=client_context())
        client.ehlo("client.test")
        client.user, client.password = "apikey", key
        client.auth(mechanism, getattr(client, f"auth_{mechanism.lower()}"))
        return client.send_message(mail, to_addrs=to)


async def test_starttls_auth_plain_queues_one_signed_copy_per_recipient(
        database: Database, tmp_path: Path) -> None:
    key = await new_key(database)
    async with submission_service(database, tmp_path) as service:
        port, _ = ports(service)
        refused = await asyncio.to_thread(
            starttls_send, port, key, message(Bcc="hidden@example.org"), "PLAIN",
            ["ann@example.com", "hidden@example.org"])
        assert refused == {}
        rows = await queued(database)  # the 250 came after the commit
    assert [(r["recipient"], r["source"], r["state"]) for r in rows] == [
        ("ann@example.com", "submission", "queued"), ("hidden@example.org", "submission",
                                                      "queued")]
    body = bytes(rows[0]["body"])  # type: ignore[arg-type]
    assert body.startswith(b"Received: from client.test\r\n\tby submit.herald.test (Herald)")
    assert b"\r\nBcc:" not in body and b"\r\nMessage-ID:" in body and b"\r\nDate:" in body
    assert rows[0]["header_from"] == "news@shop.test"


async def test_implicit_tls_and_auth_login(database: Database, tmp_path: Path) -> None:
    key = await new_key(database)

    def send(port: int) -> None:
        with smtplib.SMTP_SSL("127.0.0.1", port, context=client_context(), timeout=10) as c:
            c.login("apikey", key)  # smtplib prefers CRAM-MD5, PLAIN, LOGIN: force LOGIN
            c.send_message(message())

    def login(port: int) -> tuple[int, bytes]:
        with smtplib.SMTP_SSL("127.0.0.1", port, context=client_context(), timeout=10) as c:
            c.ehlo("client.test")
            c.user, c.password = "apikey", key
            return c.auth("LOGIN", c.auth_login)

    async with submission_service(database, tmp_path) as service:
        _, tls_port = ports(service)
        await asyncio.to_thread(send, tls_port)
        assert (await asyncio.to_thread(login, tls_port))[0] == 235
    assert len(await queued(database)) == 1


async def test_no_auth_without_tls_and_nothing_without_auth(database: Database,
                                                           tmp_path: Path) -> None:
    key = await new_key(database)
    plain = base64.b64encode(f"\0apikey\0{key}".encode()).decode()
    async with submission_service(database, tmp_path) as service:
        port, _ = ports(service)
        client = await RawSmtp.connect(port)
        ehlo = await client.command("EHLO client.test")
        assert "STARTTLS" in ehlo and "AUTH" not in ehlo
        for extension in ("SIZE 10485760", "8BITMIME", "SMTPUTF8", "PIPELINING"):
            assert extension in ehlo
        assert (await client.command(f"AUTH PLAIN {plain}")).startswith("538 5.7.11")
        assert (await client.command("MAIL FROM:<news@shop.test>")).startswith("530 5.7.0")
        assert (await client.command("RCPT TO:<ann@example.com>")).startswith("530 5.7.0")
        assert (await client.command("DATA")).startswith("530 5.7.0")
        await client.close()
    assert await queued(database) == []


async def test_a_configured_loopback_client_may_authenticate_in_plain_text(
        database: Database, tmp_path: Path) -> None:
    key = await new_key(database)

    def send(port: int) -> None:
        with smtplib.SMTP("127.0.0.1", port, timeout=10) as client:
            client.login("apikey", key)
            client.send_message(message())

    async with submission_service(database, tmp_path,
                                  allow_plain_auth_from=("127.0.0.0/8",)) as service:
        await asyncio.to_thread(send, ports(service)[0])
    assert len(await queued(database)) == 1


async def test_wrong_keys_are_refused_then_the_session_is_closed(database: Database,
                                                                tmp_path: Path) -> None:
    key = await new_key(database)
    reader_only = await new_key(database, "messages:read")
    wrong = key[:-4] + ("aaaa" if not key.endswith("aaaa") else "bbbb")

    def attempts(port: int) -> list[tuple[int, bytes]]:
        replies = []
        with smtplib.SMTP("127.0.0.1", port, timeout=10) as client:
            client.starttls(context=client_context())
            client.ehlo("client.test")
            for password in (wrong, reader_only, "not a key"):
                client.user, client.password = "apikey", password
                try:
                    client.auth("PLAIN", client.auth_plain)
                except smtplib.SMTPAuthenticationError as exc:
                    replies.append((exc.smtp_code, exc.smtp_error))
                except smtplib.SMTPServerDisconnected:
                    replies.append((0, b"disconnected"))
        return replies

    async with submission_service(database, tmp_path) as service:
        replies = await asyncio.to_thread(attempts, ports(service)[0])
    assert replies[0] == (535, b"5.7.8 Authentication credentials invalid (the password is "
                               b"an API key)")
    assert replies[1] == (535, b"5.7.8 This API key lacks the 'messages:write' scope")
    assert replies[2][0] in (421, 0)  # the third failure closes the session


async def test_foreign_sender_domains_are_refused(database: Database, tmp_path: Path) -> None:
    key = await new_key(database)

    def send(port: int, mail: EmailMessage, envelope_from: str) -> tuple[int, bytes]:
        with smtplib.SMTP("127.0.0.1", port, timeout=10) as client:
            client.starttls(context=client_context())
            client.login("apikey", key)
            try:
                client.send_message(mail, from_addr=envelope_from)
            except smtplib.SMTPSenderRefused as exc:
                return exc.smtp_code, exc.smtp_error
            except smtplib.SMTPDataError as exc:
                return exc.smtp_code, exc.smtp_error
        return 250, b""

    async with submission_service(database, tmp_path) as service:
        port = ports(service)[0]
        envelope = await asyncio.to_thread(send, port, message(), "ceo@bank.example")
        header = await asyncio.to_thread(send, port, message(sender="ceo@bank.example"),
                                         "news@shop.test")
        sender = await asyncio.to_thread(send, port, message(Sender="x@bank.example"),
                                         "news@shop.test")
    assert envelope[0] == 550 and b"MAIL FROM: this key may not send from bank.example" \
        in envelope[1]
    assert header[0] == 550 and b"From: this key may not send from bank.example" in header[1]
    assert sender[0] == 550 and b"Sender: this key may not send from" in sender[1]
    assert await queued(database) == []


async def test_size_is_advertised_and_enforced(database: Database, tmp_path: Path) -> None:
    key = await new_key(database)

    def send(port: int, body: str) -> tuple[int, bytes]:
        with smtplib.SMTP("127.0.0.1", port, timeout=10) as client:
            client.starttls(context=client_context())
            client.login("apikey", key)
            try:
                client.send_message(message(body=body))
            except smtplib.SMTPSenderRefused as exc:  # smtplib sends SIZE=
                return exc.smtp_code, exc.smtp_error
            except smtplib.SMTPDataError as exc:
                return exc.smtp_code, exc.smtp_error
        return 250, b""

    async with submission_service(database, tmp_path, max_message_size=4096,
                                  allow_plain_auth_from=("127.0.0.1",)) as service:
        port = ports(service)[0]
        too_big = await asyncio.to_thread(send, port, "x" * 70 + "\n" * 100 + "y" * 5000)
        fits = await asyncio.to_thread(send, port, "small")
        # Without a SIZE parameter the data itself is measured.
        client = await authenticated_raw(port, key)
        assert (await client.command("MAIL FROM:<news@shop.test>")).startswith("250")
        assert (await client.command("RCPT TO:<ann@example.com>")).startswith("250")
        assert (await client.command("DATA")).startswith("354")
        await client.send(b"From: news@shop.test\r\n\r\n" + (b"y" * 70 + b"\r\n") * 80
                          + b".\r\n")
        data_reply = await client.reply()
        await client.close()
    assert too_big[0] == 552 and fits[0] == 250
    assert data_reply.startswith("552")
    assert len(await queued(database)) == 1


async def authenticated_raw(port: int, key: str) -> RawSmtp:
    client = await RawSmtp.connect(port)
    await client.command("EHLO client.test")
    plain = base64.b64encode(f"\0apikey\0{key}".encode()).decode()
    assert (await client.command(f"AUTH PLAIN {plain}")).startswith("235")
    return client


async def test_bare_line_endings_are_refused(database: Database, tmp_path: Path) -> None:
    key = await new_key(database)
    async with submission_service(database, tmp_path,
                                  allow_plain_auth_from=("127.0.0.1",)) as service:
        client = await authenticated_raw(ports(service)[0], key)
        for data in (b"From: news@shop.test\r\nTo: ann@example.com\r\n\r\nHi\n.\nMAIL FROM:"
                     b"<news@shop.test>\r\n.\r\n",
                     b"From: news@shop.test\r\nTo: ann@example.com\r\n\r\nHi\rthere\r\n.\r\n"):
            assert (await client.command("MAIL FROM:<news@shop.test>")).startswith("250")
            assert (await client.command("RCPT TO:<ann@example.com>")).startswith("250")
            assert (await client.command("DATA")).startswith("354")
            await client.send(data)
            assert (await client.reply()).startswith("554 5.6.0")
        await client.close()
    assert await queued(database) == []


async def test_pipelined_transactions_and_fifty_recipients(database: Database,
                                                          tmp_path: Path) -> None:
    key = await new_key(database)
    recipients = [f"r{i:02}@example.com" for i in range(50)]
    data = b"From: news@shop.test\r\nTo: list@example.com\r\nSubject: Hi\r\n\r\nHi\r\n.\r\n"
    async with submission_service(database, tmp_path,
                                  allow_plain_auth_from=("127.0.0.1",)) as service:
        client = await authenticated_raw(ports(service)[0], key)
        group = b"".join(
            b"MAIL FROM:<news@shop.test>\r\n"
            + b"".join(f"RCPT TO:<{r}>\r\n".encode() for r in chunk)
            + b"DATA\r\n" for chunk in ([recipients[0]],))
        # One write: MAIL, RCPT, DATA; then the data and the next transaction in one more.
        await client.send(group)
        assert [await client.reply() for _ in range(2)][-1].startswith("250")
        assert (await client.reply()).startswith("354")
        await client.send(data + b"MAIL FROM:<news@shop.test>\r\n"
                          + b"".join(f"RCPT TO:<{r}>\r\n".encode() for r in recipients)
                          + b"DATA\r\n")
        first = await client.reply()
        assert first.startswith("250 2.0.0 Ok: queued as ")
        replies = [await client.reply() for _ in range(1 + len(recipients))]
        assert all(reply.startswith("250") for reply in replies)
        assert (await client.reply()).startswith("354")
        await client.send(data)
        last = await client.reply()
        assert last.startswith("250 2.0.0 Ok: 50 messages queued")
        assert len(await queued(database)) == 51  # committed before the reply
        assert (await client.command("QUIT")).startswith("221")
        await client.close()


async def test_recipients_beyond_the_key_rate_get_452(database: Database,
                                                      tmp_path: Path) -> None:
    key = await new_key(database)
    async with submission_service(database, tmp_path, allow_plain_auth_from=("127.0.0.1",),
                                  rate_limit_per_second=0.001, rate_limit_burst=3) as service:
        client = await authenticated_raw(ports(service)[0], key)
        await client.command("MAIL FROM:<news@shop.test>")
        replies = [await client.command(f"RCPT TO:<r{i}@example.com>") for i in range(5)]
        await client.close()
    assert [reply[:3] for reply in replies] == ["250", "250", "250", "452", "452"]
    assert replies[3].startswith("452 4.7.1")


async def test_non_ascii_addresses_need_smtputf8(database: Database, tmp_path: Path) -> None:
    key = await new_key(database)
    async with submission_service(database, tmp_path,
                                  allow_plain_auth_from=("127.0.0.1",)) as service:
        client = await authenticated_raw(ports(service)[0], key)
        await client.command("MAIL FROM:<news@shop.test>")
        refused = await client.command("RCPT TO:<jürgen@example.com>")
        await client.command("RSET")
        await client.command("MAIL FROM:<news@shop.test> SMTPUTF8 BODY=8BITMIME")
        accepted = await client.command("RCPT TO:<jürgen@example.com>")
        assert (await client.command("DATA")).startswith("354")
        await client.send("From: news@shop.test\r\nTo: jürgen@example.com\r\nSubject: Grüße"
                          "\r\n\r\nHallo Jürgen\r\n.\r\n".encode())
        stored = await client.reply()
        await client.close()
    assert refused.startswith("553 5.6.7")
    assert accepted.startswith("250") and stored.startswith("250"), stored
    assert [r["recipient"] for r in await queued(database)] == ["jürgen@example.com"]


@requires_swaks
async def test_swaks_with_starttls_and_auth(database: Database, tmp_path: Path) -> None:
    key = await new_key(database)

    def swaks(port: int, password: str, *extra: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [SWAKS, "--server", f"127.0.0.1:{port}", "--tls", "--auth", "LOGIN",
             "--auth-user", "apikey", "--auth-password", password,
             "--from", "news@shop.test", "--to", "ann@example.com",
             "--header", "From: Shop <news@shop.test>", "--ehlo", "client.test", *extra],
            capture_output=True, text=True, timeout=30)

    async with submission_service(database, tmp_path) as service:
        port = ports(service)[0]
        good = await asyncio.to_thread(swaks, port, key)
        wrong = await asyncio.to_thread(swaks, port, key + "x")
        no_tls = await asyncio.to_thread(
            subprocess.run, [SWAKS, "--server", f"127.0.0.1:{port}", "--auth", "PLAIN",
                             "--auth-user", "apikey", "--auth-password", key,
                             "--from", "news@shop.test", "--to", "ann@example.com"],
            capture_output=True, text=True, timeout=30)
    assert good.returncode == 0, good.stdout + good.stderr
    assert "250 2.0.0 Ok: queued as" in good.stdout
    assert wrong.returncode != 0 and "535 5.7.8" in wrong.stdout
    assert no_tls.returncode != 0 and "did not advertise authentication" in no_tls.stderr
    assert len(await queued(database)) == 1


@pytest.mark.parametrize("raw", [
    b"To: ann@example.com\r\nSubject: no From\r\n\r\nHi\r\n",
    b"From: news@shop.test\r\nAuthentication-Results: mx; dkim=pass\r\n\r\nHi\r\n",
])
async def test_raw_mime_rules_are_those_of_the_api(database: Database, tmp_path: Path,
                                                   raw: bytes) -> None:
    key = await new_key(database)
    async with submission_service(database, tmp_path,
                                  allow_plain_auth_from=("127.0.0.1",)) as service:
        client = await authenticated_raw(ports(service)[0], key)
        await client.command("MAIL FROM:<news@shop.test>")
        await client.command("RCPT TO:<ann@example.com>")
        await client.command("DATA")
        await client.send(raw + b".\r\n")
        reply = await client.reply()
        await client.close()
    assert reply.startswith("550 5.6.0 Message refused: raw")


async def test_trusted_clients_send_as_their_key_without_auth(database: Database,
                                                             tmp_path: Path) -> None:
    key = await new_key(database)
    key_id = key.split("_")[1]
    async with submission_service(database, tmp_path,
                                  trusted_clients={"127.0.0.0/8": key_id}) as service:
        client = await RawSmtp.connect(ports(service)[0])
        await client.command("EHLO client.test")
        foreign = await client.command("MAIL FROM:<x@bank.example>")
        assert (await client.command("MAIL FROM:<news@shop.test>")).startswith("250")
        assert (await client.command("RCPT TO:<ann@example.com>")).startswith("250")
        await client.command("DATA")
        await client.send(b"From: <news@shop.test>\r\nTo: <ann@example.com>\r\n\r\nHi\r\n.\r\n")
        stored = await client.reply()
        await client.close()
    assert foreign.startswith("550 5.7.1") and stored.startswith("250"), stored
    assert len(await queued(database)) == 1


async def test_submitted_mail_is_signed_and_delivered_like_api_mail(
        database: Database, database_url: str, tmp_path: Path) -> None:
    import re
    import uuid

    import dkim

    from mta.dkim.keys import write_keypair
    from mta.dkim.signer import DkimKeyConfig
    from mta.dkim.signing_pool import SigningPool
    from mta.sink import CaptureSink
    from tests.support.mta import delivery_service, mta_settings, wait_for_states

    key_file, zone_line = write_keypair("shop.test", "s1", "rsa", tmp_path / "dkim")
    record = "".join(re.findall(r'"([^"]*)"', zone_line)).encode()
    key = await new_key(database)
    async with submission_service(database, tmp_path) as service:
        await asyncio.to_thread(starttls_send, ports(service)[0], key,
                                message(to="ann@example.org"), "PLAIN",
                                ["ann@example.org", "bob@example.org"])
    ids = [uuid.UUID(str(row["id"])) for row in await queued(database)]
    signer = SigningPool([DkimKeyConfig("shop.test", "s1", key_file, "rsa")], processes=1)
    async with CaptureSink(keep=5) as sink:
        settings = mta_settings(routes={"example.org": f"127.0.0.1:{sink.port}"})
        async with delivery_service(database, settings, signer):
            states = await wait_for_states(database_url, ids)
    assert set(states.values()) == {"delivered"}
    assert sorted(m.rcpt_tos[0] for m in sink.messages) == ["ann@example.org",
                                                            "bob@example.org"]
    for delivered in sink.messages:
        assert dkim.DKIM(delivered.data).verify(
            dnsfunc=lambda name, timeout=5: record
            if name == b"s1._domainkey.shop.test." else None)
    async with database.connection() as connection:
        events = await connection.fetchval(
            "SELECT count(*) FROM events WHERE type = 'email_delivered'")
    assert events == 2
