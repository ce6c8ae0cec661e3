"""What export and erase work on: the subject (a contact and everything that names it) and the
parts each layer contributes (the engine's contacts and events, the MTA's queue and
suppressions, the automation's runs), composed by the composition root."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import asyncpg

from engine.privacy.hashing import HashKey


@dataclass(frozen=True, slots=True)
class Subject:
    """``ids``: every contact id the person's rows are stored under: the contact id, its
    joined anonymous ids (``anon:<id>``) and its addresses in lower case (what the queue and
    the log use for mail sent without a contact id). ``emails``: the addresses as stored."""

    contact_id: str
    ids: tuple[str, ...]
    emails: tuple[str, ...]
    contact_hash: str


# One page of a section: its items and the cursor of the next page (None: this was the last).
Page = tuple[list[Any], Any]
Reader = Callable[[asyncpg.Connection, Subject, Any], Awaitable[Page]]


@dataclass(frozen=True, slots=True)
class Section:
    """A list in the export document, read a page at a time (first call: cursor None)."""

    name: str
    read: Reader


class PrivacyPart(Protocol):
    name: str

    def sections(self) -> Sequence[Section]: ...

    async def erase(self, connection: asyncpg.Connection, subject: Subject,
                    key: HashKey) -> dict[str, int]:
        """Remove the subject's personal data, inside the caller's transaction; returns the
        number of rows removed or anonymised per table (never personal data)."""
        ...
