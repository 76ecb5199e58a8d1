"""The live edge (EdgeServer on 127.0.0.1:0) in front of a tiny fake Files servicer."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any, cast

import aiohttp
import grpc
import pytest
from google.api import httpbody_pb2
from google.protobuf import any_pb2, duration_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_status import rpc_status
from tunegate.edge import EdgeConfig, EdgeServer, _upload
from tunegate.edge._http import ErrorAnswer
from tunegate.metadata import ACCEPTED_KEY
from tunegate.v1 import files_pb2, files_pb2_grpc

from tests.openapi_schema import validate

CONTENT = b'{"messages": []}\n' * 1000


@dataclass
class Upload:
    metadata: list[files_pb2.FileMetadata] = field(default_factory=list)
    chunks: list[int] = field(default_factory=list)
    data: bytes = b""
    invocation: dict[str, str] = field(default_factory=dict)
    cancelled: asyncio.Event = field(default_factory=asyncio.Event)
    finished: asyncio.Event = field(default_factory=asyncio.Event)


def _rich(code: int, message: str, *details: Any) -> grpc.Status:
    packed = []
    for detail in details:
        holder = any_pb2.Any()
        holder.Pack(detail)
        packed.append(holder)
    return rpc_status.to_status(status_pb2.Status(code=code, message=message, details=packed))


class FakeFiles(files_pb2_grpc.FilesServicer):
    """Just enough of Files to exercise the edge; remembers what it received."""

    def __init__(self) -> None:
        self.uploads: list[Upload] = []
        self.seen_metadata: dict[str, str] = {}
        self.list_requests: list[files_pb2.ListFilesRequest] = []

    async def CreateFile(self, request_iterator: Any, context: Any) -> files_pb2.File:
        upload = Upload(invocation=dict(context.invocation_metadata()))
        self.uploads.append(upload)
        await context.send_initial_metadata(((ACCEPTED_KEY, "true"),))  # as the real servicer does
        try:
            async for message in request_iterator:
                if message.HasField("metadata"):
                    upload.metadata.append(message.metadata)
                else:
                    upload.chunks.append(len(message.chunk))
                    upload.data += message.chunk
            # A client cancel can surface here as a clean end of stream, with the cancellation
            # itself arriving a moment later (grpc.aio race): wait for it before committing.
            await asyncio.sleep(0.2)
        except asyncio.CancelledError:
            upload.cancelled.set()
            raise
        if context.cancelled():
            upload.cancelled.set()
            raise asyncio.CancelledError
        upload.finished.set()
        merged = files_pb2.FileMetadata()
        for meta in upload.metadata:
            merged.MergeFrom(meta)
        if merged.purpose == files_pb2.FILE_PURPOSE_UNSPECIFIED:
            await context.abort_with_status(
                _rich(
                    code_pb2.INVALID_ARGUMENT,
                    "Missing required parameter: 'purpose'.",
                    error_details_pb2.BadRequest(
                        field_violations=[error_details_pb2.BadRequest.FieldViolation(field="purpose")]
                    ),
                )
            )
        return files_pb2.File(
            id="file-new",
            bytes=len(upload.data),
            created_at=1700000000,
            filename=merged.filename,
            purpose=merged.purpose,
            status=files_pb2.FILE_STATUS_PROCESSED,
        )

    async def GetFile(self, request: files_pb2.GetFileRequest, context: Any) -> files_pb2.File:
        self.seen_metadata = dict(context.invocation_metadata())
        if request.file_id == "file-missing":
            await context.abort_with_status(
                _rich(
                    code_pb2.NOT_FOUND,
                    "No such File object: file-missing",
                    error_details_pb2.ErrorInfo(reason="FILE_NOT_FOUND", domain="tunegate"),
                    error_details_pb2.BadRequest(
                        field_violations=[error_details_pb2.BadRequest.FieldViolation(field="file_id")]
                    ),
                )
            )
        if request.file_id == "file-busy":
            await context.abort_with_status(
                _rich(
                    code_pb2.RESOURCE_EXHAUSTED,
                    "Rate limit reached.",
                    error_details_pb2.RetryInfo(
                        retry_delay=duration_pb2.Duration(seconds=1, nanos=500_000_000)
                    ),
                )
            )
        if request.file_id == "file-plain":
            await context.abort(grpc.StatusCode.PERMISSION_DENIED, "plain denial")
        return files_pb2.File(
            id=request.file_id,
            bytes=len(CONTENT),
            created_at=1700000000,
            filename="train.jsonl",
            purpose=files_pb2.FILE_PURPOSE_FINE_TUNE,
            status=files_pb2.FILE_STATUS_PROCESSED,
        )

    async def ListFiles(
        self, request: files_pb2.ListFilesRequest, context: Any
    ) -> files_pb2.ListFilesResponse:
        self.list_requests.append(request)
        return files_pb2.ListFilesResponse(
            data=[
                files_pb2.File(
                    id="file-1", filename="a", purpose=request.purpose, status=files_pb2.FILE_STATUS_PROCESSED
                )
            ],
            first_id="file-1",
            last_id="file-1",
            has_more=request.limit == 1,
        )

    async def DeleteFile(
        self, request: files_pb2.DeleteFileRequest, context: Any
    ) -> files_pb2.DeleteFileResponse:
        return files_pb2.DeleteFileResponse(id=request.file_id, deleted=True)

    async def GetFileContent(
        self, request: files_pb2.GetFileContentRequest, context: Any
    ) -> AsyncIterator[Any]:
        if request.file_id == "file-missing":
            await context.abort(grpc.StatusCode.NOT_FOUND, "No such File object: file-missing")
        await context.send_initial_metadata(
            [
                ("x-content-length", str(len(CONTENT))),
                ("content-disposition", 'attachment; filename="train.jsonl"'),
            ]
        )
        step = len(CONTENT) // 3 + 1
        for start in range(0, len(CONTENT), step):
            yield httpbody_pb2.HttpBody(content_type="application/jsonl", data=CONTENT[start : start + step])
            if request.file_id == "file-broken":
                await context.abort(grpc.StatusCode.DATA_LOSS, "disk gone")


@dataclass
class Stack:
    fake: FakeFiles
    edge: EdgeServer
    health: Any  # grpc_health.v1.health.aio.HealthServicer (absent from the stubs)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.edge.port}"


async def _start(
    config_overrides: dict[str, Any], fake: FakeFiles | None = None
) -> tuple[Stack, grpc.aio.Server]:
    server = grpc.aio.server()
    fake = fake or FakeFiles()
    files_pb2_grpc.add_FilesServicer_to_server(fake, server)
    health_servicer = health.aio.HealthServicer()  # type: ignore[attr-defined]
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    config = EdgeConfig(grpc_target=f"127.0.0.1:{port}", port=0, **config_overrides)
    edge = await EdgeServer.start(config)
    return Stack(fake, edge, health_servicer), server


@contextlib.asynccontextmanager
async def running_edge(fake: FakeFiles | None = None, **config: Any) -> AsyncIterator[Stack]:
    """A live edge (``config`` overriding EdgeConfig's fields) and its fake server, for a block."""
    running, server = await _start(config, fake)
    try:
        yield running
    finally:
        await running.edge.stop()
        await server.stop(None)


@pytest.fixture
async def stack() -> AsyncIterator[Stack]:
    async with running_edge(max_file_bytes=100_000, chunk_bytes=64 * 1024) as running:
        yield running


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


def form(*fields: tuple[str, Any], filename: str = "train.jsonl") -> aiohttp.FormData:
    data = aiohttp.FormData(default_to_multipart=True)
    for name, value in fields:
        if isinstance(value, bytes):
            data.add_field(name, value, filename=filename, content_type="application/jsonl")
        else:
            data.add_field(name, value)
    return data


async def test_upload_streams_metadata_then_chunks(stack: Stack, http: aiohttp.ClientSession) -> None:
    payload = b"x" * 90_000
    headers = {"Authorization": "Bearer sk-secret", "Idempotency-Key": "idem-7"}
    async with http.post(
        stack.url + "/v1/files", data=form(("purpose", "fine-tune"), ("file", payload)), headers=headers
    ) as resp:
        body = await resp.json()
        assert resp.status == 200, body
        assert resp.headers["x-request-id"].startswith("req_")
    assert body["filename"] == "train.jsonl" and body["purpose"] == "fine-tune" and body["bytes"] == 90_000
    validate("OpenAIFile", body)
    (upload,) = stack.fake.uploads
    first = upload.metadata[0]
    assert first.filename == "train.jsonl" and first.content_type == "application/jsonl"
    assert first.purpose == files_pb2.FILE_PURPOSE_FINE_TUNE and first.request_id == "idem-7"
    # The closing metadata message is the end-of-part marker: the byte count, nothing else.
    assert len(upload.metadata) == 2 and upload.data == payload
    assert upload.metadata[1] == files_pb2.FileMetadata(bytes=90_000)
    assert upload.invocation["authorization"] == "Bearer sk-secret"
    assert upload.invocation["x-request-id"] == resp.headers["x-request-id"]


async def test_fields_after_the_file_become_a_second_metadata_message(
    stack: Stack, http: aiohttp.ClientSession
) -> None:
    data = form(("file", b"abc"), ("purpose", "fine-tune"), ("expires_after[anchor]", "created_at"))
    async with http.post(stack.url + "/v1/files", data=data) as resp:
        assert resp.status == 200, await resp.text()
    (upload,) = stack.fake.uploads
    assert [m.purpose for m in upload.metadata] == [0, files_pb2.FILE_PURPOSE_FINE_TUNE]
    assert upload.metadata[1].expires_after.anchor == files_pb2.EXPIRES_AFTER_ANCHOR_CREATED_AT


async def test_large_upload_is_chunked_at_256k_or_more() -> None:
    running, server = await _start({"chunk_bytes": 64 * 1024})
    try:
        payload = bytes(range(256)) * 4096 + b"tail"  # 1 MiB + 4
        async with (
            aiohttp.ClientSession() as http,
            http.post(
                f"{running.url}/v1/files", data=form(("purpose", "fine-tune"), ("file", payload))
            ) as resp,
        ):
            assert resp.status == 200, await resp.text()
        (upload,) = running.fake.uploads
        assert upload.data == payload
        assert all(size >= 256 * 1024 for size in upload.chunks[:-1]), upload.chunks
    finally:
        await running.edge.stop()
        await server.stop(None)


async def test_over_limit_is_413_and_the_call_is_cancelled() -> None:
    # 600 kB limit, 1 MB file: the edge gives up after the chunks that fit.
    running, server = await _start({"max_file_bytes": 600_000, "chunk_bytes": 64 * 1024})
    try:
        data = form(("purpose", "fine-tune"), ("file", b"y" * 1_000_000))
        async with aiohttp.ClientSession() as http, http.post(running.url + "/v1/files", data=data) as resp:
            body = await resp.json()
            assert resp.status == 413
            assert resp.headers["x-should-retry"] == "false" and resp.headers["x-request-id"]
        assert body["error"]["param"] == "file" and body["error"]["code"] == "file_too_large"
        validate("ErrorResponse", body)
        # The 413 can reach the client before the server's handler has run (or the server may never
        # see the call at all); what must hold is that no call the server saw ran to completion.
        for _ in range(50):
            if running.fake.uploads:
                break
            await asyncio.sleep(0.02)
        assert len(running.fake.uploads) <= 1
        for upload in running.fake.uploads:
            await asyncio.wait_for(upload.cancelled.wait(), 5)
            assert not upload.finished.is_set()
            assert sum(upload.chunks) <= 600_000
    finally:
        await running.edge.stop()
        await server.stop(None)


async def test_upload_form_errors(stack: Stack, http: aiohttp.ClientSession) -> None:
    cases = [
        (form(("purpose", "fine-tune")), 400, "file", "missing_required_parameter"),
        (form(("purpose", "fine-tune"), ("colour", "blue"), ("file", b"a")), 400, "colour", None),
        (form(("purpose", "weights"), ("file", b"a")), 400, "purpose", None),
        (form(("file", b"a"), ("file", b"b")), 400, "file", None),
    ]
    for data, status, param, code in cases:
        async with http.post(stack.url + "/v1/files", data=data) as resp:
            body = await resp.json()
            assert resp.status == status, body
            assert body["error"]["param"] == param, body
            assert code is None or body["error"]["code"] == code
    async with http.post(stack.url + "/v1/files", json={"purpose": "fine-tune"}) as resp:
        assert resp.status == 400


async def test_server_rejection_mid_stream_is_the_servers_error(
    stack: Stack, http: aiohttp.ClientSession
) -> None:
    async with http.post(stack.url + "/v1/files", data=form(("file", b"abc"))) as resp:
        body = await resp.json()
    assert resp.status == 400 and body["error"]["param"] == "purpose"


async def test_non_utf8_filename_is_rejected(stack: Stack, http: aiohttp.ClientSession) -> None:
    boundary = "bnd"
    raw = (
        b'--bnd\r\nContent-Disposition: form-data; name="purpose"\r\n\r\nfine-tune\r\n'
        b'--bnd\r\nContent-Disposition: form-data; name="file"; filename="\xff\xfe.jsonl"\r\n\r\n'
        b"{}\r\n--bnd--\r\n"
    )
    headers = {"Content-Type": f"multipart/form-data; boundary={boundary}"}
    async with http.post(stack.url + "/v1/files", data=raw, headers=headers) as resp:
        body = await resp.json()
    assert resp.status == 400
    assert body["error"]["param"] == "file" and body["error"]["code"] == "invalid_filename"


async def test_unimplemented_upload_service_is_501_not_retried(
    stack: Stack, http: aiohttp.ClientSession
) -> None:
    async with http.post(stack.url + "/v1/uploads/upload_1/parts", data=form(("data", b"abc"))) as resp:
        body = await resp.json()
    assert resp.status == 501 and resp.headers["x-should-retry"] == "false"
    validate("ErrorResponse", body)


async def test_a_failed_write_does_not_replace_the_servers_status(stack: Stack) -> None:
    """grpc.aio overwrites a call's status with INTERNAL when a write fails; in a race the
    server's own status had arrived first (CI: an UNIMPLEMENTED upload answered 500). The edge
    answers the server's status."""
    async with grpc.aio.insecure_channel(stack.edge.config.grpc_target) as channel:
        rpc = channel.stream_unary(
            "/tunegate.v1.Uploads/AddUploadPart",
            request_serializer=files_pb2.FileMetadata.SerializeToString,
            response_deserializer=files_pb2.File.FromString,
        )
        calls = [rpc(None), rpc(None)]
        statuses = [_upload._ServerStatus(call) for call in calls]
        for call in calls:
            assert await call.code() == grpc.StatusCode.UNIMPLEMENTED
            cast(Any, call)._cython_call.set_internal_error("send failed")  # what a failed write() does
        with pytest.raises(ErrorAnswer) as witnessed:
            await _upload._outcome(calls[0], statuses[0])
        with pytest.raises(ErrorAnswer) as unwitnessed:
            await _upload._outcome(calls[1], None)
    assert witnessed.value.error.status == 501
    assert unwitnessed.value.error.status == 500  # grpc's overwrite, still there in this grpcio


async def test_get_forwards_allow_listed_headers(stack: Stack, http: aiohttp.ClientSession) -> None:
    headers = {
        "Authorization": "Bearer sk-1",
        "X-Portkey-Provider": "openai",
        "Cookie": "c=1",
        "X-Request-Id": "mine",
    }
    async with http.get(stack.url + "/v1/files/file-abc", headers=headers) as resp:
        body = await resp.json()
        assert resp.status == 200 and resp.headers["x-request-id"] == "mine"
    assert body["id"] == "file-abc"
    validate("OpenAIFile", body)
    seen = stack.fake.seen_metadata
    assert seen["authorization"] == "Bearer sk-1" and seen["x-portkey-provider"] == "openai"
    assert seen["x-request-id"] == "mine" and "cookie" not in seen


async def test_list_query_parsing(stack: Stack, http: aiohttp.ClientSession) -> None:
    async with http.get(stack.url + "/v1/files?limit=1&purpose=fine-tune&after=file-0&bogus=1") as resp:
        body = await resp.json()
        assert resp.status == 200, body
    assert body["has_more"] is True
    validate("ListFilesResponse", body)
    (request,) = stack.fake.list_requests
    assert (
        request.limit == 1
        and request.after == "file-0"
        and request.purpose == files_pb2.FILE_PURPOSE_FINE_TUNE
    )
    async with http.get(stack.url + "/v1/files?limit=ten") as resp:
        body = await resp.json()
    assert resp.status == 400 and body["error"]["param"] == "limit"


async def test_rich_errors_end_to_end(stack: Stack, http: aiohttp.ClientSession) -> None:
    async with http.get(stack.url + "/v1/files/file-missing", headers={"X-Request-Id": "trace-1"}) as resp:
        body = await resp.json()
        assert resp.status == 404
        assert resp.headers["x-request-id"] == "trace-1" and resp.headers["x-should-retry"] == "false"
    assert body == {
        "error": {
            "message": "No such File object: file-missing",
            "type": "invalid_request_error",
            "param": "file_id",
            "code": "file_not_found",
        }
    }
    async with http.get(stack.url + "/v1/files/file-busy") as resp:
        body = await resp.json()
        assert resp.status == 429 and resp.headers["x-should-retry"] == "true"
        assert resp.headers["retry-after"] == "2" and resp.headers["retry-after-ms"] == "1500"
    assert body["error"]["type"] == "rate_limit_error"
    async with http.get(stack.url + "/v1/files/file-plain") as resp:
        body = await resp.json()
    assert resp.status == 403 and body["error"] == {
        "message": "plain denial",
        "type": "permission_error",
        "param": None,
        "code": None,
    }


async def test_download(stack: Stack, http: aiohttp.ClientSession) -> None:
    headers = {"Accept": "application/binary"}
    async with http.get(stack.url + "/v1/files/file-abc/content", headers=headers) as resp:
        data = await resp.read()
        assert resp.status == 200
        assert resp.headers["Content-Type"] == "application/jsonl"
        assert resp.headers["Content-Length"] == str(len(CONTENT))
        assert resp.headers["Content-Disposition"] == 'attachment; filename="train.jsonl"'
        assert resp.headers["x-request-id"]
    assert data == CONTENT


async def test_download_error_before_first_byte_is_json(stack: Stack, http: aiohttp.ClientSession) -> None:
    async with http.get(stack.url + "/v1/files/file-missing/content") as resp:
        body = await resp.json()
        assert resp.status == 404 and resp.headers["x-request-id"]
    assert body["error"]["message"] == "No such File object: file-missing"


async def test_download_error_after_first_byte_aborts(stack: Stack, http: aiohttp.ClientSession) -> None:
    with pytest.raises(aiohttp.ClientPayloadError):
        async with http.get(stack.url + "/v1/files/file-broken/content") as resp:
            assert resp.status == 200
            await resp.read()


async def test_unknown_route_and_wrong_verb(stack: Stack, http: aiohttp.ClientSession) -> None:
    async with http.get(stack.url + "/v1/nothing/here") as resp:
        body = await resp.json()
        assert resp.status == 404 and resp.headers["x-request-id"]
    assert body["error"]["code"] == "unknown_url" and body["error"]["type"] == "invalid_request_error"
    async with http.put(stack.url + "/v1/files") as resp:
        body = await resp.json()
        assert resp.status == 405 and resp.headers["x-request-id"]
    assert body["error"]["code"] == "method_not_allowed"
    assert resp.headers["Allow"] == "GET,POST"
    async with http.get(stack.url + "/v1/files/") as resp:  # an empty segment matches no {field}
        assert resp.status == 404
    async with http.head(stack.url + "/healthz") as resp:
        assert resp.status == 200 and resp.headers["x-request-id"]
    validate("ErrorResponse", body)


async def test_json_body_errors(stack: Stack, http: aiohttp.ClientSession) -> None:
    url = stack.url + "/v1/fine_tuning/jobs"
    async with http.post(url, data=b"{not json", headers={"Content-Type": "application/json"}) as resp:
        body = await resp.json()
    assert resp.status == 400 and body["error"]["code"] == "invalid_json"
    async with http.post(url, json={"model": "m", "colour": "blue"}) as resp:
        body = await resp.json()
    assert resp.status == 400 and body["error"]["param"] == "colour"
    assert body["error"]["message"] == "Unrecognized request argument supplied: colour"
    async with http.post(url, json={"model": "m"}) as resp:  # FineTuning is not served by the fake
        body = await resp.json()
    assert resp.status == 501 and resp.headers["x-should-retry"] == "false"


async def test_healthz(stack: Stack, http: aiohttp.ClientSession) -> None:
    async with http.get(stack.url + "/healthz") as resp:
        assert resp.status == 200 and await resp.json() == {"status": "SERVING"}
    await stack.health.set("", health_pb2.HealthCheckResponse.NOT_SERVING)
    async with http.get(stack.url + "/healthz") as resp:
        assert resp.status == 503
