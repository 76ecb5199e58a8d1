"""local provider: jobs, their events and checkpoints, and provider files in the shared store.

Revision ID: 0010
Revises: 0009
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "local_jobs",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("created_at", sa.BigInteger, nullable=False),
        sa.Column("tag", sa.String(255), nullable=True),
        sa.Column("status", sa.String(32), nullable=False),
        sa.Column("body", sa.Text, nullable=False),
        sa.Column("control", sa.String(16), nullable=True),
        sa.Column("worker", sa.String(255), nullable=True),
        sa.Column("result_blob_key", sa.String(128), nullable=True),
        sa.Column("model_blob_key", sa.String(128), nullable=True),
        sa.Column("updated_at", sa.Float, nullable=False),
    )
    op.create_index("ix_local_jobs_created", "local_jobs", ["created_at", "id"])
    op.create_index("ix_local_jobs_tag", "local_jobs", ["tag"])
    op.create_index("ix_local_jobs_status", "local_jobs", ["status"])
    op.create_table(
        "local_job_events",
        sa.Column(
            "job_id", sa.String(64), sa.ForeignKey("local_jobs.id", ondelete="CASCADE"), primary_key=True
        ),
        sa.Column("seq", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("created_at", sa.BigInteger, nullable=False),
        sa.Column("level", sa.String(16), nullable=False),
        sa.Column("message", sa.Text, nullable=False),
        sa.Column("type", sa.String(16), nullable=False),
        sa.Column("data", sa.Text, nullable=True),
    )
    op.create_table(
        "local_checkpoints",
        sa.Column(
            "job_id", sa.String(64), sa.ForeignKey("local_jobs.id", ondelete="CASCADE"), primary_key=True
        ),
        sa.Column("seq", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("step", sa.Integer, nullable=False),
        sa.Column("created_at", sa.BigInteger, nullable=False),
        sa.Column("metrics", sa.Text, nullable=False),
        sa.Column("blob_key", sa.String(128), nullable=False),
    )
    op.create_table(
        "local_files",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("filename", sa.String(512), nullable=False),
        sa.Column("purpose", sa.String(32), nullable=False),
        sa.Column("bytes", sa.BigInteger, nullable=False),
        sa.Column("created_at", sa.BigInteger, nullable=False),
        sa.Column("blob_key", sa.String(128), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("local_files")
    op.drop_table("local_checkpoints")
    op.drop_table("local_job_events")
    op.drop_table("local_jobs")
