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

Hot reads are `prepared` statements: built once at import with `bindparam`s, compiled once, then
run straight on the driver's cursor — no statement building, cache-key walk or result-proxy set-up
per call (a keyed lookup drops from ~150 µs to ~15 µs). Their rows are named tuples with
`_asdict()`, read with `first()`, `all()` or `scalar()`; values come back as SQLite stores them
(a Boolean is 0/1). On PostgreSQL a prepared statement is an ordinary statement.
"""

from __future__ import annotations

import asyncio
import collections
from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypeVar

import sqlalchemy as sa

__all__ = ["InlineConnection", "InlineEngine", "lookup", "prepared"]

_PREPARED = "tunegate_prepared"
S = TypeVar("S", bound=sa.Executable)


def prepared(statement: S) -> S:
    """Mark a module-level statement (parameters as `bindparam`s) for the inline fast path."""
    return statement.execution_options(**{_PREPARED: True})


def lookup(table: sa.Table, *keys: str) -> sa.Select[Any]:
    """A prepared `SELECT <all columns> FROM table WHERE k1 = :k1 AND …` (parameters named as
    the key columns)."""
    return prepared(table.select().where(*(table.c[key] == sa.bindparam(key) for key in keys)))


class _Plan:
    """A prepared statement compiled for SQLite: its SQL, parameter order and row type."""

    __slots__ = ("defaults", "expanding", "names", "row", "sql")

    def __init__(self, statement: sa.ClauseElement, dialect: sa.Dialect) -> None:
        compiled: Any = statement.compile(dialect=dialect)
        self.sql: str = str(compiled)
        self.names = tuple(compiled.positiontup or ())  # SQLite's `?` order
        self.defaults = dict(compiled.params)  # literal values the statement itself bound
        # `IN (:ids)` with `expanding=True` compiles to a marker that becomes one `?` per item.
        self.expanding = frozenset(name for name in self.names if compiled.binds[name].expanding)
        self.row: Any = None  # made from the cursor's column names on first use

    def bind(self, parameters: Mapping[str, Any]) -> tuple[str, list[Any]]:
        """The SQL and positional arguments for one execution."""
        values = self.defaults | dict(parameters)
        if not self.expanding:
            return self.sql, [values[name] for name in self.names]
        sql, arguments = self.sql, []
        for name in self.names:
            if name in self.expanding:
                items = list(values[name])
                sql = sql.replace(f"__[POSTCOMPILE_{name}]", ", ".join("?" * len(items)) or "NULL")
                arguments.extend(items)
            else:
                arguments.append(values[name])
        return sql, arguments


class _Rows:
    """The buffered answer of a prepared statement."""

    __slots__ = ("_rows", "inserted_primary_key", "rowcount")

    def __init__(self, rows: Sequence[Any], rowcount: int = -1, lastrowid: int | None = None) -> None:
        self._rows = rows
        self.rowcount = rowcount
        self.inserted_primary_key = None if lastrowid is None else (lastrowid,)

    def first(self) -> Any:
        return self._rows[0] if self._rows else None

    def all(self) -> Sequence[Any]:
        return self._rows

    def scalar(self) -> Any:
        return self._rows[0][0] if self._rows else None


_plans: dict[sa.ClauseElement, _Plan] = {}  # prepared statements live for the process


class InlineConnection:
    """A synchronous `sqlalchemy.Connection` behind `AsyncConnection`'s awaitable methods."""

    def __init__(self, connection: sa.Connection) -> None:
        self.sync_connection = connection
        self.dialect = connection.dialect

    async def execute(self, statement: Any, parameters: Any = None, **kwargs: Any) -> Any:
        if parameters is not None and statement.get_execution_options().get(_PREPARED):
            return self._run_prepared(statement, parameters)
        result = self.sync_connection.execute(statement, parameters, **kwargs)
        if result.returns_rows:
            return result.freeze()()  # buffered: readable after the block, like aiosqlite's rows
        return result

    def _run_prepared(self, statement: sa.ClauseElement, parameters: Mapping[str, Any]) -> _Rows:
        plan = _plans.get(statement)
        if plan is None:
            plan = _plans[statement] = _Plan(statement, self.dialect)
        driver = self.sync_connection.connection.driver_connection
        assert driver is not None
        sql, arguments = plan.bind(parameters)
        try:
            cursor = driver.execute(sql, arguments)
        except self.dialect.loaded_dbapi.Error as exc:  # e.g. a unique index: SQLAlchemy's class
            raise sa.exc.DBAPIError.instance(sql, arguments, exc, self.dialect.loaded_dbapi.Error) from exc
        try:
            if cursor.description is None:  # a write: a count, and the new row's key
                return _Rows((), cursor.rowcount, cursor.lastrowid)
            if plan.row is None:
                plan.row = collections.namedtuple("Row", [d[0] for d in cursor.description])  # type: ignore[misc]
            return _Rows([plan.row._make(values) for values in cursor.fetchall()])
        finally:
            cursor.close()

    async def scalar(self, statement: Any, parameters: Any = None, **kwargs: Any) -> Any:
        return self.sync_connection.scalar(statement, parameters, **kwargs)

    async def run_sync(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        return fn(self.sync_connection, *args, **kwargs)

    async def commit(self) -> None:
        self.sync_connection.commit()

    async def rollback(self) -> None:
        self.sync_connection.rollback()


class InlineEngine:
    """`begin()`, `connect()`, `dispose()` and `sync_engine` of `AsyncEngine`, inline.

    One connection is opened on first use and kept: checking a connection out of a pool and
    resetting it per block cost more than a keyed read. A `connect()` block ends whatever
    transaction its reads began; a `begin()` block commits, or rolls back on an exception."""

    def __init__(self, engine: sa.Engine) -> None:
        self.sync_engine = engine
        self.dialect = engine.dialect
        self.url = engine.url
        self._lock = asyncio.Lock()
        self._connection: sa.Connection | None = None

    def _open(self) -> sa.Connection:
        connection = self._connection
        if connection is None or connection.closed or connection.invalidated:
            if connection is not None:
                connection.close()
            connection = self._connection = self.sync_engine.connect()
        return connection

    def connect(self) -> _Block:
        return _Block(self, transaction=False)

    def begin(self) -> _Block:
        return _Block(self, transaction=True)

    async def dispose(self) -> None:
        if self._connection is not None:
            self._connection.close()
            self._connection = None
        self.sync_engine.dispose()


class _Block:
    """One `async with engine.connect()` / `engine.begin()` block (a plain class: cheaper than
    an async generator context manager on every query)."""

    __slots__ = ("_connection", "_engine", "_transaction")

    def __init__(self, engine: InlineEngine, *, transaction: bool) -> None:
        self._engine = engine
        self._transaction = transaction
        self._connection: sa.Connection | None = None

    async def __aenter__(self) -> InlineConnection:
        await self._engine._lock.acquire()
        try:
            connection = self._connection = self._engine._open()
            if self._transaction:
                connection.begin()
        except BaseException:
            self._engine._lock.release()
            raise
        return InlineConnection(connection)

    async def __aexit__(
        self, kind: type[BaseException] | None, error: BaseException | None, _tb: Any
    ) -> None:
        connection = self._connection
        try:
            if connection is not None and connection.in_transaction():
                if self._transaction and kind is None:
                    connection.commit()
                else:
                    connection.rollback()  # a failed block, or the reads of a connect() block
            elif connection is not None:
                driver: Any = connection.connection.driver_connection
                if getattr(driver, "in_transaction", False):
                    driver.rollback()  # a prepared write outside begin() is never kept
        finally:
            self._engine._lock.release()
