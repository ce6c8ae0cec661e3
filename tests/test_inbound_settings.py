"""The ``[inbound]`` section: defaults, TOML and environment, bad values naming the key, and the
``inbound`` role's start-up errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from engine.database import Database
from engine.errors import ConfigError
from engine.values import HostPort
from herald.roles import ROLE_NAMES
from herald.settings import load_settings
from mta.inbound.service import InboundService
from tests.support.inbound import LINK_KEYS, inbound_settings
from tests.support.mta import mta_settings


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "herald.toml"
    path.write_text(text)
    return path


def test_defaults_and_overrides(tmp_path: Path) -> None:
    assert "inbound" in ROLE_NAMES
    default = load_settings(None, environ={}).inbound
    assert default.listen == HostPort("127.0.0.1", 2526)
    assert default.max_message_size == 5 * 1024 * 1024 and default.hostname is None
    path = write(tmp_path, '[inbound]\nlisten = "0.0.0.0:25"\nmax_message_size = "1MiB"\n'
                           'feedback_addresses = ["FBL@Bounce.Example.com"]\n')
    settings = load_settings(path, environ={"HERALD_INBOUND_IDLE_TIMEOUT": "30s",
                                            "HERALD_INBOUND_HOSTNAME": "mx.example.com"})
    inbound = settings.inbound
    assert inbound.listen == HostPort("0.0.0.0", 25)
    assert inbound.max_message_size == 1024 * 1024 and inbound.idle_timeout == 30.0
    assert inbound.hostname == "mx.example.com"
    assert inbound.feedback == frozenset({"fbl@bounce.example.com"})


@pytest.mark.parametrize(("toml", "message"), [
    ('[inbound]\nlisten = "25"\n', "inbound.listen:"),
    ('[inbound]\nmax_message_size = "huge"\n', "inbound.max_message_size:"),
    ('[inbound]\nmax_message_size = 10\n', "max_message_size must be at least 1KiB"),
    ('[inbound]\ntls_cert = "cert.pem"\n', "tls_cert and tls_key must be set together"),
    ('[inbound]\nfeedback_addresses = ["not an address"]\n', "feedback_addresses:"),
    ('[inbound]\nfeedback_addresses = "fbl@example.com"\n', "inbound.feedback_addresses:"),
    ('[inbound]\nretry_initial = "2h"\nretry_max = "1h"\n', "retry_initial <= retry_max"),
    ('[inbound]\nmax_recipients = 0\n', "max_recipients must be between"),
    ('[inbound]\nlisen = "x"\n', "inbound.lisen: unknown key"),
])
def test_bad_values_name_the_key(tmp_path: Path, toml: str, message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load_settings(write(tmp_path, toml), environ={})
    assert message in str(caught.value)


async def test_unreadable_certificate_fails_at_start_naming_the_key(
        database: Database, tmp_path: Path) -> None:
    service = InboundService(database, inbound_settings(), mta_settings(), LINK_KEYS,
                             (tmp_path / "missing.pem", tmp_path / "missing.key"))
    with pytest.raises(ConfigError) as caught:
        await service.start()
    assert "inbound.tls_cert/tls_key" in str(caught.value)


async def test_address_in_use_fails_at_start_naming_the_key(database: Database) -> None:
    first = InboundService(database, inbound_settings(), mta_settings(), LINK_KEYS)
    await first.start()
    try:
        assert first.server is not None
        taken = inbound_settings(listen=HostPort("127.0.0.1", first.server.port))
        second = InboundService(database, taken, mta_settings(), LINK_KEYS)
        with pytest.raises(ConfigError) as caught:
            await second.start()
    finally:
        await first.stop()
    assert "inbound.listen: cannot listen" in str(caught.value)
