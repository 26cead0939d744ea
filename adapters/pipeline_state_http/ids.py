"""Ids in paths, queries and bodies: checked before anything reaches the store.

An id is 1 to :data:`~pipeline_state._wire.MAX_ID_LENGTH` (200) characters, with no
control, separator or bidi character (NUL included) and no lone surrogate, the rule of the wire models' ids:
no store keeps those alike (PostgreSQL refuses NUL in text, and a lone surrogate is not
valid UTF-8). A bad id answers 422 ``validation_error`` naming the field; the store is
never asked.
"""

# No `from __future__ import annotations`: FastAPI must see the real annotations.

from typing import Annotated

from fastapi import Path
from pydantic import Field

from pipeline_state._wire import _UNSHOWABLE, MAX_ID_LENGTH

__all__ = [
    "BATCH_ID_PATTERN",
    "ID_PATTERN",
    "MAX_ID_LENGTH",
    "BatchId",
    "BatchIdField",
    "IdField",
    "MaybeEmptyIdField",
    "id_path",
]


ID_PATTERN = rf"^[^{_UNSHOWABLE}]*$"
"""The wire's id rule (:data:`~pipeline_state._wire.Id`): no C0 or C1 control character or
DEL, no line or paragraph separator, no bidirectional mark, embedding, override or isolate
(which would turn the text after an id around on a page); pydantic also refuses lone
surrogates wherever a pattern applies."""

BATCH_ID_PATTERN = rf"^[^{_UNSHOWABLE}/]*$"
"""An id that names a batch over HTTP has no ``/`` either: its pages' paths could not hold it
(``%2F`` is decoded before the routes are matched)."""


def id_path(description: str, pattern: str = ID_PATTERN) -> object:
    """The ``Path(...)`` of an id path parameter."""
    return Path(min_length=1, max_length=MAX_ID_LENGTH, pattern=pattern, description=description)


BatchId = Annotated[str, id_path("the batch id", BATCH_ID_PATTERN)]
"""The ``{batch_id}`` path parameter."""

IdField = Annotated[str, Field(min_length=1, max_length=MAX_ID_LENGTH, pattern=ID_PATTERN)]
"""An id in a request body."""

MaybeEmptyIdField = Annotated[str, Field(max_length=MAX_ID_LENGTH, pattern=ID_PATTERN)]
"""An id in a request body that may be empty."""

BatchIdField = Annotated[str, Field(min_length=1, max_length=MAX_ID_LENGTH, pattern=BATCH_ID_PATTERN)]
"""A batch id in a request body (see :data:`BATCH_ID_PATTERN`)."""
