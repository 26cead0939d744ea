"""Portable column types: UTC timestamps, JSON documents and auto-increment ids.

* :class:`UtcDateTime` stores timezone-aware UTC instants: ``timestamptz`` on PostgreSQL,
  SQLAlchemy's fixed-width text form on SQLite (which sorts and compares correctly); both
  read back as aware UTC datetimes.
* :data:`JSON_DOCUMENT` is ``JSON`` on SQLite and ``JSONB`` on PostgreSQL.
* :data:`ROW_ID` is ``BIGINT`` (identity) on PostgreSQL and ``INTEGER`` on SQLite, where
  only ``INTEGER PRIMARY KEY`` aliases the rowid.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import JSON, BigInteger, DateTime, Dialect, Integer
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.types import TypeDecorator

__all__ = ["JSON_DOCUMENT", "ROW_ID", "UtcDateTime"]


class UtcDateTime(TypeDecorator[datetime]):
    """A timezone-aware UTC ``datetime`` column; naive values are refused on write."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError(f"naive datetime {value!r}: pipeline-state stores aware UTC times only")
        value = value.astimezone(UTC)
        # SQLite's text form has no offset: store the UTC wall time.
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def bind_processor(self, dialect: Dialect) -> Callable[[Any], Any] | None:
        """On SQLite, :meth:`process_bind_param` and the dialect's text form in one step (the
        same text: ``YYYY-MM-DD HH:MM:SS.ffffff``, UTC wall time), a third of the cost of the
        two processors chained; other dialects chain them. Either way the last instant
        converted is remembered (`_last_remembered`)."""
        if dialect.name == "sqlite":
            return _last_remembered(_sqlite_text)
        chained = super().bind_processor(dialect)
        return None if chained is None else _last_remembered(chained)

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)


def _sqlite_text(value: datetime | None) -> str | None:
    if value is None:
        return None
    if value.tzinfo is None:
        raise ValueError(f"naive datetime {value!r}: pipeline-state stores aware UTC times only")
    return value.astimezone(UTC).replace(tzinfo=None).isoformat(" ", "microseconds")


def _last_remembered(convert: Callable[[Any], Any]) -> Callable[[Any], Any]:
    """``convert`` that answers again from the last value it converted when given that very
    object: a unit of work stamps most of its rows (log, outbox, inbox, the batch) with one
    ``datetime``, converted once instead of once per row. ``datetime`` is immutable; a value
    that ``convert`` refuses is not remembered."""
    last: tuple[Any, Any] = (None, None)  # None converts to None

    def converted(value: Any) -> Any:
        nonlocal last
        seen = last  # read once: another thread may replace the pair meanwhile
        if value is seen[0]:
            return seen[1]
        out = convert(value)
        last = (value, out)
        return out

    return converted


JSON_DOCUMENT = JSON().with_variant(JSONB(), "postgresql")
"""A JSON document column: ``JSON`` (text) on SQLite, ``JSONB`` on PostgreSQL."""

ROW_ID = BigInteger().with_variant(Integer(), "sqlite")
"""An auto-incremented row id column type."""

COUNT = BigInteger().with_variant(Integer(), "sqlite")
"""A count that sums many rows' figures: 64-bit (SQLite's ``INTEGER`` already is)."""
