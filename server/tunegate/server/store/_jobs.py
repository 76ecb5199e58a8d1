"""The `jobs` repository (with `job_metadata` and `provider_cursors`): queries, no rules.

On a database this process alone serves (SQLite inline), `by_native_ids` remembers which native
ids it found absent, per (owner, account), so listing the same provider jobs again asks the
database only about ids it has not seen (a provider's listing is mostly jobs the gateway did not
create; the probe was a seventh of a `list_jobs` request's CPU). The memory is exact: a native id
enters the table only through `complete()` (or an insert), which forgets it in the same step as
its statement runs, and a probe remembers its answer in the same step as its SELECT ran — the
loop's one connection sees its own writes, so no completion falls between a probe and what it
learnt.

On SQLite with a database file, an intent without an idempotency key is recorded by a line in
the intent journal (`tunegate.server.store._journal`) and kept in `_pending` until a batch stores it:
with its completion (`complete_many`), before any other statement on `jobs` (`_caught_up`, in
`_first`, `_changed`, `page`, `intents_before`, `by_native_ids` and keyed inserts), after
`JOURNAL_BACKSTOP`, and at `aclose`; `recover` replays the journal at start-up. Batches run one
at a time, each in a task of its own so a cancelled caller cannot leave one half-known; their
inserts are `OR IGNORE`, so a row stored twice (a replay) changes nothing.

The creation protocol (`tunegate.server.jobs`) relies on three properties made here:
- `insert_intent` records the intent before it returns (a committed row, or a journal line that
  every later statement on `jobs` sees as the row), and the unique (owner, request_id) index makes
  exactly one concurrent insert per idempotency key win (`DuplicateRequestId` for the others);
- `acquire_lease`, `complete` and `fail` are compare-and-set updates on `state = 'intent'`, so
  two workers can never both finish one intent differently;
- every read a caller can reach is scoped by owner; only the reconciler reads across owners.
"""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import functools
import logging
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, NamedTuple

import orjson
import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError
from tunegate.server.store._database import Engine, write_one
from tunegate.server.store._files import DuplicateRequestId
from tunegate.server.store._inline import InlineEngine, lookup, prepared
from tunegate.server.store._journal import IntentJournal
from tunegate.server.store._records import JobRecord
from tunegate.server.store._schema import job_metadata, jobs, provider_cursors

__all__ = ["ABSENT_MEMORY", "INTENT", "Completion", "JobRepository"]

logger = logging.getLogger(__name__)

INTENT = "intent"
ABSENT_MEMORY = 8192
"""Native ids `by_native_ids` remembers as absent (least recently probed forgotten first)."""
JOURNAL_BACKSTOP = 1.0
"""Seconds after which journaled intents are stored even without their completions."""
JOURNAL_PENDING_LIMIT = 1024
"""Journaled intents past which they are stored at once."""
_BY_ID = lookup(jobs, "owner", "id")
_BY_ANY_ID = lookup(jobs, "id")
_BY_REQUEST_ID = lookup(jobs, "owner", "request_id")
_JOB_ROW = jobs.insert().values({c.name: sa.bindparam(c.name) for c in jobs.columns if c.name != "seq"})
_INSERT = prepared(_JOB_ROW)
# A journaled row, which may be stored already (see `recover`, `_write_pending`).
_REPLAY = prepared(_JOB_ROW.prefix_with("OR IGNORE"))
_REPLAY_METADATA = prepared(
    job_metadata.insert()
    .prefix_with("OR IGNORE")
    .values({name: sa.bindparam(name) for name in ("job_id", "key", "value")})
)
_MARK_ATTEMPTED = prepared(
    jobs.update()
    .where(jobs.c.id == sa.bindparam("job_id"))
    .values(attempted=True, updated_at=sa.bindparam("updated_at"))
)
_COMPLETE = prepared(  # `intent → created`, also `failed → created` (see `complete`)
    jobs.update()
    .where(jobs.c.id == sa.bindparam("job_id"), jobs.c.state.in_([INTENT, "failed"]))
    .values(
        state="created",
        lease_until=None,
        **{name: sa.bindparam(name) for name in ("native_id", "status", "snapshot", "updated_at")},
    )
)
_BY_NATIVE_IDS = prepared(
    jobs.select().where(
        jobs.c.owner == sa.bindparam("owner"),
        jobs.c.account_key == sa.bindparam("account_key"),
        jobs.c.native_id.in_(sa.bindparam("native_ids", expanding=True)),
    )
)
_CURSOR_KEY = (
    provider_cursors.c.owner == sa.bindparam("owner"),
    provider_cursors.c.account_key == sa.bindparam("account_key"),
    provider_cursors.c.after_id == sa.bindparam("after_id"),
)
_EXPIRE_CURSORS = prepared(
    provider_cursors.delete().where(provider_cursors.c.created_at < sa.bindparam("expire_before"))
)
_DROP_CURSOR = prepared(provider_cursors.delete().where(*_CURSOR_KEY))
_PUT_CURSOR = prepared(
    provider_cursors.insert().values(
        {name: sa.bindparam(name) for name in ("owner", "account_key", "after_id", "token", "created_at")}
    )
)
_CURSOR = prepared(
    sa.select(provider_cursors.c.token).where(
        *_CURSOR_KEY, provider_cursors.c.created_at >= sa.bindparam("not_before")
    )
)
_JSON_COLUMNS = ("request", "metadata", "snapshot", "error")


