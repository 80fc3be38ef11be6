"""blobs and whether recordings still use them

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-01 08:20:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel
from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "blob",
        sa.Column("sha256", sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
        sa.Column("size", sa.Integer(), nullable=False),
        sa.Column("unreferenced_since", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("sha256"),
    )
    with op.batch_alter_table("blob", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_blob_unreferenced_since"), ["unreferenced_since"], unique=False)
    # Every blob stored recordings use today is live. Blobs an earlier delete left behind
    # with no recording are not known here and stay where they are.
    op.execute(
        "INSERT INTO blob (sha256, size, unreferenced_since) "
        "SELECT sha256, MAX(COALESCE(size, 0)), NULL FROM recording WHERE sha256 IS NOT NULL GROUP BY sha256"
    )


def downgrade() -> None:
    with op.batch_alter_table("blob", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_blob_unreferenced_since"))
    op.drop_table("blob")
