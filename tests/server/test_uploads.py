"""Uploads over gRPC: parts, completion, cancellation, wrong states."""

from __future__ import annotations

import hashlib
from typing import TYPE_CHECKING

import grpc
import grpc.aio
import pytest
from tunegate.server import GatewayServer
from tunegate.v1 import files_pb2, uploads_pb2

from tests.server.conftest import FakeClock
from tests.server.support import bearer, error_of, eventually_empty, stored_blobs, stream_call

if TYPE_CHECKING:
    from tunegate.v1.files_pb2_grpc import FilesAsyncStub
    from tunegate.v1.uploads_pb2_grpc import UploadsAsyncStub

PARTS = [b"alpha-" * 1000, b"beta-" * 2000, b"gamma-" * 500]


async def _create(stub: UploadsAsyncStub, size: int, **kwargs: object) -> uploads_pb2.Upload:
    request = uploads_pb2.CreateUploadRequest(
        filename="big.jsonl",
        purpose=files_pb2.FILE_PURPOSE_FINE_TUNE,
        bytes=size,
        mime_type="application/jsonl",
    )
    for key, value in kwargs.items():
        setattr(request, key, value)
    return await stub.CreateUpload(request)


async def _add(stub: UploadsAsyncStub, upload_id: str, data: bytes, *, metadata_last: bool = False) -> str:
    chunks = [uploads_pb2.AddUploadPartRequest(chunk=data[i : i + 4096]) for i in range(0, len(data), 4096)]
    head = uploads_pb2.AddUploadPartRequest(
        metadata=uploads_pb2.UploadPartMetadata(upload_id=upload_id, bytes=len(data))
    )
    messages = [*chunks, head] if metadata_last else [head, *chunks]
    part: uploads_pb2.UploadPart = await stream_call(stub.AddUploadPart, messages)
    assert part.upload_id == upload_id and part.id.startswith("part_")
    return part.id


async def test_parts_complete_in_given_order(
    uploads: UploadsAsyncStub, upload_files: FilesAsyncStub, sqlite_gateway: GatewayServer, clock: FakeClock
) -> None:
    upload = await _create(uploads, sum(map(len, PARTS)))
    assert upload.status == uploads_pb2.UPLOAD_STATUS_PENDING
    assert upload.expires_at == upload.created_at + 3600 and upload.id.startswith("upload_")
    ids = [await _add(uploads, upload.id, data, metadata_last=i == 1) for i, data in enumerate(PARTS)]

    order = [2, 0, 1]
    expected = b"".join(PARTS[i] for i in order)
    done = await uploads.CompleteUpload(
        uploads_pb2.CompleteUploadRequest(
            upload_id=upload.id, part_ids=[ids[i] for i in order], md5=hashlib.md5(expected).hexdigest()
        )
    )
    assert done.status == uploads_pb2.UPLOAD_STATUS_COMPLETED
    assert done.file.id.startswith("file-") and done.file.bytes == len(expected)
    assert done.file.filename == "big.jsonl" and done.file.purpose == files_pb2.FILE_PURPOSE_FINE_TUNE
    call = upload_files.GetFileContent(files_pb2.GetFileContentRequest(file_id=done.file.id))
    bodies = [body async for body in call]
    assert bodies[0].content_type == "application/jsonl"
    assert b"".join(b.data for b in bodies) == expected
    assert len(stored_blobs(sqlite_gateway)) == 1  # the parts are gone, only the file remains

    with pytest.raises(grpc.aio.AioRpcError) as info:
        await _add(uploads, upload.id, b"late")
    assert error_of(info.value) == (grpc.StatusCode.FAILED_PRECONDITION, "INVALID_UPLOAD_STATE", "upload_id")
    await eventually_empty(sqlite_gateway)


async def test_complete_rejects_bad_parts_and_md5(
    uploads: UploadsAsyncStub, sqlite_gateway: GatewayServer
) -> None:
    upload = await _create(uploads, len(PARTS[0]) + len(PARTS[1]))
    first, second = [await _add(uploads, upload.id, data) for data in PARTS[:2]]
    other = await _create(uploads, 10)
    foreign = await _add(uploads, other.id, b"0123456789")

    cases = [
        (uploads_pb2.CompleteUploadRequest(upload_id=upload.id), "MISSING_REQUIRED_PARAMETER", "part_ids"),
        (
            uploads_pb2.CompleteUploadRequest(upload_id=upload.id, part_ids=[first]),
            "BYTES_MISMATCH",
            "part_ids",
        ),
        (
            uploads_pb2.CompleteUploadRequest(upload_id=upload.id, part_ids=[first, foreign]),
            "INVALID_PART_ID",
            "part_ids",
        ),
        (
            uploads_pb2.CompleteUploadRequest(upload_id=upload.id, part_ids=[first, first]),
            "INVALID_VALUE",
            "part_ids",
        ),
        (
            uploads_pb2.CompleteUploadRequest(upload_id=upload.id, part_ids=[first, second], md5="0" * 32),
            "MD5_MISMATCH",
            "md5",
        ),
        (
            uploads_pb2.CompleteUploadRequest(upload_id=upload.id, part_ids=[first, second], md5="xyz"),
            "INVALID_VALUE",
            "md5",
        ),
    ]
    for request, reason, field in cases:
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await uploads.CompleteUpload(request)
        assert error_of(info.value) == (grpc.StatusCode.INVALID_ARGUMENT, reason, field), reason
    await eventually_empty(sqlite_gateway)
    assert len(stored_blobs(sqlite_gateway)) == 3  # just the parts
    # Still pending: a correct completion works.
    done = await uploads.CompleteUpload(
        uploads_pb2.CompleteUploadRequest(upload_id=upload.id, part_ids=[first, second])
    )
    assert done.file.bytes == len(PARTS[0]) + len(PARTS[1])


