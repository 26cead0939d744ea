"""Read-side queries: results for a batch, for a class and for a teacher.

:class:`ResultsQueries` wraps a :class:`~pipeline_state.profiles.huleedu.results.ports.ResultsStore` and
returns read-model values, or their JSON views (:mod:`pipeline_state.profiles.huleedu.results.views`) for an
HTTP adapter. ``None`` means "not found" (a 404): a batch without a read model, or whose
read model holds worker outcomes alone (not
:attr:`~pipeline_state.profiles.huleedu.results.model.BatchResults.is_known`: no
registration, completion, dispatch or pruned phase of it was seen).
"""

from __future__ import annotations

from typing import Any

from .model import BatchResults, ClassResults
from .ports import ClassPageStore, ResultsStore
from .views import batch_view, class_view, teacher_view

__all__ = ["ResultsQueries"]


class ResultsQueries:
    """Queries over a results store; ``limit``/``offset`` page the listings (by batch id)."""

    def __init__(self, store: ResultsStore) -> None:
        self.store = store

    async def batch(self, batch_id: str) -> BatchResults | None:
        """The read model of a batch the engine is known to have, else ``None``."""
        batch = await self.store.load(batch_id)
        return batch if batch is not None and batch.is_known else None

    async def class_summary(self, class_id: str) -> ClassResults | None:
        return await self.store.class_results(class_id)

    async def class_batches(self, class_id: str, *, limit: int = 100, offset: int = 0) -> list[BatchResults]:
        return await self.store.list_batches(class_id=class_id, limit=limit, offset=offset)

    async def teacher_batches(self, user_id: str, *, limit: int = 100, offset: int = 0) -> list[BatchResults]:
        return await self.store.list_batches(user_id=user_id, limit=limit, offset=offset)

    # -- JSON views -----------------------------------------------------------------------
    async def batch_json(self, batch_id: str) -> dict[str, Any] | None:
        """``GET /v1/results/batches/{batch_id}``."""
        batch = await self.batch(batch_id)
        return None if batch is None else batch_view(batch)

    async def class_json(self, class_id: str, *, limit: int = 100, offset: int = 0) -> dict[str, Any] | None:
        """``GET /v1/results/classes/{class_id}``."""
        if isinstance(self.store, ClassPageStore):  # the summary and the page as one moment
            page = await self.store.class_page(class_id, limit=limit, offset=offset)
            return None if page is None else class_view(*page)
        summary = await self.class_summary(class_id)
        if summary is None:
            return None
        return class_view(summary, await self.class_batches(class_id, limit=limit, offset=offset))

    async def teacher_json(self, user_id: str, *, limit: int = 100, offset: int = 0) -> dict[str, Any]:
        """``GET /v1/results/teachers/{user_id}`` (an empty listing for an unknown teacher)."""
        return teacher_view(user_id, await self.teacher_batches(user_id, limit=limit, offset=offset))
