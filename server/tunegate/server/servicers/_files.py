"""`tunegate.v1.Files`: proto ⇄ `tunegate.server.files` translation, nothing else."""

from __future__ import annotations

import string
import urllib.parse
from collections.abc import AsyncIterator, Callable, Mapping

from google.api import httpbody_pb2
from tunegate.server.blobs import DEFAULT_CHUNK_SIZE
from tunegate.server.files import ExpiresAfter, FileEvent, FileMetadataUpdate, FileService, not_found
from tunegate.server.servicers._wire import (
    Context,
    accept_stream,
    answer_after_stream,
    call_metadata,
    caller,
    from_wire,
    idempotency_key,
    to_wire,
)
from tunegate.server.store import FileRecord
from tunegate.v1 import files_pb2, files_pb2_grpc

_PURPOSE = files_pb2.FilePurpose.DESCRIPTOR
_STATUS = files_pb2.FileStatus.DESCRIPTOR
_ANCHOR = files_pb2.ExpiresAfterAnchor.DESCRIPTOR
_ORDER = files_pb2.ListOrder.DESCRIPTOR
CONTENT_LENGTH_KEY = "x-content-length"
"""Initial-metadata key carrying the file's size in bytes on `GetFileContent`."""
_SAFE_FILENAME = frozenset(string.ascii_letters + string.digits + " !#$%&'()*+,-.;=@[]^_`{}~")


def file_message(record: FileRecord) -> files_pb2.File:
    """The `File` message of a stored file."""
    message = files_pb2.File(
        id=record.id,
        bytes=record.bytes,
        created_at=record.created_at,
        filename=record.filename,
        purpose=from_wire(_PURPOSE, record.purpose),  # type: ignore[arg-type]
        status=from_wire(_STATUS, record.status),  # type: ignore[arg-type]
    )
    if record.expires_at is not None:
        message.expires_at = record.expires_at
    if record.status_details is not None:
        message.status_details = record.status_details
    return message


def expires_after(message: files_pb2.ExpiresAfter) -> ExpiresAfter:
    return ExpiresAfter(anchor=to_wire(_ANCHOR, message.anchor) or "", seconds=message.seconds)


def _metadata_update(message: files_pb2.FileMetadata) -> FileMetadataUpdate:
    # proto3 scalars have no presence: the default value means "not set in this message".
    return FileMetadataUpdate(
        filename=message.filename or None,
        purpose=to_wire(_PURPOSE, message.purpose),
        expires_after=expires_after(message.expires_after) if message.HasField("expires_after") else None,
        content_type=message.content_type or None,
        request_id=message.request_id or None,
        bytes=message.bytes or None,
    )


async def _file_events(
    requests: AsyncIterator[files_pb2.CreateFileRequest], request_id: str | None
) -> AsyncIterator[FileEvent]:
    if request_id is not None:
        yield FileMetadataUpdate(request_id=request_id)  # the body's request_id, if any, wins
    async for request in requests:
        which = request.WhichOneof("payload")
        if which == "chunk":
            yield request.chunk
        elif which == "metadata":
            yield _metadata_update(request.metadata)


def content_disposition(filename: str) -> str:
    """`attachment` with an ASCII `filename` and, when needed, an RFC 5987 `filename*`
    (metadata values must be printable ASCII)."""
    fallback = "".join(ch if ch in _SAFE_FILENAME else "_" for ch in filename)
    value = f'attachment; filename="{fallback}"'
    if fallback != filename:
        value += "; filename*=UTF-8''" + urllib.parse.quote(filename, safe="")
    return value


AfterStore = Callable[[str, str, Mapping[str, str]], object]
CheckRoute = Callable[[Mapping[str, str]], object]
"""Raises the routing error of an upload whose call names a provider it cannot reach."""
"""Called with (owner, file id, call metadata) once an uploaded file is stored; must not block
(the job service schedules a background copy when the upload names a provider)."""


class FilesServicer(files_pb2_grpc.FilesServicer):
    """Serves `/tunegate.v1.Files/*` from a `FileService`."""

    def __init__(
        self,
        files: FileService,
        *,
        chunk_size: int = DEFAULT_CHUNK_SIZE,
        after_store: AfterStore | None = None,
        check_route: CheckRoute | None = None,
    ) -> None:
        self._files = files
        self._chunk_size = chunk_size
        self._after_store = after_store
        self._check_route = check_route

    async def CreateFile(
        self, request_iterator: AsyncIterator[files_pb2.CreateFileRequest], context: Context
    ) -> files_pb2.File:
        events = _file_events(request_iterator, idempotency_key(context))
        owner = caller(context)
        metadata = call_metadata(context)
        if self._check_route is not None:
            self._check_route(metadata)  # a route that does not resolve refuses the call at once
        await accept_stream(context)
        created = await answer_after_stream(self._files.create(owner, events), request_iterator)
        if self._after_store is not None:
            self._after_store(owner, created.id, metadata)
        return file_message(created)

    async def ListFiles(
        self, request: files_pb2.ListFilesRequest, context: Context
    ) -> files_pb2.ListFilesResponse:
        order = to_wire(_ORDER, request.order)
        page = await self._files.list(
            caller(context),
            purpose=to_wire(_PURPOSE, request.purpose),
            limit=request.limit if request.HasField("limit") else None,
            order="asc" if order == "asc" else "desc",
            after=request.after or None,
        )
        data = [file_message(record) for record in page.data]
        return files_pb2.ListFilesResponse(
            data=data,
            first_id=data[0].id if data else "",
            last_id=data[-1].id if data else "",
            has_more=page.has_more,
        )

    async def GetFile(self, request: files_pb2.GetFileRequest, context: Context) -> files_pb2.File:
        return file_message(await self._files.get(caller(context), request.file_id))

    async def DeleteFile(
        self, request: files_pb2.DeleteFileRequest, context: Context
    ) -> files_pb2.DeleteFileResponse:
        record = await self._files.delete(caller(context), request.file_id)
        return files_pb2.DeleteFileResponse(id=record.id, deleted=True)

    async def GetFileContent(
        self, request: files_pb2.GetFileContentRequest, context: Context
    ) -> AsyncIterator[httpbody_pb2.HttpBody]:
        content = await self._files.open_content(
            caller(context), request.file_id, chunk_size=self._chunk_size
        )
        record = content.record
        # Headers first, so the edge can set Content-Length/Content-Disposition before any byte.
        # grpc drops a `content-length` metadata key (HTTP/2 reserves it), hence the `x-` name.
        await context.send_initial_metadata(
            (
                (CONTENT_LENGTH_KEY, str(record.bytes)),
                ("content-disposition", content_disposition(record.filename)),
            )
        )
        first = True
        try:
            async for chunk in content.chunks:
                message = httpbody_pb2.HttpBody(data=chunk)
                if first:
                    message.content_type = record.content_type
                    first = False
                yield message
        except FileNotFoundError:
            raise not_found(request.file_id) from None  # deleted while we were starting
        if first:  # an empty blob: still tell the client the content type
            yield httpbody_pb2.HttpBody(content_type=record.content_type)
