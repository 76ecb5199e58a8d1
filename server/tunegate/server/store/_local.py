"""`LocalStore`: the local provider's jobs, events, checkpoints and files in the metadata DB.

Any replica or worker on the same database sees the same state. A job row keeps the OpenAI job
object (`body`, JSON, native ids) exactly as `get_job` answers it, plus what the runner needs:
`control` (`cancel` | `pause` | NULL), `worker` (who trains it) and the blob keys of its result
file and model. Events and checkpoints are numbered per job (`seq` from 1), which gives their
stable ids (`ftevent-<short>-<seq>`, `ftckpt-<short>-<seq>`).

Writes to one job are serialized by locking its row (`SELECT … FOR UPDATE` on PostgreSQL; SQLite
serializes writers itself), so numbering and read-modify-write updates of `body` are safe when
several processes write at once. Every method commits before it returns.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from tunegate.server.store._database import Engine
from tunegate.server.store._schema import local_checkpoints, local_files, local_job_events, local_jobs

__all__ = ["LocalCheckpointRecord", "LocalEventRecord", "LocalFileRecord", "LocalJobRecord", "LocalStore"]

Conn = Any  # AsyncConnection or the inline engine's connection: the same Core API


@dataclass(frozen=True, slots=True)
class LocalJobRecord:
    id: str
    body: dict[str, Any]
    control: str | None
    worker: str | None
    result_blob_key: str | None
    model_blob_key: str | None

    @property
    def status(self) -> str:
        return str(self.body["status"])


@dataclass(frozen=True, slots=True)
class LocalEventRecord:
    seq: int
    created_at: int
    level: str
    message: str
    type: str
    data: Any


@dataclass(frozen=True, slots=True)
class LocalCheckpointRecord:
    seq: int
    step: int
    created_at: int
    metrics: dict[str, Any]
    blob_key: str


@dataclass(frozen=True, slots=True)
class LocalFileRecord:
    id: str
    filename: str
    purpose: str
    bytes: int
    created_at: int
    blob_key: str


_KEEP = object()
"""`update_job`'s "leave this column as it is"."""


def _job(row: Any) -> LocalJobRecord:
    return LocalJobRecord(
        id=row.id,
        body=json.loads(row.body),
        control=row.control,
        worker=row.worker,
        result_blob_key=row.result_blob_key,
        model_blob_key=row.model_blob_key,
    )


def _dump(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), sort_keys=True)


