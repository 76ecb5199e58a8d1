"""The `files` repository: owner-scoped queries, nothing else (rules live in `tunegate.server.files`)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError
from tunegate.server.store._database import Engine
from tunegate.server.store._records import FileRecord, row_values
from tunegate.server.store._schema import files

__all__ = ["DuplicateRequestId", "FileRepository"]

_BY_ID = files.select().where(files.c.owner == sa.bindparam("owner"), files.c.id == sa.bindparam("id"))
_BY_REQUEST_ID = files.select().where(
    files.c.owner == sa.bindparam("owner"), files.c.request_id == sa.bindparam("request_id")
)


class DuplicateRequestId(Exception):
    """An insert lost the race for an (owner, request_id) pair."""


def _record(row: sa.Row[Any]) -> FileRecord:
    return FileRecord(**row._asdict())


class FileRepository:
    """Reads and writes `files` rows. Every method is scoped to one owner, except the sweep."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine

    async def insert(self, record: FileRecord) -> FileRecord:
        """Store a new row; returns it with its `seq`. Raises `DuplicateRequestId`."""
        try:
            async with self._engine.begin() as conn:
                result = await conn.execute(files.insert().values(**row_values(record)))
        except IntegrityError as exc:
            if record.request_id is not None:
                raise DuplicateRequestId(record.request_id) from exc
            raise
        (seq,) = result.inserted_primary_key or (None,)
        return FileRecord(**{**row_values(record), "seq": seq})

    async def get(self, owner: str, file_id: str) -> FileRecord | None:
        """The row, tombstones included (callers decide what is visible)."""
        async with self._engine.connect() as conn:
            row = (await conn.execute(_BY_ID, {"owner": owner, "id": file_id})).first()
        return None if row is None else _record(row)

    async def exists_anywhere(self, file_id: str) -> bool:
        """Whether any owner has (or had) a file with this id. Only for telling gateway ids
        from provider-native ids that happen to look alike; never reveals the row."""
        query = sa.select(files.c.seq).where(files.c.id == file_id).limit(1)
        async with self._engine.connect() as conn:
            return (await conn.execute(query)).first() is not None

    async def get_by_request_id(self, owner: str, request_id: str) -> FileRecord | None:
        async with self._engine.connect() as conn:
            row = (await conn.execute(_BY_REQUEST_ID, {"owner": owner, "request_id": request_id})).first()
        return None if row is None else _record(row)

    async def list_visible(
        self,
        owner: str,
        *,
        now: int,
        order: Literal["asc", "desc"],
        limit: int,
        after_seq: int | None = None,
        purpose: str | None = None,
    ) -> list[FileRecord]:
        """Up to `limit` live rows in `seq` order, strictly after `after_seq` in that order."""
        query = files.select().where(
            files.c.owner == owner,
            files.c.deleted_at.is_(None),
            sa.or_(files.c.expires_at.is_(None), files.c.expires_at > now),
        )
        if purpose is not None:
            query = query.where(files.c.purpose == purpose)
        if order == "asc":
            if after_seq is not None:
                query = query.where(files.c.seq > after_seq)
            query = query.order_by(files.c.seq.asc())
        else:
            if after_seq is not None:
                query = query.where(files.c.seq < after_seq)
            query = query.order_by(files.c.seq.desc())
        async with self._engine.connect() as conn:
            rows = (await conn.execute(query.limit(limit))).all()
        return [_record(row) for row in rows]

    async def tombstone(self, owner: str, file_id: str, *, now: int) -> bool:
        """Mark a live row deleted; False if it was already deleted or is absent."""
        query = (
            files.update()
            .where(files.c.owner == owner, files.c.id == file_id, files.c.deleted_at.is_(None))
            .values(deleted_at=now)
        )
        async with self._engine.begin() as conn:
            result = await conn.execute(query)
        return result.rowcount == 1

    async def expired(self, *, now: int, limit: int = 500) -> Sequence[FileRecord]:
        """Live rows (any owner) whose expiry has passed, oldest expiry first."""
        query = (
            files.select()
            .where(files.c.deleted_at.is_(None), files.c.expires_at.is_not(None), files.c.expires_at <= now)
            .order_by(files.c.expires_at)
            .limit(limit)
        )
        async with self._engine.connect() as conn:
            rows = (await conn.execute(query)).all()
        return [_record(row) for row in rows]
