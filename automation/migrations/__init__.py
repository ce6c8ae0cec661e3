"""The automation core's numbered SQL migrations (applied after the MTA's)."""

from pathlib import Path

from engine.migrations import MigrationSource

AUTOMATION_MIGRATIONS = MigrationSource("automation", Path(__file__).parent)
