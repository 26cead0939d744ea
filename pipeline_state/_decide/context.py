"""The contexts guards and effects run on.

A :class:`Session` is one decision in progress: its inputs (profile, command, time), the
batch as it evolves, the run engine when a run is open, and the journal. Each lifecycle
fires on a small context of its own that adds what the input brought: items for the batch,
an admission for a request, the phase and its changes for a phase.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import TYPE_CHECKING, Any

from pipeline_state._commands import Command
from pipeline_state._fan_in import DependencyRef
from pipeline_state._guards import Denial
from pipeline_state._inputs import RegisterBatch
from pipeline_state._lifecycle import BatchStatus
from pipeline_state._model import BatchState, ItemRef, Run, evolver
from pipeline_state._profile import Profile

from .journal import Decision, Journal

if TYPE_CHECKING:
    from .admission import Admission
    from .run import RunEngine

__all__ = ["BatchCtx", "PhaseCtx", "RunCtx", "Session"]

_evolve_state = evolver(BatchState)


class Session:
    """One decision in progress. Only :mod:`pipeline_state._decide` builds and reads it.

    Changes to the batch's own fields (its status, its active run and history summary when
    a run ends) may be recorded with :meth:`change` instead of building a new state each
    time: they are applied in one step when the state is next read (:attr:`state`) or the
    decision is made (:meth:`finish`), so a completing outcome builds the batch once.
    """

    __slots__ = (
        "_changes",
        "_recorded",
        "_state",
        "archived",
        "batch_id",
        "command",
        "journal",
        "now",
        "original",
        "profile",
        "run",
    )

    def __init__(self, profile: Profile, command: Command, now: datetime, state: BatchState) -> None:
        self.profile = profile
        self.command = command
        self.now = now
        self.original = state
        self._state = state
        self._changes: dict[str, Any] | None = None
        self.batch_id = state.batch_id
        self.journal = Journal(command.correlation_id)
        self.run: RunEngine | None = None
        self._recorded: dict[str, tuple[ItemRef, ...]] | None = None
        self.archived: list[Run] = []

    @property
    def state(self) -> BatchState:
        """The batch as this decision has changed it so far."""
        changes = self._changes
        if changes is not None:
            self._changes = None
            self._state = _evolve_state(self._state, **changes)
        return self._state

    @state.setter
    def state(self, state: BatchState) -> None:
        self._changes = None
        self._state = state
        self.batch_id = state.batch_id

    @property
    def status(self) -> BatchStatus:
        """The batch's status as this decision has changed it so far (reads no other field)."""
        changes = self._changes
        if changes is not None and "status" in changes:
            status: BatchStatus = changes["status"]
            return status
        return self._state.status

    def change(self, **changes: Any) -> None:
        """Record changes to the batch's fields, applied when the state is next read."""
        if self._changes is None:
            self._changes = changes
        else:
            self._changes.update(changes)

    def recorded(self) -> dict[str, tuple[ItemRef, ...]]:
        """Outputs of the latest successful execution of each phase, before this decision."""
        if self._recorded is None:
            self._recorded = self.state.past.recorded_outputs()
        return self._recorded

    def finish(
        self,
        *,
        ignored: str | None = None,
        denial: Denial | None = None,
        run_id: str | None = None,
        progress: bool = True,
    ) -> Decision:
        """The decision. ``progress=False`` keeps the batch's ``updated_at`` (the time of its
        last progress, which the stalled-runs view reads): a re-sent command changes the
        state but moves nothing forward."""
        journal = self.journal
        engine, self.run = self.run, None  # no session <-> engine cycle left for the collector
        if not journal.moves:
            return Decision(self.original, tuple(journal.emits), (), ignored, denial, run_id)
        changes = self._changes or {}
        self._changes = None
        changes["version"] = self.original.version + 1
        if progress:
            changes["updated_at"] = self.now
        if engine is not None:
            changes["active_run"] = engine.snapshot()
        return Decision(
            _evolve_state(self._state, **changes),
            tuple(journal.emits),
            tuple(journal.moves),
            None,
            denial,
            run_id,
            tuple(journal.flags),
            tuple(journal.resend),
            tuple(self.archived),
        )


class BatchCtx:
    """A batch trigger and what its input brought."""

    __slots__ = ("admission", "fresh", "items", "registration", "session")

    def __init__(
        self,
        session: Session,
        *,
        items: tuple[ItemRef, ...] = (),
        admission: Admission | None = None,
        registration: RegisterBatch | None = None,
        fresh: BatchState | None = None,
    ) -> None:
        self.session = session
        self.items = items
        self.admission = admission
        self.registration = registration
        self.fresh = fresh


class RunCtx:
    """A run trigger: the engine of the run it moves."""

    __slots__ = ("engine", "session")

    def __init__(self, session: Session, engine: RunEngine) -> None:
        self.session = session
        self.engine = engine


class PhaseCtx:
    """A phase trigger: which phase, the field changes its move makes, and what it carries."""

    __slots__ = (
        "changes",
        "engine",
        "failed",
        "inputs",
        "listed",
        "name",
        "note",
        "outputs",
        "payload",
        "skip_reason",
    )

    def __init__(
        self,
        engine: RunEngine,
        name: str,
        changes: dict[str, Any] | None = None,
        *,
        note: str | None = None,
        skip_reason: str = "",
        outputs: tuple[ItemRef, ...] = (),
        failed: tuple[str, ...] = (),
    ) -> None:
        self.engine = engine
        self.name = name
        self.changes: dict[str, Any] = {} if changes is None else changes
        """The fields the move changes besides the status (the context owns the dict)."""
        self.note = note
        self.skip_reason = skip_reason
        self.outputs = outputs
        self.failed = failed
        self.inputs: tuple[ItemRef, ...] | None = None
        self.listed: Mapping[str, tuple[DependencyRef, ...]] = {}
        """The dependency refs a fan-in phase's command lists, item by item (``inputs_ready``)."""
        self.payload: dict[str, Any] | None = None
        """The command's field values (``prepare_command``); ``None``: too large to send."""
