"""Results read model: results_batches, results_classes, results_class_status, results_inbox.

Revision ID: 0002
Revises: 0001
Create Date: 2025-02-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0002"
down_revision: str | None = "0001"
branch_labels: str | None = None
depends_on: str | None = None

ID = 200
DOCUMENT = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")
TIME = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "results_batches",
        sa.Column("batch_id", sa.String(ID), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("status", sa.String(64), nullable=False),
        sa.Column("user_id", sa.String(ID), nullable=True),
        sa.Column("class_id", sa.String(ID), nullable=True),
        sa.Column("document", DOCUMENT, nullable=False),
        sa.Column("updated_at", TIME, nullable=False),
        sa.PrimaryKeyConstraint("batch_id", name="pk_results_batches"),
    )
    op.create_index("ix_results_batches_user_id_batch_id", "results_batches", ["user_id", "batch_id"])
    op.create_index("ix_results_batches_class_id_batch_id", "results_batches", ["class_id", "batch_id"])
    op.create_index("ix_results_batches_status", "results_batches", ["status"])

    op.create_table(
        "results_classes",
        sa.Column("class_id", sa.String(ID), nullable=False),
        sa.Column("batch_count", sa.Integer(), nullable=False),
        sa.Column("essays_succeeded", sa.Integer(), nullable=False),
        sa.Column("essays_failed", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("class_id", name="pk_results_classes"),
    )

    op.create_table(
        "results_class_status",
        sa.Column("class_id", sa.String(ID), nullable=False),
        sa.Column("status", sa.String(64), nullable=False),
        sa.Column("batches", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("class_id", "status", name="pk_results_class_status"),
    )

    op.create_table(
        "results_inbox",
        sa.Column("event_id", sa.String(ID), nullable=False),
        sa.Column("event_type", sa.String(255), nullable=False),
        sa.Column("batch_id", sa.String(ID), nullable=False),
        sa.Column("result", sa.String(200), nullable=False),
        sa.Column("processed_at", TIME, nullable=False),
        sa.PrimaryKeyConstraint("event_id", name="pk_results_inbox"),
    )
    op.create_index(
        "ix_results_inbox_event_type_processed_at", "results_inbox", ["event_type", "processed_at"]
    )


def downgrade() -> None:
    for table in ("results_inbox", "results_class_status", "results_classes", "results_batches"):
        op.drop_table(table)
