"""Where Herald keeps local state, Debian-style when it runs as a service.

``[engine] data_dir`` (or ``HERALD_DATA_DIR``) wins. Otherwise:

* ``$STATE_DIRECTORY`` (systemd sets it from ``StateDirectory=herald``; the first entry);
* ``/var/lib/herald`` when run by systemd without it (``$INVOCATION_ID`` set and no terminal:
  a shell in a terminal emulator started as a user service has ``INVOCATION_ID`` too);
* ``./herald-data`` for interactive use.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping
from pathlib import Path

SERVICE_DATA_DIR = Path("/var/lib/herald")
INTERACTIVE_DATA_DIR = Path("herald-data")


def running_as_service(environ: Mapping[str, str] | None = None) -> bool:
    environ = os.environ if environ is None else environ
    if environ.get("STATE_DIRECTORY"):
        return True
    return bool(environ.get("INVOCATION_ID")) and not _has_terminal()


def default_data_dir(environ: Mapping[str, str] | None = None) -> Path:
    environ = os.environ if environ is None else environ
    state = environ.get("STATE_DIRECTORY", "")
    if state:
        return Path(state.split(":")[0])
    if running_as_service(environ):
        return SERVICE_DATA_DIR
    return INTERACTIVE_DATA_DIR


def _has_terminal() -> bool:
    try:
        return sys.stdin is not None and sys.stdin.isatty()
    except (ValueError, OSError):
        return False
