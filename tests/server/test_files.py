"""Files over gRPC against a real server, on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import os
from typing import TYPE_CHECKING

import grpc
import grpc.aio
import pytest
from tunegate.server import GatewayServer
from tunegate.v1 import files_pb2, files_pb2_grpc

from tests.server.conftest import FakeClock, StartGateway
from tests.server.support import (
    CHUNK,
    assert_nothing_stored,
    bearer,
    create_file,
    error_of,
    eventually_empty,
    list_all,
    stored_blobs,
    stream_call,
)

if TYPE_CHECKING:
    Stub = files_pb2_grpc.FilesAsyncStub
DATA = b"".join(b'{"messages": [{"role": "user", "content": "line %d"}]}\n' % i for i in range(2000))


@pytest.mark.parametrize("metadata_first", [True, False])
async def test_create_get_list_content_delete(
    files: Stub, gateway: GatewayServer, clock: FakeClock, metadata_first: bool
) -> None:
    created = await create_file(files, DATA, content_type="application/jsonl", metadata_first=metadata_first)
    assert created.id.startswith("file-") and len(created.id) == 29
    assert created.bytes == len(DATA)
    assert created.filename == "train.jsonl"
    assert created.purpose == files_pb2.FILE_PURPOSE_FINE_TUNE
    assert created.status == files_pb2.FILE_STATUS_PROCESSED
    assert created.created_at == int(clock.now)
    assert not created.HasField("expires_at")

    assert await files.GetFile(files_pb2.GetFileRequest(file_id=created.id)) == created
    listed = await files.ListFiles(files_pb2.ListFilesRequest())
    assert list(listed.data) == [created]
    assert (listed.first_id, listed.last_id, listed.has_more) == (created.id, created.id, False)

    call = files.GetFileContent(files_pb2.GetFileContentRequest(file_id=created.id))
    headers = dict(await call.initial_metadata())
    assert headers["x-content-length"] == str(len(DATA))
    assert headers["content-disposition"] == 'attachment; filename="train.jsonl"'
    bodies = [body async for body in call]
    assert bodies[0].content_type == "application/jsonl"
    assert b"".join(b.data for b in bodies) == DATA
    assert all(len(b.data) <= 1024 * 1024 for b in bodies)

    assert len(stored_blobs(gateway)) == 1
    deleted = await files.DeleteFile(files_pb2.DeleteFileRequest(file_id=created.id))
    assert (deleted.id, deleted.deleted) == (created.id, True)
    assert stored_blobs(gateway) == []
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await files.GetFile(files_pb2.GetFileRequest(file_id=created.id))
    assert error_of(info.value) == (grpc.StatusCode.NOT_FOUND, "FILE_NOT_FOUND", "file_id")
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await files.DeleteFile(files_pb2.DeleteFileRequest(file_id=created.id))
    assert error_of(info.value) == (grpc.StatusCode.NOT_FOUND, "FILE_NOT_FOUND", "file_id")
    assert await list_all(files) == []


async def test_metadata_messages_merge_later_fields_win(files: Stub) -> None:
    first = files_pb2.FileMetadata(filename="draft.txt", purpose=files_pb2.FILE_PURPOSE_BATCH)
    second = files_pb2.FileMetadata(filename="final.jsonl")  # purpose unset: the earlier one stays
    third = files_pb2.FileMetadata(purpose=files_pb2.FILE_PURPOSE_EVALS, bytes=2)
    stream = [
        files_pb2.CreateFileRequest(metadata=first),
        files_pb2.CreateFileRequest(chunk=b"a"),
        files_pb2.CreateFileRequest(metadata=second),
        files_pb2.CreateFileRequest(chunk=b"b"),
        files_pb2.CreateFileRequest(metadata=third),
    ]
    created = await files.CreateFile(iter(stream))
    assert (created.filename, created.purpose, created.bytes) == (
        "final.jsonl",
        files_pb2.FILE_PURPOSE_EVALS,
        2,
    )


async def test_non_ascii_filename_in_content_disposition(files: Stub) -> None:
    created = await create_file(files, b"x", filename='résumé "v2".jsonl')
    call = files.GetFileContent(files_pb2.GetFileContentRequest(file_id=created.id))
    disposition = dict(await call.initial_metadata())["content-disposition"]
    assert isinstance(disposition, str)
    assert disposition.startswith("attachment; filename=\"r_sum_ _v2_.jsonl\"; filename*=UTF-8''r%C3%A9sum")
    assert [b.data async for b in call] == [b"x"]


async def test_pagination_both_orders_and_purpose(files: Stub) -> None:
    ids = [(await create_file(files, b"%d" % i, filename=f"f{i}.jsonl")).id for i in range(7)]
    batch = await create_file(files, b"b", purpose=files_pb2.FILE_PURPOSE_BATCH)

    async def pages(
        order: files_pb2.ListOrder.ValueType,
        purpose: files_pb2.FilePurpose.ValueType = files_pb2.FILE_PURPOSE_UNSPECIFIED,
    ) -> list[list[str]]:
        out: list[list[str]] = []
        after = ""
        while True:
            page = await files.ListFiles(
                files_pb2.ListFilesRequest(limit=3, order=order, after=after, purpose=purpose)
            )
            out.append([f.id for f in page.data])
            assert page.first_id == out[-1][0] and page.last_id == out[-1][-1]
            if not page.has_more:
                return out
            after = page.last_id

    fine_tune = files_pb2.FILE_PURPOSE_FINE_TUNE
    assert await pages(files_pb2.LIST_ORDER_ASC, fine_tune) == [ids[0:3], ids[3:6], ids[6:7]]
    desc = list(reversed(ids))
    assert await pages(files_pb2.LIST_ORDER_DESC, fine_tune) == [desc[0:3], desc[3:6], desc[6:7]]
    assert await pages(files_pb2.LIST_ORDER_UNSPECIFIED) == [
        [batch.id, *desc[0:2]],
        desc[2:5],
        desc[5:7],
    ]  # default: desc
    only_batch = await files.ListFiles(files_pb2.ListFilesRequest(purpose=files_pb2.FILE_PURPOSE_BATCH))
    assert [f.id for f in only_batch.data] == [batch.id]

    # Stable under concurrent inserts: a file created between pages does not shift page 2.
    first = await files.ListFiles(files_pb2.ListFilesRequest(limit=3, purpose=fine_tune))
    await create_file(files, b"late")
    second = await files.ListFiles(
        files_pb2.ListFilesRequest(limit=3, purpose=fine_tune, after=first.last_id)
    )
    assert [f.id for f in second.data] == desc[3:6]

    # A deleted file still works as a cursor.
    await files.DeleteFile(files_pb2.DeleteFileRequest(file_id=ids[3]))
    after_deleted = await files.ListFiles(
        files_pb2.ListFilesRequest(order=files_pb2.LIST_ORDER_ASC, after=ids[3], purpose=fine_tune)
    )
    assert [f.id for f in after_deleted.data][:3] == ids[4:7]

    # An exact page boundary: has_more is false when nothing follows.
    tail = await files.ListFiles(
        files_pb2.ListFilesRequest(limit=1, order=files_pb2.LIST_ORDER_ASC, after=ids[5])
    )
    assert tail.has_more is True
    exact = await files.ListFiles(files_pb2.ListFilesRequest(limit=10_000))
    assert exact.has_more is False and len(exact.data) == 8


@pytest.mark.parametrize(
    ("request_", "field", "reason"),
    [
        (files_pb2.ListFilesRequest(limit=0), "limit", "INVALID_VALUE"),
        (files_pb2.ListFilesRequest(limit=10_001), "limit", "INVALID_VALUE"),
        (files_pb2.ListFilesRequest(after="not-an-id"), "after", "INVALID_CURSOR"),
        (files_pb2.ListFilesRequest(after="file-" + "A" * 24), "after", "INVALID_CURSOR"),
    ],
)
async def test_list_rejects_bad_arguments(
    files: Stub, request_: files_pb2.ListFilesRequest, field: str, reason: str
) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await files.ListFiles(request_)
    assert error_of(info.value) == (grpc.StatusCode.INVALID_ARGUMENT, reason, field)


async def test_cursor_of_another_owner_is_invalid(files: Stub) -> None:
    theirs = await create_file(files, b"x", md=bearer("A"))
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await files.ListFiles(files_pb2.ListFilesRequest(after=theirs.id), metadata=bearer("B"))
    assert error_of(info.value)[1:] == ("INVALID_CURSOR", "after")


@pytest.mark.parametrize(
    ("kwargs", "field", "reason"),
    [
        ({"purpose": files_pb2.FILE_PURPOSE_UNSPECIFIED}, "purpose", "MISSING_REQUIRED_PARAMETER"),
        ({"purpose": files_pb2.FILE_PURPOSE_FINE_TUNE_RESULTS}, "purpose", "INVALID_PURPOSE"),
        ({"purpose": files_pb2.FILE_PURPOSE_BATCH_OUTPUT}, "purpose", "INVALID_PURPOSE"),
        ({"filename": "../x.jsonl"}, "file", "INVALID_FILENAME"),
        ({"filename": ".."}, "file", "INVALID_FILENAME"),
        ({"filename": "a\\b.jsonl"}, "file", "INVALID_FILENAME"),
        ({"filename": "a\x00b"}, "file", "INVALID_FILENAME"),
        ({"filename": "new\nline"}, "file", "INVALID_FILENAME"),
        ({"filename": "x" * 256}, "file", "INVALID_FILENAME"),
        ({"filename": ""}, "file", "INVALID_FILENAME"),
        (
            {"expires_after": files_pb2.ExpiresAfter(seconds=3600)},
            "expires_after.anchor",
            "INVALID_VALUE",
        ),
        (
            {
                "expires_after": files_pb2.ExpiresAfter(
                    anchor=files_pb2.EXPIRES_AFTER_ANCHOR_CREATED_AT, seconds=60
                )
            },
            "expires_after.seconds",
            "INVALID_VALUE",
        ),
    ],
)
@pytest.mark.parametrize("metadata_first", [True, False])
async def test_bad_create_stores_nothing(
    files: Stub,
    gateway: GatewayServer,
    kwargs: dict[str, object],
    field: str,
    reason: str,
    metadata_first: bool,
) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await create_file(files, DATA, metadata_first=metadata_first, **kwargs)  # type: ignore[arg-type]
    assert error_of(info.value) == (grpc.StatusCode.INVALID_ARGUMENT, reason, field)
    await assert_nothing_stored(gateway, files)


async def test_no_chunks_is_missing_file(files: Stub, gateway: GatewayServer) -> None:
    meta = files_pb2.FileMetadata(filename="a.jsonl", purpose=files_pb2.FILE_PURPOSE_FINE_TUNE, bytes=0)
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await stream_call(files.CreateFile, [files_pb2.CreateFileRequest(metadata=meta)])
    assert error_of(info.value) == (grpc.StatusCode.INVALID_ARGUMENT, "MISSING_REQUIRED_PARAMETER", "file")
    await assert_nothing_stored(gateway, files)


async def test_over_limit_is_rejected_without_reading_on(files: Stub, gateway: GatewayServer) -> None:
    too_big = b"x" * (gateway.config.max_file_bytes + 1)
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await create_file(files, too_big)
    assert error_of(info.value) == (grpc.StatusCode.INVALID_ARGUMENT, "FILE_TOO_LARGE", "file")
    await assert_nothing_stored(gateway, files)
    exactly = await create_file(files, b"x" * gateway.config.max_file_bytes)
    assert exactly.bytes == gateway.config.max_file_bytes


@pytest.mark.parametrize(
    ("declared", "reason"), [(None, "MISSING_REQUIRED_PARAMETER"), (5, "INCOMPLETE_UPLOAD")]
)
async def test_stream_without_matching_size_is_not_stored(
    files: Stub, gateway: GatewayServer, declared: int | None, reason: str
) -> None:
    """A stream that ends early (a cut-short client) must not commit: the size marker decides."""
    meta = files_pb2.FileMetadata(filename="a.jsonl", purpose=files_pb2.FILE_PURPOSE_FINE_TUNE)
    if declared is not None:
        meta.bytes = declared
    stream = [files_pb2.CreateFileRequest(metadata=meta), files_pb2.CreateFileRequest(chunk=b"abc")]
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await stream_call(files.CreateFile, stream)
    assert error_of(info.value) == (grpc.StatusCode.INVALID_ARGUMENT, reason, "bytes")
    await assert_nothing_stored(gateway, files)


async def test_client_cancel_mid_stream_leaves_nothing(files: Stub, gateway: GatewayServer) -> None:
    call = files.CreateFile()  # type: ignore[call-arg]  # the stubs miss the write() style
    meta = files_pb2.FileMetadata(filename="a.jsonl", purpose=files_pb2.FILE_PURPOSE_FINE_TUNE)
    await call.write(files_pb2.CreateFileRequest(metadata=meta))
    for _ in range(4):
        await call.write(files_pb2.CreateFileRequest(chunk=b"y" * CHUNK))
    tmp = gateway.config.data_dir / "tmp"
    for _ in range(100):  # the server has opened its tmp file
        if any(tmp.iterdir()):
            break
        await asyncio.sleep(0.01)
    call.cancel()
    with pytest.raises(asyncio.CancelledError):
        await call
    await eventually_empty(gateway)
    await assert_nothing_stored(gateway, files)


async def test_owner_scoping(files: Stub) -> None:
    mine = await create_file(files, b"secret", md=bearer("A"))
    via_api_key = await files.ListFiles(files_pb2.ListFilesRequest(), metadata=(("api-key", "A"),))
    assert [f.id for f in via_api_key.data] == [mine.id]
    for md in (bearer("B"), ()):
        assert await list_all(files, md) == []
        for call in (
            files.GetFile(files_pb2.GetFileRequest(file_id=mine.id), metadata=md),
            files.DeleteFile(files_pb2.DeleteFileRequest(file_id=mine.id), metadata=md),
        ):
            with pytest.raises(grpc.aio.AioRpcError) as info:
                await call
            assert info.value.code() == grpc.StatusCode.NOT_FOUND
        content = files.GetFileContent(files_pb2.GetFileContentRequest(file_id=mine.id), metadata=md)
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await content.read()
        assert info.value.code() == grpc.StatusCode.NOT_FOUND
    assert (
        await files.GetFile(files_pb2.GetFileRequest(file_id=mine.id), metadata=bearer("A"))
    ).id == mine.id


async def test_expires_after_and_sweep(files: Stub, gateway: GatewayServer, clock: FakeClock) -> None:
    policy = files_pb2.ExpiresAfter(anchor=files_pb2.EXPIRES_AFTER_ANCHOR_CREATED_AT, seconds=3600)
    short = await create_file(files, b"short", expires_after=policy)
    assert short.expires_at == short.created_at + 3600
    batch = await create_file(files, b"batch", purpose=files_pb2.FILE_PURPOSE_BATCH)
    assert batch.expires_at == batch.created_at + 30 * 24 * 3600
    keep = await create_file(files, b"keep")

    clock.advance(3600)
    assert set(await list_all(files)) == {batch.id, keep.id}
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await files.GetFile(files_pb2.GetFileRequest(file_id=short.id))
    assert info.value.code() == grpc.StatusCode.NOT_FOUND
    # An expired file's id still works as a cursor.
    page = await files.ListFiles(files_pb2.ListFilesRequest(after=short.id))
    assert [f.id for f in page.data] == []

    assert len(stored_blobs(gateway)) == 3
    await gateway.sweep()
    assert len(stored_blobs(gateway)) == 2
    clock.advance(30 * 24 * 3600)
    await gateway.sweep()
    assert await list_all(files) == [keep.id]
    assert len(stored_blobs(gateway)) == 1


async def test_idempotent_create(files: Stub, gateway: GatewayServer) -> None:
    first = await create_file(files, b"same", request_id="key-1")
    again = await create_file(files, b"same", request_id="key-1")
    assert again == first
    header = await create_file(files, b"same", md=(("idempotency-key", "key-1"),))
    assert header == first
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await create_file(files, b"different", request_id="key-1")
    assert error_of(info.value) == (grpc.StatusCode.ALREADY_EXISTS, "IDEMPOTENCY_KEY_REUSED", "request_id")
    assert len(stored_blobs(gateway)) == 1
    await eventually_empty(gateway)


async def test_restart_keeps_files(start_gateway: StartGateway, database_url: str | None) -> None:
    gateway = await start_gateway(database_url=database_url)
    async with grpc.aio.insecure_channel(gateway.address) as ch:
        stub: Stub = files_pb2_grpc.FilesStub(ch)
        created = await create_file(stub, b"durable")
    # Leave a stale tmp file behind, as a crash would; start-up sweeps it.
    (gateway.config.data_dir / "tmp" / "dead.part").write_bytes(b"partial")
    await gateway.stop(0)
    again = await start_gateway(database_url=database_url, data_dir=gateway.config.data_dir)
    if database_url is not None:
        return  # the fixture truncates the shared PostgreSQL database on start
    assert os.listdir(again.config.data_dir / "tmp") == []
    async with grpc.aio.insecure_channel(again.address) as ch:
        stub = files_pb2_grpc.FilesStub(ch)
        assert (await stub.GetFile(files_pb2.GetFileRequest(file_id=created.id))).bytes == 7
