"""aiosmtpd sessions with bounds every Herald SMTP server keeps: concurrent sessions (421
beyond) and a whole-session time limit; the server TLS context; a session's peer as text."""

from __future__ import annotations

import asyncio
import ssl
from email._header_value_parser import get_addr_spec, get_angle_addr
from email.errors import HeaderParseError
from pathlib import Path
from typing import Any

from aiosmtpd.smtp import SMTP, Session

from engine.errors import ConfigError

TOO_MANY_SESSIONS = "421 4.3.2 Too many connections, try again later"
SESSION_TOO_LONG = "421 4.4.2 Session time limit reached, closing"


class SessionBounds:
    """What every session of one server shares: the open sessions and their limits."""

    def __init__(self, max_sessions: int, session_timeout: float) -> None:
        self.max_sessions = max_sessions
        self.session_timeout = session_timeout
        self.sessions: dict[BoundedSMTP, asyncio.Task[Any]] = {}

    async def close_all(self, timeout: float) -> None:
        """Close every open session and wait (at most ``timeout``) for their handlers."""
        handlers = []
        for session, handler in list(self.sessions.items()):
            if session.transport is not None:
                session.transport.close()  # connection_lost cancels the handler
            handlers.append(handler)
        if handlers:
            await asyncio.wait(handlers, timeout=timeout)


# aiosmtpd's SMTP.__init__ finds its commands, hooks and AUTH mechanisms by introspection
# (dir() and inspect.getmembers() of the session and the handler) in every new session.
_HOOK_PREFIXES = ("smtp_", "auth_", "handle_")
_HOOK_NAMES: dict[type, list[str]] = {}


def hook_names(kind: type) -> list[str]:
    """The attribute names of ``kind`` that aiosmtpd looks up by prefix, found once per
    class."""
    names = _HOOK_NAMES.get(kind)
    if names is None:
        names = _HOOK_NAMES[kind] = sorted(
            name for name in dir(kind) if name.startswith(_HOOK_PREFIXES))
    return names


class BoundedSMTP(SMTP):
    """aiosmtpd's session within :class:`SessionBounds`.

    Three of aiosmtpd's costs are cut: a multi-line reply (EHLO's) is written at once, not one
    send per line; ``dir()`` of a session lists only the names aiosmtpd introspects
    (``smtp_*``, ``auth_*``, ``handle_*``), found once per class, so that opening a session
    does not walk every attribute of the protocol object; and MAIL and RCPT parse their
    address without defining a typing.Protocol class in every call (aiosmtpd 1.4's
    ``_getaddr``)."""

    def __init__(self, handler: Any, bounds: SessionBounds, **kwargs: Any) -> None:
        self._held: list[bytes] = []  # the lines of a multi-line reply so far
        super().__init__(handler, **kwargs)
        self._bounds = bounds

    def __dir__(self) -> list[str]:
        return hook_names(type(self))

    def _getaddr(self, arg: str) -> tuple[str | None, str | None]:
        """aiosmtpd's ``_getaddr``: the address and the rest of the argument, (None, None)
        when it cannot be parsed or its local part is over ``local_part_limit``."""
        if not arg:
            return "", ""
        try:
            if arg.lstrip().startswith("<"):
                angle, rest = get_angle_addr(arg)
                addr: str = angle.addr_spec
            else:
                spec, rest = get_addr_spec(arg)
                addr = spec.addr_spec
        except HeaderParseError:
            return None, None
        if self.local_part_limit and len(addr.rpartition("@")[0]) > self.local_part_limit:
            return None, None
        return addr, rest

    async def push(self, status: bytes | str) -> None:
        response = status if isinstance(status, bytes) else status.encode(
            "utf-8" if self.enable_SMTPUTF8 else "ascii")
        if response[3:4] == b"-":  # more lines follow (RFC 5321 4.2.1)
            self._held.append(response)
            return
        if self._held:
            response = b"\r\n".join([*self._held, response])
            self._held.clear()
        self._writer.write(response + b"\r\n")
        await self._writer.drain()

    async def _handle_client(self) -> None:
        bounds = self._bounds
        if len(bounds.sessions) >= bounds.max_sessions:
            await self.push(TOO_MANY_SESSIONS)
            if self.transport is not None:
                self.transport.close()
            return
        task = asyncio.current_task()
        assert task is not None
        bounds.sessions[self] = task
        expiry = self.loop.call_later(bounds.session_timeout, self._expire)
        try:
            await super()._handle_client()
        finally:
            expiry.cancel()
            bounds.sessions.pop(self, None)

    def _expire(self) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self._writer.write(SESSION_TOO_LONG.encode() + b"\r\n")
            self.transport.close()


def tls_context(cert: str, key: str) -> ssl.SSLContext:
    """A server context (STARTTLS or implicit TLS); raises OSError / ssl.SSLError for
    unreadable files."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    return context


def configured_tls_context(files: tuple[Path, Path] | None,
                           section: str) -> ssl.SSLContext | None:
    """The server context for ``[section] tls_cert``/``tls_key``, or None when unset; an
    unreadable pair is a ConfigError naming the keys."""
    if files is None:
        return None
    cert, key = files
    try:
        return tls_context(str(cert), str(key))
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(f"{section}.tls_cert/tls_key: cannot load {cert} and {key}: "
                          f"{getattr(exc, 'strerror', None) or exc}") from None


def peer_text(session: Session) -> str | None:
    peer = session.peer
    if isinstance(peer, tuple) and len(peer) >= 2:
        return f"{peer[0]}:{peer[1]}"
    return str(peer) if peer else None
