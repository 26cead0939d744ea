"""Who asked: ``transitions.requested_by``, the operator whose command made the move.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-03
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision: str | None = "0004"
branch_labels: str | None = None
depends_on: str | None = None

ID = 200


def upgrade() -> None:
    with op.batch_alter_table("transitions") as batch:
        batch.add_column(sa.Column("requested_by", sa.String(ID), nullable=True))


def downgrade() -> None:
    # SQLite recreates the table: keep its AUTOINCREMENT (ids never handed out twice).
    with op.batch_alter_table("transitions", table_kwargs={"sqlite_autoincrement": True}) as batch:
        batch.drop_column("requested_by")
