"""The library's error tree.

Every error raised on purpose by pipeline-state derives from :class:`PipelineStateError`,
so a caller can catch the whole family with one ``except``. Errors carry the context
needed to act on them (batch id, state, trigger, topic, field) as attributes, not only
in the message::

    PipelineStateError
    ├── DefinitionError                 a lifecycle or pipeline catalog is malformed (build time)
    │   └── CatalogError                    unknown dependency, cycle, duplicate step, bad file
    ├── IllegalTransitionError          a trigger is not allowed from the current state
    ├── InvalidMessageError             inbound bytes/JSON/envelope/payload do not match the contract
    │   └── UnknownTopicError               the topic is not an inbound topic of the profile
    ├── BadCommandError                 a well-formed command that cannot apply (unknown phase, ...)
    │   ├── BatchNotFoundError              the batch does not exist
    │   ├── BatchConflictError              registration of an existing batch with other data
    │   ├── UnknownPipelineError            the pipeline or phase is not in the catalog
    │   ├── RejectedDataError               the store refused a value as invalid (bad input, not an outage)
    │   └── ItemMismatchError               items named that were not registered / not sent to the phase
    ├── StoreError                      a persistence adapter failed
    │   ├── ConcurrencyConflictError        compare-and-set on the version lost a race
    │   ├── DuplicateEventError             the inbound event id was already processed
    │   ├── StoreUnavailableError           the store cannot be reached (transient: retry)
    │   └── CorruptStateError               a stored row cannot be decoded
    └── PublishError                    a transport could not publish a message (transient)

Definition errors are raised while building definitions, never while handling events;
run-time errors never indicate a broken definition.
"""

from __future__ import annotations

__all__ = [
    "BadCommandError",
    "BatchConflictError",
    "BatchNotFoundError",
    "CatalogError",
    "ConcurrencyConflictError",
    "CorruptStateError",
    "DefinitionError",
    "DuplicateEventError",
    "IllegalTransitionError",
    "InvalidMessageError",
    "ItemMismatchError",
    "PipelineStateError",
    "PublishError",
    "RejectedDataError",
    "StoreError",
    "StoreUnavailableError",
    "UnknownPipelineError",
    "UnknownTopicError",
    "WaitingLimitError",
]


class PipelineStateError(Exception):
    """Root of every error the library raises on purpose."""


class DefinitionError(PipelineStateError):
    """A lifecycle definition is malformed; raised when the definition is built."""

    def __init__(self, definition: str, problem: str) -> None:
        self.definition = definition
        self.problem = problem
        super().__init__(f"invalid definition {definition!r}: {problem}")


class CatalogError(DefinitionError):
    """A pipeline catalog is malformed (unknown dependency, cycle, duplicate step, bad file)."""

    def __init__(self, problem: str, *, pipeline: str | None = None, step: str | None = None) -> None:
        self.pipeline = pipeline
        self.step = step
        where = "catalog" if pipeline is None else f"pipeline {pipeline}"
        super().__init__(where, problem)


class IllegalTransitionError(PipelineStateError):
    """A trigger was fired from a state that does not allow it."""

    def __init__(self, lifecycle: str, state: str, trigger: str, *, batch_id: str | None = None) -> None:
        self.lifecycle = lifecycle
        self.state = state
        self.trigger = trigger
        self.batch_id = batch_id
        where = f" for batch {batch_id}" if batch_id else ""
        super().__init__(f"{lifecycle}: trigger {trigger!r} is not allowed from state {state!r}{where}")


class InvalidMessageError(PipelineStateError):
    """Inbound input does not match the wire contract.

    ``topic`` names the topic the message came from and ``field`` the offending field
    (dotted path, ``None`` when the whole message is unreadable).
    """

    def __init__(self, topic: str, reason: str, *, field: str | None = None) -> None:
        self.topic = topic
        self.field = field
        self.reason = reason
        at = f" at field {field!r}" if field else ""
        super().__init__(f"invalid message on {topic!r}{at}: {reason}")


class UnknownTopicError(InvalidMessageError):
    """The topic is not one this service consumes."""

    def __init__(self, topic: str) -> None:
        super().__init__(topic, "unknown topic")


class BadCommandError(PipelineStateError):
    """A well-formed command that cannot be applied to the current state."""

    def __init__(self, message: str, *, batch_id: str | None = None) -> None:
        self.batch_id = batch_id
        super().__init__(message)


