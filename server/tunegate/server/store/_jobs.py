"""The `jobs` repository (with `job_metadata` and `provider_cursors`): queries, no rules.

Every method runs its statements in one transaction, committed before it returns. The creation
protocol (`tunegate.server.jobs`) relies on three properties made here:
- `insert_intent` has committed the intent when it returns, and the unique (owner, request_id)
  index makes exactly one concurrent insert per idempotency key win (`DuplicateRequestId` for
  the others);
- `acquire_lease`, `complete` and `fail` are compare-and-set updates on the creation state, so
  two workers can never both finish one intent differently;
- every read a caller can reach is scoped by owner; only the reconciler reads across owners.

Every write of a job's `status` goes through `_write_status`: when it moves a job to a terminal
status (`succeeded`, `failed`, `cancelled`) from another one, the job's webhook deliveries are
enqueued in the same transaction (`tunegate.server.store._webhooks.enqueue_job_event`), and
`after_enqueue` is called once it has committed.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import orjson
import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError
from tunegate.server.store._database import Engine
from tunegate.server.store._files import DuplicateRequestId
from tunegate.server.store._records import JobRecord
from tunegate.server.store._schema import job_metadata, jobs, provider_cursors
from tunegate.server.store._webhooks import enqueue_job_event

__all__ = ["INTENT", "JobRepository"]

INTENT = "intent"
_JSON_COLUMNS = ("request", "metadata", "snapshot", "error")
# A job row's columns in `JobRecord`'s field order, so that a row builds its record by position.
_COLUMNS = tuple(jobs.c[field.name] for field in dataclasses.fields(JobRecord))
_JSON_AT = tuple(i for i, column in enumerate(_COLUMNS) if column.name in _JSON_COLUMNS)
_BOOL_AT = tuple(i for i, column in enumerate(_COLUMNS) if column.name in ("attempted", "cancel_requested"))
_SELECT = sa.select(*_COLUMNS)
_BY_ID = _SELECT.where(jobs.c.owner == sa.bindparam("owner"), jobs.c.id == sa.bindparam("id"))
_BY_ANY_ID = _SELECT.where(jobs.c.id == sa.bindparam("id"))
_BY_REQUEST_ID = _SELECT.where(
    jobs.c.owner == sa.bindparam("owner"), jobs.c.request_id == sa.bindparam("request_id")
)
_BY_NATIVE_IDS = _SELECT.where(
    jobs.c.owner == sa.bindparam("owner"),
    jobs.c.account_key == sa.bindparam("account_key"),
    jobs.c.native_id.in_(sa.bindparam("native_ids", expanding=True)),
)
_COMPLETE = (  # `intent → created`, also `failed → created` (see `complete`)
    jobs.update()
    # Two comparisons rather than `IN (…)`: a literal list is expanded on every execution.
    .where(jobs.c.id == sa.bindparam("job_id"), sa.or_(jobs.c.state == INTENT, jobs.c.state == "failed"))
    .values(
        state="created",
        lease_until=None,
        **{name: sa.bindparam(name) for name in ("native_id", "status", "snapshot", "updated_at")},
    )
)
_CURSOR_KEY = (
    provider_cursors.c.owner == sa.bindparam("owner"),
    provider_cursors.c.account_key == sa.bindparam("account_key"),
    provider_cursors.c.after_id == sa.bindparam("after_id"),
)
_EXPIRE_CURSORS = provider_cursors.delete().where(
    provider_cursors.c.created_at < sa.bindparam("expire_before")
)
_DROP_CURSOR = provider_cursors.delete().where(*_CURSOR_KEY)
_CURSOR = sa.select(provider_cursors.c.token).where(
    *_CURSOR_KEY, provider_cursors.c.created_at >= sa.bindparam("not_before")
)
_STATUS_AND_OWNER = sa.select(jobs.c.status, jobs.c.owner).where(jobs.c.id == sa.bindparam("job_id"))


def _dumps(value: Any) -> str | None:
    return None if value is None else orjson.dumps(value, option=orjson.OPT_SORT_KEYS).decode()


def _record(row: sa.Row[Any]) -> JobRecord:
    """The record of a row selected as `_SELECT` does (`_COLUMNS`, in field order)."""
    values = list(row)
    for i in _JSON_AT:
        raw = values[i]
        if raw is not None:
            values[i] = orjson.loads(raw)
    for i in _BOOL_AT:
        values[i] = bool(values[i])
    return JobRecord(*values)


_LISTED = jobs.alias("listed")
_CURSOR_JOB = jobs.alias("cursor_job")


def _page_query(*, after: bool, metadata: Mapping[str, str] | None) -> sa.Select[Any]:
    """`JobRepository.page`'s statement; parameters `owner`, `hidden_states`, `limit` and, with
    `after`, the cursor job's id `after`.

    The page's `seq`s are found first, in a subquery that needs only `ix_jobs_owner_seq`
    (owner, seq, and `state` as an included column on PostgreSQL): an index-only scan that
    reads exactly the owner's newest entries. The rows are then fetched by primary key. As one
    `SELECT … ORDER BY seq DESC LIMIT n` over the table, PostgreSQL's planner may walk the
    primary key backwards instead, filtering on the owner — it costs that by the owner's share
    of all rows, assumed spread evenly, and an owner holding most of the rows while other owners
    added the newest ones makes that walk read every one of those rows first. The cursor's
    `seq` is read in the same statement (a cursor naming none of the owner's jobs gives no
    rows)."""
    keys = sa.select(_LISTED.c.seq).where(
        _LISTED.c.owner == sa.bindparam("owner"),
        _LISTED.c.state.not_in(sa.bindparam("hidden_states", expanding=True)),
    )
    if after:
        cursor_seq = sa.select(_CURSOR_JOB.c.seq).where(
            _CURSOR_JOB.c.owner == sa.bindparam("owner"), _CURSOR_JOB.c.id == sa.bindparam("after")
        )
        keys = keys.where(_LISTED.c.seq < cursor_seq.scalar_subquery())
    if metadata is not None:
        if not metadata:
            keys = keys.where(~sa.exists().where(job_metadata.c.job_id == _LISTED.c.id))
        for key, value in metadata.items():
            keys = keys.where(
                sa.exists().where(
                    job_metadata.c.job_id == _LISTED.c.id,
                    job_metadata.c.key == key,
                    job_metadata.c.value == value,
                )
            )
    page = keys.order_by(_LISTED.c.seq.desc()).limit(sa.bindparam("limit", type_=sa.Integer)).subquery("page")
    return _SELECT.join_from(jobs, page, jobs.c.seq == page.c.seq).order_by(jobs.c.seq.desc())


_PAGE = _page_query(after=False, metadata=None)
_PAGE_AFTER = _page_query(after=True, metadata=None)


def _row_values(record: JobRecord) -> dict[str, Any]:
    values = {name: getattr(record, name) for name in record.__slots__ if name != "seq"}
    for name in _JSON_COLUMNS:
        values[name] = _dumps(values[name])
    return values


class JobRepository:
    """Reads and writes job rows. Methods taking `owner` are scoped to it."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine
        self.after_enqueue: Callable[[], None] = lambda: None
        """Called after a status write that enqueued webhook deliveries has committed (the
        webhook sender sets it to wake up)."""

    # -- creation -------------------------------------------------------------------------

    async def insert_intent(self, record: JobRecord) -> JobRecord:
        """Store a new job row and its metadata pairs, committed; returns it with its `seq`.
        Raises `DuplicateRequestId` when the (owner, request_id) pair exists. The row may be
        stored `attempted` already (see `mark_attempted`)."""
        pairs = [{"job_id": record.id, "key": k, "value": v} for k, v in (record.metadata or {}).items()]
        try:
            async with self._engine.begin() as conn:
                result = await conn.execute(jobs.insert(), _row_values(record))
                if pairs:
                    await conn.execute(job_metadata.insert(), pairs)
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

    async def discard_intent(self, job_id: str) -> None:
        """Delete an intent (and its metadata pairs) whose create never reached the provider."""
        async with self._engine.begin() as conn:
            intent = sa.select(jobs.c.id).where(jobs.c.id == job_id, jobs.c.state == INTENT)
            await conn.execute(job_metadata.delete().where(job_metadata.c.job_id.in_(intent)))
            await conn.execute(jobs.delete().where(jobs.c.id == job_id, jobs.c.state == INTENT))

    async def request_cancel(self, job_id: str, *, now: int) -> bool:
        """Keep a cancel for an intent (shown as `cancelled`); False if it is no longer one."""
        query = (
            jobs.update()
            .where(jobs.c.id == job_id, jobs.c.state == INTENT)
            .values(cancel_requested=True, status="cancelled", updated_at=now)
        )
        return await self._write_status(query, None, job_id=job_id, status="cancelled", now=now)

    async def release_lease(self, job_id: str) -> None:
        await self._changed(jobs.update().where(jobs.c.id == job_id).values(lease_until=None))

    async def mark_attempted(self, job_id: str, *, now: int) -> None:
        """Record, before the provider call, that a job may now exist at the provider."""
        await self._changed(jobs.update().where(jobs.c.id == job_id).values(attempted=True, updated_at=now))

    async def complete(
        self, job_id: str, *, native_id: str, status: str, snapshot: Mapping[str, Any], now: int
    ) -> bool:
        """`intent → created` (also `failed → created`: a job found after it was given up on is
        still the caller's job); False if it was already finished otherwise."""
        values = {
            "job_id": job_id,
            "native_id": native_id,
            "status": status,
            "updated_at": now,
            "snapshot": _dumps(dict(snapshot)),
        }
        return await self._write_status(_COMPLETE, values, job_id=job_id, status=status, now=now)

    async def fail(
        self,
        job_id: str,
        *,
        state: str,
        error: Mapping[str, Any],
        now: int,
        snapshot: Mapping[str, Any] | None = None,
        status: str = "failed",
    ) -> bool:
        """`intent → state` (`failed_to_create` or `failed`) with the error kept, shown with
        `status` (`cancelled` for an intent cancelled before it was created)."""
        query = (
            jobs.update()
            .where(jobs.c.id == job_id, jobs.c.state == INTENT)
            .values(
                state=state,
                status=status,
                error=_dumps(dict(error)),
                snapshot=None if snapshot is None else _dumps(dict(snapshot)),
                lease_until=None,
                updated_at=now,
            )
        )
        if state == "failed_to_create":  # never a job the caller can see: no event
            return await self._changed(query)
        return await self._write_status(query, None, job_id=job_id, status=status, now=now)

    async def update_snapshot(
        self, job_id: str, *, status: str, snapshot: Mapping[str, Any], now: int
    ) -> None:
        """The provider's latest job (and its status) for a created job — the one place a
        refreshed provider state is written."""
        query = (
            jobs.update()
            .where(jobs.c.id == job_id, jobs.c.state == "created")
            .values(status=status, snapshot=_dumps(dict(snapshot)), updated_at=now)
        )
        await self._write_status(query, None, job_id=job_id, status=status, now=now)

    # -- reads ----------------------------------------------------------------------------

    async def get(self, owner: str, job_id: str) -> JobRecord | None:
        return await self._first(_BY_ID, {"owner": owner, "id": job_id})

    async def get_any(self, job_id: str) -> JobRecord | None:
        """A row by id in any owner scope (the creation protocol and the reconciler, which hold
        an id they wrote themselves; never a caller's id)."""
        return await self._first(_BY_ANY_ID, {"id": job_id})

    async def get_many(self, job_ids: Sequence[str]) -> list[JobRecord]:
        """Rows by id in any owner scope, in one query (the job monitor's claimed jobs)."""
        if not job_ids:
            return []
        async with self._engine.connect() as conn:
            rows = (await conn.execute(_SELECT.where(jobs.c.id.in_(list(job_ids))))).all()
        return [_record(row) for row in rows]

    async def get_by_request_id(self, owner: str, request_id: str) -> JobRecord | None:
        return await self._first(_BY_REQUEST_ID, {"owner": owner, "request_id": request_id})

    async def by_native_ids(
        self, owner: str, account_key: str, native_ids: Iterable[str]
    ) -> dict[str, JobRecord]:
        """This owner's created jobs on `account_key` among `native_ids`, by native id."""
        wanted = list(native_ids)
        if not wanted:
            return {}
        parameters = {"owner": owner, "account_key": account_key, "native_ids": wanted}
        async with self._engine.connect() as conn:
            rows = (await conn.execute(_BY_NATIVE_IDS, parameters)).all()
        return {record.native_id: record for record in map(_record, rows) if record.native_id}

    async def by_native_id(self, owner: str, provider: str, native_id: str) -> JobRecord | None:
        """This owner's created job with `native_id` on `provider`, if any."""
        query = _SELECT.where(
            jobs.c.owner == owner, jobs.c.provider == provider, jobs.c.native_id == native_id
        )
        return await self._first(query)

    async def native_ids(self, owner: str, provider: str) -> list[str]:
        """The native ids of this owner's created jobs on `provider`, newest first."""
        query = (
            sa.select(jobs.c.native_id)
            .where(
                jobs.c.owner == owner,
                jobs.c.provider == provider,
                jobs.c.state == "created",
                jobs.c.native_id.is_not(None),
            )
            .order_by(jobs.c.seq.desc())
        )
        async with self._engine.connect() as conn:
            return [str(native_id) for native_id in (await conn.execute(query)).scalars()]

    async def page(
        self,
        owner: str,
        *,
        limit: int,
        after: str | None = None,
        metadata: Mapping[str, str] | None = None,
        hidden_states: Sequence[str] = (),
    ) -> list[JobRecord]:
        """Up to `limit` rows newest first (seq descending), strictly older than the owner's job
        `after`; none when `after` names none of the owner's jobs.

        `metadata`: None = no filter; empty = jobs without metadata; else jobs holding every
        pair. Jobs in `hidden_states` are left out."""
        if metadata is not None:
            query = _page_query(after=after is not None, metadata=metadata)
        else:
            query = _PAGE if after is None else _PAGE_AFTER
        parameters: dict[str, Any] = {"owner": owner, "limit": limit, "hidden_states": list(hidden_states)}
        if after is not None:
            parameters["after"] = after
        async with self._engine.connect() as conn:
            rows = (await conn.execute(query, parameters)).all()
        return [_record(row) for row in rows]

    async def intents_before(self, created_before: int, *, limit: int = 500) -> list[JobRecord]:
        """Intents (any owner) created at or before `created_before`, oldest first."""
        query = (
            _SELECT.where(jobs.c.state == INTENT, jobs.c.created_at <= created_before)
            .order_by(jobs.c.created_at)
            .limit(limit)
        )
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
            await conn.execute(provider_cursors.insert(), {**key, "token": token, "created_at": now})

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
        async with self._engine.connect() as conn:
            row = (await conn.execute(query, parameters)).first()
        return None if row is None else _record(row)

    async def _write_status(
        self, query: sa.Update, parameters: Mapping[str, Any] | None, *, job_id: str, status: str, now: int
    ) -> bool:
        """Run `query` (an update of one job row that sets `status`); when it changed the row and
        moved the job to a terminal status from another, enqueue the job's webhook event in the
        same transaction. Returns whether the row changed."""
        enqueued = 0
        async with self._engine.begin() as conn:
            before = (await conn.execute(_STATUS_AND_OWNER, {"job_id": job_id})).first()
            result = await conn.execute(query, parameters)
            changed = bool(result.rowcount == 1)
            if changed and before is not None and before.status != status:
                enqueued = await enqueue_job_event(
                    conn, owner=before.owner, job_id=job_id, status=status, now=now
                )
        if enqueued:
            self.after_enqueue()
        return changed

    async def _changed(self, query: sa.Update, parameters: Mapping[str, Any] | None = None) -> bool:
        async with self._engine.begin() as conn:
            result = await conn.execute(query, parameters)
        return bool(result.rowcount == 1)
