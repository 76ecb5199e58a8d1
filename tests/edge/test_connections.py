"""The edge's HTTP/1.1 connections over raw sockets (aiohttp's server, ``tunegate.edge._protocol``):
keep-alive, pipelining, split reads, bodies, ``Expect: 100-continue``, HEAD, closing, shutdown."""

from __future__ import annotations

import asyncio
import socket
import struct
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import orjson
import pytest
from tunegate.v1 import files_pb2

from tests.edge.test_app import FakeFiles, Stack, running_edge


class GatedFiles(FakeFiles):
    """`GET /v1/files/file-slow` waits until the test opens the gate."""

    def __init__(self) -> None:
        super().__init__()
        self.gate = asyncio.Event()
        self.waiting = asyncio.Event()
        self.finished = asyncio.Event()
        self.completed = False

    async def GetFile(self, request: files_pb2.GetFileRequest, context: Any) -> files_pb2.File:
        if request.file_id == "file-slow":
            self.waiting.set()
            try:
                await self.gate.wait()
            except asyncio.CancelledError:
                self.finished.set()
                raise
            self.finished.set()
            self.completed = not context.cancelled()
        return await super().GetFile(request, context)


@pytest.fixture
async def stack() -> AsyncIterator[Stack]:
    async with running_edge(GatedFiles()) as running:
        yield running


@dataclass
class Answer:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return orjson.loads(self.body)


