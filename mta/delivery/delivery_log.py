"""The delivery log: one JSON line per delivery attempt on the ``herald.delivery`` logger, like
Postfix's mail log, so ``grep``, ``jq`` and log shippers work. ``[log] delivery_file`` (or
stdout) keeps it apart from the other logs (see :func:`engine.log.configure_delivery_log`).

A line is written once the outcome is committed. It carries the queue id, recipient domain,
site, remote host and IP, TLS version and policy, reply, outcome, delay since enqueue and
attempt; never the recipient address or the message (the queue id leads to both, for those
allowed to see).
"""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Any

from mta.queue.store import Outcome

DELIVERY_LOGGER = "herald.delivery"
log = logging.getLogger(DELIVERY_LOGGER)


def delivery_fields(outcome: Outcome) -> dict[str, Any]:
    """The fields of one line (pure)."""
    message = outcome.message
    fields: dict[str, Any] = {
        "queue_id": str(message.id),
        "recipient_domain": message.recipient_domain,
        "site": outcome.site,
        "remote_host": outcome.remote_host,
        "remote_ip": outcome.remote_ip,
        "tls": outcome.tls_version,
        "tls_policy": outcome.tls_policy,
        "outcome": outcome.state,
        "code": outcome.code,
        "enhanced": outcome.enhanced,
        "reply": outcome.reply,
        "category": outcome.category,
        "delay_s": round(max(0.0, (outcome.at - message.created_at).total_seconds()), 3),
        "attempt": message.attempt,
    }
    if outcome.next_attempt_at is not None:
        fields["next_attempt_at"] = _iso(outcome.next_attempt_at)
    return fields


def log_outcomes(outcomes: list[Outcome]) -> None:
    """One line per attempted (not merely handed back) outcome."""
    if not log.isEnabledFor(logging.INFO):
        return
    for outcome in outcomes:
        if outcome.state != "released":
            log.info(outcome.state, extra=delivery_fields(outcome))


def _iso(value: datetime) -> str:
    return value.isoformat()
