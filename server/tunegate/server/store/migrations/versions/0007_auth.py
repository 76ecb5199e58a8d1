"""auth and monitoring: gateway API keys (keyed hashes), virtual keys sealed at rest, gateway
secrets, and the job monitor's schedule (`job_polls`).

Revision ID: 0007
Revises: 0006
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "api_keys",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("tenant", sa.String(64), nullable=False),
        sa.Column("name", sa.String(128), nullable=False),
        sa.Column("role", sa.String(16), nullable=False),
        sa.Column("hash", sa.String(64), nullable=False),
        sa.Column("created_at", sa.BigInteger, nullable=False),
        sa.Column("expires_at", sa.BigInteger, nullable=True),
        sa.Column("revoked_at", sa.BigInteger, nullable=True),
    )
    op.create_index("ix_api_keys_tenant", "api_keys", ["tenant"])
    op.create_table(
        "virtual_keys",
        sa.Column("owner", sa.String(64), primary_key=True),
        sa.Column("slug", sa.String(64), primary_key=True),
        sa.Column("provider", sa.String(64), nullable=False),
        sa.Column("config", sa.Text, nullable=False),
        sa.Column("secret", sa.Text, nullable=False),
        sa.Column("created_at", sa.BigInteger, nullable=False),
        sa.Column("updated_at", sa.BigInteger, nullable=False),
    )
    op.create_index("ix_virtual_keys_updated_at", "virtual_keys", ["updated_at"])
    op.create_table(
        "gateway_secrets",
        sa.Column("name", sa.String(64), primary_key=True),
        sa.Column("value", sa.Text, nullable=False),
    )
    op.create_table(
        "job_polls",
        sa.Column("job_id", sa.String(64), sa.ForeignKey("jobs.id", ondelete="CASCADE"), primary_key=True),
        sa.Column("next_at", sa.BigInteger, nullable=False),
        sa.Column("interval", sa.Float, nullable=False),
        sa.Column("lease_until", sa.BigInteger, nullable=True),
        sa.Column("holder", sa.String(64), nullable=True),
        sa.Column("polls", sa.Integer, nullable=False),
    )
    op.create_index("ix_job_polls_next_at", "job_polls", ["next_at"])
    active = sa.text("state = 'created' AND status NOT IN ('succeeded', 'failed', 'cancelled')")
    op.create_index("ix_jobs_active", "jobs", ["account_key"], sqlite_where=active, postgresql_where=active)


def downgrade() -> None:
    op.drop_index("ix_jobs_active", "jobs")
    op.drop_index("ix_job_polls_next_at", "job_polls")
    op.drop_table("job_polls")
    op.drop_table("gateway_secrets")
    op.drop_index("ix_virtual_keys_updated_at", "virtual_keys")
    op.drop_table("virtual_keys")
    op.drop_index("ix_api_keys_tenant", "api_keys")
    op.drop_table("api_keys")
