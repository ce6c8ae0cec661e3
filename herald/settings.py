"""All of Herald's settings, parsed once from the TOML file and the environment."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from automation.settings import AutomationSettings
from engine.config import EngineSettings, HttpSettings, IntakeSettings
from engine.settings_loader import load_sections
from mta.inbound.settings import InboundSettings
from mta.settings import MtaSettings

SECTIONS: dict[str, type] = {
    "engine": EngineSettings,
    "http": HttpSettings,
    "intake": IntakeSettings,
    "mta": MtaSettings,
    "automation": AutomationSettings,
    "inbound": InboundSettings,
}
ALIASES = {
    "HERALD_DATA_DIR": ("engine", "data_dir"),
    "HERALD_DATABASE_URL": ("engine", "database_url"),
}


@dataclass(frozen=True, slots=True)
class Settings:
    engine: EngineSettings = field(default_factory=EngineSettings)
    http: HttpSettings = field(default_factory=HttpSettings)
    intake: IntakeSettings = field(default_factory=IntakeSettings)
    mta: MtaSettings = field(default_factory=MtaSettings)
    automation: AutomationSettings = field(default_factory=AutomationSettings)
    inbound: InboundSettings = field(default_factory=InboundSettings)
    config_path: Path | None = None


def config_path_from(cli_value: str | None) -> Path | None:
    value = cli_value or os.environ.get("HERALD_CONFIG")
    return Path(value) if value else None


def load_settings(config_path: Path | None, environ: dict[str, str] | None = None) -> Settings:
    sections = load_sections(SECTIONS, config_path, environ, ALIASES)
    return Settings(config_path=config_path, **sections)


def resolve_path(settings: Settings, path: Path) -> Path:
    """Relative paths in the config file are relative to the file's directory's parent when
    the file sits in a ``config/`` folder (the repository layout), else to the file's folder;
    with no config file, to the working directory."""
    if path.is_absolute() or settings.config_path is None:
        return path
    base = settings.config_path.resolve().parent
    if base.name == "config":
        base = base.parent
    return base / path
