"""`S3BlobStore`: blobs as objects in an S3-compatible bucket, through aiobotocore.

A blob `key` is the object `<prefix>/<key>`. Theory of operation of a writer: bytes gather in
one part (a `BytesIO`) of `part_bytes`; each full part is sent as a part of a multipart upload
(created with the first full part) in a task, at most `max_concurrency` at once — so a writer
holds one part being filled plus the parts in flight, whatever the blob's size. `commit()`
sends the tail as the last part and completes the upload; a blob smaller than one part never
starts a multipart upload and is one PutObject at commit. Until CompleteMultipartUpload (or that
PutObject) succeeds nothing is visible under the key; `abort()` or any failure aborts the
multipart upload so S3 drops its parts. A commit cancelled while the object is being made
visible waits for that request and then deletes the object, so a cancelled commit leaves
nothing visible, as the `BlobWriter` contract says. Parts of an upload whose process died are
removed by `sweep()`, which only touches uploads older than an hour: other replicas share the
prefix and may be mid-upload.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, TypeVar

from aiobotocore.config import AioConfig
from aiobotocore.session import get_session
from botocore.exceptions import ClientError
from tunegate.server.blobs._local import DEFAULT_CHUNK_SIZE, BlobWriter, _check_key
from tunegate.server.blobs._settings import BlobSettings

if TYPE_CHECKING:
    from types_aiobotocore_s3 import S3Client
    from types_aiobotocore_s3.type_defs import CompletedPartTypeDef

__all__ = ["SWEEP_AGE", "S3BlobStore"]

SWEEP_AGE = timedelta(hours=1)
"""How old an unfinished multipart upload must be before `sweep()` aborts it."""
_MISSING = frozenset({"NoSuchKey", "404", "NotFound"})
_log = logging.getLogger(__name__)
_T = TypeVar("_T")


async def _finish(call: Callable[[], Awaitable[_T]]) -> _T:
    """Run `call` to its end even if the awaiting task is cancelled meanwhile (then re-raise
    the cancellation): undo work (abort, delete) must not be cut short by the cancellation
    that caused it."""
    task = asyncio.ensure_future(call())
    try:
        return await asyncio.shield(task)
    except asyncio.CancelledError:
        with contextlib.suppress(Exception):
            await task
        raise


class _S3Writer:
    def __init__(self, store: S3BlobStore, client: S3Client, key: str) -> None:
        self._store = store
        self._client = client
        self._object = store.object_key(key)
        self._part = io.BytesIO()
        """The part being filled: `_filled` bytes from its start (a reused part may hold older
        bytes after them). Parts are sent as the `BytesIO` itself: aiohttp reads it 64 KiB at a
        time as the socket drains and botocore rewinds it for a retry, where a `bytes` body
        would make asyncio's transport keep a copy of every unsent part."""
        self._filled = 0
        self._written = 0
        self._upload_id: str | None = None
        self._parts: list[CompletedPartTypeDef] = []
        self._in_flight: list[asyncio.Task[None]] = []
        self._spare: list[io.BytesIO] = []
        """Parts whose upload has finished, filled again by later parts: a writer allocates at
        most `max_concurrency` + 1 of them, instead of one per part (freeing an 8 MiB buffer per
        part left the allocator holding tens of MB after a large upload)."""
        self._done = False

    @property
    def size(self) -> int:
        return self._written

    async def write(self, chunk: bytes) -> None:
        if self._done:
            raise RuntimeError("blob writer is closed")
        part_bytes = self._store.settings.part_bytes
        view = memoryview(chunk)
        while view:
            take = min(len(view), part_bytes - self._filled)
            self._part.write(view[:take])
            self._filled += take
            view = view[take:]
            self._written += take
            if self._filled == part_bytes:
                await self._send_part()

    async def _send_part(self) -> None:
        """Hand the filled part to an upload, first waiting while `max_concurrency` are in flight."""
        while len(self._in_flight) >= self._store.settings.max_concurrency:
            await self._wait_oldest()
        if self._upload_id is None:
            created = await self._client.create_multipart_upload(Bucket=self._store.bucket, Key=self._object)
            self._upload_id = created["UploadId"]
        body = self._take_part()
        number = len(self._parts) + 1
        self._parts.append({"PartNumber": number})
        self._in_flight.append(asyncio.create_task(self._upload_part(number, body)))

    def _take_part(self) -> io.BytesIO:
        """The filled part, rewound and cut to its bytes, leaving a spare (or new) one to fill."""
        part, filled = self._part, self._filled
        self._part, self._filled = (self._spare.pop() if self._spare else io.BytesIO()), 0
        if part.seek(0, io.SEEK_END) > filled:  # a reused part holds an earlier part's bytes
            part.truncate(filled)  # after its own: only the last part of a blob gets here
        part.seek(0)
        return part

    async def _wait_oldest(self) -> None:
        """Wait for the oldest part in flight (raising its failure). It stays listed until done,
        so an `abort()` after a cancellation here still waits for it before aborting the upload."""
        await self._in_flight[0]
        self._in_flight.pop(0)

    async def _upload_part(self, number: int, body: io.BytesIO) -> None:
        assert self._upload_id is not None
        answer = await self._client.upload_part(
            Bucket=self._store.bucket,
            Key=self._object,
            UploadId=self._upload_id,
            PartNumber=number,
            Body=body,
        )
        self._parts[number - 1]["ETag"] = answer["ETag"]
        body.seek(0)
        self._spare.append(body)  # the request is over: nothing reads it any more

    async def commit(self) -> int:
        if self._done:
            raise RuntimeError("blob writer is closed")
        try:
            if self._upload_id is None:
                body = self._take_part()
                self._done = True
                await self._make_visible(
                    lambda: self._client.put_object(Bucket=self._store.bucket, Key=self._object, Body=body)
                )
                return self._written
            if self._filled or not self._parts:
                await self._send_part()
            while self._in_flight:
                await self._wait_oldest()
            self._done = True
            upload_id, parts = self._upload_id, list(self._parts)
            await self._make_visible(
                lambda: self._client.complete_multipart_upload(
                    Bucket=self._store.bucket,
                    Key=self._object,
                    UploadId=upload_id,
                    MultipartUpload={"Parts": parts},
                )
            )
            self._upload_id = None
        except BaseException:
            self._done = False
            await self.abort()
            raise
        return self._written

    async def _make_visible(self, call: Callable[[], Awaitable[Any]]) -> None:
        """Run the request that makes the object visible; if cancelled meanwhile, wait for it and
        delete the object again."""
        request = asyncio.ensure_future(call())
        try:
            await asyncio.shield(request)
        except asyncio.CancelledError:
            with contextlib.suppress(Exception):
                await request
            await _finish(lambda: self._client.delete_object(Bucket=self._store.bucket, Key=self._object))
            raise

    async def abort(self) -> None:
        if self._done:
            return
        self._done = True
        self._part, self._filled = io.BytesIO(), 0
        self._spare.clear()
        in_flight, self._in_flight = self._in_flight, []
        for task in in_flight:
            task.cancel()
        upload_id, self._upload_id = self._upload_id, None

        async def undo() -> None:
            await asyncio.gather(*in_flight, return_exceptions=True)
            if upload_id is not None:
                try:
                    await self._client.abort_multipart_upload(
                        Bucket=self._store.bucket, Key=self._object, UploadId=upload_id
                    )
                except ClientError as exc:
                    if exc.response.get("Error", {}).get("Code") != "NoSuchUpload":  # completed
                        _log.warning("could not abort multipart upload of %s: %s", self._object, exc)
                except Exception:  # sweep() removes it later
                    _log.warning("could not abort multipart upload of %s", self._object, exc_info=True)

        await _finish(undo)


