"""Ids in paths, queries and bodies: checked before anything reaches the store.

An id is 1 to :data:`~pipeline_state._wire.MAX_ID_LENGTH` (200) characters, with no
control character (NUL included) and no lone surrogate, the rule of the wire models' ids:
no store keeps those alike (PostgreSQL refuses NUL in text, and a lone surrogate is not
valid UTF-8). A bad id answers 422 ``validation_error`` naming the field; the store is
never asked.
"""

# No `from __future__ import annotations`: FastAPI must see the real annotations.

from typing import Annotated

from fastapi import Path
from pydantic import Field

from pipeline_state._wire import MAX_ID_LENGTH

__all__ = ["ID_PATTERN", "MAX_ID_LENGTH", "BatchId", "IdField", "MaybeEmptyIdField", "id_path"]


ID_PATTERN = r"^[^\x00-\x1f]*$"
"""No C0 control character (pydantic also refuses lone surrogates wherever a pattern applies)."""


def id_path(description: str) -> object:
    """The ``Path(...)`` of an id path parameter."""
    return Path(min_length=1, max_length=MAX_ID_LENGTH, pattern=ID_PATTERN, description=description)


BatchId = Annotated[str, id_path("the batch id")]
"""The ``{batch_id}`` path parameter."""

IdField = Annotated[str, Field(min_length=1, max_length=MAX_ID_LENGTH, pattern=ID_PATTERN)]
"""An id in a request body."""

MaybeEmptyIdField = Annotated[str, Field(max_length=MAX_ID_LENGTH, pattern=ID_PATTERN)]
"""An id in a request body that may be empty."""
