"""The in-memory unit-of-work engine: versioned documents and an inbox in dictionaries.

The twin of the SQL adapter's engine, shared by the in-memory stores
(:class:`~pipeline_state._memory.InMemoryStore` and the results service's
``InMemoryResultsStore``). A change (:class:`~pipeline_state._unit_of_work.VersionedChange`)
is first checked, against a view of the stored versions that a sequence of changes
advances (so ``commit_many`` can check all before it writes anything), then applied. The
checks come in the SQL engine's order: the compare-and-set (the stored version is the
expected one; a new document has the change's key and a greater version), then the
inbox (the event id is neither stored nor taken earlier in the sequence). The caller
never awaits between checking and applying, so a commit is atomic with respect to other
coroutines.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import datetime
from typing import Generic, TypeVar

from ._unit_of_work import Versioned, VersionedChange
from .errors import ConcurrencyConflictError, DuplicateEventError
from .ports import InboxEntry, OutboxMessage

__all__ = ["MemoryUnitOfWork", "Versions"]

C = TypeVar("C", bound=VersionedChange)
D = TypeVar("D", bound=Versioned)

Versions = dict[str, int | None]
"""The version stored under each key a sequence of changes touches (``None``: absent)."""

InboxRow = tuple[str, str, str, datetime]
"""An inbox entry as kept (its event id is the key): topic, batch id, result, processed at.
Plain tuples of strings and datetimes: the garbage collector stops tracking them, so a
long-lived inbox costs it nothing."""


class MemoryUnitOfWork(Generic[C, D]):
    """Documents of type ``D`` (``document`` gives a change's new one, or ``None``) and an
    inbox; ``append`` adds a change's outbox messages to the store's outbox."""

    def __init__(
        self,
        document: Callable[[C], D | None],
        append: Callable[[Sequence[OutboxMessage], datetime], None],
    ) -> None:
        self.document = document
        self.append = append
        self.documents: dict[str, D] = {}
        self.inbox: dict[str, InboxRow] = {}

    def versions(self, changes: Iterable[C]) -> Versions:
        """The stored version of every document ``changes`` touch."""
        out: Versions = {}
        for change in changes:
            current = self.documents.get(change.batch_id)
            out[change.batch_id] = None if current is None else current.version
        return out

    def check(self, change: C, versions: Versions, seen: set[str], *, replaces: str | None = None) -> None:
        """Check ``change`` against ``versions`` and the inbox (and the event ids in
        ``seen``, taken by earlier changes of the sequence), then advance ``versions`` and
        ``seen`` as if it were applied. ``replaces`` names an event whose inbox entry
        ``change.inbox`` replaces (not a duplicate). Raises
        :class:`~pipeline_state.errors.ConcurrencyConflictError` or
        :class:`~pipeline_state.errors.DuplicateEventError`."""
        batch_id = change.batch_id
        actual = versions[batch_id]
        document = self.document(change)
        if actual != change.expected_version or (
            document is not None and (document.batch_id != batch_id or document.version <= (actual or 0))
        ):
            raise ConcurrencyConflictError(batch_id, change.expected_version, actual)
        entry = change.inbox
        if entry is not None and entry.event_id != replaces:
            event_id = entry.event_id
            if event_id in self.inbox or event_id in seen:
                raise DuplicateEventError(event_id)
            seen.add(event_id)
        if document is not None:
            versions[batch_id] = document.version

    def apply(self, change: C) -> None:
        """Write a checked ``change``: its document, inbox entry and outbox messages."""
        document = self.document(change)
        if document is not None:
            self.documents[change.batch_id] = document
        entry = change.inbox
        if entry is not None:
            self.record(entry)
        if change.outbox:
            self.append(change.outbox, change.at)

    def commit(self, change: C) -> None:
        """Check and apply one change."""
        self.check(change, self.versions((change,)), set())
        self.apply(change)

    # -- the inbox ----------------------------------------------------------------------------
    def record(self, entry: InboxEntry) -> None:
        """Keep ``entry`` (replacing the entry of its event id, if any, which moves to the end:
        the inbox stays in the order of processing, which a purge walks from the oldest)."""
        inbox = self.inbox
        if entry.event_id in inbox:
            del inbox[entry.event_id]
        inbox[entry.event_id] = (entry.topic, entry.batch_id, entry.result, entry.processed_at)

    def inbox_entry(self, event_id: str) -> InboxEntry | None:
        row = self.inbox.get(event_id)
        return None if row is None else InboxEntry(event_id, *row)

    def purge_inbox(self, cutoffs: Mapping[str, datetime]) -> int:
        """Forget the entries of each topic in ``cutoffs`` processed before its cutoff."""
        gone = [
            event_id
            for event_id, (topic, _, _, processed_at) in self.inbox.items()
            if topic in cutoffs and processed_at < cutoffs[topic]
        ]
        for event_id in gone:
            del self.inbox[event_id]
        return len(gone)
