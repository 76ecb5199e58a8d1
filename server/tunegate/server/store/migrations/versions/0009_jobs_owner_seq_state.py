"""jobs: `ix_jobs_owner_seq` includes `state` on PostgreSQL.

A registry listing page is `owner = ? AND state NOT IN (hidden) ORDER BY seq DESC LIMIT n`.
With `state` in the (owner, seq) index, the page's keys come from an index-only scan of the
owner's newest entries, and only the rows shown are read from the table
(`JobRepository.page`). SQLite has no included columns; its index is left as it is.

Revision ID: 0009
Revises: 0008
"""

from __future__ import annotations

from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    if op.get_context().dialect.name != "postgresql":
        return
    op.drop_index("ix_jobs_owner_seq", table_name="jobs")
    op.create_index("ix_jobs_owner_seq", "jobs", ["owner", "seq"], postgresql_include=["state"])


def downgrade() -> None:
    if op.get_context().dialect.name != "postgresql":
        return
    op.drop_index("ix_jobs_owner_seq", table_name="jobs")
    op.create_index("ix_jobs_owner_seq", "jobs", ["owner", "seq"])
