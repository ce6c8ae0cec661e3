"""Typed settings from TOML and HERALD_<SECTION>_<KEY>; bad values name the key."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from engine.errors import ConfigError
from engine.values import HostPort, parse_duration, parse_size
from herald.settings import load_settings
from mta.relays import Relay

REPO = Path(__file__).resolve().parent.parent


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "herald.toml"
    path.write_text(text)
    return path


def test_shipped_example_config_loads_with_defaults() -> None:
    settings = load_settings(REPO / "config" / "herald.toml", environ={})
    assert settings.http.listen == HostPort("127.0.0.1", 8025)
    assert settings.http.max_body == 1024 * 1024
    assert settings.intake.commit_max_wait == 0.0


def test_environment_overrides_file(tmp_path: Path) -> None:
    path = write(tmp_path, '[http]\nlisten = "127.0.0.1:9000"\n')
    settings = load_settings(path, environ={
        "HERALD_HTTP_LISTEN": "0.0.0.0:8080", "HERALD_DATA_DIR": "/var/lib/herald",
        "HERALD_DATABASE_URL": "postgresql://h@db/herald", "HERALD_HTTP_MAX_BODY": "2MiB",
        "HERALD_HTTP_RATE_LIMIT_PER_SECOND": "12.5", "HERALD_ENGINE_SHUTDOWN_TIMEOUT": "5s"})
    assert settings.http.listen == HostPort("0.0.0.0", 8080)
    assert str(settings.engine.data_dir) == "/var/lib/herald"
    assert settings.engine.database_url == "postgresql://h@db/herald"
    assert settings.http.max_body == 2 * 1024 * 1024
    assert settings.http.rate_limit_per_second == 12.5
    assert settings.engine.shutdown_timeout == 5.0


@pytest.mark.parametrize(("toml", "environ", "message"), [
    ('[http]\nlisten = "localhost"\n', {}, "http.listen: 'localhost' has no port"),
    ('[http]\nmax_body = "lots"\n', {}, "http.max_body:"),
    ('[http]\nmax_batch_events = "ten"\n', {}, "http.max_batch_events: expected a whole number"),
    ('[http]\nlisten_on = "x"\n', {}, "http.listen_on: unknown key"),
    ('[htp]\n', {}, "htp: unknown section"),
    ('[engine]\nlog_level = "loud"\n', {}, "engine: log_level must be one of"),
    ("", {"HERALD_HTTP_RATE_LIMIT_BURST": "many"}, "http.rate_limit_burst: 'many' is not a number"),
    ("", {"HERALD_DATABASE_URL": "mysql://x"}, "database_url must start with postgresql://"),
    ("[http\n", {}, "is not valid TOML"),
])
def test_bad_values_name_the_key(tmp_path: Path, toml: str, environ: dict[str, str],
                                 message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load_settings(write(tmp_path, toml), environ=environ)
    assert message in str(caught.value)


def test_missing_config_file_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load_settings(tmp_path / "nope.toml", environ={})


def test_cli_prints_one_line_for_a_bad_config(tmp_path: Path) -> None:
    path = write(tmp_path, '[http]\nlisten = "nowhere"\n')
    result = subprocess.run([sys.executable, "-m", "herald.cli", "--config", str(path), "run"],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 78  # EX_CONFIG: RestartPreventExitStatus=78 in the units
    assert result.stderr.strip().splitlines() == [
        "herald: error: http.listen: 'nowhere' has no port; expected HOST:PORT"]


@pytest.mark.parametrize(("text", "seconds"), [
    ("30s", 30), ("5m", 300), ("1h30m", 5400), ("4d", 345600), ("250ms", 0.25), (12, 12),
    ("1.5h", 5400)])
def test_durations(text: str | int, seconds: float) -> None:
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["", "5 parsecs", "-3", "m5", "5m3"])
def test_bad_durations(text: str) -> None:
    with pytest.raises(ValueError):
        parse_duration(text)


def test_sizes_and_hostports() -> None:
    assert parse_size("1MiB") == 1048576 and parse_size("10kb") == 10000
    assert HostPort.parse("[::1]:25") == HostPort("::1", 25)
    assert str(HostPort("::1", 25)) == "[::1]:25"
    with pytest.raises(ValueError):
        HostPort.parse("host:99999")


def test_mta_section_with_dkim_tables_and_routes(tmp_path: Path) -> None:
    path = write(tmp_path, """
[mta]
ehlo_name = "mx.shop.test"
retry_initial = "1m"
[mta.routes]
"example.test" = "127.0.0.1:2525"
[[mta.dkim]]
domain = "shop.test"
selector = "s1"
key_file = "dkim/shop.pem"
[[mta.dkim]]
domain = "shop.test"
selector = "e1"
key_file = "dkim/shop-ed.pem"
algorithm = "ed25519"
""")
    settings = load_settings(path, environ={"HERALD_MTA_ROUTE": "127.0.0.1:2626"})
    assert settings.mta.ehlo_name == "mx.shop.test"
    assert settings.mta.retry_initial == 60.0
    assert [(k.selector, k.algorithm) for k in settings.mta.dkim] == [("s1", "rsa"),
                                                                      ("e1", "ed25519")]
    assert settings.mta.route_for("example.test") == Relay("127.0.0.1", 2525)
    assert settings.mta.route_for("other.test") == Relay("127.0.0.1", 2626)


@pytest.mark.parametrize(("toml", "message"), [
    ('[[mta.dkim]]\ndomain = "a.test"\nselector = "s"\nkey_file = "k"\nalgorithm = "dsa"\n',
     "mta.dkim[0]: algorithm must be 'rsa' or 'ed25519'"),
    ('[[mta.dkim]]\ndomain = "a.test"\nkey_file = "k"\n', "mta.dkim[0]:"),
    ('[mta.routes]\n"a.test" = "nowhere"\n', "routes.a.test:"),
    ('[mta]\ntls = "sometimes"\n', "tls must be one of"),
])
def test_bad_mta_values_name_the_key(tmp_path: Path, toml: str, message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load_settings(write(tmp_path, toml), environ={})
    assert message in str(caught.value)


def test_shipped_shaping_rules_load() -> None:
    from mta.shaping.rules import limits_for, load_rules

    rules = load_rules(REPO / "config" / "shaping.toml")
    gmail = limits_for(rules, "gmail.com", ("gmail-smtp-in.l.google.com",), 10, 100)
    workspace = limits_for(rules, "corp.example", ("aspmx.l.google.com",), 10, 100)
    other = limits_for(rules, "corp.example", ("mx.corp.example",), 10, 100)
    assert gmail.rule == workspace.rule == "google"
    assert other.rule == "default" and other.max_connections == 10
