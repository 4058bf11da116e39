"""multi-node jobs: a job's node count and the gang of workers that runs an attempt

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-06 15:40:00
"""

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("jobs", sa.Column("nodes", sa.Integer(), nullable=False, server_default="1"))
    op.create_table(
        "gang_members",
        sa.Column("job_id", sa.String(length=40), nullable=False),
        sa.Column("rank", sa.Integer(), nullable=False),
        sa.Column("attempt", sa.Integer(), nullable=False),
        sa.Column("worker", sa.String(length=200), nullable=False),
        sa.Column("address", sa.String(length=300), nullable=True),
        sa.Column("joined_at", sa.BigInteger(), nullable=False),
        sa.ForeignKeyConstraint(["job_id"], ["jobs.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("job_id", "rank"),
    )


def downgrade() -> None:
    op.drop_table("gang_members")
    op.drop_column("jobs", "nodes")
