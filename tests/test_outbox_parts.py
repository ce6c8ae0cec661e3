"""The outbox's pure parts: Standard Webhooks signatures (checked with the official
``standardwebhooks`` verifier), secrets, backoff, the allow list and public addresses; the
old ``[automation] webhook_allow`` key fails with a message naming its replacement."""

from __future__ import annotations

import random
from datetime import UTC, datetime
from pathlib import Path

import pytest
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from engine.errors import ConfigError
from engine.outbox.backoff import full_jitter
from engine.outbox.settings import WebhooksSettings
from engine.outbox.signing import InvalidSecret, new_secret, parse_secret, signed_headers, verify
from engine.outbox.targets import TargetRefused, parse_allow, parse_url, public, vet
from herald.settings import load_settings

BODY = b'{"type":"email_delivered","data":{"contact_id":"42"}}'


def test_signatures_verify_with_the_standardwebhooks_package_and_our_own() -> None:
    secret = new_secret()
    key = parse_secret(secret)
    now = int(datetime.now(UTC).timestamp())
    headers = signed_headers(key, "msg_1", now, BODY)
    assert headers["webhook-signature"].startswith("v1,")
    assert Webhook(secret).verify(BODY, headers) == {"type": "email_delivered",
                                                     "data": {"contact_id": "42"}}
    assert verify(key, headers, BODY)
    tampered = BODY.replace(b"42", b"43")
    with pytest.raises(WebhookVerificationError):
        Webhook(secret).verify(tampered, headers)
    assert not verify(key, headers, tampered)
    other = {**headers, "webhook-id": "msg_2"}
    with pytest.raises(WebhookVerificationError):
        Webhook(secret).verify(BODY, other)
    assert not verify(key, other, BODY)
    with pytest.raises(WebhookVerificationError):  # signed with another secret
        Webhook(new_secret()).verify(BODY, headers)


def test_secrets_are_whsec_base64_of_24_to_64_bytes() -> None:
    assert len(parse_secret(new_secret())) == 32
    for bad, why in (("abc", "whsec_<base64>"), ("whsec_***", "not base64"),
                     ("whsec_AAAA", "24 to 64 bytes")):
        with pytest.raises(InvalidSecret, match=why.replace("<", ".").replace(">", ".")):
            parse_secret(bad)


def test_full_jitter_stays_within_the_exponential_ceiling() -> None:
    rng = random.Random(7)
    for attempt in range(1, 30):
        ceiling = min(60.0, 0.5 * 2 ** (attempt - 1))
        delays = [full_jitter(attempt, 0.5, 60.0, rng) for _ in range(50)]
        assert all(0 <= d <= ceiling for d in delays)
        assert max(delays) > ceiling / 2  # jittered across the whole range, not fixed


@pytest.mark.parametrize("address", [
    "127.0.0.1", "10.1.2.3", "172.16.0.1", "192.168.1.1", "169.254.169.254", "100.64.0.1",
    "224.0.0.1", "0.0.0.0", "255.255.255.255", "::1", "fe80::1", "fc00::1", "ff02::1", "::",
    "::ffff:127.0.0.1", "::ffff:10.0.0.1"])
def test_non_public_addresses_are_refused_unless_allowed(address: str) -> None:
    assert not public(address)
    target = parse_url("https://hook.example:8443/x")
    with pytest.raises(TargetRefused, match=f"non-public address {address}"):
        vet(target, ["93.184.216.34", address], frozenset())
    assert vet(target, [address], parse_allow(("hook.example",))) == address
    assert vet(target, [address], parse_allow(("HOOK.example:8443",))) == address
    with pytest.raises(TargetRefused):
        vet(target, [address], parse_allow(("hook.example:443",)))


def test_public_addresses_pass() -> None:
    target = parse_url("http://hook.example/x")
    assert target.port == 80 and target.endpoint == "http://hook.example:80"
    assert vet(target, ["93.184.216.34", "2606:2800:220:1::1"], frozenset()) == "93.184.216.34"


@pytest.mark.parametrize(("url", "why"), [
    ("ftp://x.example/", "only http:// and https://"), ("https:///x", "no host"),
    ("https://u:p@x.example/", "user name or password"), ("https://x.example/a b", "spaces"),
    ("https://x.example:99999/", "does not parse"), (42, "non-empty string"),
    ("https://x.example/#frag", "fragment")])
def test_urls_that_cannot_be_called(url: object, why: str) -> None:
    with pytest.raises(TargetRefused, match=why):
        parse_url(url)


def test_allow_entries_are_checked_at_start() -> None:
    assert parse_allow(("Hook.Test", "127.0.0.1:8080", "[::1]:99")) == {
        "hook.test", "127.0.0.1:8080", "::1:99"}
    for bad in ("a b", "x:0", "x:port", "[::1]x", "http://x"):
        with pytest.raises(ValueError, match="allow"):
            WebhooksSettings(allow=(bad,))


def test_the_old_automation_key_names_its_replacement(tmp_path: Path) -> None:
    config = tmp_path / "herald.toml"
    config.write_text('[automation]\nwebhook_allow = ["hooks.internal"]\n')
    with pytest.raises(ConfigError, match=r"webhook_allow is replaced by \[webhooks\] allow"):
        load_settings(config, environ={})
    config.write_text('[webhooks]\nallow = ["hooks.internal"]\n')
    assert load_settings(config, environ={}).webhooks.allow == ("hooks.internal",)


def test_every_outbox_route_is_in_the_openapi_document_and_back() -> None:
    from types import SimpleNamespace

    from engine.outbox import api
    from engine.outbox.admin import Vetter
    from engine.outbox.transport import HostResolver

    context = SimpleNamespace(database=None, auth=None, settings=None)
    routes = api.routes(context, Vetter(frozenset(), HostResolver()))  # type: ignore[arg-type]
    served = {(route.path, method.lower()) for route in routes
              for method in (route.methods or ()) if method != "HEAD"}
    documented = {(path, method) for path, item in api.openapi_paths().items()
                  for method in item}
    assert served == documented
