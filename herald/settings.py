"""All of Herald's settings, parsed once from the TOML file and the environment."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from automation.settings import AutomationSettings
from automation.stats.settings import StatsSettings
from engine.config import (
    EngineSettings,
    HttpSettings,
    IntakeSettings,
    LogSettings,
    MetricsSettings,
)
from engine.outbox.settings import WebhooksSettings
from engine.privacy.settings import PrivacySettings
from engine.settings_loader import load_sections
from herald.retention import RetentionSettings
from mta.inbound.settings import InboundSettings
from mta.settings import MtaSettings
from mta.submission.settings import SubmissionSettings
from mta.tracking.settings import TrackingSettings

SECTIONS: dict[str, type] = {
    "engine": EngineSettings,
    "http": HttpSettings,
    "intake": IntakeSettings,
    "mta": MtaSettings,
    "automation": AutomationSettings,
    "inbound": InboundSettings,
    "log": LogSettings,
    "metrics": MetricsSettings,
    "submission": SubmissionSettings,
    "stats": StatsSettings,
    "tracking": TrackingSettings,
    "webhooks": WebhooksSettings,
    "retention": RetentionSettings,
    "privacy": PrivacySettings,
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
    log: LogSettings = field(default_factory=LogSettings)
    metrics: MetricsSettings = field(default_factory=MetricsSettings)
    submission: SubmissionSettings = field(default_factory=SubmissionSettings)
    stats: StatsSettings = field(default_factory=StatsSettings)
    tracking: TrackingSettings = field(default_factory=TrackingSettings)
    webhooks: WebhooksSettings = field(default_factory=WebhooksSettings)
    retention: RetentionSettings = field(default_factory=RetentionSettings)
    privacy: PrivacySettings = field(default_factory=PrivacySettings)
    config_path: Path | None = None


SYSTEM_CONFIG = Path("/etc/herald/herald.toml")
# The example workflows, templates and shaping rules, shipped inside the package (in a checkout,
# herald/defaults is a link to config/).
SHIPPED = Path(__file__).resolve().parent / "defaults"


def config_path_from(cli_value: str | None, environ: dict[str, str] | None = None,
                     system_config: Path = SYSTEM_CONFIG) -> Path | None:
    """``--config``, else ``$HERALD_CONFIG``, else ``herald.toml`` in systemd's
    ``$CONFIGURATION_DIRECTORY``, else ``/etc/herald/herald.toml`` when it exists, else none."""
    environ = dict(os.environ) if environ is None else environ
    value = cli_value or environ.get("HERALD_CONFIG")
    if value:
        return Path(value)
    directory = environ.get("CONFIGURATION_DIRECTORY", "").split(":")[0]
    for candidate in ([Path(directory) / "herald.toml"] if directory else []) + [system_config]:
        if candidate.is_file():
            return candidate
    return None


def load_settings(config_path: Path | None, environ: dict[str, str] | None = None) -> Settings:
    sections = load_sections(SECTIONS, config_path, environ, ALIASES)
    return Settings(config_path=config_path, **sections)


def resolve_path(settings: Settings, path: Path) -> Path:
    """Relative paths in the config file are relative to the file's directory's parent when
    the file sits in a ``config/`` folder (the repository layout), else to the file's folder;
    with no config file, to the working directory. ``config/...`` falls back to the shipped
    copy (see :func:`shipped_fallback`)."""
    if path.is_absolute():
        return path
    if settings.config_path is None:
        return shipped_fallback(path, path)
    base = settings.config_path.resolve().parent
    if base.name == "config":
        base = base.parent
    return shipped_fallback(path, base / path)


def shipped_fallback(path: Path, resolved: Path) -> Path:
    """``config/...`` paths (the defaults of ``workflows_dir``, ``templates_dir`` and
    ``shaping_file``) that do not exist where they resolve to are taken from the copy shipped
    inside the package, so an installed Herald finds its examples without a checkout."""
    if resolved.exists() or not path.parts or path.parts[0] != "config":
        return resolved
    shipped = SHIPPED.joinpath(*path.parts[1:])
    return shipped if shipped.exists() else resolved
