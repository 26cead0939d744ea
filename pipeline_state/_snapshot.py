"""JSON-serialisable views of batch state (the runtime's and the HTTP API's shape).

The view names the batch's owner, group and number of items under the keys its profile
chooses (:class:`ViewNames`, :attr:`~pipeline_state._profile.Profile.view_names`);
the other keys are the engine's.
"""

from __future__ import annotations

import functools
from typing import Any

import attrs

from ._model import BatchState, Run
from ._names import StateNames
from ._wire import is_id_text

__all__ = ["ENGINE_KEYS", "ViewNames", "run_view", "snapshot"]

ENGINE_KEYS = frozenset(
    {"batch_id", "status", "version", "active_run", "history", "created_at", "updated_at", "transitions"}
)
"""The keys of a batch's view that the engine fills (:func:`snapshot`), and those the
operator's ``batch show`` adds to it (with ``expected_<items key>``)."""


@attrs.frozen
class ViewNames:
    """The keys a batch's view (:func:`snapshot`) gives its owner, its group and its
    number of items."""

    owner: str = "owner"
    group_id: str = "group_id"
    items: str = "item_count"

    def problem(self) -> str | None:
        """Why these keys cannot key a view, or ``None``: each must be 1 to 64 characters
        that can be shown (the id rule, :func:`~pipeline_state._wire.is_id_text`; a key
        need not be a Python name: JSON and the docs take any), the three distinct, and none
        one of the engine's own keys (:data:`ENGINE_KEYS`), which it would overwrite."""
        keys = {"owner": self.owner, "group_id": self.group_id, "items": self.items}
        for field, key in keys.items():
            if not isinstance(key, str) or len(key) > 64 or not key.strip() or not is_id_text(key):
                return (
                    f"{field} must be 1 to 64 characters without control or bidirectional "
                    f"characters, got {key!r:.80}"
                )
            if key in ENGINE_KEYS:
                return f"{field} {key!r} is a key the engine's view has already"
        if len(set(keys.values())) < len(keys):
            return f"the keys must differ, got {keys}"
        expected = f"expected_{self.items}"
        if expected in (self.owner, self.group_id):
            return f"{expected!r} is the key of the expected {self.items_word} (from items {self.items!r})"
        return None

    @property
    def items_word(self) -> str:
        """What pages call the items, from the count's key: ``item_count`` -> ``items``."""
        return self.items.removesuffix("_count") + "s"


@functools.cache
def _default_names() -> tuple[ViewNames, StateNames]:
    """The default profile's view keys and state names (read once)."""
    from .profiles import default_profile

    profile = default_profile()
    return profile.view_names, profile.state_names


def run_view(run: Run) -> dict[str, Any]:
    """One archived run as the snapshot's history shows it."""
    return {
        "run_id": run.run_id,
        "pipeline_name": run.pipeline_name,
        "correlation_id": run.correlation_id,
        "final_status": run.status.value,
        "completed_phases": list(run.completed_phases),
        "skipped_phases": list(run.skipped_phases),
        "phases": dict(run.phase_statuses),
        "accepted_at": run.accepted_at.isoformat(),
        "completed_at": None if run.completed_at is None else run.completed_at.isoformat(),
        "is_retry": run.is_retry,
    }


def snapshot(
    state: BatchState, names: ViewNames | None = None, states: StateNames | None = None
) -> dict[str, Any]:
    """The batch as a JSON-serialisable dict: status, version, owner, group, number of
    items, active run and history; ``names`` (default: the default profile's) keys the
    owner, group and count; the status shows under its name in ``states`` (default: the
    default profile's :attr:`~pipeline_state._profile.Profile.state_names`)."""
    default_keys, default_states = _default_names()
    keys = default_keys if names is None else names
    shown = default_states if states is None else states
    run = state.active_run
    active = None
    if run is not None:
        active = {
            "run_id": run.run_id,
            "pipeline_name": run.pipeline_name,
            "correlation_id": run.correlation_id,
            "phases": dict(run.phase_statuses),
            "skipped_phases": list(run.pruned),
            "accepted_at": run.accepted_at.isoformat(),
        }
    return {
        "batch_id": state.batch_id,
        "status": shown.show(state.status.value),
        "version": state.version,
        keys.owner: state.owner,
        keys.group_id: state.group_id,
        keys.items: len(state.items),
        "active_run": active,
        "history": [run_view(r) for r in state.history],
    }
