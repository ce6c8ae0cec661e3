"""The ``[privacy]`` section."""

from __future__ import annotations

from dataclasses import dataclass

from engine.settings_loader import duration


@dataclass(frozen=True, slots=True)
class PrivacySettings:
    # Marketing sends of workflows that do not say (no `requires_consent` on the workflow or
    # step) go only to contacts whose consent is opted_in. Transactional sends never wait.
    require_consent: bool = False
    # How long a double opt-in confirmation link stays valid.
    confirm_ttl: float = duration("30d")

    def __post_init__(self) -> None:
        if not 3600 <= self.confirm_ttl <= 366 * 86400:
            raise ValueError("confirm_ttl must be between 1h and 366d")
