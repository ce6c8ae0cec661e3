"""TLS-RPT session counts (RFC 8460 §4): counted in memory, added to Postgres in batches.

Every session opened or refused under a policy TLS-RPT reports on (MTA-STS, DANE; and failed
MTA-STS discovery as ``no-policy-found``) is counted per UTC day, policy, result (``success``
or a result type), MX host and receiving address. ``flush`` adds the counts to
``tls_rpt_counts`` in one statement; domains without a policy are not counted.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from datetime import UTC, date, datetime

import asyncpg

from mta.tls.peer import PeerPolicy, ReportPolicy

MAX_KEYS = 100_000  # distinct keys held between flushes; more are dropped (and logged)

Key = tuple[date, str, str, tuple[str, ...], tuple[str, ...], str, str, str]

ADD = """
    INSERT INTO tls_rpt_counts AS c
        (day, policy_domain, policy_type, policy_strings, mx, result, mx_host, receiving_ip,
         sessions)
    SELECT (r->>0)::date, r->>1, r->>2,
           ARRAY(SELECT jsonb_array_elements_text(r->3)),
           ARRAY(SELECT jsonb_array_elements_text(r->4)),
           r->>5, r->>6, r->>7, (r->>8)::bigint
    FROM jsonb_array_elements($1::jsonb) AS r
    ON CONFLICT (day, policy_domain, policy_type, policy_strings, mx, result, mx_host,
                 receiving_ip)
    DO UPDATE SET sessions = c.sessions + excluded.sessions
"""


class TlsRptCounter:
    def __init__(self, today: Callable[[], date] = lambda: datetime.now(UTC).date()) -> None:
        self._today = today
        self._counts: Counter[Key] = Counter()
        self.dropped = 0

    def count(self, report: ReportPolicy, result: str | None, mx_host: str | None,
              receiving_ip: str | None) -> None:
        key: Key = (self._today(), report.domain, report.policy_type, report.strings,
                    report.mx, result or "success", mx_host or "", receiving_ip or "")
        if key not in self._counts and len(self._counts) >= MAX_KEYS:
            self.dropped += 1
            return
        self._counts[key] += 1

    def observe_session(self, peer: PeerPolicy, result: str | None, receiving_ip: str) -> None:
        """The connection pool's observer (``mta.smtp.pool.TlsObserver``)."""
        if peer.report is not None:
            self.count(peer.report, result, peer.server_name, receiving_ip)

    def pending(self) -> int:
        return sum(self._counts.values())

    async def flush(self, connection: asyncpg.Connection) -> int:
        """Add the counts to Postgres; on failure they stay for the next flush."""
        if not self._counts:
            return 0
        batch, self._counts = self._counts, Counter()
        rows = [[day.isoformat(), domain, kind, list(strings), list(mx), result, host, ip, n]
                for (day, domain, kind, strings, mx, result, host, ip), n in batch.items()]
        try:
            await connection.execute(ADD, rows)
        except BaseException:
            batch.update(self._counts)
            self._counts = batch
            raise
        return sum(batch.values())
