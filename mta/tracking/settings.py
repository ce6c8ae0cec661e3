"""The ``[tracking]`` section: open and click tracking of workflow mail (and API messages sent
with ``track: true``), and how machine opens and clicks are recognised."""

from __future__ import annotations

from dataclasses import dataclass

from engine.settings_loader import duration
from mta.tracking.machine import MachineRules


@dataclass(frozen=True, slots=True)
class TrackingSettings:
    # Rewrite the links of workflow mail to {[http] public_url}/t/c/... and add an open pixel.
    enabled: bool = True
    # A click this soon after delivery is a link scanner's (flagged machine: true).
    machine_click_window: float = duration("10s")
    # A click on one link less than this after a click on another link of the same message is
    # a scanner's burst.
    machine_burst_window: float = duration("2s")
    # Per client address, for /t/o and /t/c: sustained hits per second and burst. Past it a
    # click still redirects and an open still gets its pixel, but nothing is recorded (counted
    # in herald_tracking_hits_total{outcome="rate_limited"}). 0 disables.
    client_rate_per_second: float = 20.0
    client_rate_burst: int = 200

    def __post_init__(self) -> None:
        if not 0 <= self.machine_click_window <= 3600:
            raise ValueError("machine_click_window must be between 0s and 1h")
        if not 0 <= self.machine_burst_window <= 600:
            raise ValueError("machine_burst_window must be between 0s and 10m")
        if self.client_rate_per_second < 0 or self.client_rate_burst < 0:
            raise ValueError("client_rate_per_second and client_rate_burst cannot be negative")

    @property
    def machine_rules(self) -> MachineRules:
        return MachineRules(self.machine_click_window, self.machine_burst_window)
