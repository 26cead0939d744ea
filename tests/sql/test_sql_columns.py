"""``UtcDateTime``: on SQLite one bind processor writes the text the two chained processors
(aware UTC time, then SQLAlchemy's SQLite ``DATETIME``) wrote; naive times are refused."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest
from pipeline_state_sql.columns import UtcDateTime
from sqlalchemy import DateTime
from sqlalchemy.dialects import sqlite

MOMENTS = [
    datetime(2025, 1, 1, tzinfo=UTC),
    datetime(999, 3, 4, 5, 6, 7, 89, tzinfo=UTC),
    datetime(2025, 12, 31, 23, 59, 59, 999999, tzinfo=timezone(timedelta(hours=-3))),
    datetime(2024, 2, 29, 0, 30, tzinfo=timezone(timedelta(hours=5, minutes=30))),
]


@pytest.mark.parametrize("moment", MOMENTS)
def test_sqlite_text_is_the_chained_processors_text(moment: datetime) -> None:
    dialect = sqlite.dialect()
    column = UtcDateTime()
    one = column.dialect_impl(dialect).bind_processor(dialect)
    chained = DateTime(timezone=True).dialect_impl(dialect).bind_processor(dialect)
    assert one is not None
    assert chained is not None
    assert one(moment) == chained(column.process_bind_param(moment, dialect))
    assert one(None) is None


def test_naive_times_are_refused_on_sqlite() -> None:
    dialect = sqlite.dialect()
    one = UtcDateTime().dialect_impl(dialect).bind_processor(dialect)
    assert one is not None
    with pytest.raises(ValueError, match="naive datetime"):
        one(datetime(2025, 1, 1))  # naive on purpose
