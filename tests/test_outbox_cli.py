"""``herald webhooks`` and ``herald outbox`` (the CLI's ``main`` in-process: one interpreter
start instead of one per command): a subscription is added (its secret printed once), listed,
tested and removed; bad input is one line and exit 2."""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass

import orjson
import pytest

from herald import cli, exit_codes


@dataclass
class Done:
    returncode: int
    stdout: str
    stderr: str


Herald = Callable[..., Done]


@pytest.fixture
def herald(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
           database_url: str) -> Herald:
    for key in [key for key in os.environ if key.startswith("HERALD_")]:
        monkeypatch.delenv(key)
    monkeypatch.setenv("HERALD_DATABASE_URL", database_url)
    monkeypatch.setenv("HERALD_WEBHOOKS_ALLOW", "127.0.0.1:9")
    monkeypatch.setattr(cli, "configure_logging", lambda *args, **kwargs: None)

    def run(_url: str, *args: str) -> Done:
        capsys.readouterr()
        code = cli.main(list(args))
        out, err = capsys.readouterr()
        return Done(code, out, err)

    return run


def test_webhooks_commands(herald: Herald, database_url: str) -> None:
    added = herald(database_url, "webhooks", "add", "--url", "http://127.0.0.1:9/hook",
                   "--event", "email_bounced", "--event", "workflow_entered")
    assert added.returncode == exit_codes.OK, added.stderr
    lines = added.stdout.splitlines()
    assert lines[-1].startswith("whsec_") and lines[-2] == "signing secret (shown once):"
    sub_id = lines[0].split()[1]
    listed = herald(database_url, "webhooks", "list")
    assert listed.stdout.splitlines() == [
        f"{sub_id}\thttp://127.0.0.1:9/hook\temail_bounced,workflow_entered"]
    assert "whsec_" not in listed.stdout
    tested = herald(database_url, "webhooks", "test", sub_id)
    assert tested.returncode == exit_codes.OK and "queued outbox row" in tested.stdout
    pending = herald(database_url, "outbox", "list", "--state", "pending")
    [row] = [orjson.loads(line) for line in pending.stdout.splitlines()]
    assert (row["kind"], row["subscription_id"], row["event_type"]) == (
        "test", sub_id, "webhook_test")
    assert herald(database_url, "webhooks", "remove", sub_id).returncode == exit_codes.OK


def test_bad_input_is_one_line_and_exit_2(herald: Herald, database_url: str) -> None:
    for args, message in [
        (("webhooks", "add", "--url", "ftp://x.example/", "--event", "email_bounced"),
         "herald: error: url: only http:// and https:// URLs can be called"),
        (("webhooks", "add", "--url", "http://127.0.0.1:8/", "--event", "email_bounced"),
         "herald: error: url: 127.0.0.1 resolves to non-public address 127.0.0.1"),
        (("webhooks", "add", "--url", "https://x.example/", "--event", "email_sent"),
         "herald: error: events: unknown event type 'email_sent'"),
        (("webhooks", "remove", "wh_nope"),
         "herald: error: no webhook subscription with id 'wh_nope'"),
        (("outbox", "retry", "12"), "herald: error: no outbox row with id 12"),
    ]:
        done = herald(database_url, *args)
        assert done.returncode == exit_codes.USAGE, (args, done.stderr)
        assert done.stderr.startswith(message), done.stderr
        assert len(done.stderr.strip().splitlines()) == 1
        assert done.stdout == ""
