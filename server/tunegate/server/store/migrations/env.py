"""Alembic environment: runs on the connection handed over by `tunegate.server.store` (no alembic.ini,
no logging configuration — the application owns both)."""

from __future__ import annotations

from alembic import context

connection = context.config.attributes["connection"]
context.configure(connection=connection, target_metadata=None, render_as_batch=True)
with context.begin_transaction():
    context.run_migrations()
