"""A list of values bound as one parameter: ``column`` is one of them.

SQLAlchemy's expanding ``IN`` renders one parameter per value, so a statement's text (and on
PostgreSQL its prepared form) changes with every length, and each call renders and
numbers the list again. The hot reads and marks (a fetch's batches and events, the rows a
relay published) take their list as one parameter instead, and their text never changes:

* PostgreSQL: ``column = ANY(:name)``, an array parameter;
* SQLite: ``column IN (SELECT value FROM json_each(:name))``, the list as JSON text.

Both use the column's index for each value, as ``IN`` does.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import JSON, BindParameter, ColumnElement, any_, bindparam, func, select
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.types import TypeEngine

__all__ = ["one_of"]


def one_of(column: ColumnElement[Any], name: str, dialect: str) -> ColumnElement[bool]:
    """``column`` equals one value of the list bound as ``name``, on ``dialect``
    (``"postgresql"`` or ``"sqlite"``); the parameter takes a list (or tuple) of values of
    the column's type."""
    item: TypeEngine[Any] = column.type
    if dialect == "postgresql":
        values: BindParameter[Any] = bindparam(name, type_=ARRAY(item))
        return column == any_(values)
    listed = func.json_each(bindparam(name, type_=JSON())).table_valued("value")
    return column.in_(select(listed.c.value))
