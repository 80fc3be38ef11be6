"""recordings name the call they are a leg of; sync state keeps what connectors learned

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-01 09:40:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel
from alembic import op

revision: str = "0013"
down_revision: str | None = "0012"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column(
        "recording", sa.Column("call_id", sqlmodel.sql.sqltypes.AutoString(length=200), nullable=True)
    )
    op.create_index("ix_recording_business_call", "recording", ["business_id", "call_id"], unique=False)
    op.add_column("providersync", sa.Column("hints", sa.JSON(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("providersync", schema=None) as batch_op:
        batch_op.drop_column("hints")
    op.drop_index("ix_recording_business_call", table_name="recording")
    with op.batch_alter_table("recording", schema=None) as batch_op:
        batch_op.drop_column("call_id")
