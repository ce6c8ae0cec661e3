"""Run Postgres from the ``pgserver`` wheel inside Herald's data directory.

Used when no database URL is configured, so a fresh machine needs nothing but ``pip install``.
The server listens on a Unix socket only; it is stopped when the last Herald process that
started it exits (a killed process leaves it running, and the next start reuses it).
"""

from __future__ import annotations

import logging
import subprocess
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from engine.errors import DatabaseUnavailable

log = logging.getLogger("herald.embedded_postgres")


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
        server = pgserver.get_server(pgdata, cleanup_mode="stop")
    except (subprocess.CalledProcessError, subprocess.TimeoutExpired, OSError) as exc:
        raise DatabaseUnavailable(
            f"cannot start the embedded Postgres in {pgdata}: {exc}; see {pgdata / 'log'}"
        ) from exc
    url = server.get_uri()
    log.info("embedded postgres ready", extra={"pgdata": str(pgdata)})
    return EmbeddedPostgres(pgdata, url, server)