class LocalStore:
    """Repository of the `local_*` tables (see the module docstring)."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine

    # -- jobs -----------------------------------------------------------------------------------

    async def insert_job(self, body: Mapping[str, Any], *, tag: str | None) -> None:
        async with self._engine.begin() as conn:
            await conn.execute(
                sa.insert(local_jobs).values(
                    id=body["id"],
                    created_at=int(body["created_at"]),
                    tag=tag,
                    status=body["status"],
                    body=_dump(body),
                    updated_at=time.time(),
                )
            )

    async def get_job(self, job_id: str) -> LocalJobRecord | None:
        async with self._engine.connect() as conn:
            row = (await conn.execute(sa.select(local_jobs).where(local_jobs.c.id == job_id))).first()
        return None if row is None else _job(row)

    async def find_by_tag(self, tag: str) -> LocalJobRecord | None:
        query = sa.select(local_jobs).where(local_jobs.c.tag == tag).order_by(local_jobs.c.created_at.desc())
        async with self._engine.connect() as conn:
            row = (await conn.execute(query.limit(1))).first()
        return None if row is None else _job(row)

    async def list_jobs(
        self, *, limit: int, after: str | None = None
    ) -> tuple[list[dict[str, Any]], bool] | None:
        """Up to `limit` job bodies newest first (by `(created_at, id)`), after the job `after`;
        and whether more follow. None when `after` names no job."""
        query = sa.select(local_jobs.c.body)
        async with self._engine.connect() as conn:
            if after:
                cursor = (
                    await conn.execute(sa.select(local_jobs.c.created_at).where(local_jobs.c.id == after))
                ).first()
                if cursor is None:
                    return None
                query = query.where(
                    sa.or_(
                        local_jobs.c.created_at < cursor.created_at,
                        sa.and_(local_jobs.c.created_at == cursor.created_at, local_jobs.c.id < after),
                    )
                )
            query = query.order_by(local_jobs.c.created_at.desc(), local_jobs.c.id.desc()).limit(limit + 1)
            rows = (await conn.execute(query)).all()
        bodies = [json.loads(r.body) for r in rows]
        return bodies[:limit], len(bodies) > limit

    async def unfinished(self) -> list[LocalJobRecord]:
        """Jobs `validating_files`, `queued` or `running`, oldest first (recovery at start)."""
        query = (
            sa.select(local_jobs)
            .where(local_jobs.c.status.in_(("validating_files", "queued", "running")))
            .order_by(local_jobs.c.created_at, local_jobs.c.id)
        )
        async with self._engine.connect() as conn:
            rows = (await conn.execute(query)).all()
        return [_job(r) for r in rows]

    async def update_job(
        self,
        job_id: str,
        fields: Mapping[str, Any] | None = None,
        *,
        expect: Iterable[str] | None = None,
        control: Any = _KEEP,
        worker: Any = _KEEP,
        result_blob_key: Any = _KEEP,
        model_blob_key: Any = _KEEP,
        event: Mapping[str, Any] | None = None,
    ) -> LocalJobRecord | None:
        """Set `fields` on the job body (and the named columns), atomically; with `expect`, only
        when the job's status is one of them. Appends `event` (created_at, level, message, type,
        data) in the same transaction when given and the update happens. Returns the new record,
        or None when the job is missing or not in an expected status."""
        async with self._engine.begin() as conn:
            record = await self._lock(conn, job_id)
            if record is None or (expect is not None and record.status not in set(expect)):
                return None
            body = {**record.body, **dict(fields or {})}
            values: dict[str, Any] = {
                "body": _dump(body),
                "status": body["status"],
                "updated_at": time.time(),
            }
            for name, value in (
                ("control", control),
                ("worker", worker),
                ("result_blob_key", result_blob_key),
                ("model_blob_key", model_blob_key),
            ):
                if value is not _KEEP:
                    values[name] = value
            await conn.execute(sa.update(local_jobs).where(local_jobs.c.id == job_id).values(**values))
            if event is not None:
                await self._append_events(conn, job_id, [event])
            row = (await conn.execute(sa.select(local_jobs).where(local_jobs.c.id == job_id))).first()
        return _job(row)

    async def _lock(self, conn: Conn, job_id: str) -> LocalJobRecord | None:
        query = sa.select(local_jobs).where(local_jobs.c.id == job_id)
        if conn.dialect.name == "postgresql":
            query = query.with_for_update()
        row = (await conn.execute(query)).first()
        return None if row is None else _job(row)

    # -- events ---------------------------------------------------------------------------------

    async def add_events(self, job_id: str, events: Iterable[Mapping[str, Any]]) -> None:
        """Append events (dicts with created_at, level, message, type, data) in order."""
        events = list(events)
        if not events:
            return
        async with self._engine.begin() as conn:
            await self._lock(conn, job_id)
            await self._append_events(conn, job_id, events)

    async def _append_events(self, conn: Conn, job_id: str, events: list[Mapping[str, Any]]) -> None:
        c = local_job_events.c
        last = (await conn.execute(sa.select(sa.func.max(c.seq)).where(c.job_id == job_id))).scalar()
        seq = int(last or 0)
        rows = []
        for event in events:
            seq += 1
            data = event.get("data")
            rows.append(
                {
                    "job_id": job_id,
                    "seq": seq,
                    "created_at": int(event.get("created_at") or time.time()),
                    "level": str(event.get("level") or "info"),
                    "message": str(event.get("message") or ""),
                    "type": str(event.get("type") or "message"),
                    "data": None if data is None else _dump(data),
                }
            )
        await conn.execute(sa.insert(local_job_events), rows)

    async def events(self, job_id: str, *, limit: int, before: int | None = None) -> list[LocalEventRecord]:
        """Up to `limit` events newest first, with `seq` below `before` when given."""
        c = local_job_events.c
        query = sa.select(local_job_events).where(c.job_id == job_id)
        if before is not None:
            query = query.where(c.seq < before)
        query = query.order_by(c.seq.desc()).limit(limit)
        async with self._engine.connect() as conn:
            rows = (await conn.execute(query)).all()
        return [
            LocalEventRecord(
                seq=r.seq,
                created_at=r.created_at,
                level=r.level,
                message=r.message,
                type=r.type,
                data=None if r.data is None else json.loads(r.data),
            )
            for r in rows
        ]

    # -- checkpoints ----------------------------------------------------------------------------

    async def add_checkpoint(
        self, job_id: str, *, step: int, created_at: int, metrics: Mapping[str, Any], blob_key: str
    ) -> int:
        """Record a checkpoint whose tar is in blob `blob_key`; returns its `seq`."""
        c = local_checkpoints.c
        async with self._engine.begin() as conn:
            await self._lock(conn, job_id)
            last = (await conn.execute(sa.select(sa.func.max(c.seq)).where(c.job_id == job_id))).scalar()
            seq = int(last or 0) + 1
            await conn.execute(
                sa.insert(local_checkpoints).values(
                    job_id=job_id,
                    seq=seq,
                    step=step,
                    created_at=created_at,
                    metrics=_dump(dict(metrics)),
                    blob_key=blob_key,
                )
            )
        return seq

    async def checkpoints(self, job_id: str) -> list[LocalCheckpointRecord]:
        """The job's checkpoints newest first."""
        c = local_checkpoints.c
        query = sa.select(local_checkpoints).where(c.job_id == job_id).order_by(c.seq.desc())
        async with self._engine.connect() as conn:
            rows = (await conn.execute(query)).all()
        return [
            LocalCheckpointRecord(
                seq=r.seq,
                step=r.step,
                created_at=r.created_at,
                metrics=json.loads(r.metrics),
                blob_key=r.blob_key,
            )
            for r in rows
        ]

    # -- files ----------------------------------------------------------------------------------

    async def insert_file(self, record: LocalFileRecord) -> None:
        async with self._engine.begin() as conn:
            await conn.execute(
                sa.insert(local_files).values(
                    id=record.id,
                    filename=record.filename,
                    purpose=record.purpose,
                    bytes=record.bytes,
                    created_at=record.created_at,
                    blob_key=record.blob_key,
                )
            )

    async def get_file(self, file_id: str) -> LocalFileRecord | None:
        async with self._engine.connect() as conn:
            row = (await conn.execute(sa.select(local_files).where(local_files.c.id == file_id))).first()
        if row is None:
            return None
        return LocalFileRecord(
            id=row.id,
            filename=row.filename,
            purpose=row.purpose,
            bytes=row.bytes,
            created_at=row.created_at,
            blob_key=row.blob_key,
        )

    async def delete_file(self, file_id: str) -> bool:
        async with self._engine.begin() as conn:
            result = await conn.execute(sa.delete(local_files).where(local_files.c.id == file_id))
        return bool(result.rowcount)
