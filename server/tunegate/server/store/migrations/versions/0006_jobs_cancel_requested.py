"""jobs: `cancel_requested`, a cancel asked for while the provider had not confirmed the job.

An intent whose create's outcome is unknown has no provider id to cancel. The wish is kept on
the row; whoever finds the provider job by its tag (a read, a replay, the reconciler) cancels it
right after completing the row.

Revision ID: 0006
Revises: 0005
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        batch.add_column(sa.Column("cancel_requested", sa.Boolean, nullable=False, server_default=sa.false()))


def downgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        batch.drop_column("cancel_requested")
