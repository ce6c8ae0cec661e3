"""Issue 12 item 11: numbers in text are ASCII digits everywhere. str.isdigit() accepts '²'
(which int() refuses: a crash) and '٣' (which int() reads as 3: a silent change)."""

from __future__ import annotations

import pytest

from automation.model.filters import _MISSING, _get
from engine.lifecycle import watchdog_interval
from engine.values import parse_duration, parse_size
from mta.smtp.reply import ServerExtensions
from mta.tls.sts_policy import StsPolicyInvalid, parse_policy

ODD_DIGITS = ["²", "٣", "1²", "١٢"]


@pytest.mark.parametrize("text", ODD_DIGITS)
def test_odd_digits_are_not_numbers(text: str) -> None:
    assert ServerExtensions.from_keywords({"SIZE": text}).size_limit == 0  # a server's EHLO
    with pytest.raises(StsPolicyInvalid, match="max_age"):  # a fetched MTA-STS policy
        parse_policy(f"version: STSv1\nmode: enforce\nmx: mx.example\nmax_age: {text}\n", "id")
    assert watchdog_interval({"WATCHDOG_USEC": text}) is None
    assert _get({"items": ["a", "b", "c", "d"]}, ("items", text)) is _MISSING
    with pytest.raises(ValueError):
        parse_duration(f"{text}d")
    with pytest.raises(ValueError):
        parse_size(text)


def test_ascii_digits_still_are() -> None:
    assert ServerExtensions.from_keywords({"SIZE": "1000"}).size_limit == 1000
    assert watchdog_interval({"WATCHDOG_USEC": "2000000"}) == 1.0
    assert _get({"items": ["a", "b"]}, ("items", "1")) == "b"
