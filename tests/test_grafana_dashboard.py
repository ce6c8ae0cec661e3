"""The Grafana dashboard charts only metrics Herald exports."""

from __future__ import annotations

import json
import re
from pathlib import Path

import automation.metrics  # noqa: F401  (registers the automation metrics)
import engine.outbox.metrics  # noqa: F401  (registers the outbox metrics)
import mta.metrics
from engine.metrics import REGISTRY

DASHBOARD = Path(__file__).resolve().parent.parent / "docs" / "grafana" / "herald.json"
SUFFIXES = ("_total", "_bucket", "_count", "_sum", "_created", "_info")


def exported() -> set[str]:
    queue = mta.metrics.QueueCollector()
    queue.update([mta.metrics.SiteQueue("mx.example", 1, 0, 0, 1.0)], 1.0)
    families = [*REGISTRY.collect(), *queue.collect()]
    return {sample.name for family in families for sample in family.samples} | {
        family.name for family in families}


def test_every_charted_metric_is_exported() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    names = exported()
    charted = {name for panel in dashboard["panels"] for target in panel["targets"]
               for name in re.findall(r"\b((?:herald|process)_[a-z_]+)", target["expr"])}
    assert charted
    missing = sorted(name for name in charted if name not in names
                     and not any(name.removesuffix(s) in names for s in SUFFIXES))
    assert missing == []
