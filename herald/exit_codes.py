"""Exit codes systemd (and scripts) can act on, and which error picks which.

``RestartPreventExitStatus=78`` in the units stops systemd from restarting a process whose
config is wrong; 69 (the database or the network is unavailable) is worth a restart.
"""

from __future__ import annotations

from typing import Final

from automation.errors import DefinitionError
from engine.errors import ConfigError, DatabaseUnavailable, HeraldError
from mta.errors import DkimError

OK: Final = 0
PROBLEMS_FOUND: Final = 1  # `herald check`: the config loads but something needs fixing
USAGE: Final = 2  # a wrong command-line argument (argparse's own code)
UNAVAILABLE: Final = 69  # EX_UNAVAILABLE: database, DNS or a listening address unavailable
CONFIG: Final = 78  # EX_CONFIG: the config file, a key in it, a key file or a workflow is wrong


class ServiceUnavailable(HeraldError):
    """Something outside Herald that it needs is not there right now (a port to listen on, the
    DNS servers); retrying later may work."""


def exit_code(error: HeraldError) -> int:
    """The exit code for an error that ends a command."""
    if isinstance(error, ConfigError | DkimError | DefinitionError):
        return CONFIG
    if isinstance(error, DatabaseUnavailable | ServiceUnavailable):
        return UNAVAILABLE
    return USAGE
