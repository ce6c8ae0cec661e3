"""The database a bench runs on: the one given (``--database-url``), or a temporary embedded
Postgres in the bench's work directory, stopped on the way out."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import uvloop

from herald.database import migrate


@contextmanager
def database(url: str | None, workdir: Path) -> Iterator[tuple[str, int | None]]:
    """The database URL and, when embedded, its postmaster's pid (for measuring)."""
    if url is not None:
        yield url, None
        return
    from engine.embedded_postgres import start_embedded

    embedded = start_embedded(workdir / "data")
    try:
        pid = int((embedded.data_dir / "postmaster.pid").read_text().split()[0])
        yield embedded.url, pid
    finally:
        embedded.stop()


@contextmanager
def migrated_database(url: str | None, workdir: Path) -> Iterator[str]:
    """As :func:`database`, with Herald's migrations applied; yields the URL."""
    with database(url, workdir) as (ready, _pid):
        uvloop.run(migrate(ready))
        yield ready
