"""The inbound SMTP server on loopback with real clients: who may be a recipient, size limits,
bare line endings and smuggling probes, and 250 only after the message row is committed."""

from __future__ import annotations

import asyncio
import base64
import smtplib
import ssl
import subprocess
import uuid
from pathlib import Path
from typing import Any

import aiosmtplib
import pytest

from engine.database import Database
from engine.link_keys import LinkKeys
from mta.inbound.service import InboundService
from mta.queue.return_paths import bounce_address
from mta.suppression.tokens import MAILTO_PREFIX, unsubscribe_token
from tests.support.inbound import (
    FEEDBACK,
    LINK_KEYS,
    RawSmtp,
    dsn,
    inbound_service,
    inbound_settings,
    port_of,
)
from tests.support.mta import fetch, identity_for, mta_settings
from tests.support.smtp_servers import SWAKS, requires_swaks, self_signed_pem

DOMAIN = "bounces.herald.test"
KEYS = LinkKeys("t1", {"t1": b"k" * 32})


async def verp(database: Database, message_id: uuid.UUID | None = None) -> str:
    identity = await identity_for(database, mta_settings())
    return bounce_address(identity.bounce_secret, message_id or uuid.uuid4(), DOMAIN)


def unsubscribe_address(keys: LinkKeys = KEYS, message_id: uuid.UUID | None = None) -> str:
    return f"{MAILTO_PREFIX}{unsubscribe_token(keys, message_id or uuid.uuid4())}@{DOMAIN}"


async def rcpt_reply(port: int, address: str) -> tuple[int, str]:
    async with aiosmtplib.SMTP(hostname="127.0.0.1", port=port, start_tls=False,
                               local_hostname="client.test") as client:
        await client.mail("")
        try:
            response = await client.rcpt(address)
        except aiosmtplib.SMTPRecipientRefused as refused:
            return refused.code, refused.message
        return response.code, response.message


async def stored_count(database: Database) -> int:
    return int((await fetch(database, "SELECT count(*) AS n FROM inbound_messages"))[0]["n"])


async def test_accepts_only_signed_addresses_of_the_bounce_domain(database: Database) -> None:
    good = await verp(database)
    token = good.split("@")[0][2:]
    tampered = f"b-{token[:20]}{'a' if token[20] != 'a' else 'b'}{token[21:]}@{DOMAIN}"
    # The last character carries unused bits: another spelling of the same signed bytes.
    same_bytes = next(f"b-{token[:-1]}{c}@{DOMAIN}" for c in "abcdefghijklmnopqrstuvwxyz234567"
                      if c != token[-1] and _b32(token[:-1] + c) == _b32(token))
    good_unsubscribe = unsubscribe_address()
    kid, _, body = good_unsubscribe.split("@")[0][len(MAILTO_PREFIX):].partition(".")
    unsubscribe_same_bytes = next(
        f"{MAILTO_PREFIX}{kid}.{body[:-1]}{c}@{DOMAIN}" for c in "abcdefghijklmnopqrstuvwxyz234567"
        if c != body[-1] and _b32(body[:-1] + c) == _b32(body))
    forged = bounce_address(b"not our secret", uuid.uuid4(), DOMAIN)
    foreign_key = unsubscribe_address(LinkKeys("zz", {"zz": b"z" * 32}))
    async with inbound_service(database) as service:
        port = port_of(service)
        accepted = {address: await rcpt_reply(port, address) for address in (
            good, good.upper(), FEEDBACK, good_unsubscribe)}
        refused = {address: await rcpt_reply(port, address) for address in (
            forged, tampered, f"b-abc@{DOMAIN}", f"b-{token}x@{DOMAIN}",
            good.replace(DOMAIN, "elsewhere.test"), "someone@gmail.com",
            f"someone%gmail.com@{DOMAIN}", f"postmaster2@{DOMAIN}", f"random@{DOMAIN}",
            foreign_key, f"{MAILTO_PREFIX}t1.abcdef@{DOMAIN}",
            unsubscribe_address().replace(DOMAIN, "elsewhere.test"), same_bytes,
            unsubscribe_same_bytes)}
    assert {code for code, _ in accepted.values()} == {250}
    assert {code for code, _ in refused.values()} == {550}
    assert "signature does not match" in refused[forged][1]
    assert "signature does not match" in refused[tampered][1]
    assert "malformed bounce token" in refused[f"b-abc@{DOMAIN}"][1]
    assert "Relaying denied" in refused["someone@gmail.com"][1]
    assert "No such mailbox" in refused[f"random@{DOMAIN}"][1]
    assert "unknown key" in refused[foreign_key][1]
    assert "not in canonical form" in refused[same_bytes][1]
    assert "not in canonical form" in refused[unsubscribe_same_bytes][1]


