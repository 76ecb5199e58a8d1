"""Helpers shared by the server tests."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import grpc
import grpc.aio
import sqlalchemy as sa
from google.rpc import error_details_pb2
from grpc_status import rpc_status
from tunegate.server import GatewayServer
from tunegate.server.store import Database
from tunegate.server.store._schema import job_polls
from tunegate.v1 import files_pb2, files_pb2_grpc

Metadata = Sequence[tuple[str, str]]
CHUNK = 16 * 1024


def bearer(token: str) -> Metadata:
    return (("authorization", f"Bearer {token}"),)


async def create_file(
    stub: files_pb2_grpc.FilesAsyncStub,
    data: bytes,
    *,
    filename: str = "train.jsonl",
    purpose: files_pb2.FilePurpose.ValueType = files_pb2.FILE_PURPOSE_FINE_TUNE,
    metadata_first: bool = True,
    expires_after: files_pb2.ExpiresAfter | None = None,
    content_type: str = "",
    request_id: str = "",
    md: Metadata = (),
) -> files_pb2.File:
    """Upload `data` in CHUNK-sized messages with one metadata message before or after them."""
    meta = files_pb2.FileMetadata(
        filename=filename, purpose=purpose, content_type=content_type, request_id=request_id, bytes=len(data)
    )
    if expires_after is not None:
        meta.expires_after.CopyFrom(expires_after)
    messages = [files_pb2.CreateFileRequest(chunk=data[i : i + CHUNK]) for i in range(0, len(data), CHUNK)]
    head = files_pb2.CreateFileRequest(metadata=meta)
    messages = [head, *messages] if metadata_first else [*messages, head]
    result: files_pb2.File = await stream_call(stub.CreateFile, messages, md)
    return result


async def stream_call(method: Any, messages: Sequence[Any], md: Metadata = ()) -> Any:
    """A client-streaming call in the write() style, as the edge makes it: when the server
    rejects the stream early, a further write fails with a bare INTERNAL, and the real status
    comes from awaiting the call (a request iterator would race and surface that INTERNAL)."""
    call = method(metadata=md)
    try:
        for message in messages:
            await call.write(message)
        await call.done_writing()
    except (grpc.aio.AioRpcError, asyncio.InvalidStateError):
        pass
    return await call


def error_of(exc: grpc.aio.AioRpcError) -> tuple[grpc.StatusCode, str, str | None]:
    """(status code, ErrorInfo.reason, first BadRequest field or None)."""
    status = rpc_status.from_call(exc)  # type: ignore[arg-type]  # works on AioRpcError
    assert status is not None, f"no rich status on {exc.code()}: {exc.details()}"
    reason, field = "", None
    for detail in status.details:
        if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            info = error_details_pb2.ErrorInfo()
            detail.Unpack(info)
            assert info.domain == "tunegate"
            reason = info.reason
        elif detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
            bad = error_details_pb2.BadRequest()
            detail.Unpack(bad)
            field = bad.field_violations[0].field
    return exc.code(), reason, field


async def list_all(stub: files_pb2_grpc.FilesAsyncStub, md: Metadata = ()) -> list[str]:
    response = await stub.ListFiles(files_pb2.ListFilesRequest(), metadata=md)
    return [f.id for f in response.data]


def stored_blobs(gateway: GatewayServer) -> list[Path]:
    return sorted((gateway.config.data_dir / "blobs").iterdir())


def tmp_files(gateway: GatewayServer) -> list[Path]:
    return sorted((gateway.config.data_dir / "tmp").iterdir())


async def eventually_empty(gateway: GatewayServer, within: float = 3.0) -> None:
    """Wait until the server has cleaned up an interrupted write (tmp dir empty)."""
    deadline = asyncio.get_running_loop().time() + within
    while tmp_files(gateway):
        assert asyncio.get_running_loop().time() < deadline, f"tmp not cleaned: {tmp_files(gateway)}"
        await asyncio.sleep(0.02)


async def assert_nothing_stored(
    gateway: GatewayServer, stub: files_pb2_grpc.FilesAsyncStub, md: Metadata = ()
) -> None:
    await eventually_empty(gateway)
    assert await list_all(stub, md) == []
    assert stored_blobs(gateway) == []


def poll_counts(database_url: str) -> dict[str, int]:
    """Each followed job's poll count, as the replicas recorded it (`job_polls`)."""

    async def read() -> dict[str, int]:
        database = await Database.open(database_url)
        try:
            async with database.engine.connect() as conn:
                rows = await conn.execute(sa.select(job_polls.c.job_id, job_polls.c.polls))
                return {job_id: int(polls) for job_id, polls in rows}
        finally:
            await database.close()

    return asyncio.run(read())
