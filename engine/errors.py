"""The engine's error tree. Third-party exceptions are translated into these at the boundary."""


class HeraldError(Exception):
    """Base of every error Herald raises on purpose."""


class ConfigError(HeraldError):
    """A setting is missing or invalid; the message names the key."""


class DatabaseUnavailable(HeraldError):
    """Postgres cannot be reached right now; callers answer 503 / retry later."""


class MigrationError(HeraldError):
    """A schema migration could not be applied."""
