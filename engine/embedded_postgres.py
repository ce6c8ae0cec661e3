"""Run Postgres from the ``pgserver`` wheel inside Herald's data directory.

Used when no database URL is configured, so a fresh machine needs nothing but ``pip install``.
The server listens on a Unix socket only; it is stopped when the last Herald process that
started it exits (a killed process leaves it running, and the next start reuses it).

A new cluster is initialised with the "C" collation (byte order: Herald's text keys are
identifiers and normalised addresses) so that btree comparisons take Postgres's fast path; the
character classification (LC_CTYPE: ``lower()`` on non-ASCII addresses) and the UTF-8 encoding
stay the environment's. An existing data directory keeps the locale it was created with.
"""

from __future__ import annotations

import logging
import os
import subprocess
import threading
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from engine.errors import DatabaseUnavailable

log = logging.getLogger("herald.embedded_postgres")

# the categories LC_ALL would set for initdb, were it not removed so that LC_COLLATE can count
_LOCALE_CATEGORIES = ("LC_CTYPE", "LC_MESSAGES", "LC_MONETARY", "LC_NUMERIC", "LC_TIME")
_environment_lock = threading.Lock()


@contextmanager
def c_collation_for_initdb(pgdata: Path) -> Iterator[None]:
    """While pgserver may run initdb for ``pgdata`` (no PG_VERSION yet), make the environment
    initdb inherits ask for LC_COLLATE=C, the rest of the locale (LC_CTYPE...) unchanged.

    initdb takes each category from LC_ALL, else LC_<category>, else LANG; pgserver passes no
    locale option, so the environment is its only input. Restored afterwards.
    """
    if (pgdata / "PG_VERSION").exists():
        yield
        return
    with _environment_lock:
        saved = {name: os.environ.get(name) for name in ("LC_ALL", "LC_COLLATE",
                                                         *_LOCALE_CATEGORIES)}
        everything = os.environ.pop("LC_ALL", "")
        if everything:
            for name in _LOCALE_CATEGORIES:
                os.environ[name] = everything
        os.environ["LC_COLLATE"] = "C"
        try:
            yield
        finally:
            for name, value in saved.items():
                if value is None:
                    os.environ.pop(name, None)
                else:
                    os.environ[name] = value


@dataclass
class EmbeddedPostgres:
    data_dir: Path
    url: str
    _server: Any

    def stop(self) -> None:
        self._server.cleanup()


def start_embedded(data_dir: Path) -> EmbeddedPostgres:
    """Initialise (first time) and start Postgres under ``data_dir/postgres``. Blocking."""
    try:
        with warnings.catch_warnings():  # platformdirs warns when XDG_RUNTIME_DIR is unset
            warnings.simplefilter("ignore")
            import pgserver  # heavy import: only when the embedded server is wanted
    except ImportError as exc:  # pragma: no cover - pgserver is a hard dependency
        raise DatabaseUnavailable("the embedded Postgres needs the 'pgserver' package") from exc
    pgdata = (data_dir / "postgres").resolve()
    pgdata.parent.mkdir(parents=True, exist_ok=True)
    try:
        with c_collation_for_initdb(pgdata):
            server = pgserver.get_server(pgdata, cleanup_mode="stop")
    except (subprocess.CalledProcessError, subprocess.TimeoutExpired, OSError) as exc:
        raise DatabaseUnavailable(
            f"cannot start the embedded Postgres in {pgdata}: {exc}; see {pgdata / 'log'}"
        ) from exc
    url = server.get_uri()
    log.info("embedded postgres ready", extra={"pgdata": str(pgdata)})
    return EmbeddedPostgres(pgdata, url, server)
