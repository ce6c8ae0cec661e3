"""Debian-style paths (config from /etc/herald, data in $STATE_DIRECTORY or /var/lib/herald as a
service), the examples shipped inside the package, and ``credential:NAME`` secrets read from
systemd's $CREDENTIALS_DIRECTORY."""

from __future__ import annotations

from pathlib import Path

import pytest

from engine.errors import ConfigError
from engine.paths import default_data_dir
from herald.roles import load_catalog, shaping_rules
from herald.settings import SHIPPED, config_path_from, load_settings, resolve_path


def test_config_path_order(tmp_path: Path) -> None:
    system = tmp_path / "etc-herald.toml"
    assert config_path_from(None, {}, system) is None  # nothing installed: built-in defaults
    system.write_text("")
    assert config_path_from(None, {}, system) == system
    conf_dir = tmp_path / "confdir"
    conf_dir.mkdir()
    (conf_dir / "herald.toml").write_text("")
    assert config_path_from(None, {"CONFIGURATION_DIRECTORY": str(conf_dir)}, system) == \
        conf_dir / "herald.toml"
    assert config_path_from(None, {"HERALD_CONFIG": "/x.toml"}, system) == Path("/x.toml")
    assert config_path_from("/cli.toml", {"HERALD_CONFIG": "/x.toml"}, system) == \
        Path("/cli.toml")


def test_data_dir_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    assert default_data_dir({}) == Path("herald-data")
    assert default_data_dir({"STATE_DIRECTORY": "/var/lib/herald:/var/lib/other"}) == \
        Path("/var/lib/herald")
    monkeypatch.setattr("engine.paths._has_terminal", lambda: False)
    assert default_data_dir({"INVOCATION_ID": "abc"}) == Path("/var/lib/herald")
    monkeypatch.setattr("engine.paths._has_terminal", lambda: True)  # a terminal in a unit
    assert default_data_dir({"INVOCATION_ID": "abc"}) == Path("herald-data")
    monkeypatch.setenv("STATE_DIRECTORY", "/srv/herald")
    assert load_settings(None, environ={}).engine.data_dir == Path("/srv/herald")
    assert load_settings(None, environ={"HERALD_DATA_DIR": "/d"}).engine.data_dir == Path("/d")


def test_the_examples_are_found_without_a_checkout(tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)  # no config/ here
    settings = load_settings(None, environ={})
    assert resolve_path(settings, settings.automation.workflows_dir) == SHIPPED / "workflows"
    assert "welcome" in load_catalog(settings).current
    assert shaping_rules(settings)  # config/shaping.toml from the package
    etc = tmp_path / "etc"
    etc.mkdir()
    (etc / "herald.toml").write_text("")
    installed = load_settings(etc / "herald.toml", environ={})
    assert resolve_path(installed, Path("config/templates")) == SHIPPED / "templates"
    (etc / "config" / "workflows").mkdir(parents=True)  # a local copy wins
    assert resolve_path(installed, Path("config/workflows")) == etc / "config" / "workflows"
    assert resolve_path(installed, Path("workflows")) == etc / "workflows"


def credentials(tmp_path: Path, **files: str) -> Path:
    directory = tmp_path / "credentials"
    directory.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        (directory / name.replace("_", "-")).write_text(text)
    return directory


def test_credentials_from_the_credentials_directory(tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    directory = credentials(tmp_path / "run", bounce_secret="s3cret-bounce-key\n",
                            link_key="k1:0123456789abcdef0123\n", dkim_rsa="PEM")
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(directory))
    config = tmp_path / "herald.toml"
    config.write_text('[mta]\nbounce_secret = "credential:bounce-secret"\n'
                      '[[mta.dkim]]\ndomain = "example.com"\nselector = "s1"\n'
                      'key_file = "credential:dkim-rsa"\n'
                      '[http]\nlink_keys = ["credential:link-key"]\n')
    settings = load_settings(config, environ={})
    assert settings.mta.bounce_secret == "s3cret-bounce-key"
    assert settings.http.link_keys == ("k1:0123456789abcdef0123",)
    assert settings.mta.dkim[0].key_file == directory / "dkim-rsa"
    from_env = load_settings(None, environ={"HERALD_MTA_BOUNCE_SECRET": "credential:bounce-secret"})
    assert from_env.mta.bounce_secret == "s3cret-bounce-key"


def test_credentials_by_hand_come_from_next_to_the_config(tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CREDENTIALS_DIRECTORY", raising=False)
    credentials(tmp_path, bounce_secret="by-hand-secret")
    config = tmp_path / "herald.toml"
    config.write_text('[mta]\nbounce_secret = "credential:bounce-secret"\n')
    assert load_settings(config, environ={}).mta.bounce_secret == "by-hand-secret"


@pytest.mark.parametrize(("value", "message"), [
    ("credential:missing", "mta.bounce_secret: credential 'missing' is not in "
                           "$CREDENTIALS_DIRECTORY"),
    ("credential:../etc/passwd", "mta.bounce_secret: 'credential:../etc/passwd': a credential "
                                 "name is"),
])
def test_credential_errors_name_the_key(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                        value: str, message: str) -> None:
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(credentials(tmp_path)))
    with pytest.raises(ConfigError) as caught:
        load_settings(None, environ={"HERALD_MTA_BOUNCE_SECRET": value})
    assert str(caught.value).startswith(message)
    assert "LoadCredential=" in str(caught.value) or "name is" in str(caught.value)
