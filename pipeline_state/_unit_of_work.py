"""The one unit-of-work loop: inbox, fresh read, decision, commit; a lost race retried.

Every service that writes a versioned document (the pipeline's batch state, the results
read model) runs each inbound event as one unit of work: skip it when the inbox holds its
id, read the document, decide, and commit the new document with its inbox entry and
outbox messages under compare-and-set on the version read. :func:`run_unit_of_work` is
that loop: a lost compare-and-set (:class:`~pipeline_state.errors.ConcurrencyConflictError`)
is retried at once from a fresh read (:func:`conflict_retries`, on the shared
:class:`~pipeline_state._retry.Retrying`), and a duplicate found by the commit is answered
like one found in the inbox.

:class:`Versioned` and :class:`VersionedChange` are the shapes the stores' engines share
(the SQL adapter's and :mod:`pipeline_state._memory_unit_of_work`):
:class:`~pipeline_state.ports.Change` and the results service's ``ResultsChange`` are both
a :class:`VersionedChange`.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Sequence
from datetime import datetime
from typing import Protocol, TypeVar

from ._retry import Retrying
from .errors import ConcurrencyConflictError, DuplicateEventError
from .ports import InboxEntry, OutboxMessage

__all__ = ["Versioned", "VersionedChange", "conflict_retries", "run_unit_of_work"]

S = TypeVar("S")
R = TypeVar("R")


class Versioned(Protocol):
    """A stored document: the key it is stored under and its version."""

    @property
    def batch_id(self) -> str: ...

    @property
    def version(self) -> int: ...


class VersionedChange(Protocol):
    """What every unit of work writes: a new document (or none) under compare-and-set on
    ``expected_version`` (``None``: there was no document), an inbox entry and outbox
    messages, at ``at``."""

    @property
    def batch_id(self) -> str: ...

    @property
    def expected_version(self) -> int | None: ...

    @property
    def at(self) -> datetime: ...

    @property
    def inbox(self) -> InboxEntry | None: ...

    @property
    def outbox(self) -> Sequence[OutboxMessage]: ...


def conflict_retries(
    max_attempts: int, log: logging.Logger, what: str = "version conflict", batch_id: str | None = None
) -> Retrying:
    """The attempts of one unit of work: a lost compare-and-set is retried at once (from a
    fresh read), at most ``max_attempts`` times in all; each retry of a known ``batch_id``
    is logged at debug level on ``log`` as ``<what> on <batch id>``."""

    def conflict(_error: BaseException, _number: int) -> None:
        log.debug("%s on %s, retrying from a fresh read", what, batch_id)

    return Retrying(
        on=ConcurrencyConflictError,
        attempts=max_attempts,
        on_retry=None if batch_id is None else conflict,
    )


async def run_unit_of_work(
    attempts: Retrying,
    *,
    processed: Callable[[], Awaitable[bool]],
    decide: Callable[[], Awaitable[S]],
    commit: Callable[[S], Awaitable[None]],
    committed: Callable[[S, int], Awaitable[R]],
    duplicate: Callable[[int], R],
) -> R:
    """Run one unit of work, each attempt from a fresh read.

    Each attempt asks ``processed()`` (the inbox holds the event: ``duplicate(attempt)`` is
    the answer), then ``decide()`` (read and decide: what to commit), ``commit(staged)``
    and gives ``committed(staged, attempt)``. A commit that finds the event processed
    (:class:`~pipeline_state.errors.DuplicateEventError`) is answered with
    ``duplicate(attempt)`` too; a lost compare-and-set is retried as ``attempts`` allows
    (its last failure propagates), anything else propagates at once.
    """
    async for attempt in attempts:
        with attempt:
            if await processed():
                return duplicate(attempt.number)
            staged = await decide()
            try:
                await commit(staged)
            except DuplicateEventError:
                return duplicate(attempt.number)
            return await committed(staged, attempt.number)
    raise AssertionError("unreachable")  # pragma: no cover
