"""Argument parsing for the sizing benches: a bad value ends in ONE line on stderr and exit 2.

``argparse`` prints its usage block before the error; an operator reading a CI log or a cron
mail wants the one line that says what is wrong, as every other ``herald`` command gives.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from typing import NoReturn

USAGE_EXIT = 2  # herald.exit_codes.USAGE (bench sits above herald but needs no import for it)


class OneLineParser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        fail(self.prog, message)


def fail(prog: str, message: str) -> NoReturn:
    print(f"{prog}: error: {message}", file=sys.stderr)
    raise SystemExit(USAGE_EXIT)


def number_in(low: float, high: float | None = None, *, low_open: bool = False,
              integer: bool = False) -> Callable[[str], float]:
    """An argparse type: a number in [low, high] (or (low, high] with ``low_open``)."""
    def parse(text: str) -> float:
        try:
            value = int(text) if integer else float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
        if value != value or (low_open and value <= low) or value < low:  # NaN, bounds
            bound = f"> {low:g}" if low_open else f">= {low:g}"
            raise argparse.ArgumentTypeError(f"{text} must be {bound}"
                                             + (f" and <= {high:g}" if high is not None else ""))
        if high is not None and value > high:
            raise argparse.ArgumentTypeError(f"{text} must be <= {high:g}")
        return value
    parse.__name__ = "integer" if integer else "number"  # argparse names the type in errors
    return parse


def positive(text: str) -> float:
    return number_in(0.0, low_open=True)(text)


def positive_int(text: str) -> int:
    return int(number_in(1, integer=True)(text))


def share(text: str) -> float:
    """A fraction of messages, 0 to 1."""
    return number_in(0.0, 1.0)(text)


def int_list(text: str) -> list[int]:
    """``5,20,50``: positive integers."""
    try:
        values = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a comma-separated list of "
                                         "integers") from None
    if not values or any(value < 1 for value in values):
        raise argparse.ArgumentTypeError(f"{text!r}: each value must be >= 1")
    return values
