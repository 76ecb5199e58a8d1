"""jobs: index request ids and native ids only where there is one.

Most creates carry no idempotency key, and no create has a native id until the provider
answers, yet every intent added a NULL entry to (owner, request_id) and (owner, native_id) —
two more B-tree pages written to the WAL on each job's first commit, and the native-id entry
moved again on completion. As partial indexes (`WHERE … IS NOT NULL`, in SQLite and
PostgreSQL alike) they hold only real values. Every query on them compares the column to a
value, which implies NOT NULL, so both planners still use them; the unique (owner, request_id)
still makes exactly one concurrent insert per key win.

Revision ID: 0005
Revises: 0004
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

_PARTIAL = {
    "ix_jobs_owner_request_id": (["owner", "request_id"], True, "request_id IS NOT NULL"),
    "ix_jobs_owner_native": (["owner", "native_id"], False, "native_id IS NOT NULL"),
}


def upgrade() -> None:
    for name, (columns, unique, where) in _PARTIAL.items():
        op.drop_index(name, table_name="jobs")
        condition = sa.text(where)
        op.create_index(
            name, "jobs", columns, unique=unique, sqlite_where=condition, postgresql_where=condition
        )


def downgrade() -> None:
    for name, (columns, unique, _where) in _PARTIAL.items():
        op.drop_index(name, table_name="jobs")
        op.create_index(name, "jobs", columns, unique=unique)
