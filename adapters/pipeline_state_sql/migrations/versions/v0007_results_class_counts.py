"""A class's summed counts are 64-bit: ``results_classes.batch_count``, ``essays_succeeded``
and ``essays_failed`` become ``BIGINT`` (2,148 batches of a class, each within the reported
bound of 1,000,000 essays, passed PostgreSQL's ``INTEGER``; SQLite's integers were already
64-bit: nothing changes there).

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-07
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision: str | None = "0006"
branch_labels: str | None = None
depends_on: str | None = None

_COUNTS = ("batch_count", "essays_succeeded", "essays_failed")


def _retype(old: sa.types.TypeEngine[int], new: sa.types.TypeEngine[int]) -> None:
    if op.get_context().dialect.name == "sqlite":
        return
    for column in _COUNTS:
        op.alter_column("results_classes", column, existing_type=old, type_=new, existing_nullable=False)


def upgrade() -> None:
    _retype(sa.Integer(), sa.BigInteger())


def downgrade() -> None:
    # Fails on PostgreSQL while a class's sums are above 2**31 - 1: nothing is cut short.
    _retype(sa.BigInteger(), sa.Integer())
