"""recording agent keys, and keys bound to agents

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-01 09:10:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel
from alembic import op

revision: str = "0011"
down_revision: str | None = "0010"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# models.AGENT_KEY_SQL as of this revision (a migration keeps the schema it made).
AGENT_KEY_SQL = "coalesce(nullif(callcenter_number, ''), callcenter_name)"


def upgrade() -> None:
    # A generated column: PostgreSQL stores it (adding it fills every existing row, in
    # one table rewrite); SQLite computes it on read and stores it in the index only.
    stored = op.get_bind().dialect.name != "sqlite"
    op.add_column(
        "recording",
        sa.Column(
            "agent_key", sa.String(length=200), sa.Computed(AGENT_KEY_SQL, persisted=stored), nullable=True
        ),
    )
    op.create_index(
        "ix_recording_business_agent", "recording", ["business_id", "agent_key", "call_at"], unique=False
    )
    op.create_table(
        "apikeyagent",
        sa.Column("key_id", sqlmodel.sql.sqltypes.AutoString(length=36), nullable=False),
        sa.Column("agent_key", sqlmodel.sql.sqltypes.AutoString(length=200), nullable=False),
        sa.ForeignKeyConstraint(["key_id"], ["apikey.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("key_id", "agent_key"),
    )


def downgrade() -> None:
    op.drop_table("apikeyagent")
    op.drop_index("ix_recording_business_agent", table_name="recording")
    with op.batch_alter_table("recording", schema=None) as batch_op:
        batch_op.drop_column("agent_key")