def _b32(token: str) -> bytes:
    return base64.b32decode(token.upper() + "=" * (-len(token) % 8))


async def test_smtplib_delivers_a_dsn_and_gets_250_with_the_stored_id(
        database: Database) -> None:
    address = await verp(database)
    async with inbound_service(database) as service:
        port = port_of(service)

        def send() -> tuple[int, bytes]:
            with smtplib.SMTP("127.0.0.1", port) as client:
                client.ehlo("mx.example.org")
                client.mail("<>")
                client.rcpt(address)
                return client.data(dsn(address, "ann@example.org", "5.1.1",
                                       "550 5.1.1 user unknown"))

        code, text = await asyncio.to_thread(send)
    rows = await fetch(database, "SELECT id, mail_from, rcpt_tos, helo, raw, recipients "
                                 "FROM inbound_messages")
    assert code == 250 and str(rows[0]["id"]) in text.decode()
    assert rows[0]["mail_from"] == "" and rows[0]["rcpt_tos"] == [address]
    assert rows[0]["helo"] == "mx.example.org"
    assert rows[0]["recipients"][0][1] == "bounce"
    assert b"\r\nStatus: 5.1.1\r\n" in bytes(rows[0]["raw"])


async def test_too_many_recipients_get_452(database: Database) -> None:
    async with inbound_service(database, max_recipients=2) as service:
        async with aiosmtplib.SMTP(hostname="127.0.0.1", port=port_of(service)) as client:
            await client.mail("")
            codes = [(await client.rcpt(unsubscribe_address())).code for _ in range(2)]
            with pytest.raises(aiosmtplib.SMTPRecipientRefused) as refused:
                await client.rcpt(unsubscribe_address())
    assert codes == [250, 250] and refused.value.code == 452


async def test_size_is_advertised_and_enforced(database: Database) -> None:
    address = await verp(database)
    big = b"Subject: big\r\n\r\n" + b"x" * 70 + b"\r\n" * 1 + (b"y" * 78 + b"\r\n") * 200
    async with inbound_service(database, max_message_size=8192) as service:
        port = port_of(service)
        async with aiosmtplib.SMTP(hostname="127.0.0.1", port=port) as client:
            await client.ehlo()
            assert client.esmtp_extensions["size"] == "8192"
            assert "auth" not in client.esmtp_extensions
            with pytest.raises(aiosmtplib.SMTPSenderRefused) as at_mail:
                await client.mail("", options=["SIZE=9000"])
            assert at_mail.value.code == 552
        client = await RawSmtp.connect(port)  # no SIZE parameter: caught at the end of DATA
        assert (await client.command("EHLO probe.test")).startswith("250")
        assert (await client.command("MAIL FROM:<>")).startswith("250")
        assert (await client.command(f"RCPT TO:<{address}>")).startswith("250")
        assert (await client.command("DATA")).startswith("354")
        await client.send(big + b".\r\n")
        assert (await client.reply()).startswith("552")
        assert (await client.command("QUIT")).startswith("221")
        await client.close()
    assert await stored_count(database) == 0


SMUGGLING_PROBES = [
    b"\n.\n",  # the classic: LF . LF
    b"\r\n.\n",  # CRLF . LF
    b"\n.\r\n",  # LF . CRLF
    b"\r.\r\n",  # CR . CRLF
    b"\r\n.\r",  # CRLF . CR
]


@pytest.mark.parametrize("end", SMUGGLING_PROBES, ids=repr)
async def test_smuggled_second_message_is_never_accepted(database: Database,
                                                         end: bytes) -> None:
    address = await verp(database)
    smuggled = (b"MAIL FROM:<>\r\nRCPT TO:<" + address.encode() + b">\r\nDATA\r\n"
                b"Subject: smuggled\r\n\r\nsmuggled\r\n.\r\n")
    async with inbound_service(database) as service:
        client = await RawSmtp.connect(port_of(service))
        await client.command("EHLO probe.test")
        await client.command("MAIL FROM:<>")
        await client.command(f"RCPT TO:<{address}>")
        assert (await client.command("DATA")).startswith("354")
        # As an attacker would hand it to a relay that ends DATA only at CRLF . CRLF: one
        # message to the relay, two to a receiver that takes a bare LF or CR as a line end.
        await client.send(b"Subject: first\r\n\r\nfirst" + end + smuggled)
        reply = await client.reply()
        after = await client.command("NOOP")  # nothing else is queued on the wire
        await client.command("QUIT")
        await client.close()
    assert reply.startswith("554 5.6.0") and "bare CR or LF" in reply
    assert after.startswith("250")
    assert await stored_count(database) == 0


