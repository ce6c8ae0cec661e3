"""Product recommendations for templates (pure): the contact's recent product views, most
recent first, one per sku, excluding the products the trigger event is about."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

PRODUCT_FIELDS = ("sku", "name", "url", "image_url", "price", "currency")


def trigger_skus(trigger_properties: Mapping[str, Any]) -> set[str]:
    skus = {trigger_properties.get("sku")}
    items = trigger_properties.get("items")
    if isinstance(items, list):
        skus |= {item.get("sku") for item in items if isinstance(item, dict)}
    return {s for s in skus if isinstance(s, str)}


def recommend(recent_views: Iterable[Mapping[str, Any]], trigger_properties: Mapping[str, Any],
              limit: int) -> list[dict[str, Any]]:
    """``recent_views``: properties of product_viewed events, newest first."""
    exclude = trigger_skus(trigger_properties)
    chosen: list[dict[str, Any]] = []
    seen: set[str] = set()
    for view in recent_views:
        sku = view.get("sku")
        if not isinstance(sku, str) or sku in exclude or sku in seen:
            continue
        seen.add(sku)
        chosen.append({name: view[name] for name in PRODUCT_FIELDS if name in view})
        if len(chosen) >= limit:
            break
    return chosen


def engagement(events: Iterable[tuple[str, Mapping[str, Any]]], workflow: str,
               run_id: int, include_machine: bool = False) -> tuple[set[str], set[str]]:
    """Send step ids of this run that were opened / clicked, from engagement events whose
    properties carry ``workflow``, ``step`` and (when present) ``run_id``; events flagged
    ``machine: true`` (privacy proxies, link scanners) count only with ``include_machine``."""
    opened: set[str] = set()
    clicked: set[str] = set()
    for event_type, properties in events:
        if properties.get("workflow") != workflow:
            continue
        if not include_machine and properties.get("machine") is True:
            continue
        if "run_id" in properties and properties.get("run_id") != run_id:
            continue
        step = properties.get("step")
        if not isinstance(step, str):
            continue
        if event_type == "email_opened":
            opened.add(step)
        elif event_type == "email_clicked":
            clicked.add(step)
            opened.add(step)  # a click implies the message was opened
    return opened, clicked
