"""`herald init` writes a config, keys and secrets and prints the DNS records; `herald check`
reads them back from a real DNS server on loopback (zones built from what init printed) and
says what is wrong and how to fix it."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import uuid
from pathlib import Path

import asyncpg
import pytest

from herald.settings import load_settings
from tests.support import postgres as test_postgres
from tests.support.dns_server import DnsTestServer, zone_text

DOMAIN = "shop.test"
IP = "127.0.0.1"
REVERSE_ZONE = "0.0.127.in-addr.arpa"


def env(**extra: str) -> dict[str, str]:
    clean = {k: v for k, v in os.environ.items()
             if not k.startswith("HERALD_") and k != "CREDENTIALS_DIRECTORY"}
    return {**clean, "HERALD_ENGINE_LOG_LEVEL": "warning", **extra}


def herald(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "herald.cli", *args], env=env(),
                          capture_output=True, text=True, timeout=120)


async def herald_async(*args: str, **extra: str) -> tuple[int, str, str]:
    """Run herald while this loop keeps serving DNS."""
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "herald.cli", *args, env=env(**extra),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(process.communicate(), 120)
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


@pytest.fixture(scope="module")
def initialised(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("init") / "etc-herald"
    result = herald("init", "--domain", DOMAIN, "--dir", str(directory), "--ip", IP)
    assert result.returncode == 0, result.stderr
    assert "publish these DNS records" in result.stdout
    return directory


def published_zones(directory: Path, drop: tuple[str, ...] = (),
                    replace: dict[str, str] | None = None) -> dict[str, str]:
    """Zone text from the records `herald init` wrote (less ``drop``, with ``replace``)."""
    forward: list[str] = []
    reverse: list[str] = []
    for line in (directory / "dns-records.txt").read_text().splitlines():
        if line.startswith(";") or any(line.startswith(name) for name in drop):
            continue
        name = line.split()[0]
        line = (replace or {}).get(name, line)
        (reverse if name.endswith(".in-addr.arpa.") else forward).append(line)
    return {DOMAIN: zone_text("\n".join(forward)), REVERSE_ZONE: zone_text("\n".join(reverse))}


def test_init_writes_a_config_that_loads_with_its_credentials(initialised: Path) -> None:
    config = initialised / "herald.toml"
    settings = load_settings(config, environ={})  # by hand: credentials/ next to the config
    assert settings.mta.ehlo_name == f"mail.{DOMAIN}"
    assert settings.mta.bounce_domain == f"bounces.{DOMAIN}"
    assert settings.automation.from_address.endswith(f"<news@{DOMAIN}>")
    assert settings.http.public_url == f"https://mail.{DOMAIN}"
    assert [key.algorithm for key in settings.mta.dkim] == ["rsa", "ed25519"]
    assert settings.mta.bounce_secret and len(settings.mta.bounce_secret) >= 32
    assert settings.http.link_keys[0].startswith("k1:")
    credentials = initialised / "credentials"
    assert (credentials.stat().st_mode & 0o777) == 0o700
    assert all((path.stat().st_mode & 0o077) == 0 for path in credentials.iterdir())
    dropin = (initialised / "credentials.conf").read_text()
    for path in credentials.iterdir():
        assert f"LoadCredential={path.name}:{path.resolve()}" in dropin
    records = (initialised / "dns-records.txt").read_text()
    for needle in ("._domainkey.shop.test. IN TXT \"v=DKIM1; k=rsa;", "k=ed25519;",
                   'shop.test. IN TXT "v=spf1 a:mail.shop.test ~all"',
                   "bounces.shop.test. IN MX 10 mail.shop.test.", "_dmarc.shop.test. IN TXT",
                   "1.0.0.127.in-addr.arpa. IN PTR mail.shop.test.", "_mta-sts.", "_smtp._tls."):
        assert needle in records


def test_init_refuses_to_overwrite(initialised: Path) -> None:
    before = (initialised / "herald.toml").read_text()
    result = herald("init", "--domain", DOMAIN, "--dir", str(initialised), "--ip", IP)
    assert result.returncode == 2
    assert result.stderr.strip().endswith("already exists; refusing to overwrite (move it away, "
                                          "or pick another --dir)")
    assert (initialised / "herald.toml").read_text() == before


def test_init_bad_arguments(tmp_path: Path) -> None:
    bad = herald("init", "--domain", "not a domain", "--dir", str(tmp_path / "x"))
    assert bad.returncode == 2 and bad.stderr.startswith("herald: error: --domain:")
    assert herald("init", "--domain", DOMAIN, "--ip", "nope").returncode == 2
    assert not (tmp_path / "x").exists()


async def test_check_all_good_when_the_records_are_published(initialised: Path) -> None:
    async with DnsTestServer(published_zones(initialised)) as dns:
        code, out, err = await herald_async("--config", str(initialised / "herald.toml"),
                                            "check", "--ip", IP,
                                            HERALD_MTA_RESOLVER=f"127.0.0.1:{dns.port}")
    assert code == 0, out + err
    assert out.strip().splitlines()[-1] == "all good"
    for what in ("SPF shop.test", "SPF bounces.shop.test", "DMARC shop.test",
                 "MX bounces.shop.test", "PTR 127.0.0.1"):
        assert f"ok   {what}" in out
    assert out.count("the published key matches the private key") == 2


async def test_check_says_what_is_wrong_and_how_to_fix_it(initialised: Path) -> None:
    other_key = "v=DKIM1; k=ed25519; p=11qYAYKxCrfVS/7TyWQHOg7hcvPapiMlrwIaaPcHURo="
    ed_selector = next(line.split()[0] for line in
                       (initialised / "dns-records.txt").read_text().splitlines()
                       if "k=ed25519" in line)
    zones = published_zones(
        initialised, drop=("_dmarc.", "bounces.shop.test. IN MX", "r2"),
        replace={"shop.test.": 'shop.test. IN TXT "v=spf1 ip4:192.0.2.0/24 -all"',
                 ed_selector: f'{ed_selector} IN TXT "{other_key}"',
                 "1.0.0.127.in-addr.arpa.": "1.0.0.127.in-addr.arpa. IN PTR other.shop.test."})
    async with DnsTestServer(zones) as dns:
        code, out, err = await herald_async("--config", str(initialised / "herald.toml"),
                                            "check", "--ip", IP,
                                            HERALD_MTA_RESOLVER=f"127.0.0.1:{dns.port}")
    assert code == 1, out + err
    lines = out.splitlines()

    def fail(prefix: str) -> str:
        [line] = [line for line in lines if line.startswith(f"FAIL {prefix}")]
        return line

    assert "add a:mail.shop.test (or ip4:127.0.0.1)" in fail("SPF shop.test")
    assert "ok   SPF bounces.shop.test" in out
    assert "not published; publish r" in fail("DKIM r")
    assert "is not this private key's public half" in fail("DKIM e")
    assert "publish _dmarc.shop.test. IN TXT" in fail("DMARC shop.test")
    assert "no MX" in fail("MX bounces.shop.test")
    assert 'set [mta] ehlo_name = "other.shop.test" or change the PTR' in fail("PTR 127.0.0.1")
    assert lines[-1] == "6 problem(s) to fix"


async def test_check_exits_69_when_dns_does_not_answer(initialised: Path) -> None:
    async with DnsTestServer({}, drop={"shop.test", "bounces.shop.test"}) as dns:
        code, _out, err = await herald_async(
            "--config", str(initialised / "herald.toml"), "check", "--ip", IP,
            HERALD_MTA_RESOLVER=f"127.0.0.1:{dns.port}", HERALD_MTA_DNS_TIMEOUT="1s")
    assert code == 69
    assert err.strip().splitlines()[-1].startswith(
        f"herald: error: DNS unreachable: no answer from the DNS server at 127.0.0.1:{dns.port}")


async def test_check_with_the_defaults_names_the_localhost_identities(tmp_path: Path) -> None:
    code, out, _err = await herald_async("check", "--ip", IP)
    assert code == 1
    assert "FAIL identity: mta.ehlo_name is 'localhost'" in out
    assert "FAIL DKIM: no [[mta.dkim]] keys" in out


async def test_check_notes_a_configured_database_collation(
        database_url: str, test_databases: test_postgres.TestDatabases) -> None:
    code, out, _err = await herald_async("check", "--ip", IP, HERALD_DATABASE_URL=database_url)
    assert code == 1  # the localhost identities, not the collation
    assert "ok   database collation: C\n" in out
    admin = await asyncpg.connect(test_databases.admin_url)
    try:
        ctype = await admin.fetchval("SELECT datctype FROM pg_database WHERE datname = 'template0'")
        if ctype in ("C", "POSIX"):
            pytest.skip("the server has no other collation to create a database with")
        name = f"herald_test_{uuid.uuid4().hex[:12]}"
        await admin.execute(f"CREATE DATABASE \"{name}\" TEMPLATE template0 "
                            f"LC_COLLATE '{ctype}' LC_CTYPE '{ctype}'")
        try:
            other = test_postgres.with_database(database_url, name)
            code, out, _err = await herald_async("check", "--ip", IP, HERALD_DATABASE_URL=other)
        finally:
            await admin.execute(f'DROP DATABASE "{name}" WITH (FORCE)')
    finally:
        await admin.close()
    assert code == 1  # a note only: the failures are the identities' and DKIM's
    [line] = [line for line in out.splitlines() if "database collation" in line]
    assert line.startswith(f"warn database collation: {ctype}: optional")
    assert "LC_COLLATE 'C'" in line


def test_check_with_a_bad_config_exits_78(tmp_path: Path) -> None:
    config = tmp_path / "herald.toml"
    config.write_text('[mta]\nbounce_secret = "credential:nope"\n')
    result = herald("--config", str(config), "check")
    assert result.returncode == 78
    assert result.stderr.strip().startswith("herald: error: mta.bounce_secret: credential 'nope'")