class Raw:
    """One client connection speaking HTTP/1.1 by hand."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    @classmethod
    async def open(cls, stack: Stack) -> Raw:
        reader, writer = await asyncio.open_connection("127.0.0.1", stack.edge.port)
        return cls(reader, writer)

    async def send(self, data: bytes) -> None:
        self.writer.write(data)
        await self.writer.drain()

    async def answer(self, *, head: bool = False) -> Answer:
        status_line = await asyncio.wait_for(self.reader.readline(), 10)
        assert status_line.startswith((b"HTTP/1.1 ", b"HTTP/1.0 ")), status_line
        status = int(status_line.split()[1])
        headers: dict[str, str] = {}
        while (line := await self.reader.readline()) not in (b"\r\n", b""):
            name, _, value = line.decode().partition(":")
            headers[name.strip().lower()] = value.strip()
        if head or status in (100, 204, 304):
            return Answer(status, headers, b"")
        if headers.get("transfer-encoding") == "chunked":
            body = b""
            while size := int((await self.reader.readline()).strip(), 16):
                body += await self.reader.readexactly(size)
                await self.reader.readline()
            await self.reader.readline()
            return Answer(status, headers, body)
        return Answer(status, headers, await self.reader.readexactly(int(headers["content-length"])))

    async def closed(self) -> bool:
        return await asyncio.wait_for(self.reader.read(1), 10) == b""

    async def close(self) -> None:
        self.writer.close()
        await self.writer.wait_closed()


def get(path: str, *extra: str) -> bytes:
    return "".join([f"GET {path} HTTP/1.1\r\nHost: edge\r\n", *(f"{h}\r\n" for h in extra), "\r\n"]).encode()


def post(path: str, body: bytes, *extra: str) -> bytes:
    head = f"POST {path} HTTP/1.1\r\nHost: edge\r\nContent-Type: application/json\r\n"
    head += "".join(f"{h}\r\n" for h in extra)
    return head.encode() + f"Content-Length: {len(body)}\r\n\r\n".encode() + body


def _upload(content: bytes) -> bytes:
    boundary = "b0undary"
    form = (
        (
            f'--{boundary}\r\nContent-Disposition: form-data; name="purpose"\r\n\r\nfine-tune\r\n'
            f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="t.jsonl"\r\n'
            f"Content-Type: application/jsonl\r\n\r\n"
        ).encode()
        + content
        + f"\r\n--{boundary}--\r\n".encode()
    )
    head = (
        f"POST /v1/files HTTP/1.1\r\nHost: edge\r\nContent-Type: multipart/form-data; boundary={boundary}\r\n"
        f"Content-Length: {len(form)}\r\n\r\n"
    )
    return head.encode() + form


@pytest.fixture
async def raw(stack: Stack) -> AsyncIterator[Raw]:
    connection = await Raw.open(stack)
    yield connection
    await connection.close()


async def test_keep_alive_requests(raw: Raw) -> None:
    for _ in range(3):
        await raw.send(get("/v1/files?limit=1", "Authorization: Bearer sk-1"))
        answer = await raw.answer()
        assert answer.status == 200
        assert answer.headers["content-type"] == "application/json; charset=utf-8"
        assert answer.headers["x-request-id"].startswith("req_") and "date" in answer.headers
        assert answer.json()["object"] == "list" and answer.json()["has_more"] is True


async def test_pipelined_requests_are_answered_in_order(stack: Stack, raw: Raw) -> None:
    await raw.send(
        get("/healthz", "X-Request-Id: first")
        + get("/v1/files/file-abc", "X-Request-Id: second")
        + get("/v1/nothing", "X-Request-Id: third")
        + get("/v1/files?purpose=fine-tune", "X-Request-Id: fourth")
    )
    answers = [await raw.answer() for _ in range(4)]
    assert [a.status for a in answers] == [200, 200, 404, 200]
    assert [a.headers["x-request-id"] for a in answers] == ["first", "second", "third", "fourth"]
    assert answers[1].json()["id"] == "file-abc"
    assert answers[2].json()["error"]["message"] == "Invalid URL (GET /v1/nothing)"
    assert stack.fake.list_requests[-1].purpose == files_pb2.FILE_PURPOSE_FINE_TUNE


async def test_a_request_sent_byte_by_byte(raw: Raw) -> None:
    for byte in post("/v1/fine_tuning/jobs", b'{"model": "m", "colour": "blue"}'):
        await raw.send(bytes([byte]))
    answer = await raw.answer()
    assert answer.status == 400
    assert answer.json()["error"]["param"] == "colour"


async def test_body_errors_are_the_same_for_a_chunked_body(raw: Raw) -> None:
    await raw.send(post("/v1/fine_tuning/jobs", b"{not json") + get("/healthz"))
    mine = await raw.answer()
    assert (await raw.answer()).json() == {"status": "SERVING"}  # framed right after the body
    chunked = (
        b"POST /v1/fine_tuning/jobs HTTP/1.1\r\nHost: edge\r\nContent-Type: application/json\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n4\r\n{not\r\n5\r\n json\r\n0\r\n\r\n"
    )
    await raw.send(chunked)
    theirs = await raw.answer()
    assert mine.status == theirs.status == 400
    assert mine.json()["error"] == theirs.json()["error"]
    assert mine.json()["error"]["code"] == "invalid_json"


async def test_upload_mid_connection_with_the_next_request_behind_it(stack: Stack, raw: Raw) -> None:
    await raw.send(get("/v1/files"))
    first = await raw.answer()
    upload = _upload(b'{"messages": []}\n' * 100)
    await raw.send(upload + get("/v1/files/file-abc"))  # the next request rides in the same write
    uploaded = await raw.answer()
    after = await raw.answer()
    assert first.status == 200
    assert uploaded.status == 200, uploaded.body
    assert uploaded.json()["bytes"] == len(b'{"messages": []}\n') * 100
    assert stack.fake.uploads[-1].data == b'{"messages": []}\n' * 100
    assert after.status == 200 and after.json()["id"] == "file-abc"


async def test_expect_continue_gets_100_before_the_body(raw: Raw) -> None:
    body = b'{"model": "m", "colour": "blue"}'
    head, _, rest = post("/v1/fine_tuning/jobs", body, "Expect: 100-continue").partition(b"\r\n\r\n")
    await raw.send(head + b"\r\n\r\n")
    assert (await raw.answer()).status == 100
    await raw.send(rest + get("/v1/files/file-abc"))
    answer = await raw.answer()
    assert answer.status == 400 and answer.json()["error"]["param"] == "colour"
    assert (await raw.answer()).json()["id"] == "file-abc"


async def test_an_upload_expecting_100_gets_it_before_the_body(stack: Stack, raw: Raw) -> None:
    # curl sends `Expect: 100-continue` with large uploads and waits for the 100 (a second, by
    # default); aiohttp's low-level server never sends one, the edge's handler does.
    head, _, form = _upload(b"x" * 5000).partition(b"\r\n\r\n")
    await raw.send(head + b"\r\nExpect: 100-continue\r\n\r\n")
    assert (await raw.answer()).status == 100
    await raw.send(form)
    answer = await raw.answer()
    assert answer.status == 200 and answer.json()["bytes"] == 5000
    assert stack.fake.uploads[-1].data == b"x" * 5000


async def test_connection_close_and_http_1_0(stack: Stack) -> None:
    raw = await Raw.open(stack)
    await raw.send(get("/v1/files/file-abc", "Connection: close"))
    answer = await raw.answer()
    assert answer.status == 200
    assert await raw.closed()
    await raw.close()
    raw = await Raw.open(stack)
    await raw.send(b"GET /healthz HTTP/1.0\r\n\r\n")
    answer = await raw.answer()
    assert answer.status == 200 and answer.json() == {"status": "SERVING"}
    assert await raw.closed()
    await raw.close()


async def test_head_sends_headers_only(raw: Raw) -> None:
    await raw.send(b"HEAD /healthz HTTP/1.1\r\nHost: edge\r\n\r\n")
    answer = await raw.answer(head=True)
    assert answer.status == 200 and answer.headers["content-length"] == str(len(b'{"status":"SERVING"}'))
    await raw.send(get("/v1/files/file-abc"))  # had a body been sent, this would read it
    assert (await raw.answer()).json()["id"] == "file-abc"


async def test_a_body_over_the_limit_gets_413(raw: Raw) -> None:
    await raw.send(post("/v1/fine_tuning/jobs", b" " * (1024 * 1024 + 1)))
    answer = await raw.answer()
    assert answer.status == 413 and answer.json()["error"]["code"] == "request_too_large"


async def test_unusual_targets_and_heads(stack: Stack) -> None:
    cases = [
        (get("/v1/files/file%2Dabc"), 200),  # percent-encoded: decoded by aiohttp
        (get("/v1/./files"), None),
        (b"GET /v1/files HTTP/1.1\r\nHost: edge\r\nBad Header\r\n\r\n", 400),
        (b"NOT HTTP AT ALL\r\n\r\n", 400),
        (get("/v1/files/file-abc", "X-Long: " + "a" * 8191), 400),  # past the field limit
        (get("/v1/files/file-abc", *(f"X-Many-{i}: {'b' * 100}" for i in range(100))), 200),
        (b"GET /v1/files/file-abc HTTP/1.1\nHost: edge\n\n", 400),  # bare line feeds: refused
    ]
    for request, status in cases:
        raw = await Raw.open(stack)
        await raw.send(request)
        answer = await raw.answer()
        if status is not None:
            assert answer.status == status, (request, answer)
        if status == 200:
            assert answer.json()["id"] == "file-abc"
        await raw.close()


async def _slow_request(stack: Stack) -> tuple[Raw, GatedFiles]:
    """A connection whose `GET /v1/files/file-slow` the servicer holds until the gate opens."""
    fake = stack.fake
    assert isinstance(fake, GatedFiles)
    raw = await Raw.open(stack)
    await raw.send(get("/v1/files/file-slow"))
    await asyncio.wait_for(fake.waiting.wait(), 10)
    return raw, fake


async def test_half_closed_client_still_gets_its_answer(stack: Stack) -> None:
    raw, fake = await _slow_request(stack)
    sock = raw.writer.get_extra_info("socket")
    sock.shutdown(socket.SHUT_WR)
    await asyncio.sleep(0.05)
    fake.gate.set()
    answer = await raw.answer()
    assert answer.status == 200 and answer.json()["id"] == "file-slow"
    assert await raw.closed()
    await raw.close()


async def test_stop_lets_the_request_in_flight_finish_and_closes_idle_connections(stack: Stack) -> None:
    idle = await Raw.open(stack)
    await idle.send(get("/healthz"))
    assert (await idle.answer()).status == 200
    busy, fake = await _slow_request(stack)
    stopping = asyncio.create_task(stack.edge.stop())
    assert await idle.closed()
    await asyncio.sleep(0.05)
    assert not stopping.done()
    fake.gate.set()
    answer = await busy.answer()
    assert answer.status == 200
    assert await busy.closed()
    await asyncio.wait_for(stopping, 10)
    with pytest.raises(OSError):
        await Raw.open(stack)
    await idle.close()
    await busy.close()


async def test_while_stopping_a_late_request_is_told_to_retry_until_the_last_in_flight_is_done(
    stack: Stack,
) -> None:
    idle = await Raw.open(stack)
    await idle.send(get("/healthz"))
    assert (await idle.answer()).status == 200
    busy, fake = await _slow_request(stack)
    stopping = asyncio.create_task(stack.edge.stop())
    assert await idle.closed()  # an idle keep-alive connection closes, unanswered
    for request in (get("/v1/files"), post("/v1/fine_tuning/jobs", b'{"model": "m"}'), get("/healthz")):
        late = await Raw.open(stack)  # the listener stays open while a request is in flight
        await late.send(request)
        answer = await late.answer()
        assert answer.status == 503, answer.body
        assert answer.headers["x-should-retry"] == "true" and answer.headers["retry-after"] == "1"
        assert answer.headers["connection"] == "close" and answer.headers["x-request-id"]
        assert answer.json() == {
            "error": {
                "message": "The gateway is shutting down; retry the request.",
                "type": "server_error",
                "param": None,
                "code": "shutting_down",
            }
        }
        assert await late.closed()
        await late.close()
    assert fake.list_requests == [] and not stopping.done()  # no late request reached the server
    fake.gate.set()
    assert (await busy.answer()).status == 200
    await asyncio.wait_for(stopping, 10)
    with pytest.raises(OSError):
        await Raw.open(stack)
    await idle.close()
    await busy.close()


async def test_stop_closes_a_connection_opened_during_the_drain_that_sent_nothing(stack: Stack) -> None:
    busy, fake = await _slow_request(stack)
    stopping = asyncio.create_task(stack.edge.stop())
    await asyncio.sleep(0.05)
    silent = await Raw.open(stack)
    await asyncio.sleep(0.05)
    fake.gate.set()
    assert (await busy.answer()).status == 200
    await asyncio.wait_for(stopping, 10)
    assert await silent.closed()
    await silent.close()
    await busy.close()


async def test_a_client_that_goes_away_does_not_cancel_its_request(stack: Stack) -> None:
    # A job create must not be abandoned half-way because its client's socket dropped.
    raw, fake = await _slow_request(stack)
    sock = raw.writer.get_extra_info("socket")
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    raw.writer.transport.abort()  # with a zero linger: a reset, not a half-close
    await asyncio.sleep(0.1)  # the edge sees the connection go
    fake.gate.set()
    await asyncio.wait_for(fake.finished.wait(), 10)
    assert fake.completed  # neither the servicer nor its call was cancelled
