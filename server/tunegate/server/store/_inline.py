"""SQLite on the event loop's own thread: the part of `AsyncEngine` the repositories use.

Why: with aiosqlite every statement is handed to a worker thread and its answer handed back —
two thread switches and a loop wake-up per statement, which cost more CPU than the statement.
SQLite in WAL mode with `synchronous=NORMAL` answers a keyed read in microseconds and commits
without an fsync (only checkpoints sync), so running it inline blocks the loop for less time
than the hand-off did. The checkpoints themselves (copying the WAL back into the database and
syncing it: milliseconds) run on a worker thread with a connection of their own, so the loop
never waits for the disk (see `InlineEngine`). PostgreSQL keeps its async driver: its
statements cross a network.

Contract (what `AsyncEngine` gave the repositories, kept):
- `begin()` / `connect()` are async context managers yielding a connection whose `execute`,
  `scalar`, `run_sync`, `commit` and `rollback` are awaitable;
- one connection, one block at a time: an `asyncio.Lock` queues the blocks, as the old pool of
  one connection did, so a block that awaits something else in the middle never interleaves
  with another (and never blocks the thread waiting for SQLite's write lock);
- rows are buffered at `execute` (as aiosqlite did), so a result may be read after its block;
- a `begin()` block's work is committed when its `async with` ends (writers of one loop turn
  share the COMMIT: see `InlineEngine`).

Hot reads are `prepared` statements: built once at import with `bindparam`s, compiled once, then
run straight on the driver's cursor — no statement building, cache-key walk or result-proxy set-up
per call (a keyed lookup drops from ~150 µs to ~15 µs). Their rows are named tuples with
`_asdict()`, read with `first()`, `all()` or `scalar()`; values come back as SQLite stores them
(a Boolean is 0/1). On PostgreSQL a prepared statement is an ordinary statement.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import sqlite3
from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypeVar

import sqlalchemy as sa

__all__ = ["BUSY_TIMEOUT_MS", "InlineConnection", "InlineEngine", "lookup", "prepared"]

_PREPARED = "tunegate_prepared"
S = TypeVar("S", bound=sa.Executable)
logger = logging.getLogger(__name__)

BUSY_TIMEOUT_MS = 5000
"""How long a connection waits for another's lock (every connection to the file: the loop's, set
with its pragmas, and the checkpointer's)."""

CHECKPOINT_EVERY = 64
"""Commits between two background checkpoints (a commit appends a few pages to the WAL; SQLite's
own inline checkpoint comes at 1000 pages by default)."""


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


def run_prepared(
    connection: sa.Connection,
    statement: sa.ClauseElement,
    parameters: Mapping[str, Any] | Sequence[Mapping[str, Any]],
) -> _Rows:
    """Run a prepared statement straight on the driver's cursor. A list of parameter sets runs
    a write once per set (`executemany`: one statement, as SQLAlchemy's list form is), its
    `rowcount` the rows changed in all."""
    plan = _plans.get(statement)
    if plan is None:
        plan = _plans[statement] = _Plan(statement, connection.dialect)
    driver: Any = connection.connection.driver_connection
    error = connection.dialect.loaded_dbapi.Error
    if isinstance(parameters, Mapping):
        sql, arguments = plan.bind(parameters)
        try:
            cursor = driver.execute(sql, arguments)
        except error as exc:  # e.g. a unique index: SQLAlchemy's class
            raise sa.exc.DBAPIError.instance(sql, arguments, exc, error) from exc
    else:
        bound = [plan.bind(one) for one in parameters]
        sql = bound[0][0]
        if any(other != sql for other, _ in bound):  # an `IN` of a different length per set
            raise ValueError("executemany needs the same SQL for every parameter set")
        many = [values for _, values in bound]
        try:
            cursor = driver.executemany(sql, many)
        except error as exc:
            raise sa.exc.DBAPIError.instance(sql, many, exc, error) from exc
    try:
        if cursor.description is None:  # a write: a count, and the new row's key
            return _Rows((), cursor.rowcount, cursor.lastrowid)
        if plan.row is None:
            plan.row = collections.namedtuple("Row", [d[0] for d in cursor.description])  # type: ignore[misc]
        return _Rows([plan.row._make(values) for values in cursor.fetchall()])
    finally:
        cursor.close()


