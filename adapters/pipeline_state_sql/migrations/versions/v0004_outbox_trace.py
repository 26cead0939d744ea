"""The trace context of outbox rows.

* ``outbox.trace_context``: the W3C trace-context headers (a JSON object) of the decision
  that wrote the row, so its publish continues that trace; ``NULL`` for rows written before
  (or without a trace).

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-03
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision: str | None = "0003"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    with op.batch_alter_table("outbox") as batch:
        batch.add_column(sa.Column("trace_context", sa.Text(), nullable=True))


def downgrade() -> None:
    # SQLite recreates the table: keep its AUTOINCREMENT (ids never handed out twice).
    with op.batch_alter_table("outbox", table_kwargs={"sqlite_autoincrement": True}) as batch:
        batch.drop_column("trace_context")