async def test_bare_lf_inside_a_message_is_refused(database: Database) -> None:
    address = await verp(database)
    async with inbound_service(database) as service:
        client = await RawSmtp.connect(port_of(service))
        await client.command("HELO probe.test")
        await client.command("MAIL FROM:<>")
        await client.command(f"RCPT TO:<{address}>")
        await client.command("DATA")
        await client.send(b"Subject: x\r\n\r\none\ntwo\r\n.\r\n")
        bare_lf = await client.reply()
        await client.command("MAIL FROM:<>")
        await client.command(f"RCPT TO:<{address}>")
        await client.command("DATA")
        await client.send(b"Subject: x\r\n\r\none\r\ntwo\r\n.\r\n")
        clean = await client.reply()
        await client.close()
    assert bare_lf.startswith("554") and clean.startswith("250")
    assert await stored_count(database) == 1


async def test_no_250_when_the_insert_fails(database: Database) -> None:
    address = await verp(database)
    async with database.connection() as connection:
        await connection.execute("""
            CREATE FUNCTION refuse() RETURNS trigger LANGUAGE plpgsql AS
            $$ BEGIN RAISE EXCEPTION 'disk full (test)'; END $$;
            CREATE TRIGGER refuse BEFORE INSERT ON inbound_messages
            FOR EACH ROW EXECUTE FUNCTION refuse();""")
    async with inbound_service(database) as service:
        async with aiosmtplib.SMTP(hostname="127.0.0.1", port=port_of(service)) as client:
            with pytest.raises(aiosmtplib.SMTPDataError) as refused:
                await client.sendmail("", [address], dsn(address, "a@example.org", "5.1.1",
                                                        "550 user unknown"))
    assert refused.value.code == 451
    assert await stored_count(database) == 0


async def test_database_down_gets_451_never_250(database: Database, database_url: str) -> None:
    address = await verp(database)
    down = await Database.connect(database_url, min_size=1, max_size=2)
    service = InboundService(down, inbound_settings(), mta_settings(), LINK_KEYS)
    await service.start()
    try:
        await down.pool.close()  # every later acquire fails as if the server were gone
        async with aiosmtplib.SMTP(hostname="127.0.0.1", port=port_of(service)) as client:
            with pytest.raises(aiosmtplib.SMTPDataError) as refused:
                await client.sendmail("", [address], b"Subject: x\r\n\r\nx\r\n")
    finally:
        await service.stop()
    assert refused.value.code == 451 and refused.value.message.startswith("4.3.0")
    assert await stored_count(database) == 0


async def test_starttls_with_the_configured_certificate(database: Database,
                                                        tmp_path: Path) -> None:
    cert, key = self_signed_pem()
    (tmp_path / "cert.pem").write_bytes(cert)
    (tmp_path / "key.pem").write_bytes(key)
    address = await verp(database)
    service = InboundService(database, inbound_settings(), mta_settings(), LINK_KEYS,
                             (tmp_path / "cert.pem", tmp_path / "key.pem"))
    await service.start()
    try:
        context = ssl.create_default_context(cadata=cert.decode())
        async with aiosmtplib.SMTP(hostname="127.0.0.1", port=port_of(service),
                                   tls_context=context, start_tls=True) as client:
            assert client.is_connected and client.get_transport_info("sslcontext") is not None
            response, _ = await client.sendmail("", [address], b"Subject: x\r\n\r\nx\r\n")
    finally:
        await service.stop()
    assert response == {}
    assert await stored_count(database) == 1


@requires_swaks
async def test_swaks_sends_a_dsn(database: Database, tmp_path: Path) -> None:
    address = await verp(database)
    (tmp_path / "dsn.eml").write_bytes(dsn(address, "ann@example.org", "5.1.1",
                                           "550 5.1.1 user unknown"))
    async with inbound_service(database) as service:
        result: Any = await asyncio.to_thread(subprocess.run, [
            SWAKS, "--server", f"127.0.0.1:{port_of(service)}", "--from", "", "--to", address,
            "--data", str(tmp_path / "dsn.eml"), "--timeout", "10"],
            capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, result.stdout
    assert "250 2.0.0 Ok: queued as" in result.stdout
    assert await stored_count(database) == 1