def _dumps(value: Any) -> str | None:
    return None if value is None else orjson.dumps(value, option=orjson.OPT_SORT_KEYS).decode()


def _record(row: sa.Row[Any]) -> JobRecord:
    values = row._asdict()
    for name in _JSON_COLUMNS:
        raw = values[name]
        values[name] = None if raw is None else orjson.loads(raw)
    values["attempted"] = bool(values["attempted"])
    return JobRecord(**values)


def _row_values(record: JobRecord) -> dict[str, Any]:
    values = {name: getattr(record, name) for name in record.__slots__ if name != "seq"}
    for name in _JSON_COLUMNS:
        values[name] = _dumps(values[name])
    return values


def _metadata_pairs(record: JobRecord) -> list[dict[str, Any]]:
    """The record's `job_metadata` rows."""
    return [{"job_id": record.id, "key": k, "value": v} for k, v in (record.metadata or {}).items()]


def _retrieved(task: asyncio.Future[Any]) -> None:
    """A batch's outcome is seen even when every caller waiting for it went away."""
    if not task.cancelled():
        task.exception()


def _completion_values(c: Completion) -> dict[str, Any]:
    return {
        "job_id": c.job_id,
        "native_id": c.native_id,
        "status": c.status,
        "updated_at": c.now,
        "snapshot": _dumps(dict(c.snapshot)),
    }


class Completion(NamedTuple):
    """One `intent → created` write (see `JobRepository.complete`)."""

    job_id: str
    native_id: str
    status: str
    snapshot: Mapping[str, Any]
    now: int


