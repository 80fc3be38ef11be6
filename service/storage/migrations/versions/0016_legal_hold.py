"""legal hold on recordings; retention per provider

Revision ID: 0016
Revises: 0015
Create Date: 2026-12-01 11:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel
from alembic import op

revision: str = "0016"
down_revision: str | None = "0015"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("recording", sa.Column("held_at", sa.DateTime(timezone=True), nullable=True))
    op.add_column(
        "recording", sa.Column("hold_reason", sqlmodel.sql.sqltypes.AutoString(length=500), nullable=True)
    )
    op.create_table(
        "providersettings",
        sa.Column("provider_id", sqlmodel.sql.sqltypes.AutoString(length=36), nullable=False),
        sa.Column("business_id", sqlmodel.sql.sqltypes.AutoString(length=36), nullable=False),
        sa.Column("retention_days", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(["provider_id"], ["provider.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("provider_id"),
    )
    op.create_index(
        op.f("ix_providersettings_business_id"), "providersettings", ["business_id"], unique=False
    )


def downgrade() -> None:
    op.drop_index(op.f("ix_providersettings_business_id"), table_name="providersettings")
    op.drop_table("providersettings")
    with op.batch_alter_table("recording", schema=None) as batch_op:
        batch_op.drop_column("hold_reason")
        batch_op.drop_column("held_at")
