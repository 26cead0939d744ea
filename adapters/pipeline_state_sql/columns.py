"""Portable column types: UTC timestamps, JSON documents and auto-increment ids.

* :class:`UtcDateTime` stores timezone-aware UTC instants: ``timestamptz`` on PostgreSQL,
  SQLAlchemy's fixed-width text form on SQLite (which sorts and compares correctly); both
  read back as aware UTC datetimes.
* :data:`JSON_DOCUMENT` is ``JSON`` on SQLite and ``JSONB`` on PostgreSQL.
* :data:`ROW_ID` is ``BIGINT`` (identity) on PostgreSQL and ``INTEGER`` on SQLite, where
  only ``INTEGER PRIMARY KEY`` aliases the rowid.
"""

from __future__ import annotations

from datetime import UTC, datetime

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

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)


JSON_DOCUMENT = JSON().with_variant(JSONB(), "postgresql")
"""A JSON document column: ``JSON`` (text) on SQLite, ``JSONB`` on PostgreSQL."""

ROW_ID = BigInteger().with_variant(Integer(), "sqlite")
"""An auto-incremented row id column type."""
