"""An :class:`~pipeline_state.profiles.huleedu.results.ports.OwnerLookup` that reads the pipeline's own store.

When the results consumer runs beside the pipeline service it can read a batch's owner and
class from the batch state instead of waiting for the registration event.
"""

from __future__ import annotations

from pipeline_state._decide import derive_id
from pipeline_state.ports import Store

from .model import Owner

__all__ = ["StoreOwnerLookup"]


class StoreOwnerLookup:
    """Owners from a pipeline :class:`~pipeline_state.ports.Store`: the registered
    ``user_id``, ``class_id`` and expected essay count, observed at the batch's creation."""

    def __init__(self, store: Store) -> None:
        self.store = store

    async def owner(self, batch_id: str) -> Owner | None:
        state = await self.store.load(batch_id)
        if state is None:
            return None
        return Owner(
            user_id=state.owner,
            class_id=state.group_id,
            expected_essays=state.expected_items,
            observed_at=state.created_at,
            event_id=derive_id("owner", batch_id),
        )
