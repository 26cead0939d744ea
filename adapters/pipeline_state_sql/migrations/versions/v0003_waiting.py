"""Waiting facts, transition notes and the stalled-runs index.

* ``waiting``: early facts kept until their batch gets where they apply;
* ``transitions.note``: a flag on a move (``correlation_mismatch``);
* ``ix_batches_status_updated_at``: active runs by last change (stalled runs).

Revision ID: 0003
Revises: 0002
Create Date: 2025-03-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision: str | None = "0002"
branch_labels: str | None = None
depends_on: str | None = None

ID = 200
ROW_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
TIME = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "waiting",
        sa.Column("seq", ROW_ID, autoincrement=True, nullable=False),
        sa.Column("event_id", sa.String(ID), nullable=False),
        sa.Column("topic", sa.String(255), nullable=False),
        sa.Column("batch_id", sa.String(ID), nullable=False),
        sa.Column("raw", sa.LargeBinary(), nullable=False),
        sa.Column("waits_for", sa.String(200), nullable=False),
        sa.Column("arrived_at", TIME, nullable=False),
        sa.PrimaryKeyConstraint("seq", name="pk_waiting"),
        sa.UniqueConstraint("event_id", name="uq_waiting_event_id"),
        sqlite_autoincrement=True,
    )
    op.create_index("ix_waiting_batch_id_seq", "waiting", ["batch_id", "seq"])
    op.create_index("ix_waiting_arrived_at", "waiting", ["arrived_at"])
    with op.batch_alter_table("transitions") as batch:
        batch.add_column(sa.Column("note", sa.String(200), nullable=True))
    op.create_index("ix_batches_status_updated_at", "batches", ["status", "updated_at"])


def downgrade() -> None:
    op.drop_index("ix_batches_status_updated_at", table_name="batches")
    # SQLite recreates the table: keep its AUTOINCREMENT (ids never handed out twice).
    with op.batch_alter_table("transitions", table_kwargs={"sqlite_autoincrement": True}) as batch:
        batch.drop_column("note")
    op.drop_table("waiting")
