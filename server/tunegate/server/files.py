"""Files: OpenAI's `/v1/files` rules over the metadata store and the blob store.

No gRPC here; servicers translate. Theory of operation of `FileService.create`:

1. A blob writer is opened at once; chunk events are appended as they arrive and counted
   against `max_file_bytes` (over the limit: fail immediately, nothing more is read).
2. Metadata events merge (later set fields win). Fields are checked as soon as they arrive, so a
   bad purpose fails before the bytes are read; completeness is checked at end of stream.
3. Only when the stream has ended and every rule holds is the blob committed (renamed into
   place) and then the row inserted. Any failure or cancellation before that aborts the writer,
   so nothing is visible; a failed insert deletes the committed blob.
"""

from __future__ import annotations

import logging
import time
import unicodedata
from collections.abc import AsyncIterable, AsyncIterator, Callable
from dataclasses import dataclass, replace
from typing import Literal

from tunegate.server.blobs import BlobStore, new_blob_key
from tunegate.server.errors import Conflict, InvalidArgument, NotFound
from tunegate.server.ids import FILE_PREFIX, is_well_formed, new_id
from tunegate.server.store import DuplicateRequestId, FileRecord, FileRepository

__all__ = [
    "ALL_PURPOSES",
    "CREATE_PURPOSES",
    "Clock",
    "ExpiresAfter",
    "FileContent",
    "FileMetadataUpdate",
    "FilePage",
    "FileService",
    "check_content_type",
    "check_declared_size",
    "check_expires_after",
    "check_filename",
]

logger = logging.getLogger("tunegate.server")

Clock = Callable[[], float]
"""Returns the current Unix time in seconds; injectable so tests can move time."""

CREATE_PURPOSES = frozenset({"fine-tune", "batch", "assistants", "vision", "user_data", "evals"})
# Purposes a listed file may have; the output ones are only assigned by the gateway.
ALL_PURPOSES = CREATE_PURPOSES | {"assistants_output", "batch_output", "fine-tune-results"}
MIN_EXPIRES_SECONDS = 3600
MAX_EXPIRES_SECONDS = 2_592_000
BATCH_DEFAULT_EXPIRES_SECONDS = 30 * 24 * 3600
MAX_LIST_LIMIT = 10_000
DEFAULT_CONTENT_TYPE = "application/octet-stream"
STATUS_PROCESSED = "processed"
_MAX_FILENAME_BYTES = 255
_MAX_HEADER_VALUE = 255


@dataclass(frozen=True, slots=True)
class ExpiresAfter:
    """OpenAI's `expires_after`: expire `seconds` after `anchor` (only `created_at` exists)."""

    anchor: str
    seconds: int


@dataclass(frozen=True, slots=True)
class FileMetadataUpdate:
    """One metadata event of an upload stream; None means "not set in this event"."""

    filename: str | None = None
    purpose: str | None = None
    expires_after: ExpiresAfter | None = None
    content_type: str | None = None
    request_id: str | None = None
    bytes: int | None = None

    def merged(self, later: FileMetadataUpdate) -> FileMetadataUpdate:
        """This update overlaid with `later`'s set fields."""
        return FileMetadataUpdate(
            filename=later.filename if later.filename is not None else self.filename,
            purpose=later.purpose if later.purpose is not None else self.purpose,
            expires_after=later.expires_after if later.expires_after is not None else self.expires_after,
            content_type=later.content_type if later.content_type is not None else self.content_type,
            request_id=later.request_id if later.request_id is not None else self.request_id,
            bytes=later.bytes if later.bytes is not None else self.bytes,
        )


FileEvent = FileMetadataUpdate | bytes
"""An upload stream is a sequence of metadata updates and byte chunks, in any order."""


@dataclass(frozen=True, slots=True)
class FilePage:
    """One page of a listing; `has_more` is exact."""

    data: list[FileRecord]
    has_more: bool


@dataclass(frozen=True, slots=True)
class FileContent:
    """A file's record and its bytes (iterate `chunks` exactly once)."""

    record: FileRecord
    chunks: AsyncIterator[bytes]


