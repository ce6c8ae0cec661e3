"""Locale-aware formatting for templates, on Babel's CLDR data (pure).

``money`` formats an amount in any ISO 4217 currency with that currency's decimals, and
``datetime_format`` a date or date-time, both for a locale such as ``de_DE`` (``de-DE`` is
accepted too): ``money(1234.5, "EUR", "de_DE")`` is ``"1.234,50 €"`` (with a no-break space).
Templates get them as the ``money`` and ``datetime`` filters, which use the contact's
``locale`` attribute (see :func:`contact_locale`) unless given ``locale=``. Every error a
template can cause is a ``ValueError`` saying what is wrong.
"""

from __future__ import annotations

import functools
import re
from datetime import date, datetime
from decimal import Decimal, InvalidOperation
from typing import Any

from babel import Locale, UnknownLocaleError
from babel.dates import format_date, format_datetime
from babel.numbers import format_currency

DEFAULT_LOCALE = "en_US"
NAMED_FORMATS = frozenset({"short", "medium", "long", "full"})
MAX_LOCALE_CHARS = 40
MAX_PATTERN_CHARS = 100
_CURRENCY = re.compile(r"[A-Z]{3}\Z")
_LOCALE = re.compile(r"[A-Za-z]{2,8}(?:[-_][A-Za-z0-9]{1,8})*(?:\.[A-Za-z0-9-]+)?\Z")


@functools.lru_cache(maxsize=256)
def parse_locale(name: str) -> Locale:
    """A Babel locale from ``de_DE``, ``de-DE``, ``de``, ``zh_Hans_CN``; ValueError if unknown."""
    if not isinstance(name, str) or len(name) > MAX_LOCALE_CHARS or not _LOCALE.match(name):
        raise ValueError(f"{name!r} is not a locale (e.g. de_DE)")
    try:
        return Locale.parse(name.replace("-", "_"))
    except (UnknownLocaleError, ValueError):
        raise ValueError(f"unknown locale {name!r}") from None


def contact_locale(value: Any) -> str | None:
    """The contact's ``locale`` attribute in Babel's spelling (``de_DE``), or None when it is
    missing or not a known locale (a bad attribute never fails a send: the default applies)."""
    if not isinstance(value, str) or not value:
        return None
    try:
        return str(parse_locale(value))
    except ValueError:
        return None


def money(value: Any, currency: Any = "USD", locale: str | None = None) -> str:
    """A price in major units (``19.9``, ``"19.90"``) in ``currency`` for ``locale``."""
    if isinstance(value, bool) or not isinstance(value, int | float | str | Decimal):
        raise ValueError(f"money: {value!r} is not an amount")
    try:
        amount = Decimal(str(value).strip())
    except InvalidOperation:
        raise ValueError(f"money: {value!r} is not an amount") from None
    if not amount.is_finite():
        raise ValueError(f"money: {value!r} is not an amount")
    code = str(currency).strip().upper()
    if not _CURRENCY.match(code):
        raise ValueError(f"money: {currency!r} is not a currency code (e.g. EUR)")
    return format_currency(amount, code, locale=parse_locale(locale or DEFAULT_LOCALE))


def datetime_format(value: Any, format: str = "long", locale: str | None = None) -> str:
    """Format an RFC 3339 date-time string, an ISO date string, a date or a datetime.

    ``format``: ``short``, ``medium``, ``long`` (the default) or ``full`` give the date in the
    locale's style (``1. März 2026``); another value is a CLDR pattern (``d. MMMM y``, ``HH:mm``
    for date-times); one containing ``%`` is a ``strftime`` format (English names)."""
    if isinstance(value, str):
        try:
            value = (date.fromisoformat(value) if len(value) == 10
                     else datetime.fromisoformat(value.replace("Z", "+00:00")))
        except ValueError:
            raise ValueError(f"datetime: {value!r} is not a date") from None
    if not isinstance(value, date):
        raise ValueError(f"datetime: {value!r} is not a date")
    if not isinstance(format, str) or not format or len(format) > MAX_PATTERN_CHARS:
        raise ValueError(f"datetime: {format!r} is not a format")
    if "%" in format:
        return value.strftime(format)
    where = parse_locale(locale or DEFAULT_LOCALE)
    try:
        if format in NAMED_FORMATS or not isinstance(value, datetime):
            day = value.date() if isinstance(value, datetime) else value
            return format_date(day, format, locale=where)
        return format_datetime(value, format, locale=where)
    except (AttributeError, KeyError, ValueError, TypeError):
        raise ValueError(f"datetime: {format!r} is not a format for {value!r}") from None
