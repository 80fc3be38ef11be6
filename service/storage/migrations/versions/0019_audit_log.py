"""audit log: hash-chained events and the head of each chain

Revision ID: 0019
Revises: 0018
Create Date: 2026-12-01 11:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel
from alembic import op

revision: str = "0019"
down_revision: str | None = "0018"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_S = sqlmodel.sql.sqltypes.AutoString


def upgrade() -> None:
    op.create_table(
        "auditchain",
        sa.Column("chain", _S(length=36), nullable=False),
        sa.Column("seq", sa.Integer(), nullable=False),
        sa.Column("head", _S(length=64), nullable=False),
        sa.PrimaryKeyConstraint("chain"),
    )
    op.create_table(
        "auditevent",
        sa.Column("id", _S(length=36), nullable=False),
        sa.Column("chain", _S(length=36), nullable=False),
        sa.Column("seq", sa.Integer(), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("business_id", _S(length=36), nullable=True),
        sa.Column("key_id", _S(length=36), nullable=True),
        sa.Column("key_name", _S(length=200), nullable=False),
        sa.Column("action", _S(length=40), nullable=False),
        sa.Column("target_kind", _S(length=20), nullable=False),
        sa.Column("target_id", _S(length=100), nullable=False),
        sa.Column("range_start", sa.BigInteger(), nullable=True),
        sa.Column("range_end", sa.BigInteger(), nullable=True),
        sa.Column("transport", _S(length=10), nullable=False),
        sa.Column("request_id", _S(length=64), nullable=False),
        sa.Column("prev_hash", _S(length=64), nullable=False),
        sa.Column("hash", _S(length=64), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("chain", "seq"),
    )
    with op.batch_alter_table("auditevent", schema=None) as batch_op:
        batch_op.create_index("ix_auditevent_chain_target", ["chain", "target_id", "seq"], unique=False)
        batch_op.create_index("ix_auditevent_chain_key", ["chain", "key_id", "seq"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("auditevent", schema=None) as batch_op:
        batch_op.drop_index("ix_auditevent_chain_key")
        batch_op.drop_index("ix_auditevent_chain_target")
    op.drop_table("auditevent")
    op.drop_table("auditchain")
