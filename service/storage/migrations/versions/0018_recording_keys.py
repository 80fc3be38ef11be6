"""recording data keys: each recording's audio sealed under a key of its own

Revision ID: 0018
Revises: 0017
Create Date: 2026-12-01 10:55:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0018"
down_revision: str | None = "0017"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "recordingkey",
        sa.Column("recording_id", sa.String(length=36), nullable=False),
        sa.Column("business_id", sa.String(length=36), nullable=False),
        sa.Column("key_id", sa.Integer(), nullable=False),
        sa.Column("wrapped", sa.LargeBinary(), nullable=False),
        sa.Column("format", sa.Integer(), nullable=False),
        sa.Column("blob_sha256", sa.String(length=64), nullable=False),
        sa.Column("blob_size", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(["recording_id"], ["recording.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("recording_id"),
    )
    op.create_index(op.f("ix_recordingkey_key_id"), "recordingkey", ["key_id"], unique=False)
    op.create_index(op.f("ix_recordingkey_blob_sha256"), "recordingkey", ["blob_sha256"], unique=False)


def downgrade() -> None:
    op.drop_index(op.f("ix_recordingkey_blob_sha256"), table_name="recordingkey")
    op.drop_index(op.f("ix_recordingkey_key_id"), table_name="recordingkey")
    op.drop_table("recordingkey")
