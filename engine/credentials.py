"""Secrets from systemd credentials: a config value ``credential:NAME``.

Any string or path setting may be written ``"credential:NAME"`` (in the file or in a
``HERALD_<SECTION>_<KEY>`` variable):

* a string setting (``[mta] bounce_secret``, each ``[http] link_keys`` entry, ``[engine]
  database_url``...) gets the credential's content, trailing newlines removed;
* a path setting (``[[mta.dkim]] key_file``, ``[inbound] tls_key``...) gets the credential's
  file path, so the key is read from there.

The credential is looked up in ``$CREDENTIALS_DIRECTORY`` (what systemd's
``LoadCredential=NAME:/etc/herald/credentials/NAME`` fills), else, for commands run by hand, in
the fallback directory: ``credentials/`` next to the config file.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path

PREFIX = "credential:"
MAX_SECRET_BYTES = 64 * 1024
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.@-]{0,127}\Z")


def is_reference(value: str) -> bool:
    return value.startswith(PREFIX)


def credential_path(value: str, fallback_dir: Path | None,
                    environ: Mapping[str, str] | None = None) -> Path:
    """The file holding credential ``credential:NAME``; ValueError saying where it was looked
    for and how to provide it."""
    environ = os.environ if environ is None else environ
    name = value[len(PREFIX):]
    if not _NAME.match(name):
        raise ValueError(f"{value!r}: a credential name is letters, digits and . _ - @")
    directory = environ.get("CREDENTIALS_DIRECTORY")
    if directory:
        path = Path(directory) / name
        if path.is_file():
            return path
        raise ValueError(f"credential {name!r} is not in $CREDENTIALS_DIRECTORY ({directory}); "
                         f"add LoadCredential={name}:/etc/herald/credentials/{name} to the unit")
    if fallback_dir is not None and (fallback_dir / name).is_file():
        return fallback_dir / name
    where = f" nor {fallback_dir / name}" if fallback_dir is not None else ""
    raise ValueError(f"credential {name!r} not found: $CREDENTIALS_DIRECTORY is not set{where} "
                     "exists (systemd sets it from LoadCredential=; by hand, run as a user who "
                     "can read the credentials directory next to the config file)")


def read_credential(value: str, fallback_dir: Path | None,
                    environ: Mapping[str, str] | None = None) -> str:
    """The text of credential ``credential:NAME``, trailing line breaks removed."""
    path = credential_path(value, fallback_dir, environ)
    try:
        with path.open("rb") as handle:
            data = handle.read(MAX_SECRET_BYTES + 1)
    except OSError as exc:
        raise ValueError(f"credential file {path} cannot be read: {exc.strerror}") from None
    if len(data) > MAX_SECRET_BYTES:
        raise ValueError(f"credential file {path} is larger than 64 KiB")
    try:
        return data.decode("utf-8").rstrip("\r\n")
    except UnicodeDecodeError:
        raise ValueError(f"credential file {path} is not UTF-8 text") from None
