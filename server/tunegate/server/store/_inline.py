"""SQLite on the event loop's own thread: the part of `AsyncEngine` the repositories use.

SQLite is a library, not a server: in WAL mode with `synchronous=NORMAL` a keyed read takes
tens of microseconds and a commit needs no fsync (only checkpoints sync). Handing every
statement to a worker thread, as an async driver does, costs several times the statement's own
CPU, so statements run here, inline, and block the loop only for as long as SQLite works.
PostgreSQL keeps its async driver: its statements cross a network.

Contract (what `AsyncEngine` gives the repositories):
- `begin()` / `connect()` are async context managers yielding an `InlineConnection`, whose
  `execute`, `scalar` and `run_sync` are awaitable and run at once;
- a `begin()` block is committed when its `async with` ends without an error, and rolled back
  when it ends with one; a `connect()` block only reads (whatever it did is rolled back);
- the body of a block awaits nothing but its connection, so a block runs within one step of
  the loop and blocks never overlap on the one connection: nothing waits for a turn, no lock is
  held across an await. A block entered while another is open is a programming error and
  raises `RuntimeError` rather than interleave two transactions;
- a result's rows are read inside its block.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import sqlalchemy as sa

__all__ = ["InlineConnection", "InlineEngine"]

T = TypeVar("T")


class InlineConnection:
    """A synchronous `sqlalchemy.Connection` behind `AsyncConnection`'s awaitable methods."""

    __slots__ = ("dialect", "sync_connection")

    def __init__(self, connection: sa.Connection) -> None:
        self.sync_connection = connection
        self.dialect = connection.dialect

    async def execute(self, statement: Any, parameters: Any = None, **kwargs: Any) -> Any:
        return self.sync_connection.execute(statement, parameters, **kwargs)

    async def scalar(self, statement: Any, parameters: Any = None, **kwargs: Any) -> Any:
        return self.sync_connection.scalar(statement, parameters, **kwargs)

    async def run_sync(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        return fn(self.sync_connection, *args, **kwargs)


class InlineEngine:
    """One SQLite connection, used by one block at a time (see the module docstring)."""

    def __init__(self, engine: sa.Engine) -> None:
        self.sync_engine = engine
        self.dialect = engine.dialect
        self.url = engine.url
        self._connection: sa.Connection | None = None
        self._in_block = False

    def begin(self) -> _Block:
        """A block whose work is committed when it ends (rolled back if it raises)."""
        return _Block(self, commits=True)

    def connect(self) -> _Block:
        """A block that reads."""
        return _Block(self, commits=False)

    async def dispose(self) -> None:
        if self._connection is not None:
            self._connection.close()
            self._connection = None
        self.sync_engine.dispose()

    def _enter(self) -> sa.Connection:
        if self._in_block:
            raise RuntimeError(
                "an SQLite block was entered while another was open: a block's body must await "
                "nothing but its connection"
            )
        connection = self._connection
        if connection is None or connection.closed or connection.invalidated:
            if connection is not None:
                connection.close()
            connection = self._connection = self.sync_engine.connect()
        self._in_block = True
        return connection


class _Block:
    """One `async with engine.begin()` / `engine.connect()` block."""

    __slots__ = ("_commits", "_connection", "_engine")

    def __init__(self, engine: InlineEngine, *, commits: bool) -> None:
        self._engine = engine
        self._commits = commits
        self._connection: sa.Connection | None = None

    async def __aenter__(self) -> InlineConnection:
        connection = self._connection = self._engine._enter()
        if self._commits:
            try:
                connection.begin()
            except BaseException:
                self._engine._in_block = False
                raise
        return InlineConnection(connection)

    async def __aexit__(self, kind: type[BaseException] | None, _error: Any, _tb: Any) -> None:
        connection = self._connection
        assert connection is not None
        try:
            if self._commits and kind is None:
                connection.commit()
            else:
                connection.rollback()
        except BaseException:
            # A refused COMMIT (or ROLLBACK) may leave the transaction half-known: the next
            # block gets a fresh connection, and closing this one discards what it held.
            connection.invalidate()
            raise
        finally:
            self._engine._in_block = False
