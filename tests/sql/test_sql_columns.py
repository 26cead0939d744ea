"""``UtcDateTime``: on SQLite one bind processor writes the text the two chained processors
(aware UTC time, then SQLAlchemy's SQLite ``DATETIME``) wrote; naive times are refused."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest
from pipeline_state_sql.columns import UtcDateTime
from sqlalchemy import DateTime, Dialect
from sqlalchemy.dialects import postgresql, sqlite

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


@pytest.mark.parametrize("dialect", [sqlite.dialect(), postgresql.dialect()], ids=["sqlite", "postgresql"])
def test_the_last_instant_remembered_answers_only_for_that_very_object(dialect: Dialect) -> None:
    """The processor remembers the last value it converted (a unit of work stamps its rows
    with one ``datetime``): every other value, equal or not, is converted on its own, and
    a naive time is refused even right after an aware one."""
    column = UtcDateTime()
    one = column.dialect_impl(dialect).bind_processor(dialect)
    assert one is not None
    for moment in [*MOMENTS, *MOMENTS[::-1], MOMENTS[2], MOMENTS[2]]:
        fresh = UtcDateTime().dialect_impl(dialect).bind_processor(dialect)
        assert fresh is not None
        assert one(moment) == fresh(moment)
        # The same instant as another object in another zone: the same UTC value.
        assert one(moment.astimezone(timezone(timedelta(hours=9)))) == fresh(moment)
    assert one(None) is None
    naive = MOMENTS[0].replace(tzinfo=None)
    with pytest.raises(ValueError, match="naive datetime"):
        one(naive)
    one(MOMENTS[0])
    with pytest.raises(ValueError, match="naive datetime"):
        one(naive)
