"""`tunegate.v1.Uploads`: proto ⇄ `tunegate.server.uploads` translation, nothing else."""

from __future__ import annotations

from collections.abc import AsyncIterator

from tunegate.server.servicers._files import expires_after, file_message
from tunegate.server.servicers._wire import (
    Context,
    accept_stream,
    answer_after_stream,
    caller,
    from_wire,
    idempotency_key,
    to_wire,
)
from tunegate.server.uploads import PartEvent, PartMetadata, UploadService, UploadView
from tunegate.v1 import files_pb2, uploads_pb2, uploads_pb2_grpc

_PURPOSE = files_pb2.FilePurpose.DESCRIPTOR
_STATUS = uploads_pb2.UploadStatus.DESCRIPTOR


def upload_message(view: UploadView) -> uploads_pb2.Upload:
    record = view.record
    message = uploads_pb2.Upload(
        id=record.id,
        created_at=record.created_at,
        filename=record.filename,
        bytes=record.bytes,
        purpose=from_wire(_PURPOSE, record.purpose),  # type: ignore[arg-type]
        status=from_wire(_STATUS, view.status),  # type: ignore[arg-type]
        expires_at=record.expires_at,
    )
    if view.file is not None:
        message.file.CopyFrom(file_message(view.file))
    return message


async def _part_events(requests: AsyncIterator[uploads_pb2.AddUploadPartRequest]) -> AsyncIterator[PartEvent]:
    async for request in requests:
        which = request.WhichOneof("payload")
        if which == "chunk":
            yield request.chunk
        elif which == "metadata":
            metadata = request.metadata
            yield PartMetadata(upload_id=metadata.upload_id or None, bytes=metadata.bytes or None)


class UploadsServicer(uploads_pb2_grpc.UploadsServicer):
    """Serves `/tunegate.v1.Uploads/*` from an `UploadService`."""

    def __init__(self, uploads: UploadService) -> None:
        self._uploads = uploads

    async def CreateUpload(
        self, request: uploads_pb2.CreateUploadRequest, context: Context
    ) -> uploads_pb2.Upload:
        view = await self._uploads.create(
            caller(context),
            filename=request.filename,
            purpose=to_wire(_PURPOSE, request.purpose),
            bytes=request.bytes,
            mime_type=request.mime_type,
            expires_after=expires_after(request.expires_after) if request.HasField("expires_after") else None,
            request_id=request.request_id or idempotency_key(context),
        )
        return upload_message(view)

    async def AddUploadPart(
        self, request_iterator: AsyncIterator[uploads_pb2.AddUploadPartRequest], context: Context
    ) -> uploads_pb2.UploadPart:
        await accept_stream(context)
        part = await answer_after_stream(
            self._uploads.add_part(caller(context), _part_events(request_iterator)), request_iterator
        )
        return uploads_pb2.UploadPart(id=part.id, created_at=part.created_at, upload_id=part.upload_id)

    async def CompleteUpload(
        self, request: uploads_pb2.CompleteUploadRequest, context: Context
    ) -> uploads_pb2.Upload:
        view = await self._uploads.complete(
            caller(context), request.upload_id, list(request.part_ids), request.md5 or None
        )
        return upload_message(view)

    async def CancelUpload(
        self, request: uploads_pb2.CancelUploadRequest, context: Context
    ) -> uploads_pb2.Upload:
        return upload_message(await self._uploads.cancel(caller(context), request.upload_id))
