"""recording collections

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-01 08:05:26
"""

from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel
from alembic import op

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "collection",
        sa.Column("id", sqlmodel.sql.sqltypes.AutoString(length=36), nullable=False),
        sa.Column("business_id", sqlmodel.sql.sqltypes.AutoString(length=36), nullable=False),
        sa.Column("name", sqlmodel.sql.sqltypes.AutoString(length=100), nullable=False),
        sa.Column("description", sqlmodel.sql.sqltypes.AutoString(length=1000), nullable=False),
        sa.Column("color", sqlmodel.sql.sqltypes.AutoString(length=7), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["business_id"],
            ["business.id"],
        ),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("collection", schema=None) as batch_op:
        batch_op.create_index(
            "ix_collection_business_created", ["business_id", "created_at", "id"], unique=False
        )

    op.create_table(
        "collectionitem",
        sa.Column("collection_id", sqlmodel.sql.sqltypes.AutoString(length=36), nullable=False),
        sa.Column("recording_id", sqlmodel.sql.sqltypes.AutoString(length=36), nullable=False),
        sa.Column("added_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["collection_id"], ["collection.id"], ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["recording_id"], ["recording.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("collection_id", "recording_id"),
    )
    with op.batch_alter_table("collectionitem", schema=None) as batch_op:
        batch_op.create_index(
            "ix_collectionitem_collection_added", ["collection_id", "added_at", "recording_id"], unique=False
        )
        batch_op.create_index(batch_op.f("ix_collectionitem_recording_id"), ["recording_id"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("collectionitem", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_collectionitem_recording_id"))
        batch_op.drop_index("ix_collectionitem_collection_added")

    op.drop_table("collectionitem")
    with op.batch_alter_table("collection", schema=None) as batch_op:
        batch_op.drop_index("ix_collection_business_created")

    op.drop_table("collection")