class S3BlobStore:
    """Blobs as objects `<prefix>/<key>` in the bucket of `settings.url` (see the module notes).
    Shared by every replica: `sweep()` only removes uploads older than `SWEEP_AGE`. The client
    is made on first use; `aclose()` closes it."""

    def __init__(self, settings: BlobSettings) -> None:
        self.settings = settings
        self.bucket = settings.bucket
        self.prefix = settings.prefix
        self._stack = contextlib.AsyncExitStack()
        self._client: S3Client | None = None
        self._lock = asyncio.Lock()

    def object_key(self, key: str) -> str:
        """The object key of blob `key`."""
        _check_key(key)
        return f"{self.prefix}/{key}" if self.prefix else key

    async def _get_client(self) -> S3Client:
        async with self._lock:
            if self._client is None:
                settings = self.settings
                config = AioConfig(
                    retries={"mode": "standard", "max_attempts": 3},
                    connect_timeout=10,
                    read_timeout=60,
                    max_pool_connections=32,
                    s3={"addressing_style": "path"} if settings.endpoint_url else None,
                )
                self._client = await self._stack.enter_async_context(
                    get_session().create_client(
                        "s3",
                        region_name=settings.region,
                        endpoint_url=settings.endpoint_url,
                        config=config,
                    )
                )
            return self._client

    async def open_writer(self, key: str) -> BlobWriter:
        self.object_key(key)  # checks the key before any network call
        return _S3Writer(self, await self._get_client(), key)

    async def open_reader(self, key: str, chunk_size: int = DEFAULT_CHUNK_SIZE) -> AsyncIterator[bytes]:
        if chunk_size <= 0:
            raise ValueError("chunk_size must be positive")
        client = await self._get_client()
        try:
            answer = await client.get_object(Bucket=self.bucket, Key=self.object_key(key))
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in _MISSING:
                raise FileNotFoundError(f"blob {key} not found") from None
            raise
        async with answer["Body"] as body:
            async for chunk in body.iter_chunks(chunk_size):
                if chunk:
                    yield chunk

    async def delete(self, key: str) -> None:
        client = await self._get_client()
        await client.delete_object(Bucket=self.bucket, Key=self.object_key(key))

    async def sweep(self, older_than: timedelta = SWEEP_AGE) -> int:
        """Abort the multipart uploads under the prefix initiated more than `older_than` ago
        (younger ones may belong to a writer of another replica); returns how many."""
        client = await self._get_client()
        cutoff = datetime.now(UTC) - older_than
        prefix = f"{self.prefix}/" if self.prefix else ""
        removed = 0
        paginator = client.get_paginator("list_multipart_uploads")
        async for page in paginator.paginate(Bucket=self.bucket, Prefix=prefix):
            for upload in page.get("Uploads", []):
                if upload["Initiated"] < cutoff:
                    await client.abort_multipart_upload(
                        Bucket=self.bucket, Key=upload["Key"], UploadId=upload["UploadId"]
                    )
                    removed += 1
        return removed

    async def aclose(self) -> None:
        """Close the client; safe to call more than once."""
        self._client = None
        await self._stack.aclose()