def check_declared_size(declared: int | None, received: int, *, param: str) -> None:
    """The stream's declared byte count must equal what arrived: a stream that ended early (a
    client that went away mid-upload) is refused instead of stored truncated."""
    if declared is None:
        raise InvalidArgument(
            f"Missing required parameter: '{param}' (the stream's total size, sent after the last chunk).",
            code="missing_required_parameter",
            param=param,
        )
    if declared != received:
        raise InvalidArgument(
            f"The stream ended after {received} bytes, but {declared} were declared; nothing was stored.",
            code="incomplete_upload",
            param=param,
        )


def check_filename(filename: str, *, param: str = "file") -> str:
    """A filename as OpenAI accepts it: 1–255 bytes of UTF-8, no path separators, NUL or
    control characters, not `.` or `..`. Raises `InvalidArgument` (code `invalid_filename`)."""

    def bad(reason: str) -> InvalidArgument:
        return InvalidArgument(f"Invalid filename: {reason}.", code="invalid_filename", param=param)

    if not filename:
        raise bad("a filename is required")
    if len(filename.encode("utf-8", "surrogatepass")) > _MAX_FILENAME_BYTES:
        raise bad(f"it must be at most {_MAX_FILENAME_BYTES} bytes")
    if filename in (".", ".."):
        raise bad("'.' and '..' are not filenames")
    if any(ch in "/\\" for ch in filename):
        raise bad("it must not contain '/' or '\\'")
    if any(unicodedata.category(ch) in ("Cc", "Cs") for ch in filename):
        raise bad("it must not contain control characters")
    return filename


def check_content_type(value: str, *, param: str = "file") -> str:
    """A MIME type: printable ASCII, at most 255 characters."""
    if len(value) > _MAX_HEADER_VALUE or not value.isascii() or not value.isprintable():
        raise InvalidArgument("Invalid content type.", code="invalid_content_type", param=param)
    return value


def check_expires_after(value: ExpiresAfter) -> int:
    """The validated number of seconds of an expiry policy."""
    if value.anchor != "created_at":
        raise InvalidArgument(
            "expires_after.anchor must be 'created_at'.", code="invalid_value", param="expires_after.anchor"
        )
    if not MIN_EXPIRES_SECONDS <= value.seconds <= MAX_EXPIRES_SECONDS:
        raise InvalidArgument(
            f"expires_after.seconds must be between {MIN_EXPIRES_SECONDS} and {MAX_EXPIRES_SECONDS}.",
            code="invalid_value",
            param="expires_after.seconds",
        )
    return value.seconds


def _check_create_purpose(purpose: str) -> str:
    if purpose not in CREATE_PURPOSES:
        allowed = ", ".join(sorted(CREATE_PURPOSES))
        raise InvalidArgument(
            f"Invalid purpose {purpose!r}: expected one of {allowed}.",
            code="invalid_purpose",
            param="purpose",
        )
    return purpose


def _check_request_id(value: str) -> str:
    if len(value) > _MAX_HEADER_VALUE:
        raise InvalidArgument("request_id is too long.", code="invalid_value", param="request_id")
    return value


def _check_partial(meta: FileMetadataUpdate) -> None:
    """Check the fields set so far (fail fast, before the bytes)."""
    if meta.purpose is not None:
        _check_create_purpose(meta.purpose)
    if meta.filename is not None:
        check_filename(meta.filename)
    if meta.expires_after is not None:
        check_expires_after(meta.expires_after)
    if meta.content_type is not None:
        check_content_type(meta.content_type)
    if meta.request_id is not None:
        _check_request_id(meta.request_id)


def not_found(file_id: str) -> NotFound:
    """The one answer for a missing, deleted, expired or foreign file id."""
    return NotFound(f"No such File object: {file_id}", code="file_not_found", param="file_id")


def expiry(purpose: str, expires_after_seconds: int | None, created_at: int) -> int | None:
    """When a new file expires: its policy, else 30 days for `batch`, else never."""
    if expires_after_seconds is not None:
        return created_at + expires_after_seconds
    if purpose == "batch":
        return created_at + BATCH_DEFAULT_EXPIRES_SECONDS
    return None


