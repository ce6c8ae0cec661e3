"""The trigger index's timer queue: one entry per contact, lazily deleted (pure).

Entries pop in ``(due_us, contact_id)`` order: entries due at the same instant pop in contact id
order, so the order is deterministic whatever the history of pushes (and a snapshot needs no
counter). The queue does not know which entries are still wanted: its owner
(:class:`~automation.index.contact_state.ContactTable`) keeps, per contact, the due time of the one
valid entry (``queued_of``) and skips the others when they surface. Stale entries are bounded by
:meth:`TimerHeap.compact`, which the owner calls when they outnumber the live ones.

Memory: a million contacts each hold a timer, so an entry must be small. Only entries due in the
current *bucket* (``due >> SHIFT``, about 72 minutes) are kept as ``(due, contact_id)`` tuples
in a heap (``near``); later ones are kept as the bare (interned, shared) contact id in a list per
bucket (``far``): 8 bytes instead of a 56-byte tuple and, for a stale entry, its 32-byte int.
The due time of a far entry is the contact's ``queued`` time, read when its bucket becomes the
current one; an id whose ``queued`` time has left the bucket is a stale entry and is dropped
then. The pop order is the same as one heap of tuples: every far bucket is later than every
near entry.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable, Iterable

Entry = tuple[int, str]
SHIFT = 32  # far entries are grouped by due_us >> SHIFT (2**32 µs: about 72 minutes)


class TimerHeap:
    __slots__ = ("far", "far_count", "far_keys", "horizon", "near", "queued_of")

    def __init__(self, queued_of: Callable[[str], int | None]) -> None:
        self.queued_of = queued_of  # the contact's one valid due time (None: no timer)
        self.near: list[Entry] = []  # a heap of the entries of buckets <= horizon
        self.horizon: int | None = None  # the current bucket (None: none yet)
        self.far: dict[int, list[str]] = {}  # bucket > horizon -> contact ids
        self.far_keys: list[int] = []  # a heap of far's buckets
        self.far_count = 0

    def __len__(self) -> int:
        return len(self.near) + self.far_count

    def push(self, due: int, contact_id: str) -> None:
        bucket = due >> SHIFT
        horizon = self.horizon
        if horizon is not None and bucket <= horizon:
            heapq.heappush(self.near, (due, contact_id))
            return
        ids = self.far.get(bucket)
        if ids is None:
            self.far[bucket] = [contact_id]
            heapq.heappush(self.far_keys, bucket)
        else:
            ids.append(contact_id)
        self.far_count += 1

    def extend(self, entries: Iterable[Entry]) -> None:
        for due, contact_id in entries:
            self.push(due, contact_id)

    def peek(self) -> Entry | None:
        while not self.near:
            if not self.far_keys:
                return None
            self._advance()
        return self.near[0]

    def pop(self) -> Entry:
        if not self.near:
            self.peek()
        return heapq.heappop(self.near)

    def _advance(self) -> None:
        """Make the earliest far bucket the current one: its valid ids become tuples."""
        bucket = heapq.heappop(self.far_keys)
        ids = self.far.pop(bucket)
        self.far_count -= len(ids)
        self.horizon = bucket
        self.near = self._valid_in(bucket, ids)
        heapq.heapify(self.near)

    def _valid_in(self, bucket: int, ids: Iterable[str]) -> list[Entry]:
        queued_of = self.queued_of
        return [(due, contact_id) for contact_id in set(ids)
                for due in (queued_of(contact_id),) if due is not None and due >> SHIFT == bucket]

    def entries(self) -> list[Entry]:
        """Every entry that may be valid, as ``(due, contact_id)`` (unordered; for snapshots)."""
        return self.near + [entry for bucket, ids in self.far.items()
                            for entry in self._valid_in(bucket, ids)]

    def compact(self) -> None:
        """Drop stale entries and duplicates."""
        queued_of = self.queued_of
        self.near = [entry for entry in set(self.near) if queued_of(entry[1]) == entry[0]]
        heapq.heapify(self.near)
        far: dict[int, list[str]] = {}
        for bucket, ids in self.far.items():
            valid = [contact_id for _, contact_id in self._valid_in(bucket, ids)]
            if valid:
                far[bucket] = valid
        self.far = far
        self.far_keys = list(far)
        heapq.heapify(self.far_keys)
        self.far_count = sum(map(len, far.values()))
