"""`job_events`, `job_checkpoints` and `provider_files`: the registry's mirrors of provider data."""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from tunegate.server.store._database import Engine
from tunegate.server.store._records import MirroredRecord, ProviderFileRecord
from tunegate.server.store._schema import job_checkpoints, job_events, provider_files

__all__ = ["MirrorRepository", "ProviderFileRepository"]


def _mirrored(row: sa.Row[Any]) -> MirroredRecord:
    values = row._asdict()
    values["body"] = json.loads(values["body"])
    return MirroredRecord(**values)


class MirrorRepository:
    """One mirror table (events or checkpoints). Rows are reached through a job id the caller
    has already resolved within its owner scope."""

    def __init__(self, engine: Engine, table: sa.Table) -> None:
        self._engine = engine
        self._table = table

    @classmethod
    def events(cls, engine: Engine) -> MirrorRepository:
        return cls(engine, job_events)

    @classmethod
    def checkpoints(cls, engine: Engine) -> MirrorRepository:
        return cls(engine, job_checkpoints)

    async def known(self, job_id: str, native_ids: Iterable[str]) -> set[str]:
        """Which of `native_ids` are already mirrored for `job_id`."""
        wanted = list(native_ids)
        if not wanted:
            return set()
        t = self._table
        query = sa.select(t.c.native_id).where(t.c.job_id == job_id, t.c.native_id.in_(wanted))
        async with self._engine.connect() as conn:
            return set((await conn.execute(query)).scalars())

    async def insert(self, records: Sequence[MirroredRecord]) -> None:
        """Append rows in the given order (their `seq` follows it); rows whose (job_id,
        native_id) already exists — a concurrent mirror got there first — are skipped."""
        if not records:
            return
        async with self._engine.begin() as conn:
            dialect = sqlite if conn.dialect.name == "sqlite" else postgresql
            for record in records:  # one statement each, so seq order is the list order
                statement = dialect.insert(self._table).values(
                    id=record.id,
                    job_id=record.job_id,
                    native_id=record.native_id,
                    created_at=record.created_at,
                    body=json.dumps(record.body, separators=(",", ":"), sort_keys=True),
                )
                await conn.execute(statement.on_conflict_do_nothing(index_elements=["job_id", "native_id"]))

    async def get(self, job_id: str, item_id: str) -> MirroredRecord | None:
        t = self._table
        query = t.select().where(t.c.job_id == job_id, t.c.id == item_id)
        async with self._engine.connect() as conn:
            row = (await conn.execute(query)).first()
        return None if row is None else _mirrored(row)

    async def page(self, job_id: str, *, limit: int, after_seq: int | None = None) -> list[MirroredRecord]:
        """Up to `limit` rows newest first, strictly older than `after_seq`."""
        t = self._table
        query = t.select().where(t.c.job_id == job_id)
        if after_seq is not None:
            query = query.where(t.c.seq < after_seq)
        query = query.order_by(t.c.seq.desc()).limit(limit)
        async with self._engine.connect() as conn:
            rows = (await conn.execute(query)).all()
        return [_mirrored(row) for row in rows]

    async def since(self, job_id: str, *, limit: int, after_seq: int | None = None) -> list[MirroredRecord]:
        """Up to `limit` rows oldest first, strictly newer than `after_seq` (all when None)."""
        t = self._table
        query = t.select().where(t.c.job_id == job_id)
        if after_seq is not None:
            query = query.where(t.c.seq > after_seq)
        query = query.order_by(t.c.seq.asc()).limit(limit)
        async with self._engine.connect() as conn:
            rows = (await conn.execute(query)).all()
        return [_mirrored(row) for row in rows]


class ProviderFileRepository:
    """Where gateway files were copied, per provider account."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine

    async def get(self, file_id: str, account_key: str) -> ProviderFileRecord | None:
        t = provider_files
        query = t.select().where(t.c.file_id == file_id, t.c.account_key == account_key)
        async with self._engine.connect() as conn:
            row = (await conn.execute(query)).first()
        return None if row is None else ProviderFileRecord(**row._asdict())

    async def by_native_id(self, account_key: str, native_id: str) -> ProviderFileRecord | None:
        """The gateway file recorded for a provider's file (e.g. an imported result file)."""
        t = provider_files
        query = t.select().where(t.c.account_key == account_key, t.c.native_id == native_id).limit(1)
        async with self._engine.connect() as conn:
            row = (await conn.execute(query)).first()
        return None if row is None else ProviderFileRecord(**row._asdict())

    async def put(self, record: ProviderFileRecord) -> ProviderFileRecord:
        """Store a copy unless one is already recorded; returns the stored one (the first wins)."""
        async with self._engine.begin() as conn:
            dialect = sqlite if conn.dialect.name == "sqlite" else postgresql
            values = {name: getattr(record, name) for name in record.__slots__}
            statement = dialect.insert(provider_files).values(**values)
            await conn.execute(statement.on_conflict_do_nothing(index_elements=["file_id", "account_key"]))
        stored = await self.get(record.file_id, record.account_key)
        assert stored is not None
        return stored

    async def set_status(self, file_id: str, account_key: str, status: str, details: str | None) -> None:
        t = provider_files
        query = (
            t.update()
            .where(t.c.file_id == file_id, t.c.account_key == account_key)
            .values(status=status, status_details=details)
        )
        async with self._engine.begin() as conn:
            await conn.execute(query)

    async def delete(self, file_id: str, account_key: str) -> None:
        t = provider_files
        async with self._engine.begin() as conn:
            await conn.execute(t.delete().where(t.c.file_id == file_id, t.c.account_key == account_key))
