"""What one received message means for one accepted recipient (pure): which suppressions, soft
bounces and events follow from a parsed report and the outbound message it is about.

The outbound message is found through a signed address only (the VERP recipient, the return
path inside a feedback report, or the unsubscribe token), never through an address the report
merely claims, so nobody can suppress an address by mailing us a made-up bounce.

Event ids are derived from the stored inbound message and the recipient's position, so
processing a message again never logs an event twice. Events carry the outbound message's
metadata (workflow, step, run id, template) as the delivery outcome events do, and the
properties :func:`mta.suppression.rules.from_event` reads (``hard``, ``message_id``,
``recipient``, ``source``), so the live engine and the simulator draw the same suppressions.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from mta.bounces.report import RecipientResult, Report
from mta.inbound.recipients import FEEDBACK, Recipient
from mta.queue.return_paths import BadReturnPath, message_id_from
from mta.suppression.addresses import normalise_lenient
from mta.suppression.rules import COMPLAINT, HARD_BOUNCE, Suppression
from mta.suppression.unsubscribe import MessageRef

# What processing did for a recipient (the ``outcome`` in an inbound message's result).
HARD = "hard_bounce"
SOFT = "soft_bounce"
DELAYED = "delayed"
COMPLAINED = "complaint"
AUTO_REPLIED = "auto_reply"
UNSUBSCRIBED = "unsubscribed"
UNKNOWN = "unknown"
UNMATCHED = "unmatched"  # no outbound message could be tied to it: nothing done
IGNORED = "ignored"  # a report that says nothing failed (e.g. only "delivered" recipients)

_METADATA_SKIP = frozenset({"category"})  # "category" means the bounce class in these events


@dataclass(frozen=True, slots=True)
class Effects:
    """The changes for one recipient; applied together, in the processing transaction."""

    outcome: str
    message_id: uuid.UUID | None = None
    suppressions: tuple[Suppression, ...] = ()
    soft_bounces: tuple[tuple[str, uuid.UUID], ...] = ()
    events: tuple[tuple[Any, ...], ...] = ()
    unsubscribe: MessageRef | None = None  # via mta.suppression.unsubscribe (its own event)
    detail: dict[str, Any] = field(default_factory=dict)

    def to_json(self, recipient: Recipient) -> dict[str, Any]:
        return {"recipient": recipient.address, "kind": recipient.kind,
                "outcome": self.outcome,
                "message_id": str(self.message_id) if self.message_id else None,
                **self.detail}


def message_id_for(recipient: Recipient, report: Report | None,
                   bounce_secret: bytes) -> uuid.UUID | None:
    """The outbound message a recipient's mail is about: the one its signed address names, or
    for a feedback address the one named by the signed return path inside the report."""
    if recipient.kind != FEEDBACK:
        return recipient.message_id
    if report is None or not report.original_return_path:
        return None
    try:
        return message_id_from(bounce_secret, report.original_return_path)
    except BadReturnPath:
        return None


def decide(recipient: Recipient, report: Report, message: MessageRef | None,
           event_key: str, at: datetime) -> Effects:
    """The effects of ``report`` (received at ``at``) on ``message``. ``event_key`` is unique
    per stored inbound message and recipient (``inbound:<id>:<n>``)."""
    if message is None:
        return Effects(UNMATCHED, None, detail=_unmatched_detail(report))
    if report.kind == "bounce":
        return _bounce(report, message, event_key, at)
    if report.kind == "complaint":
        source = "arf"
        suppression = Suppression(normalise_lenient(message.recipient), COMPLAINT,
                                  source=source, message_id=message.id,
                                  detail=f"feedback type {report.feedback_type or 'abuse'}")
        properties = _properties(message, {"feedback_type": report.feedback_type,
                                           "source": source, "kind": "async"})
        return Effects(COMPLAINED, message.id, (suppression,),
                       events=(_row(event_key, "email_complained", message, properties, at),),
                       detail={"feedback_type": report.feedback_type})
    if report.kind == "auto_reply":
        reason = report.recipients[0].reason if report.recipients else None
        properties = _properties(message, {"reason": reason, "source": "inbound"})
        return Effects(AUTO_REPLIED, message.id,
                       events=(_row(event_key, "email_auto_replied", message, properties, at),))
    return Effects(UNKNOWN, message.id)


def _bounce(report: Report, message: MessageRef, event_key: str, at: datetime) -> Effects:
    result = pick(report.recipients, message.recipient)
    if result is None:
        return Effects(IGNORED, message.id)
    address = normalise_lenient(message.recipient)
    detail = {"status": result.status, "reply_code": result.reply_code, "hard": result.hard,
              "reason": result.reason}
    extra: dict[str, Any] = {"kind": "async", **detail, "source": "dsn"}
    if result.address and normalise_lenient(result.address) != address:
        extra["reported_recipient"] = result.address
    if (result.status or "").startswith("4"):
        # A delay notice: the reporting server is still retrying. Not a bounce, not counted.
        properties = _properties(message, extra)
        return Effects(DELAYED, message.id,
                       events=(_row(event_key, "email_deferred", message, properties, at),),
                       detail=detail)
    properties = _properties(message, extra)
    events = (_row(event_key, "email_bounced", message, properties, at),)
    if result.hard:
        text = " ".join(filter(None, (result.status, result.reason)))
        return Effects(HARD, message.id, (Suppression(
            address, HARD_BOUNCE, source="dsn", message_id=message.id, detail=text),),
            events=events, detail=detail)
    return Effects(SOFT, message.id, soft_bounces=((address, message.id),), events=events,
                   detail=detail)


def pick(results: tuple[RecipientResult, ...], recipient: str) -> RecipientResult | None:
    """The report's result for the message's recipient: the one naming it, else (forwarding,
    aliases: the report names the final address) the first that is not a delivery."""
    failed = [r for r in results if r.reason != "delivered"]
    wanted = normalise_lenient(recipient)
    for result in failed:
        if result.address and normalise_lenient(result.address) == wanted:
            return result
    return failed[0] if failed else None


def _properties(message: MessageRef, extra: dict[str, Any]) -> dict[str, Any]:
    properties: dict[str, Any] = {"message_id": str(message.id),
                                  "recipient": message.recipient, **extra}
    for key, value in message.metadata.items():
        if key not in _METADATA_SKIP:
            properties.setdefault(key, value)
    if message.category:
        properties.setdefault("message_category", message.category)
    return properties


def _row(event_key: str, event_type: str, message: MessageRef, properties: dict[str, Any],
         at: datetime) -> tuple[Any, ...]:
    return (f"{event_key}:{event_type}", event_type, message.contact_id, message.recipient,
            properties, at, "mta")


def _unmatched_detail(report: Report) -> dict[str, Any]:
    return {"original_message_id": report.original_message_id,
            "original_recipient": report.original_recipient,
            "original_return_path": report.original_return_path}
