"""Route targets: where ``[mta] route`` and ``[mta.routes]`` send mail, and how (pure).

A target is written as

* ``"HOST:PORT"``: plain SMTP to that server, TLS as the domain's policy says (opportunistic
  STARTTLS by default), no authentication: a local sink, a relay that trusts this address;
* ``"smtp://[USER@]HOST[:PORT]"`` (port 587 by default): a smarthost over STARTTLS. With a
  user, Herald logs in (AUTH) and then requires STARTTLS with a certificate valid for HOST
  (trust store + ``[mta] tls_ca_file``): credentials never travel in plaintext or to an
  unverified server;
* ``"smtps://[USER@]HOST[:PORT]"`` (port 465 by default): a smarthost over implicit TLS
  (RFC 8314), the certificate always verified;
* a table ``{ url = "smtps://USER@HOST:465", password = "credential:NAME" }``: the same with
  the password, read from a systemd credential (or any string, which is discouraged).

A USER in a URL is percent-decoded (``apikey%40example.com`` is ``apikey@example.com``).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Literal
from urllib.parse import unquote, urlsplit

import orjson

from engine.errors import ConfigError
from engine.settings_loader import build_dataclass
from engine.values import HostPort

RelayTls = Literal["policy", "starttls", "implicit"]
DEFAULT_PORTS = {"smtp": 587, "smtps": 465}


@dataclass(frozen=True, slots=True)
class RelayTable:
    """The table form of a route target."""

    url: str
    password: str | None = None


@dataclass(frozen=True, slots=True)
class Relay:
    host: str
    port: int
    # policy: the destination's TLS policy; starttls: STARTTLS required and verified;
    # implicit: TLS from the first byte, verified.
    tls: RelayTls = "policy"
    username: str | None = None
    password: str | None = dataclasses.field(default=None, repr=False)

    def __post_init__(self) -> None:
        if (self.username is None) != (self.password is None):
            raise ValueError("a route with a user needs a password (the table form: "
                             "{ url = \"smtps://USER@HOST:465\", password = \"credential:NAME\" })"
                             if self.username else "a password needs a user in the url")
        if self.username is not None and self.tls == "policy":
            raise ValueError("credentials need smtp:// (STARTTLS) or smtps:// (implicit TLS)")

    @property
    def verified(self) -> bool:
        """The server must present a certificate valid for ``host``."""
        return self.tls != "policy"

    @property
    def login(self) -> tuple[str, str] | None:
        if self.username is None or self.password is None:
            return None
        return self.username, self.password

    def __str__(self) -> str:
        if self.tls == "policy":
            return f"{self.host}:{self.port}"
        scheme = "smtps" if self.tls == "implicit" else "smtp"
        user = f"{self.username}@" if self.username else ""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{scheme}://{user}{host}:{self.port}"

    @classmethod
    def parse(cls, text: str, password: str | None = None) -> Relay:
        text = text.strip()
        scheme, sep, _rest = text.partition("://")
        if not sep:
            if password is not None:
                raise ValueError("a password needs an smtp:// or smtps:// url with a user")
            address = HostPort.parse(text)
            return cls(address.host, address.port)
        scheme = scheme.lower()
        if scheme not in DEFAULT_PORTS:
            raise ValueError(f"{text!r}: the scheme is smtp:// (STARTTLS) or smtps:// "
                             "(implicit TLS)")
        parts = urlsplit(text)
        if parts.path not in ("", "/") or parts.query or parts.fragment:
            raise ValueError(f"{text!r}: only [USER@]HOST[:PORT] may follow {scheme}://")
        if parts.password is not None:
            raise ValueError(f"{text!r}: put the password in a table's password = "
                             "\"credential:NAME\", not in the url")
        try:
            port = parts.port or DEFAULT_PORTS[scheme]
        except ValueError as exc:
            raise ValueError(f"{text!r}: {exc}") from None
        if not parts.hostname:
            raise ValueError(f"{text!r} has no host")
        username = unquote(parts.username) if parts.username is not None else None
        return cls(parts.hostname, port, "implicit" if scheme == "smtps" else "starttls",
                   username or None, password)

    @classmethod
    def from_setting(cls, value: Any, where: str) -> Relay:
        """A route target from a config value: a string, a table, or (in an environment
        variable) either one, the table as JSON. ConfigError names ``where``."""
        try:
            return cls._from_value(value, where)
        except ValueError as exc:
            raise ConfigError(f"{where}: {exc}") from None

    @classmethod
    def _from_value(cls, value: Any, where: str) -> Relay:
        if isinstance(value, Relay):
            return value
        if isinstance(value, HostPort):
            return cls(value.host, value.port)
        if isinstance(value, str) and value.strip().startswith("{"):
            try:
                value = orjson.loads(value)
            except orjson.JSONDecodeError as exc:
                raise ValueError(f"not valid JSON: {exc}") from None
        if isinstance(value, str):
            return cls.parse(value)
        if isinstance(value, dict):
            table = build_dataclass(RelayTable, value, where)
            return cls.parse(table.url, table.password)
        raise ValueError(f"expected \"HOST:PORT\", an smtp:// or smtps:// url, or a table "
                         f"{{ url = ..., password = ... }}, got {value!r}")
