"""Initial schema: batches, runs, transitions, outbox, inbox.

Revision ID: 0001
Revises:
Create Date: 2025-01-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0001"
down_revision: str | None = None
branch_labels: str | None = None
depends_on: str | None = None

ID = 200
DOCUMENT = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")
ROW_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
TIME = sa.DateTime(timezone=True)
PENDING_SQLITE = sa.text("published_at IS NULL AND parked = 0")
PENDING_PG = sa.text("published_at IS NULL AND NOT parked")


def upgrade() -> None:
    op.create_table(
        "batches",
        sa.Column("batch_id", sa.String(ID), nullable=False),
        sa.Column("status", sa.String(64), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("state", DOCUMENT, nullable=False),
        sa.Column("next_deadline_at", TIME, nullable=True),
        sa.Column("created_at", TIME, nullable=False),
        sa.Column("updated_at", TIME, nullable=False),
        sa.PrimaryKeyConstraint("batch_id", name="pk_batches"),
    )
    op.create_index("ix_batches_status_batch_id", "batches", ["status", "batch_id"])
    op.create_index("ix_batches_next_deadline_at", "batches", ["next_deadline_at"])

    op.create_table(
        "runs",
        sa.Column("batch_id", sa.String(ID), nullable=False),
        sa.Column("seq", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("run_id", sa.String(ID), nullable=False),
        sa.Column("pipeline_name", sa.String(200), nullable=False),
        sa.Column("final_status", sa.String(64), nullable=False),
        sa.Column("correlation_id", sa.String(ID), nullable=False),
        sa.Column("accepted_at", TIME, nullable=False),
        sa.Column("completed_at", TIME, nullable=True),
        sa.Column("document", DOCUMENT, nullable=False),
        sa.PrimaryKeyConstraint("batch_id", "seq", name="pk_runs"),
    )
    op.create_index("ix_runs_completed_at", "runs", ["completed_at"])
    op.create_index("ix_runs_run_id", "runs", ["run_id"])

    op.create_table(
        "transitions",
        sa.Column("id", ROW_ID, autoincrement=True, nullable=False),
        sa.Column("batch_id", sa.String(ID), nullable=False),
        sa.Column("entity", sa.String(16), nullable=False),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("trigger", sa.String(100), nullable=False),
        sa.Column("source", sa.String(64), nullable=False),
        sa.Column("dest", sa.String(64), nullable=False),
        sa.Column("run_id", sa.String(ID), nullable=True),
        sa.Column("event_id", sa.String(ID), nullable=False),
        sa.Column("correlation_id", sa.String(ID), nullable=False),
        sa.Column("at", TIME, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_transitions"),
        sqlite_autoincrement=True,
    )
    op.create_index("ix_transitions_batch_id_id", "transitions", ["batch_id", "id"])

    op.create_table(
        "outbox",
        sa.Column("id", ROW_ID, autoincrement=True, nullable=False),
        sa.Column("event_id", sa.String(ID), nullable=False),
        sa.Column("topic", sa.String(255), nullable=False),
        sa.Column("key", sa.String(ID), nullable=True),
        sa.Column("envelope", DOCUMENT, nullable=False),
        sa.Column("created_at", TIME, nullable=False),
        sa.Column("published_at", TIME, nullable=True),
        sa.Column("attempts", sa.Integer(), server_default=sa.text("0"), nullable=False),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("parked", sa.Boolean(), server_default=sa.false(), nullable=False),
        sa.Column("available_at", TIME, nullable=False),
        sa.Column("claimed_until", TIME, nullable=True),
        sa.Column("claimed_by", sa.String(64), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_outbox"),
        sa.UniqueConstraint("event_id", name="uq_outbox_event_id"),
        sqlite_autoincrement=True,
    )
    op.create_index(
        "ix_outbox_pending", "outbox", ["id"], sqlite_where=PENDING_SQLITE, postgresql_where=PENDING_PG
    )
    op.create_index(
        "ix_outbox_pending_key",
        "outbox",
        ["key", "id"],
        sqlite_where=PENDING_SQLITE,
        postgresql_where=PENDING_PG,
    )
    op.create_index(
        "ix_outbox_parked",
        "outbox",
        ["id"],
        sqlite_where=sa.text("parked = 1"),
        postgresql_where=sa.text("parked"),
    )

    op.create_table(
        "inbox",
        sa.Column("event_id", sa.String(ID), nullable=False),
        sa.Column("topic", sa.String(255), nullable=False),
        sa.Column("batch_id", sa.String(ID), nullable=False),
        sa.Column("result", sa.String(200), nullable=False),
        sa.Column("processed_at", TIME, nullable=False),
        sa.PrimaryKeyConstraint("event_id", name="pk_inbox"),
    )
    op.create_index("ix_inbox_batch_id", "inbox", ["batch_id"])


def downgrade() -> None:
    for table in ("inbox", "outbox", "transitions", "runs", "batches"):
        op.drop_table(table)