class BatchNotFoundError(BadCommandError):
    """The batch does not exist."""

    def __init__(self, batch_id: str) -> None:
        super().__init__(f"batch {batch_id!r} not found", batch_id=batch_id)


class BatchConflictError(BadCommandError):
    """A batch with this id already exists with different registration data."""

    def __init__(self, batch_id: str) -> None:
        super().__init__(f"batch {batch_id!r} is already registered with other data", batch_id=batch_id)


class UnknownPipelineError(BadCommandError):
    """A pipeline or phase name is not defined in the catalog."""

    def __init__(self, name: str, *, batch_id: str | None = None, kind: str = "pipeline") -> None:
        self.name = name
        self.kind = kind
        super().__init__(f"unknown {kind} {name!r}", batch_id=batch_id)


class RejectedDataError(BadCommandError):
    """The store refused a value as invalid (too long, a NUL byte, a violated constraint).

    The input is at fault, not the store: it is never retried as an outage. Adapters raise
    it ``from`` the driver's error; ``reason`` says what the store objected to.
    """

    def __init__(self, reason: str, *, batch_id: str | None = None) -> None:
        self.reason = reason
        super().__init__(f"the store rejected the data: {reason}", batch_id=batch_id)


class StoreError(PipelineStateError):
    """A persistence adapter failed."""


class ConcurrencyConflictError(StoreError):
    """The stored version differs from the one read: another writer won the race."""

    def __init__(self, batch_id: str, expected: int | None, actual: int | None = None) -> None:
        self.batch_id = batch_id
        self.expected = expected
        self.actual = actual
        super().__init__(f"batch {batch_id!r}: expected version {expected}, found {actual}")


class DuplicateEventError(StoreError):
    """The inbound event id is already recorded in the inbox."""

    def __init__(self, event_id: str) -> None:
        self.event_id = event_id
        super().__init__(f"event {event_id!r} was already processed")


class StoreUnavailableError(StoreError):
    """The store cannot be reached or is locked; the operation may be retried later."""


class CorruptStateError(StoreError):
    """A stored state row cannot be decoded (corrupted or written by an unknown version)."""

    def __init__(self, batch_id: str, reason: str) -> None:
        self.batch_id = batch_id
        self.reason = reason
        super().__init__(f"stored state of batch {batch_id!r} cannot be read: {reason}")


class PublishError(PipelineStateError):
    """A transport could not publish a message; the relay retries it."""


class ItemMismatchError(BadCommandError):
    """A message names items it may not name: more than were registered, ids that
    were not registered, ids that were not sent to the phase, or one id both processed and
    failed. Nothing changes; the Kafka consumer dead-letters the raw message (it can be
    re-injected once corrected) and HTTP answers 4xx.

    ``reason`` is a short code (``unregistered_items``, ``too_many_items``,
    ``duplicate_items``, ``items_not_sent_to_phase``, ``processed_and_failed``; for a
    registration also ``too_few_items``, ``bad_item_ids`` and ``item_count_mismatch``); ``ids``
    holds the offending ids (the message shows the first few), ``phase`` the phase of an
    outcome.
    """

    SHOWN = 5
    """How many offending ids the message lists."""

    def __init__(
        self,
        reason: str,
        *,
        batch_id: str,
        ids: tuple[str, ...] = (),
        phase: str | None = None,
        detail: str | None = None,
    ) -> None:
        self.reason = reason
        self.ids = ids
        self.phase = phase
        where = f" in phase {phase!r}" if phase else ""
        shown = ", ".join(repr(i[:64]) for i in ids[: self.SHOWN])
        more = f" and {len(ids) - self.SHOWN} more" if len(ids) > self.SHOWN else ""
        named = f": {shown}{more}" if ids else ""
        extra = f" ({detail})" if detail else ""
        super().__init__(f"batch {batch_id!r}{where}: {reason}{named}{extra}", batch_id=batch_id)


class WaitingLimitError(BadCommandError):
    """An early fact could not be kept waiting: its batch already has ``limit`` facts
    waiting. Every fact that is kept is re-attempted whenever its batch changes; beyond the
    limit (a flood of facts for one batch) a new one is refused at once rather than kept
    where no change would look at it. Nothing changes; the Kafka consumer dead-letters the
    raw message (re-inject it once the batch's waiting facts are resolved)."""

    def __init__(self, *, batch_id: str, limit: int) -> None:
        self.limit = limit
        super().__init__(
            f"batch {batch_id!r} already has {limit} facts waiting for it; this one is not kept",
            batch_id=batch_id,
        )
