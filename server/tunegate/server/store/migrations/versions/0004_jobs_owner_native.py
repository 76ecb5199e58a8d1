"""jobs: look a caller's jobs up by native id through (owner, native_id).

The registry is asked "which of these provider jobs are this owner's?" on every provider-named
list (`native_id IN (…)` for a page) and when a served model is checked (`native_id = …`). Both
queries name the owner; with only (account_key, native_id) beside (owner, seq), planners took
(owner, seq) and read every job the owner ever created. (owner, native_id) answers both with
one probe per id; no query asks by (account_key, native_id) without the owner.

Revision ID: 0004
Revises: 0003
"""

from __future__ import annotations

from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_jobs_owner_native", "jobs", ["owner", "native_id"])
    op.drop_index("ix_jobs_account_native", table_name="jobs")


def downgrade() -> None:
    op.create_index("ix_jobs_account_native", "jobs", ["account_key", "native_id"])
    op.drop_index("ix_jobs_owner_native", table_name="jobs")
