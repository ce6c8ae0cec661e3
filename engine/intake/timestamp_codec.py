"""A ``timestamptz`` codec for the intake writer's connections: a datetime repeated row after
row is encoded once.

asyncpg's own encoder costs about 1 µs per value (two comparisons with its infinity
datetimes, ``astimezone``, a subtraction and three attribute reads, each a Python object
operation): about as much as every other column of an event row together, and most rows of a
batch carry the same ``occurred_at`` (the time their request arrived). This codec (asyncpg's
``tuple`` format: microseconds since 2000-01-01 UTC) remembers the last datetime it encoded
and answers a repeat of the same object from that. Values are exactly asyncpg's:

* an aware datetime: its UTC instant; a naive one is taken as local time (``astimezone``);
* the instants asyncpg writes as ``infinity`` and ``-infinity`` (9999-12-31 23:59:59.999999
  and 0001-01-01 00:00:00 UTC) are written so here too;
* decoding gives asyncpg's values back (aware UTC; its naive ``datetime.max``/``min`` for the
  infinities).

Installed on a connection by :func:`install` and removed by :func:`remove` before the
connection goes back to the pool (:mod:`engine.intake.held_connection`), so other users of
the pool keep asyncpg's C decoder.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import asyncpg

PG_EPOCH = datetime(2000, 1, 1, tzinfo=UTC)
PG_INFINITY = 2**63 - 1
PG_NEGATIVE_INFINITY = -(2**63)
# asyncpg's infinity_datetime_ts and negative_infinity_datetime_ts.
_INFINITY_TS = 252_455_615_999_999_999
_NEGATIVE_INFINITY_TS = -63_082_281_600_000_000


def microseconds(value: datetime) -> int:
    """``value`` in Postgres's binary timestamptz form, as asyncpg writes it."""
    if value.__class__ is not datetime:
        if isinstance(value, date) and not isinstance(value, datetime):
            value = datetime(value.year, value.month, value.day).astimezone()
        elif not isinstance(value, datetime):
            raise TypeError("expected a datetime.date or datetime.datetime instance, "
                            f"got {type(value).__name__!r}")
    if value.tzinfo is None:
        if value == datetime.max:  # asyncpg's naive infinity_datetime
            return PG_INFINITY
        if value == datetime.min:
            return PG_NEGATIVE_INFINITY
        value = value.astimezone()  # local time, as asyncpg takes it
    delta = value - PG_EPOCH
    encoded = (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds
    if encoded == _INFINITY_TS:
        return PG_INFINITY
    if encoded == _NEGATIVE_INFINITY_TS:
        return PG_NEGATIVE_INFINITY
    return encoded


class TimestampCodec:
    """One per connection: the last datetime encoded and its encoding."""

    __slots__ = ("_encoded", "_last")

    def __init__(self) -> None:
        self._last: object = None
        self._encoded: tuple[int] = (0,)

    def encode(self, value: datetime) -> tuple[int]:
        if value is self._last:
            return self._encoded
        encoded = (microseconds(value),)
        self._last, self._encoded = value, encoded
        return encoded

    @staticmethod
    def decode(value: tuple[int]) -> datetime:
        encoded = value[0]
        if encoded == PG_INFINITY:
            return datetime.max
        if encoded == PG_NEGATIVE_INFINITY:
            return datetime.min
        return PG_EPOCH + timedelta(microseconds=encoded)


async def install(connection: asyncpg.Connection) -> None:
    codec = TimestampCodec()
    await connection.set_type_codec("timestamptz", schema="pg_catalog", encoder=codec.encode,
                                    decoder=codec.decode, format="tuple")


async def remove(connection: asyncpg.Connection) -> None:
    """asyncpg's own codec again."""
    await connection.reset_type_codec("timestamptz", schema="pg_catalog")
