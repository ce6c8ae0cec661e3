"""Herald's databases sort text by bytes ("C" collation) and still case-fold non-ASCII.

A new embedded cluster is initialised with LC_COLLATE=C (btree comparisons take Postgres's fast
path), LC_CTYPE from the environment; an existing cluster keeps its locale. Test databases are
made the same way, so the suite exercises what production gets.
"""

from __future__ import annotations

import os
from pathlib import Path

import asyncpg
import pytest

from engine.database_creation import database_collation
from engine.embedded_postgres import c_collation_for_initdb, start_embedded


async def _locale(url: str) -> tuple[str, str, str, bool]:
    connection = await asyncpg.connect(url)
    try:
        row = await connection.fetchrow(
            "SELECT datcollate, datctype, lower('ÅSA Ödön') AS lowered, 'B' < 'a' AS bytewise "
            "FROM pg_database WHERE datname = current_database()")
        assert row is not None
        return row["datcollate"], row["datctype"], row["lowered"], row["bytewise"]
    finally:
        await connection.close()


async def test_a_new_embedded_cluster_collates_by_bytes_and_lowercases_non_ascii(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # LC_ALL would override LC_COLLATE for initdb: it must be set aside, and put back after
    monkeypatch.setenv("LC_ALL", "C.UTF-8")
    monkeypatch.delenv("LC_COLLATE", raising=False)
    embedded = start_embedded(tmp_path)
    try:
        assert os.environ["LC_ALL"] == "C.UTF-8"
        assert "LC_COLLATE" not in os.environ
        collate, ctype, lowered, bytewise = await _locale(embedded.url)
        assert (collate, ctype) == ("C", "C.UTF-8")
        assert lowered == "åsa ödön"
        assert bytewise is True  # byte order: 'B' (0x42) before 'a' (0x61)
    finally:
        embedded.stop()


async def test_an_existing_embedded_cluster_keeps_its_collation(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import pgserver

    monkeypatch.delenv("LC_ALL", raising=False)
    monkeypatch.setenv("LC_COLLATE", "C.UTF-8")
    monkeypatch.setenv("LC_CTYPE", "C.UTF-8")
    pgdata = tmp_path / "postgres"
    pgserver.get_server(pgdata, cleanup_mode="stop").cleanup()  # initdb as pgserver alone does
    with c_collation_for_initdb(pgdata):  # initialised: nothing to change
        assert os.environ["LC_COLLATE"] == "C.UTF-8"
    embedded = start_embedded(tmp_path)
    try:
        collate, ctype, lowered, _bytewise = await _locale(embedded.url)
        assert (collate, ctype) == ("C.UTF-8", "C.UTF-8")  # no re-initialisation
        assert lowered == "åsa ödön"
    finally:
        embedded.stop()


async def test_test_databases_use_the_c_collation_with_a_utf8_ctype(database_url: str) -> None:
    collate, ctype, lowered, bytewise = await _locale(database_url)
    assert collate == "C"
    assert "utf" in ctype.lower().replace("-", "")
    assert lowered == "åsa ödön"
    assert bytewise is True
    connection = await asyncpg.connect(database_url)
    try:
        assert await database_collation(connection) == "C"
    finally:
        await connection.close()
