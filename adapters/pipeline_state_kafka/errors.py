"""The Kafka adapter's errors, in the library's tree (:mod:`pipeline_state.errors`)::

    PipelineStateError
    ├── KafkaSettingsError (also a ValueError)   a setting of the Kafka adapter is unusable
    ├── WaitedTooLongError                       a fact waited for its batch past the window
    └── NeverAppliesError                        a fact waited, then its batch refused it

Failures of the broker itself surface as :class:`~pipeline_state.errors.PublishError` (the
relay) or as aiokafka's own errors (:data:`~pipeline_state_kafka.KafkaError`).
"""

from __future__ import annotations

from pipeline_state.errors import PipelineStateError

__all__ = ["KafkaSettingsError", "NeverAppliesError", "WaitedTooLongError"]


class KafkaSettingsError(PipelineStateError, ValueError):
    """A setting of the Kafka adapter (a ``PIPELINE_STATE_*`` variable or an argument of
    :class:`~pipeline_state_kafka.settings.Settings`) has an unusable value; the message
    names the variable."""


class _WaitedFactError(PipelineStateError):
    """The reason of a waiting fact's dead letter: what it waited for and its event id
    (``dlq_waited_for``, ``dlq_event_id``)."""

    def __init__(self, reason: str, *, waits_for: str, event_id: str) -> None:
        self.waits_for = waits_for
        self.event_id = event_id
        super().__init__(reason)


class WaitedTooLongError(_WaitedFactError):
    """A fact that waited for its batch longer than the waiting window (issue 11.2): the
    reason of its dead letter, naming what it waited for."""


class NeverAppliesError(_WaitedFactError):
    """A fact that waited for its batch and, once the batch was there, could never apply
    (it names items the batch does not have, say): the reason of its dead letter, with the
    error it failed with. The same record consumed in order is dead-lettered with that
    error itself."""
