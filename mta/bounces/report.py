"""What a returned message says: its kind (bounce, complaint, auto-reply) and, per recipient,
whether the address itself is dead. Plain frozen values, the output of ``parse_report``."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

KINDS = ("bounce", "complaint", "auto_reply", "unknown")


@dataclass(frozen=True, slots=True)
class RecipientResult:
    address: str | None  # the failed recipient (Final-Recipient / Original-Recipient / from text)
    status: str | None  # enhanced status "5.1.1" if known
    reply_code: int | None  # 550 etc. if known
    hard: bool  # True only where the address itself is dead: suppress it
    reason: str  # short machine-readable reason, e.g. "mailbox_unknown", "mailbox_full"

    def to_json(self) -> dict[str, Any]:
        return {"address": self.address, "status": self.status, "reply_code": self.reply_code,
                "hard": self.hard, "reason": self.reason}


@dataclass(frozen=True, slots=True)
class Report:
    kind: str  # "bounce" | "complaint" | "auto_reply" | "unknown"
    recipients: tuple[RecipientResult, ...]
    feedback_type: str | None = None  # ARF Feedback-Type (abuse, fraud, ...) for complaints
    original_message_id: str | None = None  # Message-ID of the original message, if found
    original_return_path: str | None = None  # envelope sender of the original (our VERP address)
    original_recipient: str | None = None  # ARF Original-Rcpt-To or the original To

    def to_json(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "recipients": [recipient.to_json() for recipient in self.recipients],
            "feedback_type": self.feedback_type,
            "original_message_id": self.original_message_id,
            "original_return_path": self.original_return_path,
            "original_recipient": self.original_recipient,
        }


UNKNOWN = Report("unknown", ())
