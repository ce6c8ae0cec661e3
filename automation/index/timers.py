"""The trigger index's timer heap: one entry per contact, lazily deleted (pure).

Each entry is ``(due_us, contact_id)``: entries due at the same instant pop in contact id order,
so the order is deterministic whatever the history of pushes (and a snapshot needs no counter).
The heap does not know which entries are still wanted: its owner
(:class:`~automation.index.contact_state.ContactTable`) keeps, per contact, the due time of the one
valid entry and skips the others when they surface. Stale entries are bounded by
:meth:`TimerHeap.compact`, which the owner calls when they outnumber the live ones.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable

Entry = tuple[int, str]


class TimerHeap:
    __slots__ = ("entries",)

    def __init__(self, entries: list[Entry] | None = None) -> None:
        self.entries: list[Entry] = entries if entries is not None else []

    def __len__(self) -> int:
        return len(self.entries)

    def push(self, due: int, contact_id: str) -> None:
        heapq.heappush(self.entries, (due, contact_id))

    def peek(self) -> Entry | None:
        return self.entries[0] if self.entries else None

    def pop(self) -> Entry:
        return heapq.heappop(self.entries)

    def compact(self, valid: Callable[[Entry], bool]) -> None:
        """Drop every entry ``valid`` rejects, and duplicates."""
        self.entries = list({entry for entry in self.entries if valid(entry)})
        heapq.heapify(self.entries)
