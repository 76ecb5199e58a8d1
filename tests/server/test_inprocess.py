"""The in-process channel behaves like a gRPC connection to the same server.

Equivalence is checked against the real network path: of one running gateway, and of a probe
service registered both on a `grpc.aio` server and in a `HandlerTable`; the stream and deadline
mechanics against small handlers registered directly in a `HandlerTable`.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import grpc
import grpc.aio
import pytest
from google.api import httpbody_pb2
from google.protobuf import wrappers_pb2
from grpc_status import rpc_status
from tunegate.server.app import GatewayServer
from tunegate.server.errors import NotFound
from tunegate.server.inprocess import HandlerTable, InProcessChannel
from tunegate.v1 import files_pb2, fine_tuning_pb2

_EOF = grpc.aio.EOF  # type: ignore[attr-defined]
_GET_FILE = "/tunegate.v1.Files/GetFile"
_CREATE_FILE = "/tunegate.v1.Files/CreateFile"
_CONTENT = "/tunegate.v1.Files/GetFileContent"
_KEY = (("authorization", "Bearer sk-inprocess"),)


def _unary(channel: Any, method: str, response: Any, request: Any = files_pb2.GetFileRequest) -> Any:
    return channel.unary_unary(
        method,
        request_serializer=request.SerializeToString,
        response_deserializer=response.FromString,
    )


def _create_file(channel: Any) -> Any:
    return channel.stream_unary(
        _CREATE_FILE, files_pb2.CreateFileRequest.SerializeToString, files_pb2.File.FromString
    )


def _content(channel: Any) -> Any:
    return channel.unary_stream(
        _CONTENT, files_pb2.GetFileContentRequest.SerializeToString, httpbody_pb2.HttpBody.FromString
    )


async def _upload(channel: Any, data: bytes, purpose: files_pb2.FilePurpose.ValueType) -> Any:
    call = _create_file(channel)(None, metadata=_KEY, timeout=5)
    meta = files_pb2.FileMetadata(filename="a.jsonl", purpose=purpose)
    await call.write(files_pb2.CreateFileRequest(metadata=meta))
    await call.write(files_pb2.CreateFileRequest(chunk=data))
    await call.write(files_pb2.CreateFileRequest(metadata=files_pb2.FileMetadata(bytes=len(data))))
    await call.done_writing()
    return await call


async def test_errors_match_the_network_path(sqlite_gateway: GatewayServer) -> None:
    local = sqlite_gateway.channel()
    async with grpc.aio.insecure_channel(sqlite_gateway.address) as remote:
        errors = []
        for channel in (local, remote):
            with pytest.raises(grpc.aio.AioRpcError) as raised:
                await _unary(channel, _GET_FILE, files_pb2.File)(
                    files_pb2.GetFileRequest(file_id="file-missing"), metadata=_KEY, timeout=5
                )
            errors.append(raised.value)
    (mine, theirs) = errors
    assert mine.code() == theirs.code() == grpc.StatusCode.NOT_FOUND
    assert mine.details() == theirs.details()
    status = rpc_status.from_call(mine)  # type: ignore[arg-type]
    assert status == rpc_status.from_call(theirs)  # type: ignore[arg-type]
    assert status is not None and status.details


async def test_upload_then_read_back_in_process(sqlite_gateway: GatewayServer) -> None:
    channel = sqlite_gateway.channel()
    created = await _upload(channel, b'{"a": 1}\n', files_pb2.FILE_PURPOSE_BATCH)
    assert created.id.startswith("file-") and created.bytes == 9
    # Visible over the network under the same credential: one server, one store.
    async with grpc.aio.insecure_channel(sqlite_gateway.address) as remote:
        again = await _unary(remote, _GET_FILE, files_pb2.File)(
            files_pb2.GetFileRequest(file_id=created.id), metadata=_KEY, timeout=5
        )
    assert again == created
    call = _content(channel)(files_pb2.GetFileContentRequest(file_id=created.id), metadata=_KEY)
    initial = await call.initial_metadata()
    chunks = []
    while (chunk := await call.read()) is not _EOF:
        chunks.append(chunk.data)
    assert b"".join(chunks) == b'{"a": 1}\n'
    assert dict(initial).get("x-content-length") == "9"


async def test_answers_match_the_network_path(sqlite_gateway: GatewayServer) -> None:
    local = sqlite_gateway.channel()
    created = await _upload(local, b'{"a": 1}\n', files_pb2.FILE_PURPOSE_FINE_TUNE)
    calls: list[tuple[str, Any, Any]] = [
        (_GET_FILE, files_pb2.GetFileRequest(file_id=created.id), files_pb2.File),
        ("/tunegate.v1.Files/ListFiles", files_pb2.ListFilesRequest(), files_pb2.ListFilesResponse),
        (
            "/tunegate.v1.FineTuning/ListFineTuningJobs",
            fine_tuning_pb2.ListFineTuningJobsRequest(),
            fine_tuning_pb2.ListFineTuningJobsResponse,
        ),
    ]
    async with grpc.aio.insecure_channel(sqlite_gateway.address) as remote:
        for method, request, response_cls in calls:
            answers = [
                await _unary(channel, method, response_cls, type(request))(request, metadata=_KEY, timeout=5)
                for channel in (local, remote)
            ]
            assert [type(answer) for answer in answers] == [response_cls, response_cls], method
            assert answers[0] == answers[1], method
        listed = answers[0]  # the jobs list of an owner without jobs; the files list has one
    assert list(listed.data) == []


async def test_download_of_a_missing_file_fails_at_first_read(sqlite_gateway: GatewayServer) -> None:
    call = _content(sqlite_gateway.channel())(
        files_pb2.GetFileContentRequest(file_id="file-nope"), metadata=_KEY
    )
    assert list(await call.initial_metadata()) == []
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await call.read()
    assert raised.value.code() == grpc.StatusCode.NOT_FOUND


async def test_rejected_upload_stops_the_writer_and_answers_the_servers_error(
    sqlite_gateway: GatewayServer,
) -> None:
    call = _create_file(sqlite_gateway.channel())(None, metadata=_KEY, timeout=5)
    await call.write(files_pb2.CreateFileRequest(metadata=files_pb2.FileMetadata(filename="a.jsonl")))
    # No purpose: the server rejects the upload; writes after that fail, the call holds the why.
    with pytest.raises(asyncio.InvalidStateError):
        for _ in range(10_000):
            await call.write(files_pb2.CreateFileRequest(chunk=b"x" * 1024))
            await call.done_writing()
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await call
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "purpose" in (raised.value.details() or "")


async def test_unknown_method_is_unimplemented(sqlite_gateway: GatewayServer) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await _unary(sqlite_gateway.channel(), "/tunegate.v1.Files/Nope", files_pb2.File)(
            files_pb2.GetFileRequest()
        )
    assert raised.value.code() == grpc.StatusCode.UNIMPLEMENTED


async def test_health_is_served_in_process(sqlite_gateway: GatewayServer) -> None:
    from grpc_health.v1 import health_pb2

    check = _unary(
        sqlite_gateway.channel(),
        "/grpc.health.v1.Health/Check",
        health_pb2.HealthCheckResponse,
        health_pb2.HealthCheckRequest,
    )
    reply = await check(health_pb2.HealthCheckRequest())
    assert reply.status == health_pb2.HealthCheckResponse.SERVING


# --- mechanics, on handlers registered directly ---------------------------------------------

_Str = wrappers_pb2.StringValue


class _Probe:
    def __init__(self) -> None:
        self.cancelled = asyncio.Event()
        self.received: list[str] = []
        self.got_one = asyncio.Event()

    async def slow(self, request: _Str, context: Any) -> _Str:
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            self.cancelled.set()
            raise
        return request

    async def crash(self, request: _Str, context: Any) -> _Str:
        raise RuntimeError("boom")

    async def domain_error(self, request: _Str, context: Any) -> _Str:
        raise NotFound("No such thing.", param="id")

    async def set_code(self, request: _Str, context: Any) -> _Str:
        context.set_code(grpc.StatusCode.FAILED_PRECONDITION)
        context.set_details("not now")
        return request

    async def collect(self, requests: AsyncIterator[_Str], context: Any) -> _Str:
        try:
            async for message in requests:
                self.received.append(message.value)
                self.got_one.set()
                await asyncio.sleep(0)
        except asyncio.CancelledError:
            self.cancelled.set()
            raise
        return _Str(value=",".join(self.received))

    async def count(self, request: _Str, context: Any) -> AsyncIterator[_Str]:
        await context.send_initial_metadata((("x-count", request.value),))
        for i in range(int(request.value)):
            yield _Str(value=str(i))
        await context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, "no more")


@pytest.fixture
def probe() -> _Probe:
    return _Probe()


@pytest.fixture
def channel(probe: _Probe) -> InProcessChannel:
    table = HandlerTable()
    unary = {
        name: grpc.unary_unary_rpc_method_handler(getattr(probe, name))
        for name in ("slow", "crash", "domain_error", "set_code")
    }
    table.add_registered_method_handlers(
        "test.Probe",
        {
            **unary,
            "collect": grpc.stream_unary_rpc_method_handler(probe.collect),
            "count": grpc.unary_stream_rpc_method_handler(probe.count),
        },
    )
    return InProcessChannel(table)


async def test_deadline_cancels_the_servicer(channel: InProcessChannel, probe: _Probe) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await channel.unary_unary("/test.Probe/slow")(_Str(value="x"), timeout=0.05)
    assert raised.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    assert probe.cancelled.is_set()


async def test_errors_go_through_the_interceptor(channel: InProcessChannel) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as crash:
        await channel.unary_unary("/test.Probe/crash")(_Str())
    assert crash.value.code() == grpc.StatusCode.INTERNAL
    assert "boom" not in (crash.value.details() or "")  # the stack never leaves the process
    with pytest.raises(grpc.aio.AioRpcError) as domain:
        await channel.unary_unary("/test.Probe/domain_error")(_Str())
    status = rpc_status.from_call(domain.value)  # type: ignore[arg-type]
    assert domain.value.code() == grpc.StatusCode.NOT_FOUND and status is not None
    with pytest.raises(grpc.aio.AioRpcError) as coded:
        await channel.unary_unary("/test.Probe/set_code")(_Str())
    assert coded.value.code() == grpc.StatusCode.FAILED_PRECONDITION and coded.value.details() == "not now"


async def test_client_stream_in_order_and_cancel(channel: InProcessChannel, probe: _Probe) -> None:
    call = channel.stream_unary("/test.Probe/collect")(None)
    for value in "abc":
        await call.write(_Str(value=value))
    await call.done_writing()
    assert (await call).value == "a,b,c"

    probe.received.clear()
    call = channel.stream_unary("/test.Probe/collect")(None)
    await call.write(_Str(value="x"))
    await asyncio.wait_for(probe.got_one.wait(), 5)  # the servicer runs and waits for more
    assert call.cancel()
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await call
    assert raised.value.code() == grpc.StatusCode.CANCELLED
    assert probe.cancelled.is_set() and call.done()


async def test_server_stream_messages_then_status(channel: InProcessChannel) -> None:
    call = channel.unary_stream("/test.Probe/count")(_Str(value="3"))
    assert dict(await call.initial_metadata()) == {"x-count": "3"}
    assert [(await call.read()).value for _ in range(3)] == ["0", "1", "2"]
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await call.read()
    assert raised.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED


async def test_server_stream_cancel_stops_the_generator(channel: InProcessChannel) -> None:
    call = channel.unary_stream("/test.Probe/count")(_Str(value="1000000"))
    assert (await call.read()).value == "0"
    assert call.cancel()
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        for _ in range(5):
            await call.read()
    assert raised.value.code() == grpc.StatusCode.CANCELLED


# --- one probe service, on a grpc.aio server and in a `HandlerTable` --------------------------


class _Same:
    """Handlers whose outcome must be the same over either channel."""

    async def echo(self, request: _Str, context: Any) -> _Str:
        keys = [key for key, _ in context.invocation_metadata()]
        remaining = context.time_remaining()
        # grpc's wire timeout is rounded up to its unit, so a 5 s deadline may read a bit above 5 s.
        return _Str(value=f"{request.value}|{keys}|{remaining is not None and 0 < remaining < 6}")

    async def wrong_type(self, request: _Str, context: Any) -> Any:
        return wrappers_pb2.Int64Value(value=7)  # not the declared StringValue

    async def not_a_message(self, request: _Str, context: Any) -> Any:
        return "text"

    async def domain_error(self, request: _Str, context: Any) -> _Str:
        raise NotFound("No such thing.", param="id")

    async def crash(self, request: _Str, context: Any) -> _Str:
        raise RuntimeError("boom")

    async def count(self, request: _Str, context: Any) -> AsyncIterator[_Str]:
        for i in range(int(request.value)):
            yield _Str(value=str(i))
        await context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, "no more")


def _probe_handlers(same: _Same) -> dict[str, Any]:
    codec: dict[str, Any] = {
        "request_deserializer": _Str.FromString,
        "response_serializer": _Str.SerializeToString,
    }
    unary = ("echo", "wrong_type", "not_a_message", "domain_error", "crash")
    handlers = {name: grpc.unary_unary_rpc_method_handler(getattr(same, name), **codec) for name in unary}
    handlers["count"] = grpc.unary_stream_rpc_method_handler(same.count, **codec)
    return handlers


async def _outcome(call: Any) -> Any:
    try:
        answer = await call
    except grpc.aio.AioRpcError as error:
        return (error.code(), error.details(), rpc_status.from_call(error))  # type: ignore[arg-type]
    return (type(answer), answer)


async def _stream_outcome(call: Any) -> list[Any]:
    seen: list[Any] = []
    try:
        while (message := await call.read()) is not _EOF:
            seen.append((type(message), message))
    except grpc.aio.AioRpcError as error:
        seen.append((error.code(), error.details()))
    return seen


async def test_probe_service_answers_alike_over_both_channels() -> None:
    from tunegate.server.interceptor import ErrorInterceptor

    handlers = _probe_handlers(_Same())
    server = grpc.aio.server(interceptors=[ErrorInterceptor()])
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler("test.Same", handlers),))
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    table = HandlerTable()
    table.add_registered_method_handlers("test.Same", handlers)
    local = InProcessChannel(table)
    metadata = (
        ("authorization", "Bearer sk-x"),
        ("x-portkey-provider", "openai"),
        ("x-b", "1"),
        ("x-b", "2"),
    )
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as remote:
            outcomes: list[list[Any]] = []
            for channel in (local, remote):
                seen = []
                for name in ("echo", "wrong_type", "not_a_message", "domain_error", "crash"):
                    rpc = channel.unary_unary(f"/test.Same/{name}", _Str.SerializeToString, _Str.FromString)
                    seen.append(await _outcome(rpc(_Str(value="hi"), metadata=metadata, timeout=5)))
                stream = channel.unary_stream("/test.Same/count", _Str.SerializeToString, _Str.FromString)
                seen.append(await _stream_outcome(stream(_Str(value="2"), metadata=metadata, timeout=5)))
                outcomes.append(seen)
    finally:
        await server.stop(None)
    mine, theirs = outcomes
    assert mine == theirs
    echo, wrong, junk, domain, crash, stream_seen = mine
    assert echo == (
        _Str,
        _Str(value="hi|['user-agent', 'authorization', 'x-portkey-provider', 'x-b', 'x-b']|True"),
    )
    assert wrong[0] is _Str  # the caller always gets the declared type
    assert junk[0] == grpc.StatusCode.UNKNOWN
    assert domain[0] == grpc.StatusCode.NOT_FOUND and domain[2] is not None
    assert crash[0] == grpc.StatusCode.INTERNAL
    assert stream_seen[-1][0] == grpc.StatusCode.RESOURCE_EXHAUSTED and len(stream_seen) == 3
