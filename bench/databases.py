"""The database a bench runs on: the one given (``--database-url``), or a temporary embedded
Postgres in the bench's work directory, stopped on the way out."""

from __future__ import annotations

import asyncio
import tempfile
import time
from collections.abc import Callable, Coroutine, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import orjson
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


def measure_on_migrated(database_url: str | None,
                        measure: Callable[[str], Coroutine[Any, Any, dict[str, Any]]],
                        show: Callable[[dict[str, Any]], None]) -> int:
    """Run ``measure`` on a migrated database (the one given, else an embedded one in a
    temporary directory), add the seconds it all took, show its table (stderr) and print its
    JSON line (stdout). The exit code: 0."""
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="herald-bench-") as workdir, \
            migrated_database(database_url, Path(workdir)) as url:
        result = asyncio.run(measure(url))
    result["seconds"] = round(time.perf_counter() - started, 1)
    show(result)
    print(orjson.dumps(result).decode())
    return 0