class FileService:
    """Owner-scoped file operations. Every method takes the caller's owner scope first."""

    def __init__(
        self,
        repository: FileRepository,
        blobs: BlobStore,
        *,
        max_file_bytes: int,
        clock: Clock = time.time,
    ) -> None:
        self._repo = repository
        self._blobs = blobs
        self.max_file_bytes = max_file_bytes
        self._clock = clock

    def now(self) -> int:
        return int(self._clock())

    async def create(self, owner: str, events: AsyncIterable[FileEvent]) -> FileRecord:
        """Store a file from an upload stream; see the module docstring for the procedure."""
        meta = FileMetadataUpdate()
        saw_chunk = False
        key = new_blob_key()
        writer = await self._blobs.open_writer(key)
        committed = False
        try:
            async for event in events:
                if isinstance(event, FileMetadataUpdate):
                    _check_partial(event)
                    meta = meta.merged(event)
                    continue
                saw_chunk = True
                if writer.size + len(event) > self.max_file_bytes:
                    raise InvalidArgument(
                        f"File is too large: the maximum is {self.max_file_bytes} bytes.",
                        code="file_too_large",
                        param="file",
                    )
                await writer.write(event)

            if meta.purpose is None:
                raise InvalidArgument(
                    "Missing required parameter: 'purpose'.",
                    code="missing_required_parameter",
                    param="purpose",
                )
            if not saw_chunk:
                raise InvalidArgument(
                    "Missing required parameter: 'file'.", code="missing_required_parameter", param="file"
                )
            if writer.size == 0:
                raise InvalidArgument("The file is empty.", code="empty_file", param="file")
            check_declared_size(meta.bytes, writer.size, param="bytes")
            filename = check_filename(meta.filename or "")
            seconds = None if meta.expires_after is None else check_expires_after(meta.expires_after)
            now = self.now()
            record = FileRecord(
                id=new_id(FILE_PREFIX),
                owner=owner,
                filename=filename,
                purpose=meta.purpose,
                bytes=writer.size,
                content_type=meta.content_type or DEFAULT_CONTENT_TYPE,
                status=STATUS_PROCESSED,
                created_at=now,
                expires_at=expiry(meta.purpose, seconds, now),
                blob_key=key,
                request_id=meta.request_id or None,
            )
            if record.request_id is not None:
                previous = await self._repo.get_by_request_id(owner, record.request_id)
                if previous is not None:
                    return self._replay(previous, record)
            await writer.commit()
            committed = True
        finally:
            if not committed:
                await writer.abort()
        return await self._insert(record)

    async def _insert(self, record: FileRecord) -> FileRecord:
        try:
            return await self._repo.insert(record)
        except DuplicateRequestId:
            await self._blobs.delete(record.blob_key)
            assert record.request_id is not None
            previous = await self._repo.get_by_request_id(record.owner, record.request_id)
            if previous is None:  # pragma: no cover - the winner was deleted in between
                raise
            return self._replay(previous, record)
        except BaseException:
            await self._blobs.delete(record.blob_key)
            raise

    @staticmethod
    def _replay(previous: FileRecord, attempt: FileRecord) -> FileRecord:
        """The first file for a repeated idempotency key, if the request is the same one."""
        same = (previous.filename, previous.purpose, previous.bytes, previous.content_type) == (
            attempt.filename,
            attempt.purpose,
            attempt.bytes,
            attempt.content_type,
        )
        if not same:
            raise Conflict(
                "This idempotency key was already used with a different request.",
                code="idempotency_key_reused",
                param="request_id",
            )
        return previous

    async def register(
        self,
        owner: str,
        *,
        blob_key: str,
        size: int,
        filename: str,
        purpose: str,
        content_type: str,
        expires_after_seconds: int | None,
    ) -> FileRecord:
        """Record an already committed blob as a new file (used by Uploads). On failure the blob
        is deleted."""
        now = self.now()
        record = FileRecord(
            id=new_id(FILE_PREFIX),
            owner=owner,
            filename=filename,
            purpose=purpose,
            bytes=size,
            content_type=content_type,
            status=STATUS_PROCESSED,
            created_at=now,
            expires_at=expiry(purpose, expires_after_seconds, now),
            blob_key=blob_key,
        )
        return await self._insert(record)

    async def import_file(
        self,
        owner: str,
        chunks: AsyncIterator[bytes],
        *,
        filename: str,
        purpose: str,
        content_type: str = DEFAULT_CONTENT_TYPE,
    ) -> FileRecord:
        """Store bytes the gateway itself produced or fetched (a job's result file) as a new
        file of `owner`, with any purpose (`fine-tune-results` included). The blob is committed
        before the row is inserted; a failure leaves nothing visible."""
        key = new_blob_key()
        writer = await self._blobs.open_writer(key)
        committed = False
        try:
            async for chunk in chunks:
                if writer.size + len(chunk) > self.max_file_bytes:
                    raise InvalidArgument(
                        f"File is too large: the maximum is {self.max_file_bytes} bytes.",
                        code="file_too_large",
                        param="file",
                    )
                await writer.write(chunk)
            size = await writer.commit()
            committed = True
        finally:
            if not committed:
                await writer.abort()
        return await self.register(
            owner,
            blob_key=key,
            size=size,
            filename=check_filename(filename),
            purpose=purpose,
            content_type=check_content_type(content_type),
            expires_after_seconds=None,
        )

    async def get(self, owner: str, file_id: str) -> FileRecord:
        """A visible file of this owner, else `NotFound`."""
        record = await self._repo.get(owner, file_id) if is_well_formed(file_id, FILE_PREFIX) else None
        if record is None or not record.visible_at(self.now()):
            raise not_found(file_id)
        return record

    async def list(
        self,
        owner: str,
        *,
        purpose: str | None = None,
        limit: int | None = None,
        order: Literal["asc", "desc"] | None = None,
        after: str | None = None,
    ) -> FilePage:
        """One page of the owner's visible files, in insertion order (`desc` by default).

        `after` is the id of the last file of the previous page; it must be one of this owner's
        ids (deleted and expired ones included, so a page boundary survives deletion)."""
        if limit is None:
            limit = MAX_LIST_LIMIT
        if not 1 <= limit <= MAX_LIST_LIMIT:
            raise InvalidArgument(
                f"limit must be between 1 and {MAX_LIST_LIMIT}.", code="invalid_value", param="limit"
            )
        if purpose is not None and purpose not in ALL_PURPOSES:
            raise InvalidArgument(f"Invalid purpose {purpose!r}.", code="invalid_purpose", param="purpose")
        after_seq: int | None = None
        if after:
            cursor = await self._repo.get(owner, after) if is_well_formed(after, FILE_PREFIX) else None
            if cursor is None:
                raise InvalidArgument(
                    f"Invalid cursor {after!r}: not the id of one of your files.",
                    code="invalid_cursor",
                    param="after",
                )
            after_seq = cursor.seq
        rows = await self._repo.list_visible(
            owner,
            now=self.now(),
            order=order or "desc",
            limit=limit + 1,
            after_seq=after_seq,
            purpose=purpose,
        )
        return FilePage(data=rows[:limit], has_more=len(rows) > limit)

    async def delete(self, owner: str, file_id: str) -> FileRecord:
        """Delete a visible file: tombstone the row (first, so it vanishes at once), then the
        blob. Returns the deleted record."""
        record = await self.get(owner, file_id)
        now = self.now()
        if not await self._repo.tombstone(owner, file_id, now=now):
            raise not_found(file_id)  # a concurrent delete won
        await self._blobs.delete(record.blob_key)
        return replace(record, deleted_at=now)

    async def open_content(self, owner: str, file_id: str, *, chunk_size: int) -> FileContent:
        """A visible file's bytes, streamed from the blob store."""
        record = await self.get(owner, file_id)
        return FileContent(record=record, chunks=self._blobs.open_reader(record.blob_key, chunk_size))

    async def sweep_expired(self) -> int:
        """Delete every file whose expiry has passed (tombstone + blob); returns how many."""
        removed = 0
        now = self.now()
        while batch := await self._repo.expired(now=now):
            for record in batch:
                if await self._repo.tombstone(record.owner, record.id, now=now):
                    await self._blobs.delete(record.blob_key)
                    removed += 1
        if removed:
            logger.info("deleted %d expired files", removed)
        return removed
