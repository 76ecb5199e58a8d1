"""Opening the metadata database: engine, SQLite pragmas, migrations."""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine
from tunegate.server.store._inline import BUSY_TIMEOUT_MS, InlineConnection, InlineEngine

MIGRATIONS_DIR = Path(__file__).parent / "migrations"
_BACKSTOP_CHECKPOINT_PAGES = 4000
"""SQLite's inline checkpoint threshold (16 MB of WAL; its default is 1000 pages)."""

Engine = AsyncEngine | InlineEngine
"""What the repositories run on: PostgreSQL's async engine, or SQLite inline (`_inline`)."""


def begin_one(engine: Engine) -> contextlib.AbstractAsyncContextManager[AsyncConnection | InlineConnection]:
    """`engine.begin()` for a block that runs exactly one statement: on SQLite it joins the
    group commit without a savepoint (see `tunegate.server.store._inline`)."""
    if isinstance(engine, InlineEngine):
        return engine.begin(single_statement=True)
    return engine.begin()


async def write_one(
    engine: Engine, statement: Any, parameters: Any, *, ran: Callable[[], None] | None = None
) -> Any:
    """Run one write (a `prepared` statement, for SQLite's fast path) in `begin_one`'s block,
    committed when this returns; its result (`rowcount`, `inserted_primary_key`). `ran` is
    called in the same step as the statement runs, before the commit is awaited. On SQLite a
    write that would commit at once anyway runs without the block (`InlineEngine.write_now`)."""
    if isinstance(engine, InlineEngine):
        rows = engine.write_now(statement, parameters)
        if rows is not None:
            if ran is not None:
                ran()
            return rows
    async with begin_one(engine) as conn:
        result = await conn.execute(statement, parameters)
        if ran is not None:
            ran()
    return result


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    # WAL lets readers run beside the single writer; NORMAL is durable across application crashes
    # in WAL mode; SQLite leaves foreign keys off unless asked on every connection.
    cursor = dbapi_connection.cursor()
    try:
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        # A backstop: checkpoints normally run in the background (`InlineEngine`).
        cursor.execute(f"PRAGMA wal_autocheckpoint={_BACKSTOP_CHECKPOINT_PAGES}")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
    finally:
        cursor.close()


def create_engine(url: str) -> Engine:
    """The engine for `url`: SQLite (`sqlite://`, `sqlite+aiosqlite://`, `sqlite+pysqlite://`)
    runs inline on the event loop's thread (see `tunegate.server.store._inline`), pragmas installed;
    `postgresql+asyncpg://` gets an async engine."""
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        on_disk = parsed.database if parsed.database and parsed.database != ":memory:" else None
        if on_disk is not None:
            Path(on_disk).parent.mkdir(parents=True, exist_ok=True)
        # One connection: SQLite has a single writer anyway; `InlineEngine` queues the blocks.
        engine = sa.create_engine(
            parsed.set(drivername="sqlite+pysqlite"),
            pool_size=1,
            max_overflow=0,
            connect_args={"check_same_thread": False},  # `InlineEngine` serialises all use
        )
        sa.event.listen(engine, "connect", _sqlite_pragmas)
        # A `file:` URI names its file through SQLite's URI rules; it checkpoints inline.
        background = on_disk is not None and not on_disk.startswith("file:")
        return InlineEngine(engine, checkpoint_path=on_disk if background else None)
    return create_async_engine(url, pool_pre_ping=True)


def _alembic_config(connection: sa.Connection) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    config.attributes["connection"] = connection
    return config


def _upgrade(connection: sa.Connection) -> None:
    command.upgrade(_alembic_config(connection), "head")


async def migrate(engine: Engine) -> None:
    """Bring the schema to the newest revision (idempotent)."""
    block = engine.begin(grouped=False) if isinstance(engine, InlineEngine) else engine.begin()
    async with block as connection:
        await connection.run_sync(_upgrade)


def _current(connection: sa.Connection) -> str | None:
    from alembic.runtime.migration import MigrationContext

    return MigrationContext.configure(connection).get_current_revision()


async def current_revision(engine: Engine) -> str | None:
    """The revision recorded in `alembic_version`, or None for an unmigrated database."""
    async with engine.connect() as connection:
        return await connection.run_sync(_current)
