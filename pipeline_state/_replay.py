"""A fact the waiting sweep dead-lettered, replayed: the event id it is handled under.

A fact that waited longer than the waiting window is dead-lettered, and its event id is
closed in the inbox as ``dead_lettered:<what it waited for>``: it was never applied. Once
the cause is fixed, an operator replays the letter (``pipeline-state dlq reinject``, or its
key and value produced back to the original topic). Under its own id the replay would be a
duplicate of that inbox entry; it is handled under an id derived from it instead
(:func:`replay_id`), the same whichever way it came back, so it applies once and a second
replay is a duplicate. A replay that was dead-lettered again (replayed too early) derives
once more, up to :data:`MAX_REPLAYS` rounds. A replay waits and resumes under its derived id
(its message keeps the original one).

The chain starts from the original's inbox entry: once the inbox retention purged it, a
replay is handled under the original id again, like any message the inbox forgot (a fact
that applied since is then a late one, and changes nothing).
"""

from __future__ import annotations

from ._decide import derive_id
from .ports import Store

__all__ = ["DEAD_LETTERED", "MAX_REPLAYS", "replay_id", "unprocessed_replay_id"]

DEAD_LETTERED = "dead_lettered:"
"""The prefix of the inbox result of a fact the waiting sweep dead-lettered."""

MAX_REPLAYS = 1_000
"""How many times one fact may have been replayed and dead-lettered again."""


def replay_id(event_id: str) -> str:
    """The id a replay of the dead-lettered fact ``event_id`` is handled under."""
    return derive_id("operator", "dlq-reinject", event_id)


async def unprocessed_replay_id(store: Store, event_id: str) -> str | None:
    """The id to handle a fact with when ``event_id`` may be in the inbox: ``event_id``
    itself when it is not; the first id of its chain of replays (:func:`replay_id`) not in
    the inbox while each before it was dead-lettered; ``None`` when the chain ends at an
    entry that was processed (a duplicate) or runs past :data:`MAX_REPLAYS`."""
    for _ in range(MAX_REPLAYS):
        entry = await store.inbox_entry(event_id)
        if entry is None:
            return event_id
        if not entry.result.startswith(DEAD_LETTERED):
            return None
        event_id = replay_id(event_id)
    return None
