"""completed status: the mirrored API's word for a recording whose audio is stored

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-01 09:35:00
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0013"
down_revision: str | None = "0012"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.execute("UPDATE recording SET processing_status = 'completed' WHERE processing_status = 'stored'")


def downgrade() -> None:
    op.execute("UPDATE recording SET processing_status = 'stored' WHERE processing_status = 'completed'")
