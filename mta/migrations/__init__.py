"""The MTA's numbered SQL migrations (applied after the engine's)."""

from pathlib import Path

from engine.migrations import MigrationSource

MTA_MIGRATIONS = MigrationSource("mta", Path(__file__).parent)
