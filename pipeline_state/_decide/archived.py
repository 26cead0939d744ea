"""Which inputs ask about a batch's archived runs by id.

A decision reads the archived runs' correlation ids and keys
(:attr:`~pipeline_state._model.Past.correlations`, :attr:`~pipeline_state._model.Past.runs`)
in three places only: a run-starting command checks that its run was not started already
(:func:`~pipeline_state._decide.admission.handled_already`); an outcome whose correlation id
is not the active run's checks whether it belongs to an archived run (stale, or only a
mismatch: :mod:`~pipeline_state._decide.progress`); and an outcome arriving before its run,
or resumed from the waiting set, is never early when it is stale (:mod:`pipeline_state._waiting`).

A store that does not keep those ids with the batch (the SQL store: each event would rewrite
them all) leaves the summary without them; :func:`asks_archived_ids` tells the service when
to look them up in the store's history before deciding, so every other event reads and
writes a summary whose size does not grow with the history.
"""

from __future__ import annotations

from pipeline_state._commands import (
    ArchiveBatch,
    CancelBatch,
    CancelRun,
    ExpireOverdue,
    RecordPhaseCompletion,
    RepublishOutbox,
    RetryPhase,
)
from pipeline_state._inputs import (
    ContentReady,
    GroupConfirmed,
    ItemsReady,
    PhaseOutcome,
    RegisterBatch,
    RequestPipeline,
    ValidationFailed,
)
from pipeline_state._model import BatchState

__all__ = ["asks_archived_ids"]

_RUN_STARTING = (RequestPipeline, RetryPhase, RecordPhaseCompletion)
"""Commands whose run, if they start one, is named after their event id."""

_NEVER_ASK = (
    RegisterBatch,
    ContentReady,
    GroupConfirmed,
    ItemsReady,
    ValidationFailed,
    CancelRun,
    ExpireOverdue,
    ArchiveBatch,
    CancelBatch,
    RepublishOutbox,
)


def asks_archived_ids(state: BatchState | None, payload: object, *, resumes: bool) -> bool:
    """Whether deciding ``payload`` on ``state`` may read the ids of the batch's archived
    runs. ``resumes``: the batch has waiting facts the decision may re-attempt (each an
    outcome or a request, which may ask). Operator commands other than a retry or a recorded
    completion never ask; a payload this module does not know (a wire model not read yet)
    is taken to ask."""
    if state is None or state.past.count == 0:
        return False
    if resumes or isinstance(payload, _RUN_STARTING):
        return True
    if isinstance(payload, PhaseOutcome):
        run = state.active_run
        return run is None or payload.correlation_id != run.correlation_id
    return not isinstance(payload, _NEVER_ASK)
