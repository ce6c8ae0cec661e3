"""Herald relies on private parts of aiosmtplib, aiosmtpd, dkimpy and uvicorn, so
pyproject.toml pins them to the versions it was tested with (upper bounds). CI installs within
the pins; these tests fail when the installed version is outside them, or when a private part
Herald uses has moved."""

from __future__ import annotations

import inspect
import tomllib
from importlib.metadata import version
from pathlib import Path

import pytest
from packaging.requirements import Requirement

ROOT = Path(__file__).resolve().parent.parent
PINNED = ("aiosmtplib", "aiosmtpd", "dkimpy", "uvicorn")


def requirements() -> dict[str, Requirement]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    parsed = (Requirement(line) for line in project["dependencies"])
    return {requirement.name.lower(): requirement for requirement in parsed}


@pytest.mark.parametrize("name", PINNED)
def test_the_installed_version_is_one_herald_was_tested_with(name: str) -> None:
    requirement = requirements()[name]
    assert any(spec.operator in ("<=", "<", "==", "~=") for spec in requirement.specifier), (
        f"{name} needs an upper bound in pyproject.toml")
    assert requirement.specifier.contains(version(name)), (
        f"{name} {version(name)} is installed; Herald was tested with {requirement}")


def test_the_private_aiosmtplib_parts_herald_uses_exist() -> None:
    from aiosmtplib import SMTP
    from aiosmtplib.protocol import SMTPProtocol

    # mta/smtp/session.py writes the body (and pipelined commands) through the client's
    # protocol and its transport, and reads replies with read_response, one per call.
    assert SMTP().protocol is None  # set once connected
    for name in ("write", "read_response", "execute_command", "connection_lost",
                 "data_received", "eof_received", "is_connected"):
        assert hasattr(SMTPProtocol, name), name
    assert "timeout" in inspect.signature(SMTPProtocol.read_response).parameters


def test_the_private_dkimpy_parts_herald_uses_exist() -> None:
    import dkim
    from dkim.canonicalization import (
        CanonicalizationPolicy,
        correct_empty_body,
        strip_trailing_lines,
    )
    from dkim.util import get_linesep

    # mta/dkim/signer.py: dkimpy's parsing, folding and header hashing without DKIM.sign.
    for name in ("rfc822_parse", "fold", "RE_BTAG", "hash_headers", "MessageFormatError"):
        assert hasattr(dkim, name), name
    assert callable(correct_empty_body) and callable(strip_trailing_lines)
    assert callable(get_linesep)
    assert CanonicalizationPolicy.from_c_value(b"relaxed/relaxed") is not None
    assert "namelen" in inspect.signature(dkim.fold).parameters


def test_the_private_uvicorn_parts_herald_uses_exist() -> None:
    from uvicorn.protocols.http.httptools_impl import (
        STATUS_LINE,
        HttpToolsProtocol,
        RequestResponseCycle,
    )

    # engine/http/slow_clients.py and engine/http/direct_routes.py subclass the protocol: they
    # call these methods, replace on_response_complete, and stand in for its cycle.
    for name in ("on_message_begin", "on_url", "on_header", "on_headers_complete", "on_body",
                 "on_message_complete", "on_response_complete", "_start_asgi_task",
                 "_unset_keepalive_if_required", "connection_lost", "data_received",
                 "shutdown"):
        assert hasattr(HttpToolsProtocol, name), name
    assert STATUS_LINE[202] == b"HTTP/1.1 202 Accepted\r\n"
    cycle_attributes = inspect.signature(RequestResponseCycle.__init__).parameters
    assert {"scope", "transport", "flow", "message_event", "keep_alive", "on_response"} <= set(
        cycle_attributes)
    source = inspect.getsource(HttpToolsProtocol)
    for attribute in ("self.cycle", "self.pipeline", "self.expect_100_continue", "self.url",
                      "self.headers", "self.client", "self.timeout_keep_alive",
                      "self.server_state.default_headers", "self.flow.resume_reading()"):
        assert attribute in source, attribute
