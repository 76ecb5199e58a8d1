"""jobs: the fine-tuning job registry, mirrored events/checkpoints, provider file copies and
provider page cursors.

Revision ID: 0003
Revises: 0002
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

Seq = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "jobs",
        sa.Column("seq", Seq, primary_key=True, autoincrement=True),
        sa.Column("id", sa.String(64), nullable=False, unique=True),
        sa.Column("owner", sa.String(64), nullable=False),
        sa.Column("provider", sa.String(64), nullable=False),
        sa.Column("account_key", sa.String(255), nullable=False),
        sa.Column("region", sa.String(64), nullable=True),
        sa.Column("native_id", sa.String(255), nullable=True),
        sa.Column("state", sa.String(32), nullable=False),
        sa.Column("status", sa.String(32), nullable=False),
        sa.Column("request", sa.Text, nullable=False),
        sa.Column("request_hash", sa.String(64), nullable=False),
        sa.Column("request_id", sa.String(255), nullable=True),
        sa.Column("metadata", sa.Text, nullable=True),
        sa.Column("snapshot", sa.Text, nullable=True),
        sa.Column("error", sa.Text, nullable=True),
        sa.Column("attempted", sa.Boolean, nullable=False),
        sa.Column("lease_until", sa.BigInteger, nullable=True),
        sa.Column("created_at", sa.BigInteger, nullable=False),
        sa.Column("updated_at", sa.BigInteger, nullable=False),
    )
    op.create_index("ix_jobs_owner_seq", "jobs", ["owner", "seq"])
    op.create_index("ix_jobs_owner_request_id", "jobs", ["owner", "request_id"], unique=True)
    op.create_index("ix_jobs_state_created_at", "jobs", ["state", "created_at"])
    op.create_index("ix_jobs_account_native", "jobs", ["account_key", "native_id"])
    op.create_table(
        "job_metadata",
        sa.Column("job_id", sa.String(64), sa.ForeignKey("jobs.id", ondelete="CASCADE"), primary_key=True),
        sa.Column("key", sa.String(64), primary_key=True),
        sa.Column("value", sa.String(512), nullable=False),
    )
    op.create_index("ix_job_metadata_key_value", "job_metadata", ["key", "value"])
    for name in ("job_events", "job_checkpoints"):
        op.create_table(
            name,
            sa.Column("seq", Seq, primary_key=True, autoincrement=True),
            sa.Column("id", sa.String(64), nullable=False, unique=True),
            sa.Column("job_id", sa.String(64), sa.ForeignKey("jobs.id", ondelete="CASCADE"), nullable=False),
            sa.Column("native_id", sa.String(255), nullable=False),
            sa.Column("created_at", sa.BigInteger, nullable=False),
            sa.Column("body", sa.Text, nullable=False),
        )
        op.create_index(f"ix_{name}_job_native", name, ["job_id", "native_id"], unique=True)
        op.create_index(f"ix_{name}_job_seq", name, ["job_id", "seq"])
    op.create_table(
        "provider_files",
        sa.Column("file_id", sa.String(64), primary_key=True),
        sa.Column("account_key", sa.String(255), primary_key=True),
        sa.Column("provider", sa.String(64), nullable=False),
        sa.Column("native_id", sa.String(255), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("status_details", sa.Text, nullable=True),
        sa.Column("created_at", sa.BigInteger, nullable=False),
    )
    op.create_table(
        "provider_cursors",
        sa.Column("owner", sa.String(64), primary_key=True),
        sa.Column("account_key", sa.String(255), primary_key=True),
        sa.Column("after_id", sa.String(255), primary_key=True),
        sa.Column("token", sa.Text, nullable=False),
        sa.Column("created_at", sa.BigInteger, nullable=False),
    )
    op.create_index("ix_provider_cursors_created_at", "provider_cursors", ["created_at"])


def downgrade() -> None:
    op.drop_table("provider_cursors")
    op.drop_table("provider_files")
    op.drop_table("job_checkpoints")
    op.drop_table("job_events")
    op.drop_table("job_metadata")
    op.drop_table("jobs")
