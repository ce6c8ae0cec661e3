"""Contacts an intake process knows to exist, so that a large batch does not ask Postgres
again (the contacts upsert probes the primary key once per event: about a quarter of the
database's work per event on the COPY path, docs/PERFORMANCE.md).

The one thing that deletes contacts is an erase (:mod:`engine.privacy`), possibly from another
process. The story that keeps "every stored event has its contact row":

* an erase holds :data:`ERASE_LOCK` exclusively from the start of its transaction to its end
  and, in it, adds one to ``contact_erasures.generation`` (:data:`ERASE_BARRIER`);
* a batch that skips known contacts holds the same lock shared from before it reads the
  generation (:data:`BEGIN_SHARED`, its first statement) until it commits, and upserts every
  contact of the batch when the generation it reads is not the one its knowledge is from.

So a batch and an erase never overlap: a batch that ran before an erase committed its events
before the erase looked for them (the erase deletes them too, as any earlier event), and a
batch after it reads the new generation and writes every contact again. A process learns the
contacts of a batch only after that batch committed, and only under the generation the batch
read: what it learned before an erase is dropped at the first batch that reads a later one.
Plain batches and batches with identity work do not use the lock and upsert every contact, as
before. Memory is bounded: the set is emptied when it would pass :data:`LIMIT` ids.
"""

from __future__ import annotations

from collections.abc import Collection

# pg_advisory_xact_lock's two-int4 form ("hera", "cont"): a key space apart from the bigint
# keys (the migrations' lock).
_LOCK_KEYS = "1751478881, 1668247156"
# Read committed, so that the statements after the lock see what committed before it.
BEGIN_SHARED = (f"BEGIN ISOLATION LEVEL READ COMMITTED; "
                f"SELECT pg_advisory_xact_lock_shared({_LOCK_KEYS})")
ERASE_LOCK = f"SELECT pg_advisory_xact_lock({_LOCK_KEYS})"
ERASE_BARRIER = (f"{ERASE_LOCK}; "
                 "UPDATE contact_erasures SET generation = generation + 1")
GENERATION = "SELECT generation FROM contact_erasures"
LIMIT = 200_000
NEVER = -1  # no generation read yet (stored ones start at 0): every contact is upserted


class KnownContacts:
    """Contact ids seen committed under :attr:`generation` (one per :class:`EventWriter`, so
    one per database)."""

    __slots__ = ("generation", "ids", "limit")

    def __init__(self, limit: int = LIMIT) -> None:
        self.generation = NEVER
        self.ids: set[str] = set()
        self.limit = limit

    def learn(self, generation: int, committed: Collection[str]) -> None:
        """A batch that read ``generation`` committed with every contact in ``committed``."""
        if generation < self.generation:
            return  # read before an erase that a later batch has already seen
        if generation > self.generation:
            self.ids.clear()
            self.generation = generation
        if len(self.ids) + len(committed) > self.limit:
            self.ids.clear()
        self.ids.update(committed)
