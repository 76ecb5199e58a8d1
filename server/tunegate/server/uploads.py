"""Uploads: OpenAI's `/v1/uploads` flow, for files larger than one request allows.

Theory of operation. An upload is created `pending` with its final size, purpose, filename and
MIME type; it expires an hour later. Parts (each ≤ `max_part_bytes`) arrive in any order, possibly
in parallel, each streamed into its own blob and recorded as a row. `complete` names parts in
order; their sizes must sum to the declared size; their blobs are streamed, in that order, into
one new blob (bounded memory, MD5 checked on the way), which becomes a gateway file. Then the
upload moves `pending → completed` by compare-and-set; the loser of a race (another complete or
a cancel) deletes what it built. Leaving `pending` (completed, cancelled, expired) deletes the
parts' blobs and rows. States::

    pending ──complete──▶ completed
       │ ├────cancel────▶ cancelled
       │ └─expires_at───▶ expired   (shown at once; made durable by the sweep)
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import re
import time
from collections.abc import AsyncIterable, Sequence
from dataclasses import dataclass

from tunegate.server.blobs import BlobStore, new_blob_key
from tunegate.server.errors import Conflict, FailedPrecondition, InvalidArgument, NotFound
from tunegate.server.files import (
    CREATE_PURPOSES,
    Clock,
    ExpiresAfter,
    FileService,
    check_content_type,
    check_declared_size,
    check_expires_after,
    check_filename,
)
from tunegate.server.ids import PART_PREFIX, UPLOAD_PREFIX, is_well_formed, new_id
from tunegate.server.store import (
    DuplicateRequestId,
    FileRecord,
    UploadPartRecord,
    UploadRecord,
    UploadRepository,
)

__all__ = ["UPLOAD_TTL_SECONDS", "PartMetadata", "UploadService", "UploadView"]

logger = logging.getLogger("tunegate.server")

UPLOAD_TTL_SECONDS = 3600
PENDING, COMPLETED, CANCELLED, EXPIRED = "pending", "completed", "cancelled", "expired"
_MD5 = re.compile(r"[0-9a-fA-F]{32}")


@dataclass(frozen=True, slots=True)
class PartMetadata:
    """The metadata event of an add-part stream: which upload the bytes belong to."""

    upload_id: str | None = None
    """Which upload; None when this event does not say (proto3's empty string)."""
    bytes: int | None = None
    """The part's declared total size, when this event carries it."""


PartEvent = PartMetadata | bytes


@dataclass(frozen=True, slots=True)
class UploadView:
    """An upload as the caller sees it: its effective status and, once completed, its file."""

    record: UploadRecord
    status: str
    file: FileRecord | None = None


def _not_found(upload_id: str) -> NotFound:
    return NotFound(f"No such Upload object: {upload_id}", code="upload_not_found", param="upload_id")


def _wrong_state(upload_id: str, status: str) -> FailedPrecondition:
    return FailedPrecondition(
        f"Upload {upload_id} is {status}; only a pending upload accepts this operation.",
        code="invalid_upload_state",
        param="upload_id",
    )


class UploadService:
    """Owner-scoped upload operations."""

    def __init__(
        self,
        repository: UploadRepository,
        files: FileService,
        blobs: BlobStore,
        *,
        max_part_bytes: int,
        max_upload_bytes: int,
        clock: Clock = time.time,
    ) -> None:
        self._repo = repository
        self._files = files
        self._blobs = blobs
        self.max_part_bytes = max_part_bytes
        self.max_upload_bytes = max_upload_bytes
        self._clock = clock

    def now(self) -> int:
        return int(self._clock())

    def _status(self, record: UploadRecord) -> str:
        if record.status == PENDING and record.expires_at <= self.now():
            return EXPIRED
        return record.status

    async def _view(self, record: UploadRecord) -> UploadView:
        file = None
        if record.file_id is not None:
            try:
                file = await self._files.get(record.owner, record.file_id)
            except NotFound:
                file = None  # deleted or expired since; the upload still says completed
        return UploadView(record=record, status=self._status(record), file=file)

    async def _pending(self, owner: str, upload_id: str) -> UploadRecord:
        if not upload_id:
            raise InvalidArgument(
                "Missing required parameter: 'upload_id'.",
                code="missing_required_parameter",
                param="upload_id",
            )
        record = await self._repo.get(owner, upload_id) if is_well_formed(upload_id, UPLOAD_PREFIX) else None
        if record is None:
            raise _not_found(upload_id)
        status = self._status(record)
        if status != PENDING:
            raise _wrong_state(upload_id, status)
        return record

    async def get(self, owner: str, upload_id: str) -> UploadView:
        record = await self._repo.get(owner, upload_id) if is_well_formed(upload_id, UPLOAD_PREFIX) else None
        if record is None:
            raise _not_found(upload_id)
        return await self._view(record)

    async def create(
        self,
        owner: str,
        *,
        filename: str,
        purpose: str | None,
        bytes: int,
        mime_type: str,
        expires_after: ExpiresAfter | None = None,
        request_id: str | None = None,
    ) -> UploadView:
        """Open a pending upload of `bytes` bytes (1..max_upload_bytes), expiring in an hour."""
        check_filename(filename, param="filename")
        if not purpose:
            raise InvalidArgument(
                "Missing required parameter: 'purpose'.", code="missing_required_parameter", param="purpose"
            )
        if purpose not in CREATE_PURPOSES:
            raise InvalidArgument(f"Invalid purpose {purpose!r}.", code="invalid_purpose", param="purpose")
        if bytes <= 0:
            raise InvalidArgument("bytes must be positive.", code="invalid_value", param="bytes")
        if bytes > self.max_upload_bytes:
            raise InvalidArgument(
                f"The upload is too large: the maximum is {self.max_upload_bytes} bytes.",
                code="file_too_large",
                param="bytes",
            )
        if not mime_type:
            raise InvalidArgument(
                "Missing required parameter: 'mime_type'.",
                code="missing_required_parameter",
                param="mime_type",
            )
        check_content_type(mime_type, param="mime_type")
        seconds = None if expires_after is None else check_expires_after(expires_after)
        now = self.now()
        record = UploadRecord(
            id=new_id(UPLOAD_PREFIX),
            owner=owner,
            filename=filename,
            purpose=purpose,
            bytes=bytes,
            mime_type=mime_type,
            status=PENDING,
            created_at=now,
            expires_at=now + UPLOAD_TTL_SECONDS,
            file_expires_after=seconds,
            request_id=request_id or None,
        )
        try:
            stored = await self._repo.insert(record)
        except DuplicateRequestId:
            assert record.request_id is not None
            previous = await self._repo.get_by_request_id(owner, record.request_id)
            if previous is None:  # pragma: no cover
                raise
            key = (previous.filename, previous.purpose, previous.bytes, previous.mime_type)
            if key != (filename, purpose, bytes, mime_type):
                raise Conflict(
                    "This idempotency key was already used with a different request.", param="request_id"
                ) from None
            stored = previous
        return await self._view(stored)

    async def add_part(self, owner: str, events: AsyncIterable[PartEvent]) -> UploadPartRecord:
        """Store one part from a stream of `PartMetadata` and byte chunks (any order)."""
        upload_id: str | None = None
        declared: int | None = None
        key = new_blob_key()
        writer = await self._blobs.open_writer(key)
        committed = False
        try:
            async for event in events:
                if isinstance(event, PartMetadata):
                    declared = event.bytes if event.bytes is not None else declared
                    if event.upload_id is None:
                        continue
                    if upload_id is not None and event.upload_id != upload_id:
                        raise InvalidArgument(
                            "upload_id changed within one part.", code="invalid_value", param="upload_id"
                        )
                    if upload_id is None:
                        await self._pending(owner, event.upload_id)  # fail before reading bytes
                    upload_id = event.upload_id
                    continue
                if writer.size + len(event) > self.max_part_bytes:
                    raise InvalidArgument(
                        f"Part is too large: the maximum is {self.max_part_bytes} bytes.",
                        code="part_too_large",
                        param="data",
                    )
                await writer.write(event)
            upload = await self._pending(owner, upload_id or "")
            if writer.size == 0:
                raise InvalidArgument(
                    "Missing required parameter: 'data'.", code="missing_required_parameter", param="data"
                )
            check_declared_size(declared, writer.size, param="bytes")
            size = await writer.commit()
            committed = True
        finally:
            if not committed:
                await writer.abort()
        part = UploadPartRecord(
            id=new_id(PART_PREFIX), upload_id=upload.id, bytes=size, blob_key=key, created_at=self.now()
        )
        try:
            stored = await self._repo.insert_part(part)
        except BaseException:
            await self._blobs.delete(key)
            raise
        # A complete or cancel may have run while this part streamed; it would not clean up a
        # part it did not see, so this part must clean up after itself.
        latest = await self._repo.get(owner, upload.id)
        if latest is None or latest.status != PENDING:
            await self._blobs.delete(key)
            raise _wrong_state(upload.id, latest.status if latest else CANCELLED)
        return stored

    async def complete(
        self, owner: str, upload_id: str, part_ids: Sequence[str], md5: str | None = None
    ) -> UploadView:
        """Assemble `part_ids`, in order, into a new file and complete the upload."""
        upload = await self._pending(owner, upload_id)
        if not part_ids:
            raise InvalidArgument(
                "Missing required parameter: 'part_ids'.", code="missing_required_parameter", param="part_ids"
            )
        if len(set(part_ids)) != len(part_ids):
            raise InvalidArgument("part_ids must not repeat a part.", code="invalid_value", param="part_ids")
        if md5 and not _MD5.fullmatch(md5):
            raise InvalidArgument("md5 must be 32 hexadecimal digits.", code="invalid_value", param="md5")
        parts = {part.id: part for part in await self._repo.parts(upload.id)}
        for part_id in part_ids:
            if part_id not in parts:
                raise InvalidArgument(
                    f"Part {part_id} does not belong to upload {upload.id}.",
                    code="invalid_part_id",
                    param="part_ids",
                )
        ordered = [parts[part_id] for part_id in part_ids]
        total = sum(part.bytes for part in ordered)
        if total != upload.bytes:
            raise InvalidArgument(
                f"The parts hold {total} bytes but the upload declared {upload.bytes}.",
                code="bytes_mismatch",
                param="part_ids",
            )

        key = new_blob_key()
        writer = await self._blobs.open_writer(key)
        committed = False
        digest = hashlib.md5(usedforsecurity=False)
        try:
            for part in ordered:
                async for chunk in self._blobs.open_reader(part.blob_key):
                    await asyncio.to_thread(digest.update, chunk)  # hashlib drops the GIL
                    await writer.write(chunk)
            if md5 and digest.hexdigest() != md5.lower():
                raise InvalidArgument(
                    "The MD5 of the assembled file does not match md5.", code="md5_mismatch", param="md5"
                )
            size = await writer.commit()
            committed = True
        finally:
            if not committed:
                await writer.abort()
        file = await self._files.register(
            owner,
            blob_key=key,
            size=size,
            filename=upload.filename,
            purpose=upload.purpose,
            content_type=upload.mime_type,
            expires_after_seconds=upload.file_expires_after,
        )
        if not await self._repo.transition(
            upload.id, from_status=PENDING, to_status=COMPLETED, file_id=file.id
        ):
            await self._files.delete(owner, file.id)
            latest = await self._repo.get(owner, upload.id)
            raise _wrong_state(upload.id, self._status(latest) if latest else CANCELLED)
        await self._drop_parts(upload.id)
        latest = await self._repo.get(owner, upload.id)
        assert latest is not None
        return UploadView(record=latest, status=COMPLETED, file=file)

    async def cancel(self, owner: str, upload_id: str) -> UploadView:
        """Cancel a pending upload and delete its parts."""
        upload = await self._pending(owner, upload_id)
        if not await self._repo.transition(upload.id, from_status=PENDING, to_status=CANCELLED):
            latest = await self._repo.get(owner, upload.id)
            raise _wrong_state(upload.id, self._status(latest) if latest else CANCELLED)
        await self._drop_parts(upload.id)
        return await self.get(owner, upload.id)

    async def _drop_parts(self, upload_id: str) -> None:
        for part in await self._repo.parts(upload_id):
            await self._blobs.delete(part.blob_key)
        await self._repo.delete_parts(upload_id)

    async def sweep_expired(self) -> int:
        """Mark pending uploads past their expiry `expired` and delete their parts."""
        expired = 0
        while batch := await self._repo.stale(now=self.now()):
            for record in batch:
                if await self._repo.transition(record.id, from_status=PENDING, to_status=EXPIRED):
                    await self._drop_parts(record.id)
                    expired += 1
        if expired:
            logger.info("expired %d uploads", expired)
        return expired