class JobRepository:
    """Reads and writes job rows. Methods taking `owner` are scoped to it."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine
        self.inline = isinstance(engine, InlineEngine)
        """SQLite on this event loop: the database one process serves (see `store._inline`)."""
        self._absent: collections.OrderedDict[str, set[tuple[str, str]]] | None = (
            collections.OrderedDict() if self.inline else None
        )
        """native id → the (owner, account key) scopes known to have no row with it (inline only)."""
        self._journal: IntentJournal | None = None
        """The intent journal (SQLite with a database file; see `tunegate.server.store._journal`)."""
        if isinstance(engine, InlineEngine) and engine.path is not None:
            self._journal = IntentJournal.open(engine.path)
        self._pending: dict[str, tuple[JobRecord, bytes]] = {}
        """Journaled intents not yet in the table, by id, with their journal lines, oldest first."""
        self._flushing: asyncio.Task[int] | None = None  # the batch of pending rows being stored
        self._backstop: asyncio.TimerHandle | None = None
        self._backstop_task: asyncio.Task[None] | None = None

    # -- creation -------------------------------------------------------------------------

    async def insert_intent(self, record: JobRecord) -> JobRecord:
        """Store a new job row (and its metadata pairs) in one committed transaction; returns it
        with its `seq`. Raises `DuplicateRequestId` when the (owner, request_id) pair exists.
        The row may be stored already `attempted` (see `mark_attempted`)."""
        pairs = _metadata_pairs(record)
        if self._journal is not None and record.request_id is None:
            # No key to keep unique: the journal line is the record (see `_journal`).
            line = orjson.dumps({"row": _row_values(record), "metadata": pairs}) + b"\n"
            self._journal.append(line)
            self._pending[record.id] = (record, line)
            self._schedule_backstop()
            return record
        await self._caught_up()  # rows keep the order of their creation (`seq`)
        try:
            if pairs:
                async with self._engine.begin() as conn:
                    result = await conn.execute(_INSERT, _row_values(record))
                    self._forget_absent(record.native_id)
                    await conn.execute(job_metadata.insert(), pairs)
            else:
                forget = functools.partial(self._forget_absent, record.native_id)
                result = await write_one(self._engine, _INSERT, _row_values(record), ran=forget)
        except IntegrityError as exc:
            if record.request_id is not None:
                raise DuplicateRequestId(record.request_id) from exc
            raise
        (seq,) = result.inserted_primary_key or (None,)
        return dataclasses.replace(record, seq=seq)

    async def acquire_lease(self, job_id: str, *, now: int, until: int) -> bool:
        """Take the intent's lease if it is free (never taken, released, or expired)."""
        query = (
            jobs.update()
            .where(
                jobs.c.id == job_id,
                jobs.c.state == INTENT,
                sa.or_(jobs.c.lease_until.is_(None), jobs.c.lease_until <= now),
            )
            .values(lease_until=until, updated_at=now)
        )
        return await self._changed(query)

    async def release_lease(self, job_id: str) -> None:
        await self._changed(jobs.update().where(jobs.c.id == job_id).values(lease_until=None))

    async def mark_attempted(self, job_id: str, *, now: int) -> None:
        """Record, before the provider call, that a job may now exist at the provider."""
        await self._changed(_MARK_ATTEMPTED, {"job_id": job_id, "updated_at": now})

    async def complete(
        self, job_id: str, *, native_id: str, status: str, snapshot: Mapping[str, Any], now: int
    ) -> bool:
        """`intent → created` (also `failed → created`: a job found after it was given up on is
        still the caller's job); False if it was already finished otherwise."""
        return await self.complete_many([Completion(job_id, native_id, status, snapshot, now)]) == 1

    async def complete_many(self, completions: Sequence[Completion]) -> int:
        """`complete` for several jobs in one statement (an `executemany`) and one commit;
        returns how many rows it completed (a row finished otherwise is left as it is; a driver
        that cannot count an `executemany` gives -1). Journaled intents among them are stored
        completed, in the same transaction."""
        pending = self._pending
        if self._journal is not None and (
            self._flushing is not None or any(c.job_id in pending for c in completions)
        ):
            return await self._store_pending(completions)
        values = [_completion_values(c) for c in completions]

        def forget() -> None:  # the step the UPDATE ran in (see the module docstring)
            for c in completions:
                self._forget_absent(c.native_id)

        # One set runs as a plain execute: its rowcount is exact on every driver (`complete`).
        result = await write_one(
            self._engine, _COMPLETE, values if len(values) > 1 else values[0], ran=forget
        )
        return int(result.rowcount)

    async def fail(
        self,
        job_id: str,
        *,
        state: str,
        error: Mapping[str, Any],
        now: int,
        snapshot: Mapping[str, Any] | None = None,
    ) -> bool:
        """`intent → state` (`failed_to_create` or `failed`) with the error kept."""
        query = (
            jobs.update()
            .where(jobs.c.id == job_id, jobs.c.state == INTENT)
            .values(
                state=state,
                status="failed",
                error=_dumps(dict(error)),
                snapshot=None if snapshot is None else _dumps(dict(snapshot)),
                lease_until=None,
                updated_at=now,
            )
        )
        return await self._changed(query)

    async def update_snapshot(
        self, job_id: str, *, status: str, snapshot: Mapping[str, Any], now: int
    ) -> None:
        query = (
            jobs.update()
            .where(jobs.c.id == job_id, jobs.c.state == "created")
            .values(status=status, snapshot=_dumps(dict(snapshot)), updated_at=now)
        )
        await self._changed(query)

    # -- reads ----------------------------------------------------------------------------

    async def get(self, owner: str, job_id: str) -> JobRecord | None:
        return await self._first(_BY_ID, {"owner": owner, "id": job_id})

    async def get_any(self, job_id: str) -> JobRecord | None:
        """A row by id in any owner scope (the creation protocol and the reconciler, which hold
        an id they wrote themselves; never a caller's id)."""
        return await self._first(_BY_ANY_ID, {"id": job_id})

    async def get_by_request_id(self, owner: str, request_id: str) -> JobRecord | None:
        return await self._first(_BY_REQUEST_ID, {"owner": owner, "request_id": request_id})

    async def by_native_ids(
        self, owner: str, account_key: str, native_ids: Iterable[str]
    ) -> dict[str, JobRecord]:
        """This owner's created jobs on `account_key` among `native_ids`, by native id."""
        scope = (owner, account_key)
        absent = self._absent
        wanted = list(native_ids)
        if absent is not None:
            wanted = [native_id for native_id in wanted if scope not in absent.get(native_id, ())]
        if not wanted:
            return {}
        await self._caught_up()
        parameters = {"owner": owner, "account_key": account_key, "native_ids": wanted}
        async with self._engine.connect() as conn:
            rows = (await conn.execute(_BY_NATIVE_IDS, parameters)).all()
            found = {record.native_id: record for record in map(_record, rows) if record.native_id}
            if absent is not None:  # the step the SELECT ran in (see the module docstring)
                self._remember_absent(scope, [native_id for native_id in wanted if native_id not in found])
        return found

    def _forget_absent(self, native_id: str | None) -> None:
        """In the step of a statement that may have stored `native_id` (see the module docstring)."""
        if self._absent is not None and native_id:
            self._absent.pop(native_id, None)

    def _remember_absent(self, scope: tuple[str, str], native_ids: list[str]) -> None:
        absent = self._absent
        assert absent is not None
        for native_id in native_ids:
            scopes = absent.get(native_id)
            if scopes is None:
                absent[native_id] = {scope}
                if len(absent) > ABSENT_MEMORY:
                    absent.popitem(last=False)
            else:
                scopes.add(scope)
                absent.move_to_end(native_id)

    async def by_native_id(self, owner: str, provider: str, native_id: str) -> JobRecord | None:
        """This owner's created job with `native_id` on `provider`, if any."""
        query = jobs.select().where(
            jobs.c.owner == owner, jobs.c.provider == provider, jobs.c.native_id == native_id
        )
        return await self._first(query)

    async def page(
        self,
        owner: str,
        *,
        limit: int,
        after_seq: int | None = None,
        metadata: Mapping[str, str] | None = None,
        hidden_states: Sequence[str] = (),
    ) -> list[JobRecord]:
        """Up to `limit` rows newest first (seq descending), strictly older than `after_seq`.

        `metadata`: None = no filter; empty = jobs without metadata; else jobs holding every
        pair."""
        query = jobs.select().where(jobs.c.owner == owner)
        if hidden_states:
            query = query.where(jobs.c.state.not_in(list(hidden_states)))
        if after_seq is not None:
            query = query.where(jobs.c.seq < after_seq)
        if metadata is not None:
            if not metadata:
                query = query.where(~sa.exists().where(job_metadata.c.job_id == jobs.c.id))
            for key, value in metadata.items():
                query = query.where(
                    sa.exists().where(
                        job_metadata.c.job_id == jobs.c.id,
                        job_metadata.c.key == key,
                        job_metadata.c.value == value,
                    )
                )
        query = query.order_by(jobs.c.seq.desc()).limit(limit)
        await self._caught_up()
        async with self._engine.connect() as conn:
            rows = (await conn.execute(query)).all()
        return [_record(row) for row in rows]

    async def intents_before(self, created_before: int, *, limit: int = 500) -> list[JobRecord]:
        """Intents (any owner) created at or before `created_before`, oldest first."""
        query = (
            jobs.select()
            .where(jobs.c.state == INTENT, jobs.c.created_at <= created_before)
            .order_by(jobs.c.created_at)
            .limit(limit)
        )
        await self._caught_up()
        async with self._engine.connect() as conn:
            rows = (await conn.execute(query)).all()
        return [_record(row) for row in rows]

    # -- provider page cursors --------------------------------------------------------------

    async def put_cursor(
        self, owner: str, account_key: str, after_id: str, token: str, *, now: int, expire_before: int
    ) -> None:
        """Remember the provider's page token for the page after `after_id`; drops expired ones."""
        key = {"owner": owner, "account_key": account_key, "after_id": after_id}
        async with self._engine.begin() as conn:
            await conn.execute(_EXPIRE_CURSORS, {"expire_before": expire_before})
            await conn.execute(_DROP_CURSOR, key)
            await conn.execute(_PUT_CURSOR, {**key, "token": token, "created_at": now})

    async def get_cursor(self, owner: str, account_key: str, after_id: str, *, not_before: int) -> str | None:
        parameters = {
            "owner": owner,
            "account_key": account_key,
            "after_id": after_id,
            "not_before": not_before,
        }
        async with self._engine.connect() as conn:
            token: str | None = (await conn.execute(_CURSOR, parameters)).scalar()
        return token

    # -- plumbing ---------------------------------------------------------------------------

    async def _first(
        self, query: sa.Select[Any], parameters: Mapping[str, Any] | None = None
    ) -> JobRecord | None:
        await self._caught_up()
        async with self._engine.connect() as conn:
            row = (await conn.execute(query, parameters)).first()
        return None if row is None else _record(row)

    async def _changed(self, query: sa.Update, parameters: Mapping[str, Any] | None = None) -> bool:
        await self._caught_up()
        result = await write_one(self._engine, query, parameters)
        return bool(result.rowcount == 1)

    # -- journaled intents (SQLite inline; see `tunegate.server.store._journal`) ----------------------

    async def _caught_up(self) -> None:
        """Every journaled intent in the table: called before any statement on `jobs` (but the
        journal's own), so every read and every update sees every intent."""
        while self._journal is not None and (self._pending or self._flushing is not None):
            await self._store_pending()

    async def _store_pending(self, completions: Sequence[Completion] | None = None) -> int:
        """Store journaled intents, one transaction (after any batch being stored): all of them
        (`completions` None), or those `completions` complete — stored completed, the other
        completions updated in the same transaction. Returns the rows completed."""
        while self._flushing is not None:
            await asyncio.shield(self._flushing)
        journal = self._journal
        if journal is None or (not self._pending and not completions):
            return 0
        # Its own task: a cancelled caller must not leave a batch half-known (committed, yet
        # put back as pending) — the batch runs to its outcome either way.
        task = asyncio.get_running_loop().create_task(self._batch(journal, completions))
        self._flushing = task
        task.add_done_callback(_retrieved)
        return await asyncio.shield(task)

    async def _batch(self, journal: IntentJournal, completions: Sequence[Completion] | None) -> int:
        try:
            return await self._write_pending(journal, completions)
        finally:
            # Cleared before the task counts as done: a caller arriving between the two must
            # not find a finished batch still marked running (and wait on it without yielding).
            self._flushing = None

    async def _write_pending(self, journal: IntentJournal, completions: Sequence[Completion] | None) -> int:
        by_id = {c.job_id: c for c in completions or ()}
        pending = self._pending
        chosen = list(pending) if completions is None else [i for i in pending if i in by_id]
        taken = {job_id: pending.pop(job_id) for job_id in chosen}
        rows: list[dict[str, Any]] = []
        pairs: list[dict[str, Any]] = []
        completed = 0
        for job_id, (record, _line) in taken.items():
            c = by_id.get(job_id)
            if c is not None:
                completed += 1
                record = dataclasses.replace(
                    record,
                    state="created",
                    native_id=c.native_id,
                    status=c.status,
                    snapshot=dict(c.snapshot),
                    lease_until=None,
                    updated_at=c.now,
                )
            rows.append(_row_values(record))
            pairs.extend(_metadata_pairs(record))
        updates = [_completion_values(c) for c in completions or () if c.job_id not in taken]
        try:
            switched_from = journal.switch(b"".join(line for _record, line in pending.values()))
        except BaseException:
            self._pending = {**taken, **pending}
            raise

        def forget() -> None:  # the step the statements ran in (see the module docstring)
            for c in completions or ():
                self._forget_absent(c.native_id)

        try:
            if pairs or (rows and updates):
                async with self._engine.begin() as conn:
                    if rows:
                        await conn.execute(_REPLAY, rows)
                    if pairs:
                        await conn.execute(_REPLAY_METADATA, pairs)
                    if updates:
                        completed += int((await conn.execute(_COMPLETE, updates)).rowcount)
                    forget()
            elif rows:
                await write_one(self._engine, _REPLAY, rows if len(rows) > 1 else rows[0], ran=forget)
            elif updates:
                result = await write_one(
                    self._engine, _COMPLETE, updates if len(updates) > 1 else updates[0], ran=forget
                )
                completed += int(result.rowcount)
        except BaseException:
            # Still pending, their lines in the current file as every pending line is.
            self._pending = {**taken, **self._pending}
            try:
                journal.append(b"".join(line for _record, line in taken.values()))
            except OSError:  # their lines stay in the file switched from, which is kept
                logger.exception("could not carry %d intent line(s) over in the journal", len(taken))
            raise
        journal.clear(switched_from)
        return completed

    def _schedule_backstop(self) -> None:
        """Intents whose provider call is slow reach the table within `JOURNAL_BACKSTOP` s (and
        at once past `JOURNAL_PENDING_LIMIT` of them); completions usually store them first."""
        if len(self._pending) >= JOURNAL_PENDING_LIMIT:
            self._run_backstop()
        elif self._backstop is None:
            self._backstop = asyncio.get_running_loop().call_later(JOURNAL_BACKSTOP, self._run_backstop)

    def _run_backstop(self) -> None:
        if self._backstop is not None:
            self._backstop.cancel()
            self._backstop = None
        if self._backstop_task is None or self._backstop_task.done():
            self._backstop_task = asyncio.get_running_loop().create_task(self._backstop_store())

    async def _backstop_store(self) -> None:
        try:
            await self._caught_up()
        except Exception:  # they stay pending and journaled; the next statement on jobs retries
            logger.exception("storing %d journaled intent(s) failed", len(self._pending))

    async def recover(self) -> int:
        """At start-up, before anything reads a job: the journal's intents the table lacks are
        inserted as recorded; returns how many lines were replayed."""
        journal = self._journal
        if journal is None:
            return 0
        entries = journal.entries()
        if entries:
            rows = [entry["row"] for entry in entries]
            pairs = [pair for entry in entries for pair in entry.get("metadata") or ()]
            async with self._engine.begin() as conn:
                await conn.execute(_REPLAY, rows)
                if pairs:
                    await conn.execute(_REPLAY_METADATA, pairs)
            logger.warning("replayed %d intent(s) from the intent journal", len(entries))
        journal.reset()
        return len(entries)

    async def aclose(self) -> None:
        """Store the journaled intents and let go of the journal (on failure it is kept, for
        `recover` at the next start)."""
        if self._backstop is not None:
            self._backstop.cancel()
            self._backstop = None
        if self._journal is None:
            return
        try:
            await self._caught_up()
        except Exception:
            logger.exception("storing journaled intents at shutdown failed; the journal keeps them")
            self._pending.clear()  # still in the journal's files, for `recover`
        self._journal.close()
        self._journal = None