async def test_cancel_and_wrong_states(uploads: UploadsAsyncStub, sqlite_gateway: GatewayServer) -> None:
    upload = await _create(uploads, 5)
    await _add(uploads, upload.id, b"12345")
    cancelled = await uploads.CancelUpload(uploads_pb2.CancelUploadRequest(upload_id=upload.id))
    assert cancelled.status == uploads_pb2.UPLOAD_STATUS_CANCELLED
    assert stored_blobs(sqlite_gateway) == []
    for call in (
        uploads.CancelUpload(uploads_pb2.CancelUploadRequest(upload_id=upload.id)),
        uploads.CompleteUpload(uploads_pb2.CompleteUploadRequest(upload_id=upload.id, part_ids=["part_x"])),
    ):
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await call
        assert error_of(info.value)[:2] == (grpc.StatusCode.FAILED_PRECONDITION, "INVALID_UPLOAD_STATE")


async def test_expiry_and_owner_scope(
    uploads: UploadsAsyncStub, sqlite_gateway: GatewayServer, clock: FakeClock
) -> None:
    upload = await _create(uploads, 5)
    part = await _add(uploads, upload.id, b"12345")
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await uploads.CancelUpload(
            uploads_pb2.CancelUploadRequest(upload_id=upload.id), metadata=bearer("other")
        )
    assert error_of(info.value) == (grpc.StatusCode.NOT_FOUND, "UPLOAD_NOT_FOUND", "upload_id")

    clock.advance(3600)
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await uploads.CompleteUpload(uploads_pb2.CompleteUploadRequest(upload_id=upload.id, part_ids=[part]))
    assert error_of(info.value)[:2] == (grpc.StatusCode.FAILED_PRECONDITION, "INVALID_UPLOAD_STATE")
    assert "expired" in (info.value.details() or "")
    await sqlite_gateway.sweep()
    assert stored_blobs(sqlite_gateway) == []


@pytest.mark.parametrize(
    ("kwargs", "field", "reason"),
    [
        ({"filename": "../etc/passwd"}, "filename", "INVALID_FILENAME"),
        ({"purpose": files_pb2.FILE_PURPOSE_UNSPECIFIED}, "purpose", "MISSING_REQUIRED_PARAMETER"),
        ({"purpose": files_pb2.FILE_PURPOSE_BATCH_OUTPUT}, "purpose", "INVALID_PURPOSE"),
        ({"bytes": 0}, "bytes", "INVALID_VALUE"),
        ({"bytes": 1024 * 1024 + 1}, "bytes", "FILE_TOO_LARGE"),
        ({"mime_type": ""}, "mime_type", "MISSING_REQUIRED_PARAMETER"),
    ],
)
async def test_create_rejects_bad_input(
    uploads: UploadsAsyncStub, kwargs: dict[str, object], field: str, reason: str
) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await _create(uploads, kwargs.pop("bytes", 10), **kwargs)  # type: ignore[arg-type]
    assert error_of(info.value) == (grpc.StatusCode.INVALID_ARGUMENT, reason, field)


async def test_part_limits(uploads: UploadsAsyncStub, sqlite_gateway: GatewayServer) -> None:
    upload = await _create(uploads, 100_000)
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await _add(uploads, upload.id, b"x" * (sqlite_gateway.config.max_part_bytes + 1))
    assert error_of(info.value) == (grpc.StatusCode.INVALID_ARGUMENT, "PART_TOO_LARGE", "data")
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await _add(uploads, "upload_" + "Z" * 24, b"x")
    assert error_of(info.value) == (grpc.StatusCode.NOT_FOUND, "UPLOAD_NOT_FOUND", "upload_id")
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await stream_call(uploads.AddUploadPart, [uploads_pb2.AddUploadPartRequest(chunk=b"x")])
    assert error_of(info.value) == (
        grpc.StatusCode.INVALID_ARGUMENT,
        "MISSING_REQUIRED_PARAMETER",
        "upload_id",
    )
    await eventually_empty(sqlite_gateway)
    assert stored_blobs(sqlite_gateway) == []


async def test_idempotent_create(uploads: UploadsAsyncStub) -> None:
    first = await _create(uploads, 10, request_id="k")
    assert await _create(uploads, 10, request_id="k") == first
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await _create(uploads, 11, request_id="k")
    assert info.value.code() == grpc.StatusCode.ALREADY_EXISTS
