"""The event types outcome webhooks can subscribe to, and the JSON each request carries (pure).

A request body is ``{"type": ..., "timestamp": RFC 3339, "data": {...}}`` (the Standard
Webhooks payload shape). Outcome events come from the event log; workflow events from what the
automation core logs for a run (``workflow_log``: entered, exit, completed).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import orjson

from engine.timestamps import format_rfc3339

OUTCOME_EVENTS = ("email_delivered", "email_deferred", "email_bounced", "email_complained",
                  "email_opened", "email_clicked", "email_unsubscribed")
# workflow_log action -> event type
WORKFLOW_ACTIONS = {"entered": "workflow_entered", "exit": "workflow_exited",
                    "completed": "workflow_completed"}
WORKFLOW_EVENTS = tuple(WORKFLOW_ACTIONS.values())
EVENT_TYPES = OUTCOME_EVENTS + WORKFLOW_EVENTS
TEST_EVENT = "webhook_test"


def unknown_event_types(types: list[str]) -> list[str]:
    return [name for name in types if name not in EVENT_TYPES]


def body(event_type: str, at: datetime, data: dict[str, Any]) -> bytes:
    return orjson.dumps({"type": event_type, "timestamp": format_rfc3339(at), "data": data},
                        default=str)


def outcome_body(event_type: str, at: datetime, position: int, event_id: str | None,
                 contact_id: str, email: str | None, properties: dict[str, Any]) -> bytes:
    return body(event_type, at, {"position": position, "event_id": event_id,
                                 "contact_id": contact_id, "email": email,
                                 "properties": properties})
