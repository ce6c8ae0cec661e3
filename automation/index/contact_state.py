"""Per-contact trigger state, allocated lazily, and the contact's place in the timer heap (pure).

A contact the index has nothing to remember about has no entry at all. Otherwise its
:class:`ContactState` is ONE object: a list whose item ``i`` is the state stateful watcher ``i``
keeps for it (``None``: nothing), plus two slots: ``queued``, the due time of the contact's one
valid timer-heap entry, and ``view``, the contact as last seen (when the index keeps views).

Timer invariant: ``queued`` is at most the earliest due time of any of the contact's watcher
states. Watchers call :meth:`ContactTable.arm` whenever they set a due time; it pushes a heap
entry only when the new time is EARLIER than ``queued``, so a deadline that moves later (the
common case: each new activity re-arms an inactivity deadline) costs no heap work at all. When
the queued entry surfaces, the index evaluates what is due and queues the contact's next time.
"""

from __future__ import annotations

from sys import intern
from typing import Any

from orjson import dumps

from automation.index.timers import TimerHeap
from automation.index.types import ContactView, Interner, Packed

COMPACT_MIN = 4096
SHARED_PACKED = 64  # packed properties up to this length are shared between contacts


class ContactState(list[Any]):
    __slots__ = ("queued", "view")

    def __init__(self, width: int) -> None:
        self += [None] * width  # the list is new and empty: list.__init__ has nothing to do
        self.queued: int | None = None
        self.view: ContactView | None = None

    def empty(self) -> bool:
        return self.view is None and self.count(None) == len(self)  # states never equal None


class ContactTable:
    """Every contact's :class:`ContactState` and the shared timer heap."""

    __slots__ = ("contacts", "intern", "live", "timers", "width")

    def __init__(self, width: int = 0) -> None:
        self.width = width
        self.contacts: dict[str, ContactState] = {}
        self.timers = TimerHeap(self._queued)
        self.live = 0  # contacts with a queued timer
        self.intern = Interner()

    def pack(self, properties: Any) -> Packed:
        """:func:`~automation.index.types.pack`, sharing short texts (``{"path":"/"}``, a
        product view's SKU and price) between contacts through the bounded interner."""
        try:  # pack(), inlined: once per kept event
            packed = dumps(properties).decode()
        except TypeError:
            return properties
        if len(packed) <= SHARED_PACKED:
            return self.intern(packed)
        return packed

    def get(self, contact_id: str) -> ContactState | None:
        return self.contacts.get(contact_id)

    def ensure(self, contact_id: str) -> ContactState:
        found = self.contacts.get(contact_id)
        if found is None:
            found = self.contacts[intern(contact_id)] = ContactState(self.width)
        return found

    def state(self, contact_id: str, slot: int) -> Any:
        found = self.contacts.get(contact_id)
        return None if found is None else found[slot]

    def put(self, contact_id: str, slot: int, state: Any) -> ContactState | None:
        """Set one watcher's state for a contact (``None`` clears it; an empty contact goes)."""
        found = self.contacts.get(contact_id)
        if found is None:
            if state is None:
                return None
            found = self.contacts[intern(contact_id)] = ContactState(self.width)
        found[slot] = state
        if state is None:
            self.release(contact_id, found)
            return None
        return found

    def release(self, contact_id: str, contact: ContactState) -> None:
        """Forget a contact that has nothing left (its stale heap entry is skipped later)."""
        if contact.empty():
            if contact.queued is not None:
                self.live -= 1
            del self.contacts[contact_id]

    def forget(self, contact_id: str) -> bool:
        """Drop a contact whatever it holds (an erase); its heap entry goes stale."""
        contact = self.contacts.pop(contact_id, None)
        if contact is None:
            return False
        if contact.queued is not None:
            self.live -= 1
        return True

    def arm(self, contact_id: str, contact: ContactState, due: int) -> None:
        """Make sure the contact's timer surfaces no later than ``due``."""
        queued = contact.queued
        if queued is None or due < queued:
            if queued is None:
                self.live += 1
            contact.queued = due
            self.timers.push(due, intern(contact_id))
            if len(self.timers) > self.live + self.live // 4 + COMPACT_MIN:
                self.timers.compact()

    def _queued(self, contact_id: str) -> int | None:
        contact = self.contacts.get(contact_id)
        return None if contact is None else contact.queued

    def recount(self) -> None:
        """Recompute :attr:`live` and drop stale timers (after contacts were loaded)."""
        self.live = sum(1 for contact in self.contacts.values() if contact.queued is not None)
        self.timers.compact()

    def peek(self) -> tuple[int, str, ContactState] | None:
        """The earliest valid timer (stale entries on top are dropped)."""
        timers = self.timers
        while True:
            entry = timers.peek()
            if entry is None:
                return None
            contact = self.contacts.get(entry[1])
            if contact is not None and contact.queued == entry[0]:
                return entry[0], entry[1], contact
            timers.pop()

    def pop_due(self, limit: int) -> tuple[int, str, ContactState] | None:
        """The next contact whose queued time is at most ``limit``; its ``queued`` is cleared."""
        top = self.peek()
        if top is None or top[0] > limit:
            return None
        self.timers.pop()
        top[2].queued = None
        self.live -= 1
        return top
