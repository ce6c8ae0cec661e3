"""Saving and restoring the trigger index without pausing the loop that serves everything else.

A snapshot of a large index takes seconds of CPU (about 15 s at a million contacts). It is
taken and restored in pieces of a few thousand contacts, handing the loop back between pieces,
so HTTP intake, delivery and the rest keep being served (each pause is one piece). No child
process is forked: ``os.fork()`` in a threaded process can leave the child holding locks no
thread will release. The index does not change meanwhile: only the automation task mutates it,
and that task is the one awaiting here.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from automation.index.trigger_index import TriggerIndex
from automation.model.definitions import Workflow


async def serialise_index(index: TriggerIndex) -> bytes:
    pieces = []
    for piece in index.snapshot_frames():
        pieces.append(piece)
        await asyncio.sleep(0)  # let the loop serve others between pieces
    return b"".join(pieces)


async def restore_index(data: bytes, workflows: Sequence[Workflow]) -> TriggerIndex:
    steps = TriggerIndex.restore_steps(data, workflows)
    while True:
        try:
            next(steps)
        except StopIteration as done:
            index: TriggerIndex = done.value
            return index
        await asyncio.sleep(0)
