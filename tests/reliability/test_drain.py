"""SIGTERM while an upload streams in (a real ``tunegate run``): the upload is read to its end
and answered, the process exits once it is done (not after the shutdown timeout), and the file
is there after a restart. What arrives meanwhile is told to retry: a request on a new connection
gets a 503 in OpenAI's error envelope with ``x-should-retry: true``; one sent on a connection
that was idle is never answered — the connection closes before any byte of an answer. The
OpenAI SDK retries both. The gRPC server's own grace refuses new calls with UNAVAILABLE."""

from __future__ import annotations

import asyncio
import http.client
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import grpc.aio
import httpx
import openai
import pytest
from tunegate.server import GatewayServer
from tunegate.server.config import ServerConfig
from tunegate.v1 import files_pb2, files_pb2_grpc

from tests.e2e.test_crash_recovery import free_port, start, stop

KEY = {"Authorization": "Bearer sk-drain"}
LINE = b'{"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}]}\n'
PIECES = 30
PIECE = LINE * 1000


def _slow_form(started: threading.Event, resume: threading.Event) -> Iterator[bytes]:
    """A multipart form whose file stalls half-way until ``resume`` is set."""
    yield b'--b\r\nContent-Disposition: form-data; name="purpose"\r\n\r\nfine-tune\r\n'
    yield b'--b\r\nContent-Disposition: form-data; name="file"; filename="slow.jsonl"\r\n\r\n'
    for piece in range(PIECES):
        yield PIECE
        if piece == PIECES // 2:
            started.set()
            resume.wait(30)
        time.sleep(0.01)
    yield b"\r\n--b--\r\n"


def _until_draining(base: str) -> httpx.Response:
    """The first answer on a new connection after the signal that is not a 200 (served
    before the edge began to drain)."""
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        late = httpx.get(base + "/files", headers=KEY, timeout=10)  # a new connection each time
        if late.status_code != 200:
            return late
        time.sleep(0.02)
    raise AssertionError("the edge did not begin to drain")


def test_sigterm_lets_an_upload_in_flight_finish_tells_late_requests_to_retry_then_exits(
    tmp_path: Path,
) -> None:
    config = tmp_path / "tunegate.toml"
    config.write_text("[server]\n")
    http_port, grpc_port = free_port(), free_port()
    base = f"http://127.0.0.1:{http_port}/v1"
    proc = start(tmp_path, config, http_port, grpc_port)
    answer: dict[str, Any] = {}
    started, resume = threading.Event(), threading.Event()

    def upload() -> None:
        answer["response"] = httpx.post(
            base + "/files",
            content=_slow_form(started, resume),
            headers={**KEY, "Content-Type": "multipart/form-data; boundary=b"},
            timeout=60,
        )

    idle = http.client.HTTPConnection("127.0.0.1", http_port, timeout=10)  # one connection, kept alive
    counted: list[int] = []
    hooks = {"response": [lambda r: counted.append(r.status_code)]}
    sdk = openai.OpenAI(base_url=base, api_key="sk-drain", max_retries=0)
    retrying = openai.OpenAI(
        base_url=base,
        api_key="sk-drain",
        max_retries=1,
        http_client=openai.DefaultHttpxClient(event_hooks=hooks),
    )
    uploader = threading.Thread(target=upload)
    try:
        idle.request("GET", "/v1/files", headers=KEY)
        first = idle.getresponse()
        assert first.status == 200 and first.read()
        uploader.start()
        assert started.wait(10)
        proc.send_signal(signal.SIGTERM)
        signalled = time.monotonic()

        # (a) A new connection during the drain: a 503 telling the client to retry.
        late = _until_draining(base)
        assert late.status_code == 503, late.text
        assert late.headers["x-should-retry"] == "true" and late.headers["retry-after"] == "1"
        assert late.headers["connection"] == "close" and late.headers["x-request-id"]
        assert late.json() == {
            "error": {
                "message": "The gateway is shutting down; retry the request.",
                "type": "server_error",
                "param": None,
                "code": "shutting_down",
            }
        }

        # (b) The connection that was idle when the drain began closes without a byte of answer.
        with pytest.raises(ConnectionError):  # http.client's RemoteDisconnected, or a reset
            idle.request("GET", "/v1/files", headers=KEY)
            idle.getresponse()

        # The SDK sees an InternalServerError; with retries it tries again (after Retry-After).
        with pytest.raises(openai.InternalServerError) as refused:
            sdk.files.list()
        assert refused.value.status_code == 503 and refused.value.code == "shutting_down"
        with pytest.raises(openai.InternalServerError):
            retrying.files.list()
        assert counted == [503, 503]
        assert proc.poll() is None  # still draining: the upload is in flight

        # (c) The upload in flight finishes, then the process exits.
        resume.set()
        uploader.join(timeout=60)
        response = answer["response"]
        assert response.status_code == 200, response.text
        assert response.json()["bytes"] == PIECES * len(PIECE)
        proc.wait(timeout=30)
        exited_after = time.monotonic() - signalled
    finally:
        resume.set()
        if uploader.is_alive():
            uploader.join(timeout=60)
        idle.close()
        sdk.close()
        retrying.close()
        stop(proc)
    # Exited with the last request, not after the 60 s shutdown timeout (a bound on a hang).
    assert proc.returncode == 0 and exited_after < 30

    proc = start(tmp_path, config, http_port, grpc_port)
    try:
        (listed,) = httpx.get(base + "/files", headers=KEY).json()["data"]
        assert listed["id"] == response.json()["id"] and listed["bytes"] == PIECES * len(PIECE)
    finally:
        stop(proc)


async def test_grpc_grace_refuses_new_calls_unavailable_and_finishes_the_upload_in_flight(
    tmp_path: Path,
) -> None:
    gateway = await GatewayServer.start(ServerConfig(data_dir=tmp_path, port=0))
    try:
        async with grpc.aio.insecure_channel(gateway.address) as channel:
            files = files_pb2_grpc.FilesStub(channel)
            call: Any = files.CreateFile()  # type: ignore[call-arg]  # the stubs miss the write() style
            meta = files_pb2.FileMetadata(filename="a.jsonl", purpose=files_pb2.FILE_PURPOSE_FINE_TUNE)
            await call.write(files_pb2.CreateFileRequest(metadata=meta))
            await call.write(files_pb2.CreateFileRequest(chunk=LINE))
            await call.initial_metadata()  # the server has accepted the call
            stopping = asyncio.create_task(gateway.stop(grace=30))
            await asyncio.sleep(0.1)
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await files.ListFiles(files_pb2.ListFilesRequest(), timeout=10)
            assert refused.value.code() == grpc.StatusCode.UNAVAILABLE  # clients retry it
            assert not stopping.done()
            await call.write(files_pb2.CreateFileRequest(chunk=LINE))
            closing = files_pb2.FileMetadata(bytes=2 * len(LINE))  # the end-of-file marker
            await call.write(files_pb2.CreateFileRequest(metadata=closing))
            await call.done_writing()
            created = await call
            assert created.bytes == 2 * len(LINE)
            await asyncio.wait_for(stopping, 30)
    finally:
        await gateway.stop(0)
