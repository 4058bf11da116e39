"""files.row_shapes: each training file's row shapes and the first line of each (to match a job's method)

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-06 15:00:00
"""

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("files", sa.Column("row_shapes", sa.JSON(), nullable=True))


def downgrade() -> None:
    op.drop_column("files", "row_shapes")
