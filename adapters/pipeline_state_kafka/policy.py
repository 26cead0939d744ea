"""What the consumer does with an error raised while handling a record.

``dead_letter``: the record can never be handled (bad bytes, schema violation, unknown topic,
batch or phase, a conflicting registration, a stored row that cannot be read). It is parked
on ``<topic>.DLQ``, its offset committed, and the consumer goes on.

``retry``: the failure is about the environment, not the record (the store is down or
locked, a compare-and-set kept losing, the broker did not acknowledge). The offset is not
committed; the consumer seeks back to the record and tries again after a backoff, for as
long as it takes. Such a record never goes to the dead-letter queue.

Anything else is unexpected (a bug): it is retried like a transient error up to
``max_unexpected_attempts`` times, then dead-lettered so one record cannot block its
partition for ever.
"""

from __future__ import annotations

import enum

import attrs

from pipeline_state.errors import (
    BadCommandError,
    ConcurrencyConflictError,
    CorruptStateError,
    InvalidMessageError,
    PublishError,
    StoreUnavailableError,
)

from ._kafka import KafkaError

__all__ = ["DEFAULT_POISON", "DEFAULT_TRANSIENT", "ErrorPolicy", "Verdict"]


class Verdict(enum.Enum):
    """The fate of a record whose handling raised."""

    DEAD_LETTER = "dead_letter"
    RETRY = "retry"
    UNEXPECTED = "unexpected"


DEFAULT_POISON: tuple[type[BaseException], ...] = (InvalidMessageError, BadCommandError, CorruptStateError)
DEFAULT_TRANSIENT: tuple[type[BaseException], ...] = (
    StoreUnavailableError,
    ConcurrencyConflictError,
    PublishError,
    KafkaError,
    OSError,
    TimeoutError,
)


@attrs.frozen
class ErrorPolicy:
    """Classifies errors; poison wins over transient when an error is both."""

    poison: tuple[type[BaseException], ...] = DEFAULT_POISON
    transient: tuple[type[BaseException], ...] = DEFAULT_TRANSIENT
    max_unexpected_attempts: int = attrs.field(default=5, validator=attrs.validators.ge(1))

    def classify(self, error: BaseException) -> Verdict:
        if isinstance(error, self.poison):
            return Verdict.DEAD_LETTER
        if isinstance(error, self.transient):
            return Verdict.RETRY
        return Verdict.UNEXPECTED