def _fresh_driver(connection: sa.Connection) -> Any:
    """The connection's driver, with no transaction open: nothing of a finished block is ever
    left open when a new transaction starts."""
    driver: Any = connection.connection.driver_connection
    if connection.in_transaction():
        connection.rollback()
    if driver.in_transaction:
        driver.rollback()
    return driver


class InlineConnection:
    """A synchronous `sqlalchemy.Connection` behind `AsyncConnection`'s awaitable methods."""

    def __init__(self, connection: sa.Connection, *, single_statement: bool = False) -> None:
        self.sync_connection = connection
        self.dialect = connection.dialect
        self._single = single_statement
        self._used = False

    def _one_statement(self) -> None:
        if self._used:
            raise RuntimeError("a single-statement block ran a second statement")
        self._used = True

    async def execute(self, statement: Any, parameters: Any = None, **kwargs: Any) -> Any:
        if self._single:
            self._one_statement()
        if parameters is not None and statement.get_execution_options().get(_PREPARED):
            return self._run_prepared(statement, parameters)
        result = self.sync_connection.execute(statement, parameters, **kwargs)
        if result.returns_rows:
            return result.freeze()()  # buffered: readable after the block, like aiosqlite's rows
        return result

    def _run_prepared(
        self, statement: sa.ClauseElement, parameters: Mapping[str, Any] | Sequence[Mapping[str, Any]]
    ) -> _Rows:
        return run_prepared(self.sync_connection, statement, parameters)

    async def scalar(self, statement: Any, parameters: Any = None, **kwargs: Any) -> Any:
        if self._single:
            self._one_statement()
        return self.sync_connection.scalar(statement, parameters, **kwargs)

    async def run_sync(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        if self._single:
            raise RuntimeError("a single-statement block cannot run arbitrary code")
        return fn(self.sync_connection, *args, **kwargs)

    async def commit(self) -> None:
        self.sync_connection.commit()

    async def rollback(self) -> None:
        self.sync_connection.rollback()


class InlineEngine:
    """`begin()`, `connect()`, `dispose()` and `sync_engine` of `AsyncEngine`, inline.

    One connection is opened on first use and kept: checking a connection out of a pool and
    resetting it per block cost more than a keyed read. A `connect()` block ends whatever
    transaction its reads began; a `begin()` block is kept, or rolled back on an exception.

    Group commit: `begin()` blocks that end in the same turn of the event loop share one COMMIT
    (each SQLite commit writes every page it touched to the WAL — the row and each index — so
    sixteen concurrent creates committing one by one wrote the same few pages sixteen times).
    Each block runs inside its own SAVEPOINT of the group's transaction, so a block that fails
    undoes only itself — except a block opened with `single_statement=True`, which needs none:
    SQLite undoes a failing statement by itself (a savepoint journals every page the block
    touches, which cost as much as the commit it shares). Writes that come one at a time gain
    nothing by waiting for the end of the turn (two more loop turns before the writer goes on):
    a block alone in its group, when the group before it also held one block and no block has
    committed at once in this turn, commits at once. Others wait for the turn's end, so writers
    that arrive together after a quiet spell cost one unshared COMMIT, then group again. A
    block's `async with` does not return until its group is committed: a writer never answers,
    nor calls a provider, on work that is not stored; if the COMMIT fails, every block of the
    group raises that error. A `connect()` block commits an open group before it reads, so no
    read ever sees work that is not committed.

    Background checkpoints (`checkpoint_path`, the database file): every `checkpoint_every`
    commits a PASSIVE checkpoint runs on a worker thread, on a connection of its own, while the
    loop goes on (SQLite lets a writer append to the WAL during a checkpoint). Inline, SQLite
    checkpoints inside the COMMIT that crosses its threshold and the loop waits for the copy
    and its fsync: ~70 µs of waiting per job creation, amortised, and the p99. The connection's
    own threshold (`wal_autocheckpoint`, set with the pragmas) stays as a backstop should the
    worker fall behind or fail. One checkpoint runs at a time."""

    def __init__(
        self,
        engine: sa.Engine,
        *,
        checkpoint_path: str | None = None,
        checkpoint_every: int = CHECKPOINT_EVERY,
    ) -> None:
        self.sync_engine = engine
        self.dialect = engine.dialect
        self.url = engine.url
        self._lock = asyncio.Lock()
        self._connection: sa.Connection | None = None
        self._group: list[asyncio.Future[None]] | None = None  # the open group's kept blocks
        self._flush: asyncio.Handle | asyncio.Task[None] | None = None
        self.path = checkpoint_path
        """The database file, when it is a plain path (checkpointed in the background; the
        intent journal lives beside it)."""
        self._checkpoint_every = checkpoint_every
        self._commits = 0
        self._last_group = 0  # blocks in the last group committed (0: none yet)
        self._alone_this_turn = False  # a block committed at once in this loop turn
        self._checkpoint: asyncio.Future[Any] | None = None  # the one running
        self._checkpointer: sqlite3.Connection | None = None  # only ever used by that one

    def _open(self) -> sa.Connection:
        connection = self._connection
        if connection is None or connection.closed or connection.invalidated:
            if connection is not None:
                connection.close()
            connection = self._connection = self.sync_engine.connect()
        return connection

    def connect(self) -> _Block:
        return _Block(self, transaction=False)

    def write_now(
        self, statement: sa.ClauseElement, parameters: Mapping[str, Any] | Sequence[Mapping[str, Any]]
    ) -> _Rows | None:
        """Run one prepared write and commit it, now, when a `begin(single_statement=True)`
        block would commit it at once anyway — no block is running or waiting, no group is
        open, the last group held one block, and no block has committed at once in this loop
        turn (see the class docstring) — without the block's machinery: the lock, the group's
        futures, an explicit BEGIN. Only `prepared` statements. None: it was not run; take the
        block. A failing statement is undone (the rollback of the transaction it opened) and
        raised."""
        if self._group is not None or self._lock.locked() or self._last_group != 1 or self._alone_this_turn:
            return None
        if not statement.get_execution_options().get(_PREPARED):  # type: ignore[attr-defined]
            return None  # plans are kept per statement object: only module-level ones
        connection = self._open()
        driver = _fresh_driver(connection)
        try:
            rows = run_prepared(connection, statement, parameters)
            driver.commit()
        except BaseException as exc:
            if driver.in_transaction:
                driver.rollback()
            if isinstance(exc, self.dialect.loaded_dbapi.Error):  # as SQLAlchemy's commit raises it
                raise sa.exc.DBAPIError.instance(
                    "COMMIT", None, exc, self.dialect.loaded_dbapi.Error
                ) from exc
            raise
        self._alone_this_turn = True  # a second write in this turn joins the turn's group
        asyncio.get_running_loop().call_soon(self._next_turn)
        self._committed()
        return rows

    def begin(self, *, grouped: bool = True, single_statement: bool = False) -> _Block:
        """A write block, kept in the group commit; `grouped=False` runs it as a transaction
        of its own, which a block that manages transactions itself needs (migrations: Alembic
        commits as it goes). `single_statement=True`: the block runs one statement (a second
        raises `RuntimeError`), so it needs no savepoint."""
        return _Block(self, transaction=True, grouped=grouped, single=grouped and single_statement)

    async def dispose(self) -> None:
        if self._group is not None:
            if self._lock.locked():
                self._end_group(RuntimeError("the database was closed before this write was committed"))
            else:
                self._end_group()
        if self._checkpoint is not None:
            await asyncio.wait([self._checkpoint])
        if self._checkpointer is not None:
            self._checkpointer.close()
            self._checkpointer = None
        if self._connection is not None:
            self._connection.close()
            self._connection = None
        self.sync_engine.dispose()

    # -- background checkpoints ---------------------------------------------------------------

    def _committed(self) -> None:
        """Count a commit; start a background checkpoint every `checkpoint_every` of them."""
        if self.path is None:
            return
        self._commits += 1
        if self._commits < self._checkpoint_every or self._checkpoint is not None:
            return
        self._commits = 0
        self._checkpoint = asyncio.get_running_loop().run_in_executor(None, self._run_checkpoint)
        self._checkpoint.add_done_callback(self._checkpoint_done)

    def _run_checkpoint(self) -> tuple[int, int, int]:
        """On the worker thread: (busy, WAL frames, frames checkpointed), as SQLite reports them."""
        connection = self._checkpointer
        if connection is None:
            assert self.path is not None
            connection = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
            connection.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
            self._checkpointer = connection
        busy, frames, copied = connection.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
        return int(busy), int(frames), int(copied)

    def _checkpoint_done(self, done: asyncio.Future[Any]) -> None:
        self._checkpoint = None
        if not done.cancelled() and done.exception() is not None:
            # SQLite's own threshold still checkpoints inline; try again after the next commits.
            logger.warning("background checkpoint failed: %s", done.exception())

    # -- the group ----------------------------------------------------------------------------

    def _join_group(self, connection: sa.Connection, *, savepoint: bool) -> Any:
        """Open the group's transaction if none is open; start this block's savepoint if it
        needs one. Returns the driver connection."""
        driver: Any = connection.connection.driver_connection
        if self._group is None:
            _fresh_driver(connection)
            driver.execute("BEGIN")
            self._group = []
        if savepoint:
            driver.execute("SAVEPOINT tunegate_block")
        return driver

    def _keep(self, driver: Any, *, savepoint: bool) -> asyncio.Future[None]:
        """Keep the block's work in the group; the future resolves when the group is committed
        (at once for a block alone in its group after a group of one: see the class docstring)."""
        if savepoint:
            try:
                driver.execute("RELEASE tunegate_block")
            except self.dialect.loaded_dbapi.Error as exc:  # never commit work its writer saw fail
                self._end_group(exc)
                raise
        loop = asyncio.get_running_loop()
        done: asyncio.Future[None] = loop.create_future()
        group = self._group
        assert group is not None
        group.append(done)
        if len(group) == 1 and self._last_group == 1 and not self._alone_this_turn:
            self._alone_this_turn = True  # a second block in this turn joins the turn's group
            loop.call_soon(self._next_turn)
            self._end_group()  # resolves `done`
        elif self._flush is None:
            self._flush = loop.call_soon(self._flush_group)
        return done

    def _next_turn(self) -> None:
        self._alone_this_turn = False

    def _undo(self, driver: Any, *, savepoint: bool, changed: bool, error: BaseException | None) -> None:
        """Undo the failed block's work, keep the rest of the group. `changed`: whether a
        single-statement block's statement succeeded before the block failed (its change cannot
        be undone alone, so the whole group is rolled back and fails with the block's error)."""
        if savepoint:
            try:
                driver.execute("ROLLBACK TO tunegate_block")
                driver.execute("RELEASE tunegate_block")
            except self.dialect.loaded_dbapi.Error as exc:
                self._end_group(exc)
                return
        elif changed:
            self._end_group(error or RuntimeError("a write block failed"))
            return
        if not self._group:  # nothing kept: no transaction needs to stay open
            self._end_group()

    def _flush_group(self) -> None:
        """Commit the open group at the end of the loop turn (after the one block that may be
        inside it, if it awaits something else)."""
        self._flush = None
        if self._group is None:
            return
        if self._lock.locked():
            self._flush = asyncio.get_running_loop().create_task(self._flush_after_block())
        else:
            self._end_group()

    async def _flush_after_block(self) -> None:
        async with self._lock:
            self._flush = None
            self._end_group()

    def _end_group(self, failure: BaseException | None = None) -> None:
        """Commit the group (roll it back if `failure` is given or the COMMIT fails) and tell
        its blocks."""
        waiters, self._group = self._group or [], None
        if waiters:
            self._last_group = len(waiters)
        if isinstance(self._flush, asyncio.Handle):
            self._flush.cancel()
            self._flush = None
        connection = self._connection
        if connection is not None and failure is None:
            try:
                if connection.in_transaction():
                    connection.commit()
                driver: Any = connection.connection.driver_connection
                if driver.in_transaction:
                    driver.commit()
            except self.dialect.loaded_dbapi.Error as exc:  # as SQLAlchemy's own commit raises it
                failure = sa.exc.DBAPIError.instance("COMMIT", None, exc, self.dialect.loaded_dbapi.Error)
            except Exception as exc:
                failure = exc
            if failure is None and waiters:
                self._committed()
        if failure is not None and connection is not None and not connection.closed:
            try:
                connection.rollback()
                driver = connection.connection.driver_connection
                if driver is not None and driver.in_transaction:
                    driver.rollback()
            except Exception:
                connection.invalidate()  # `_open` replaces it
        for done in waiters:
            if done.done():  # its writer was cancelled while waiting
                continue
            if failure is None:
                done.set_result(None)
            else:
                done.set_exception(failure)


class _Block:
    """One `async with engine.connect()` / `engine.begin()` block (a plain class: cheaper than
    an async generator context manager on every query)."""

    __slots__ = ("_changes", "_connection", "_driver", "_engine", "_grouped", "_single", "_transaction")

    def __init__(
        self, engine: InlineEngine, *, transaction: bool, grouped: bool = False, single: bool = False
    ) -> None:
        self._engine = engine
        self._transaction = transaction
        self._grouped = grouped
        self._single = single
        self._connection: sa.Connection | None = None
        self._driver: Any = None
        self._changes = 0

    async def __aenter__(self) -> InlineConnection:
        engine = self._engine
        await engine._lock.acquire()
        try:
            connection = self._connection = engine._open()
            if self._grouped:
                driver = self._driver = engine._join_group(connection, savepoint=not self._single)
                self._changes = driver.total_changes
            else:
                if engine._group is not None:
                    engine._end_group()  # reads see committed work only
                if self._transaction:
                    connection.begin()
        except BaseException:
            engine._lock.release()
            raise
        return InlineConnection(connection, single_statement=self._single)

    async def __aexit__(
        self, kind: type[BaseException] | None, error: BaseException | None, _tb: Any
    ) -> None:
        engine, connection = self._engine, self._connection
        committed: asyncio.Future[None] | None = None
        try:
            if self._driver is not None:
                savepoint = not self._single
                if kind is None:
                    committed = engine._keep(self._driver, savepoint=savepoint)
                else:
                    changed = self._driver.total_changes != self._changes
                    engine._undo(self._driver, savepoint=savepoint, changed=changed, error=error)
            elif connection is not None and connection.in_transaction():
                if self._transaction and kind is None:
                    connection.commit()
                else:
                    connection.rollback()  # a failed block, or the reads of a connect() block
            elif connection is not None:
                driver: Any = connection.connection.driver_connection
                if getattr(driver, "in_transaction", False):
                    driver.rollback()  # a prepared write outside begin() is never kept
        finally:
            engine._lock.release()
        if committed is not None:
            await committed
