"""The engine's error tree. Third-party exceptions are translated into these at the boundary."""


class HeraldError(Exception):
    """Base of every error Herald raises on purpose."""


class ConfigError(HeraldError):
    """A setting is missing or invalid; the message names the key."""


class DatabaseError(HeraldError):
    """A database operation failed; ``engine.db_errors`` turns every asyncpg error into one of
    the subclasses below, so no code outside ``engine`` handles asyncpg's exceptions."""


class DatabaseUnavailable(DatabaseError):
    """Postgres cannot answer right now (down, hung past a bound, overloaded, shutting down):
    callers answer 503 with Retry-After, or retry later."""


class DatabaseContention(DatabaseUnavailable):
    """A serialization failure or deadlock: the transaction may be retried at once."""


class DatabaseRejected(DatabaseError):
    """Postgres refused a value the caller supplied (bad text, out of range, nested too deeply,
    ...): the request is at fault and retrying it cannot help. ``reason`` is safe to show."""

    def __init__(self, reason: str, field: str | None = None) -> None:
        super().__init__(f"{field}: {reason}" if field else reason)
        self.reason = reason
        self.field = field


class DatabaseConflict(DatabaseRejected):
    """A uniqueness constraint refused the row (it exists already)."""


class DatabaseFault(DatabaseError):
    """Anything else: a bug in a query or the schema. Answered as a 500 and logged."""


class MigrationError(HeraldError):
    """A schema migration could not be applied."""
