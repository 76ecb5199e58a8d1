"""The `uploads` and `upload_parts` repository."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError
from tunegate.server.store._database import Engine
from tunegate.server.store._files import DuplicateRequestId
from tunegate.server.store._records import UploadPartRecord, UploadRecord, row_values
from tunegate.server.store._schema import upload_parts, uploads

__all__ = ["UploadRepository"]


def _upload(row: sa.Row[Any]) -> UploadRecord:
    return UploadRecord(**row._asdict())


def _part(row: sa.Row[Any]) -> UploadPartRecord:
    return UploadPartRecord(**row._asdict())


class UploadRepository:
    """Reads and writes uploads and their parts. Upload reads are owner-scoped; parts are reached
    only through an upload the caller owns."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine

    async def insert(self, record: UploadRecord) -> UploadRecord:
        """Store a new upload. Raises `DuplicateRequestId`."""
        try:
            async with self._engine.begin() as conn:
                result = await conn.execute(uploads.insert().values(**row_values(record)))
        except IntegrityError as exc:
            if record.request_id is not None:
                raise DuplicateRequestId(record.request_id) from exc
            raise
        (seq,) = result.inserted_primary_key or (None,)
        return UploadRecord(**{**row_values(record), "seq": seq})

    async def get(self, owner: str, upload_id: str) -> UploadRecord | None:
        query = uploads.select().where(uploads.c.owner == owner, uploads.c.id == upload_id)
        async with self._engine.connect() as conn:
            row = (await conn.execute(query)).first()
        return None if row is None else _upload(row)

    async def get_by_request_id(self, owner: str, request_id: str) -> UploadRecord | None:
        query = uploads.select().where(uploads.c.owner == owner, uploads.c.request_id == request_id)
        async with self._engine.connect() as conn:
            row = (await conn.execute(query)).first()
        return None if row is None else _upload(row)

    async def transition(
        self, upload_id: str, *, from_status: str, to_status: str, file_id: str | None = None
    ) -> bool:
        """Compare-and-set the status; False if the upload was no longer in `from_status`.

        This is the only serialisation point between concurrent complete/cancel calls."""
        values: dict[str, Any] = {"status": to_status}
        if file_id is not None:
            values["file_id"] = file_id
        query = (
            uploads.update()
            .where(uploads.c.id == upload_id, uploads.c.status == from_status)
            .values(**values)
        )
        async with self._engine.begin() as conn:
            result = await conn.execute(query)
        return result.rowcount == 1

    async def insert_part(self, record: UploadPartRecord) -> UploadPartRecord:
        async with self._engine.begin() as conn:
            result = await conn.execute(upload_parts.insert().values(**row_values(record)))
        (seq,) = result.inserted_primary_key or (None,)
        return UploadPartRecord(**{**row_values(record), "seq": seq})

    async def parts(self, upload_id: str) -> list[UploadPartRecord]:
        """All parts of an upload, in arrival order."""
        query = (
            upload_parts.select().where(upload_parts.c.upload_id == upload_id).order_by(upload_parts.c.seq)
        )
        async with self._engine.connect() as conn:
            rows = (await conn.execute(query)).all()
        return [_part(row) for row in rows]

    async def delete_parts(self, upload_id: str) -> None:
        async with self._engine.begin() as conn:
            await conn.execute(upload_parts.delete().where(upload_parts.c.upload_id == upload_id))

    async def stale(self, *, now: int, limit: int = 500) -> Sequence[UploadRecord]:
        """Pending uploads (any owner) past their expiry."""
        query = (
            uploads.select()
            .where(uploads.c.status == "pending", uploads.c.expires_at <= now)
            .order_by(uploads.c.expires_at)
            .limit(limit)
        )
        async with self._engine.connect() as conn:
            rows = (await conn.execute(query)).all()
        return [_upload(row) for row in rows]
