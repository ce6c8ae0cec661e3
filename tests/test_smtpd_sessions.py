"""BoundedSMTP's replacements of aiosmtpd internals answer exactly as aiosmtpd's own."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
from aiosmtpd.smtp import SMTP

from mta.smtpd.sessions import BoundedSMTP, hook_names

ARGUMENTS = ["<ann@example.com>", "<ann@example.com> SIZE=100", "ann@example.com",
             "<>", "", "<\"a b\"@example.com>", "<bad", "<@relay:ann@example.com>",
             "<ann@[127.0.0.1]>", "not an address", "<" + "x" * 70 + "@example.com>"]


@pytest.mark.parametrize("limit", [0, 64])
@pytest.mark.parametrize("argument", ARGUMENTS)
def test_getaddr_as_aiosmtpd(argument: str, limit: int) -> None:
    session = SimpleNamespace(local_part_limit=limit)
    assert BoundedSMTP._getaddr(session, argument) == (  # type: ignore[arg-type]
        SMTP._getaddr(session, argument))  # type: ignore[arg-type]


def test_hook_names_are_every_command_and_mechanism() -> None:
    names = hook_names(BoundedSMTP)
    assert {"smtp_EHLO", "smtp_MAIL", "smtp_RCPT", "smtp_DATA", "smtp_STARTTLS",
            "auth_PLAIN", "auth_LOGIN"} <= set(names)
    assert names == sorted(n for n in dir(SMTP) if n.startswith(("smtp_", "auth_", "handle_")))
