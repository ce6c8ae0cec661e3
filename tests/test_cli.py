"""The herald CLI against a real database: keys and migrations."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import asyncpg

from engine.contact_tokens import verify
from engine.keys import split_token


def herald(database_url: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "HERALD_DATABASE_URL": database_url}
    return subprocess.run([sys.executable, "-m", "herald.cli", *args], env=env,
                          capture_output=True, text=True, timeout=120)


async def test_keys_create_prints_the_key_last_and_stores_only_a_hash(database_url: str) -> None:
    result = herald(database_url, "keys", "create", "--name", "shop", "--scope", "events:write")
    assert result.returncode == 0, result.stderr
    token = result.stdout.strip().splitlines()[-1]
    prefix, key_id, secret = split_token(token)
    assert prefix == "hk"
    connection = await asyncpg.connect(database_url)
    try:
        row = await connection.fetchrow("SELECT * FROM api_keys WHERE key_id = $1", key_id)
        dump = str(dict(row))
    finally:
        await connection.close()
    assert row["scopes"] == ["events:write"]
    assert secret not in dump

    listed = herald(database_url, "keys", "list")
    assert key_id in listed.stdout and secret not in listed.stdout
    assert herald(database_url, "keys", "revoke", key_id).returncode == 0
    again = herald(database_url, "keys", "revoke", key_id)
    assert again.returncode == 2
    assert again.stderr.strip() == f"herald: error: no active key with id '{key_id}'"


def test_bad_scope_is_one_line(database_url: str) -> None:
    result = herald(database_url, "keys", "create", "--name", "x", "--scope", "god")
    assert result.returncode == 2
    assert result.stderr.strip().startswith("herald: error: unknown scope 'god'")


def test_migrate_is_idempotent(database_url: str) -> None:
    result = herald(database_url, "migrate")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "applied 0 migration(s)"


def test_unreachable_database_is_one_line() -> None:
    result = herald("postgresql://nobody@127.0.0.1:1/none", "migrate")
    assert result.returncode == 69  # EX_UNAVAILABLE: systemd may restart it
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("herald: error: cannot connect to Postgres")


async def test_publishable_key_prints_a_token_secret_and_mints_contact_tokens(
        database_url: str) -> None:
    result = herald(database_url, "keys", "create", "--name", "site", "--publishable",
                    "--event-type", "product_viewed", "--property", "sku")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.strip().splitlines()
    prefix, key_id, _secret = split_token(lines[-1])
    assert prefix == "hp"
    token_secret = lines[-2].rsplit(" ", 1)[1]
    minted = herald(database_url, "keys", "contact-token", "--key", key_id, "--contact", "c-7",
                    "--ttl", "1h")
    assert minted.returncode == 0, minted.stderr
    claims = verify(minted.stdout.strip(), key_id=key_id, secret=token_secret, now=time.time())
    assert claims.contact_id == "c-7" and claims.expires_at <= time.time() + 3601
    assert "properties: sku" in herald(database_url, "keys", "list").stdout
    unknown = herald(database_url, "keys", "contact-token", "--key", "abc", "--contact", "c")
    assert unknown.returncode == 2 and "no active publishable key" in unknown.stderr
    reserved = herald(database_url, "keys", "create", "--name", "x", "--publishable",
                      "--event-type", "email_opened")
    assert reserved.returncode == 2 and "only Herald itself records it" in reserved.stderr


def test_dkim_keygen_names_an_idn_domain_in_idna_2008(tmp_path: object) -> None:
    result = herald("postgresql://nobody@127.0.0.1:1/none", "dkim", "keygen",
                    "--domain", "faß.example", "--selector", "s1", "--out", str(tmp_path))
    assert result.returncode == 0, result.stderr
    assert "s1._domainkey.xn--fa-hia.example. IN TXT" in result.stdout
    assert "fass" not in result.stdout


async def test_keys_carry_the_domains_they_may_send_from(database_url: str) -> None:
    result = herald(database_url, "keys", "create", "--name", "shop", "--from-domain",
                    "Shop.Example", "--from-domain", "bücher.example")
    assert result.returncode == 0, result.stderr
    key_id = split_token(result.stdout.strip().splitlines()[-1])[1]
    connection = await asyncpg.connect(database_url)
    try:
        domains = await connection.fetchval(
            "SELECT from_domains FROM api_keys WHERE key_id = $1", key_id)
    finally:
        await connection.close()
    assert domains == ["shop.example", "xn--bcher-kva.example"]
    assert "from: shop.example,xn--bcher-kva.example" in herald(database_url, "keys",
                                                              "list").stdout
    bad = herald(database_url, "keys", "create", "--name", "x", "--from-domain", "no spaces")
    assert bad.returncode == 2 and bad.stderr.startswith("herald: error: --from-domain")
