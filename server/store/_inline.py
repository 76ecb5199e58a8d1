"""SQLite on the event loop's own thread: the part of `AsyncEngine` the repositories use.

Why: with aiosqlite every statement is handed to a worker thread and its answer handed back —
two thread switches and a loop wake-up per statement, which cost more CPU than the statement.
SQLite in WAL mode with `synchronous=NORMAL` answers a keyed read in microseconds and commits
without an fsync (only checkpoints sync), so running it inline blocks the loop for less time
than the hand-off did. PostgreSQL keeps its async driver: its statements cross a network.

Contract (what `AsyncEngine` gave the repositories, kept):
- `begin()` / `connect()` are async context managers yielding a connection whose `execute`,
  `scalar`, `run_sync`, `commit` and `rollback` are awaitable;
- one connection, one block at a time: an `asyncio.Lock` queues the blocks, as the old pool of
  one connection did, so a block that awaits something else in the middle never interleaves
  with another (and never blocks the thread waiting for SQLite's write lock);
- rows are buffered at `execute` (as aiosqlite did), so a result may be read after its block.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from typing import Any

import sqlalchemy as sa

__all__ = ["InlineConnection", "InlineEngine"]


class InlineConnection:
    """A synchronous `sqlalchemy.Connection` behind `AsyncConnection`'s awaitable methods."""

    def __init__(self, connection: sa.Connection) -> None:
        self.sync_connection = connection
        self.dialect = connection.dialect

    async def execute(self, statement: Any, parameters: Any = None, **kwargs: Any) -> Any:
        result = self.sync_connection.execute(statement, parameters, **kwargs)
        if result.returns_rows:
            return result.freeze()()  # buffered: readable after the block, like aiosqlite's rows
        return result

    async def scalar(self, statement: Any, parameters: Any = None, **kwargs: Any) -> Any:
        return self.sync_connection.scalar(statement, parameters, **kwargs)

    async def run_sync(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        return fn(self.sync_connection, *args, **kwargs)

    async def commit(self) -> None:
        self.sync_connection.commit()

    async def rollback(self) -> None:
        self.sync_connection.rollback()


class InlineEngine:
    """`begin()`, `connect()`, `dispose()` and `sync_engine` of `AsyncEngine`, inline."""

    def __init__(self, engine: sa.Engine) -> None:
        self.sync_engine = engine
        self.dialect = engine.dialect
        self.url = engine.url
        self._lock = asyncio.Lock()

    @contextlib.asynccontextmanager
    async def connect(self) -> AsyncIterator[InlineConnection]:
        async with self._lock:
            with self.sync_engine.connect() as connection:
                yield InlineConnection(connection)

    @contextlib.asynccontextmanager
    async def begin(self) -> AsyncIterator[InlineConnection]:
        async with self._lock:
            with self.sync_engine.begin() as connection:
                yield InlineConnection(connection)

    async def dispose(self) -> None:
        self.sync_engine.dispose()
