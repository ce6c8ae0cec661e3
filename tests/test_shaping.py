"""Traffic shaping (pure): rules, rate buckets, throttling backoff and adaptive concurrency."""

from __future__ import annotations

from pathlib import Path

import pytest

from engine.errors import ConfigError
from mta.settings import MtaSettings, retry_delay
from mta.shaping.rules import (
    MAX_BACKOFF,
    ShapingRule,
    SiteGovernor,
    SiteLimits,
    TokenBucket,
    limits_for,
    load_rules,
)


def test_first_matching_rule_wins_by_domain_or_mx() -> None:
    rules = (ShapingRule("big", domains=("big.example",), max_connections=3),
             ShapingRule("hosted", mx=("*.mx.host.example",), max_per_second=5))
    assert limits_for(rules, "big.example", ("mx1.big.example",), 10, 100).rule == "big"
    hosted = limits_for(rules, "shop.example", ("a.mx.host.example",), 10, 100)
    assert (hosted.rule, hosted.max_connections, hosted.max_per_second) == ("hosted", 10, 5)
    assert limits_for(rules, "x.example", ("mx.x.example",), 7, 100).rule == "default"


def test_token_bucket_paces_to_the_rate() -> None:
    bucket = TokenBucket(rate=2.0, capacity=2.0, now=0.0)
    assert bucket.wait_time(0.0) == 0.0 and bucket.wait_time(0.0) == 0.0
    assert bucket.wait_time(0.0) == pytest.approx(0.5)
    assert bucket.wait_time(0.5) == 0.0


def test_per_second_and_per_hour_limits_both_apply() -> None:
    governor = SiteGovernor(SiteLimits("r", 5, 100, 100.0, 60), base_backoff=60, now=0.0)
    started = sum(1 for _ in range(200) if governor.wait_time(0.0) == 0.0)
    assert started == 1  # the hourly bucket holds one minute's worth: 60/60 = 1
    assert governor.wait_time(0.0) == pytest.approx(60.0, rel=0.01)


def test_throttling_backs_off_doubling_and_halves_concurrency() -> None:
    governor = SiteGovernor(SiteLimits("r", 8, 100, None, None), base_backoff=120, now=0.0)
    assert governor.throttled(0.0) == 120
    assert governor.allowed_connections == 4
    assert governor.wait_time(10.0) == pytest.approx(110.0)
    assert governor.throttled(200.0) == 240
    assert governor.allowed_connections == 2
    for _ in range(50):
        governor.succeeded()
    assert governor.allowed_connections == 8  # additive increase back to the limit
    assert governor.throttled(1000.0) == 120  # success reset the doubling
    for _ in range(20):
        governor.throttled(1000.0)
    assert governor.backoff_until - 1000.0 <= MAX_BACKOFF


def test_retry_schedule_doubles_to_the_cap() -> None:
    settings = MtaSettings(retry_initial=300, retry_max=14400)
    assert [retry_delay(settings, n) for n in (1, 2, 3, 6, 7, 20)] == [
        300, 600, 1200, 9600, 14400, 14400]


def test_bad_rule_files_name_the_problem(tmp_path: Path) -> None:
    path = tmp_path / "shaping.toml"
    path.write_text('[[rule]]\nname = "x"\nmax_connections = 3\n')
    with pytest.raises(ConfigError, match="needs 'domains' or 'mx'"):
        load_rules(path)
    path.write_text('[[rule]]\nname = "x"\ndomains = ["a"]\nmax_per_second = -1\n')
    with pytest.raises(ConfigError, match="max_per_second must be positive"):
        load_rules(path)
    with pytest.raises(ConfigError, match="does not exist"):
        load_rules(tmp_path / "missing.toml")
