"""Opening the metadata database: engine, SQLite pragmas, migrations."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from tunegate.server.store._inline import InlineEngine

MIGRATIONS_DIR = Path(__file__).parent / "migrations"
BUSY_TIMEOUT_MS = 5000
"""How long SQLite waits for another connection's lock (another process on the same file)."""

Engine = AsyncEngine | InlineEngine
"""What the repositories run on: PostgreSQL's async engine, or SQLite inline (`_inline`)."""


def sqlite_file(url: str) -> str | None:
    """The database file of an SQLite `url` given as a plain path; None for PostgreSQL, an
    in-memory database or a `file:` URI (which names its file through SQLite's URI rules)."""
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite":
        return None
    database = parsed.database
    if not database or database == ":memory:" or database.startswith("file:"):
        return None
    return database


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    # WAL lets readers run beside the single writer; NORMAL is durable across application crashes
    # in WAL mode; SQLite leaves foreign keys off unless asked on every connection.
    cursor = dbapi_connection.cursor()
    try:
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
    finally:
        cursor.close()


def create_engine(url: str) -> Engine:
    """The engine for `url`: SQLite (`sqlite://`, `sqlite+aiosqlite://`, `sqlite+pysqlite://`)
    runs inline on the event loop's thread (see `tunegate.server.store._inline`), pragmas
    installed; `postgresql+asyncpg://` gets an async engine."""
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        on_disk = sqlite_file(url)
        if on_disk is not None:
            Path(on_disk).parent.mkdir(parents=True, exist_ok=True)
        engine = sa.create_engine(parsed.set(drivername="sqlite+pysqlite"))
        sa.event.listen(engine, "connect", _sqlite_pragmas)
        return InlineEngine(engine)
    # The pool holds what one process uses at once (requests, the job monitor's polls, the
    # webhook sender) so connections are reused rather than opened and closed per use.
    return create_async_engine(url, pool_pre_ping=True, pool_size=16, max_overflow=16)


def _alembic_config(connection: sa.Connection) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    config.attributes["connection"] = connection
    return config


def _upgrade(connection: sa.Connection) -> None:
    command.upgrade(_alembic_config(connection), "head")


MIGRATION_LOCK = 0x7475_6E65_6761_7465  # "tunegate": the advisory lock replicas migrate under


async def migrate(engine: Engine) -> None:
    """Bring the schema to the newest revision (idempotent). On PostgreSQL the upgrade runs under
    a transaction-scoped advisory lock, so replicas starting at once on one database migrate one
    after the other (the second finds the schema current)."""
    async with engine.begin() as connection:
        if connection.dialect.name == "postgresql":
            await connection.execute(sa.text("SELECT pg_advisory_xact_lock(:key)"), {"key": MIGRATION_LOCK})
        await connection.run_sync(_upgrade)


def _current(connection: sa.Connection) -> str | None:
    from alembic.runtime.migration import MigrationContext

    return MigrationContext.configure(connection).get_current_revision()


async def current_revision(engine: Engine) -> str | None:
    """The revision recorded in `alembic_version`, or None for an unmigrated database."""
    async with engine.connect() as connection:
        return await connection.run_sync(_current)
