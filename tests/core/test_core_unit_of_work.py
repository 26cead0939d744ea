"""The one unit-of-work loop both services run (:mod:`pipeline_state._unit_of_work`)."""

from __future__ import annotations

import logging

import pytest

from pipeline_state._unit_of_work import conflict_retries, run_unit_of_work
from pipeline_state.errors import ConcurrencyConflictError, DuplicateEventError, StoreUnavailableError

log = logging.getLogger("tests.unit_of_work")


class Document:
    """A versioned value with an inbox, and a rival writer that wins ``races`` times."""

    def __init__(self, races: int = 0) -> None:
        self.version = 0
        self.inbox: set[str] = set()
        self.races = races
        self.reads = 0

    async def processed(self, event_id: str) -> bool:
        return event_id in self.inbox

    async def read(self) -> int:
        self.reads += 1
        read = self.version
        if self.races:
            self.races -= 1
            self.version += 1  # a rival commits between this read and our commit
        return read

    async def commit(self, event_id: str, read: int) -> None:
        if read != self.version:
            raise ConcurrencyConflictError("d", read, self.version)
        if event_id in self.inbox:
            raise DuplicateEventError(event_id)
        self.version += 1
        self.inbox.add(event_id)


async def handle(doc: Document, event_id: str, *, attempts: int = 8) -> tuple[str, int]:
    async def committed(read: int, attempt: int) -> tuple[str, int]:
        return f"applied on {read}", attempt

    return await run_unit_of_work(
        conflict_retries(attempts, log, "test conflict", "d"),
        processed=lambda: doc.processed(event_id),
        decide=doc.read,
        commit=lambda read: doc.commit(event_id, read),
        committed=committed,
        duplicate=lambda attempt: ("duplicate", attempt),
    )


async def test_a_lost_race_is_retried_from_a_fresh_read(caplog: pytest.LogCaptureFixture) -> None:
    doc = Document(races=2)
    with caplog.at_level(logging.DEBUG, logger=log.name):
        assert await handle(doc, "e1") == ("applied on 2", 3)
    assert (doc.version, doc.reads) == (3, 3)
    assert [r.getMessage() for r in caplog.records] == ["test conflict on d, retrying from a fresh read"] * 2


async def test_the_last_conflict_propagates_after_max_attempts() -> None:
    doc = Document(races=3)
    with pytest.raises(ConcurrencyConflictError):
        await handle(doc, "e1", attempts=3)
    assert (doc.reads, doc.inbox) == (3, set())


async def test_an_event_in_the_inbox_is_a_duplicate_without_a_read() -> None:
    doc = Document()
    await handle(doc, "e1")
    assert await handle(doc, "e1") == ("duplicate", 1)
    assert doc.reads == 1


async def test_a_duplicate_found_by_the_commit_is_a_duplicate() -> None:
    doc = Document()

    async def unseen() -> bool:
        return False  # the inbox read raced with the writer that recorded e1

    await handle(doc, "e1")
    result = await run_unit_of_work(
        conflict_retries(8, log),
        processed=unseen,
        decide=doc.read,
        commit=lambda read: doc.commit("e1", read),
        committed=lambda read, attempt: pytest.fail("a duplicate commit is not committed"),
        duplicate=lambda attempt: ("duplicate", attempt),
    )
    assert result == ("duplicate", 1)
    assert doc.version == 1


async def test_other_errors_propagate_at_once() -> None:
    doc = Document()

    async def down(read: int) -> None:
        raise StoreUnavailableError("down")

    with pytest.raises(StoreUnavailableError):
        await run_unit_of_work(
            conflict_retries(8, log),
            processed=lambda: doc.processed("e1"),
            decide=doc.read,
            commit=down,
            committed=lambda read, attempt: pytest.fail("not committed"),
            duplicate=lambda attempt: ("duplicate", attempt),
        )
    assert doc.reads == 1
