"""What the consumer does with an error raised while handling a record.

``dead_letter``: the record can never be handled (bad bytes, oversized or too deeply
nested, schema violation, unknown topic, batch or phase, a conflicting registration, data
the store rejects as invalid - :class:`~pipeline_state.errors.RejectedDataError` -, a stored
row that cannot be read, a record too large for the broker). It is parked on
``<topic>.DLQ`` at once, with the reason, its offset committed, and the consumer goes on.

``retry``: the failure is about the environment and can clear (the store is unreachable or
locked, a compare-and-set kept losing, the broker is unreachable or did not acknowledge).
The offset is not committed; the consumer seeks back to the record and tries again after a
backoff, for as long as it takes. Such a record never goes to the dead-letter queue. A
record that is too large (``MessageSizeTooLargeError``, ``RecordTooLargeError``) is never
transient: retrying cannot make it fit.

Anything else is unexpected (a bug, or a :class:`~pipeline_state.errors.StoreError` that
says neither "unavailable" nor "rejected"): it is retried like a transient error up to
``max_unexpected_attempts`` times, logged as an error with its traceback (not as an
outage), then dead-lettered so one record cannot block its partition for ever.
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

from ._kafka import KafkaError, MessageSizeTooLargeError, RecordTooLargeError

__all__ = ["DEFAULT_POISON", "DEFAULT_TRANSIENT", "ErrorPolicy", "Verdict", "classify_send_error"]


class Verdict(enum.Enum):
    """The fate of a record whose handling raised."""

    DEAD_LETTER = "dead_letter"
    RETRY = "retry"
    UNEXPECTED = "unexpected"


DEFAULT_POISON: tuple[type[BaseException], ...] = (
    InvalidMessageError,
    BadCommandError,  # RejectedDataError among them
    CorruptStateError,
    MessageSizeTooLargeError,
    RecordTooLargeError,
)
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


def classify_send_error(error: BaseException) -> Verdict:
    """What a failed dead-letter send means: ``RETRY`` when the broker may take it later
    (unreachable, timed out), ``DEAD_LETTER`` when it refused this letter for what it is
    (too large): send a minimal one instead."""
    return ErrorPolicy().classify(error)
