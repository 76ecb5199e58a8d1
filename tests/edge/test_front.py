"""The edge's own HTTP/1.1 front (``tunegate.edge._front``), over raw sockets: keep-alive, pipelining,
split reads, bodies, HEAD, closing, and the hand-over to aiohttp — mid-connection, with every
byte of the request — for uploads and for everything the front leaves alone.

Which server answered is visible: aiohttp names itself in a ``Server`` header, the front sends
none."""

from __future__ import annotations

import asyncio
import gc
import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import httptools
import orjson
import pytest
import yarl
from tunegate.edge._front import MAX_BODY, MAX_HEAD, split_target
from tunegate.v1 import files_pb2

from tests.edge.test_app import FakeFiles, Stack, _start


class GatedFiles(FakeFiles):
    """`GET /v1/files/file-slow` waits until the test opens the gate."""

    def __init__(self) -> None:
        super().__init__()
        self.gate = asyncio.Event()
        self.waiting = asyncio.Event()

    async def GetFile(self, request: files_pb2.GetFileRequest, context: Any) -> files_pb2.File:
        if request.file_id == "file-slow":
            self.waiting.set()
            await self.gate.wait()
        return await super().GetFile(request, context)


@pytest.fixture
async def stack() -> AsyncIterator[Stack]:
    running, server = await _start({}, GatedFiles())
    try:
        yield running
    finally:
        await running.edge.stop()
        await server.stop(None)


@dataclass
class Answer:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return orjson.loads(self.body)

    @property
    def by_aiohttp(self) -> bool:
        return "aiohttp" in self.headers.get("server", "")


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


async def test_keep_alive_requests_are_answered_by_the_front(raw: Raw) -> None:
    for _ in range(3):
        await raw.send(get("/v1/files?limit=1", "Authorization: Bearer sk-1"))
        answer = await raw.answer()
        assert answer.status == 200 and not answer.by_aiohttp
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
    assert answer.status == 400 and not answer.by_aiohttp
    assert answer.json()["error"]["param"] == "colour"


async def test_body_errors_match_aiohttps_for_a_chunked_body(raw: Raw) -> None:
    await raw.send(post("/v1/fine_tuning/jobs", b"{not json") + get("/healthz"))
    mine = await raw.answer()
    assert (await raw.answer()).json() == {"status": "SERVING"}  # framed right after the body
    chunked = (
        b"POST /v1/fine_tuning/jobs HTTP/1.1\r\nHost: edge\r\nContent-Type: application/json\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n4\r\n{not\r\n5\r\n json\r\n0\r\n\r\n"
    )
    await raw.send(chunked)
    theirs = await raw.answer()
    assert not mine.by_aiohttp and theirs.by_aiohttp
    assert mine.status == theirs.status == 400
    assert mine.json()["error"] == theirs.json()["error"]
    assert mine.json()["error"]["code"] == "invalid_json"


async def test_upload_mid_connection_is_handed_to_aiohttp_with_its_bytes(stack: Stack, raw: Raw) -> None:
    await raw.send(get("/v1/files"))
    first = await raw.answer()
    upload = _upload(b'{"messages": []}\n' * 100)
    await raw.send(upload + get("/v1/files/file-abc"))  # the next request rides in the same write
    uploaded = await raw.answer()
    after = await raw.answer()
    assert first.status == 200 and not first.by_aiohttp
    assert uploaded.status == 200 and uploaded.by_aiohttp, uploaded.body
    assert uploaded.json()["bytes"] == len(b'{"messages": []}\n') * 100
    assert stack.fake.uploads[-1].data == b'{"messages": []}\n' * 100
    assert after.status == 200 and after.by_aiohttp and after.json()["id"] == "file-abc"


async def test_expect_continue_gets_100_before_the_body(raw: Raw) -> None:
    body = b'{"model": "m", "colour": "blue"}'
    head, _, rest = post("/v1/fine_tuning/jobs", body, "Expect: 100-continue").partition(b"\r\n\r\n")
    await raw.send(head + b"\r\n\r\n")
    assert (await raw.answer()).status == 100
    await raw.send(rest + get("/v1/files/file-abc"))
    answer = await raw.answer()
    assert answer.status == 400 and answer.json()["error"]["param"] == "colour" and not answer.by_aiohttp
    assert (await raw.answer()).json()["id"] == "file-abc"


async def test_an_upload_expecting_100_gets_it_before_aiohttp_reads_it(stack: Stack, raw: Raw) -> None:
    # curl sends `Expect: 100-continue` with large uploads and waits for the 100 (a second, by
    # default); aiohttp's low-level server never sends one, the front does.
    head, _, form = _upload(b"x" * 5000).partition(b"\r\n\r\n")
    await raw.send(head + b"\r\nExpect: 100-continue\r\n\r\n")
    assert (await raw.answer()).status == 100
    await raw.send(form)
    answer = await raw.answer()
    assert answer.status == 200 and answer.by_aiohttp and answer.json()["bytes"] == 5000
    assert stack.fake.uploads[-1].data == b"x" * 5000


async def test_connection_close_and_http_1_0(stack: Stack) -> None:
    raw = await Raw.open(stack)
    await raw.send(get("/v1/files/file-abc", "Connection: close"))
    answer = await raw.answer()
    assert answer.status == 200 and answer.headers["connection"] == "close" and not answer.by_aiohttp
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


async def test_a_body_over_the_limit_gets_aiohttps_413(raw: Raw) -> None:
    await raw.send(post("/v1/fine_tuning/jobs", b" " * (MAX_BODY + 1)))
    answer = await raw.answer()
    assert answer.status == 413 and answer.json()["error"]["code"] == "request_too_large"


async def test_unusual_targets_and_heads_are_aiohttps(stack: Stack) -> None:
    cases = [
        (get("/v1/files/file%2Dabc"), 200),  # percent-encoded: decoded by aiohttp
        (get("/v1/./files"), None),
        (b"GET /v1/files HTTP/1.1\r\nHost: edge\r\nBad Header\r\n\r\n", 400),
        (b"NOT HTTP AT ALL\r\n\r\n", 400),
        (get("/v1/files/file-abc", "X-Long: " + "a" * MAX_HEAD), None),  # past the front's limit
        (get("/v1/files/file-abc", *(f"X-Many-{i}: {'b' * 100}" for i in range(100))), 200),
        (b"GET /v1/files/file-abc HTTP/1.1\nHost: edge\n\n", 400),  # bare line feeds: refused
    ]
    for request, status in cases:
        raw = await Raw.open(stack)
        await raw.send(request)
        answer = await raw.answer()
        assert answer.by_aiohttp, request
        if status is not None:
            assert answer.status == status, (request, answer)
        if status == 200:
            assert answer.json()["id"] == "file-abc"
        await raw.close()


async def test_half_closed_client_still_gets_its_answer(stack: Stack) -> None:
    raw = await Raw.open(stack)
    await raw.send(get("/v1/files/file-slow"))
    fake = stack.fake
    assert isinstance(fake, GatedFiles)
    await asyncio.wait_for(fake.waiting.wait(), 10)
    sock = raw.writer.get_extra_info("socket")
    sock.shutdown(socket.SHUT_WR)
    await asyncio.sleep(0.05)
    fake.gate.set()
    answer = await raw.answer()
    assert answer.status == 200 and answer.json()["id"] == "file-slow"
    assert await raw.closed()
    await raw.close()


async def test_stop_lets_the_request_in_flight_finish_and_closes_idle_connections(stack: Stack) -> None:
    fake = stack.fake
    assert isinstance(fake, GatedFiles)
    idle = await Raw.open(stack)
    await idle.send(get("/healthz"))
    assert (await idle.answer()).status == 200
    busy = await Raw.open(stack)
    await busy.send(get("/v1/files/file-slow"))
    await asyncio.wait_for(fake.waiting.wait(), 10)
    stopping = asyncio.create_task(stack.edge.stop())
    assert await idle.closed()
    await asyncio.sleep(0.05)
    assert not stopping.done()
    fake.gate.set()
    answer = await busy.answer()
    assert answer.status == 200 and answer.headers["connection"] == "close"
    assert await busy.closed()
    await asyncio.wait_for(stopping, 10)
    with pytest.raises(OSError):
        await Raw.open(stack)
    await idle.close()
    await busy.close()


async def test_an_idle_connection_is_closed_after_the_keepalive(stack: Stack) -> None:
    stack.edge._front.keepalive = 0.2
    raw = await Raw.open(stack)
    await raw.send(get("/healthz"))
    assert (await raw.answer()).status == 200
    assert await raw.closed()
    await raw.close()


@pytest.mark.parametrize(
    "target",
    [
        "/v1/files",
        "/v1/files?limit=20&after=file-1",
        "/v1/files?a=1&a=2&b",
        "/v1/fine_tuning/jobs?metadata[k]=v&metadata%5Bk2%5D=v+2",
        "/v1/files?q=%E2%82%AC&x=%zz&y=%ff&=z&&",
        "/v1/files?a=b=c;d",
        "/v1/files/file-1.jsonl/content",
        "/",
    ],
)
def test_plain_targets_split_as_aiohttp_parses_them(target: str) -> None:
    split = split_target(target)
    assert split is not None
    url = yarl.URL(target, encoded=True)  # what aiohttp's parser builds from a request target
    assert split[0] == url.path == url.path_safe
    assert list(split[1].items()) == list(url.query.items())


@pytest.mark.parametrize(
    "target",
    [
        "/v1/files/a%2Fb",
        "/v1/../files",
        "/v1/./files",
        "//v1/files",
        "/v1/files#x",
        "/v1/fil\u00e9",
        "*",
        "http://h/v1",
    ],
)
def test_other_targets_are_left_to_aiohttp(target: str) -> None:
    assert split_target(target) is None


async def test_requests_leave_no_cyclic_garbage_of_the_front(raw: Raw) -> None:
    # A parser and its callbacks referring to each other outlive every request until the cyclic
    # collector runs — and keep it running (one collection per few requests under load).
    gc.collect()
    gc.set_debug(gc.DEBUG_SAVEALL)
    try:
        for _ in range(5):
            await raw.send(get("/healthz"))
            assert (await raw.answer()).status == 200
        gc.collect()
        mine = [
            o
            for o in gc.garbage
            if isinstance(o, httptools.HttpRequestParser) or type(o).__module__ == "tunegate.edge._front"
        ]
        assert mine == []
    finally:
        gc.set_debug(0)
        gc.garbage.clear()


async def test_reading_pauses_while_more_than_a_mebibyte_waits(stack: Stack, raw: Raw) -> None:
    fake = stack.fake
    assert isinstance(fake, GatedFiles)
    await raw.send(get("/v1/files/file-slow"))
    await asyncio.wait_for(fake.waiting.wait(), 10)
    behind = get("/healthz", "X-Pad: " + "p" * 4000)
    count = MAX_BODY // len(behind) + 10  # a little over 1 MiB of pipelined requests
    raw.writer.write(behind * count)
    (connection,) = stack.edge._front._connections
    for _ in range(200):
        if connection._reading_paused:
            break
        await asyncio.sleep(0.01)
    assert connection._reading_paused  # the rest stays in the kernel's buffers, not ours
    assert len(connection._buffer) < 2 * MAX_BODY
    fake.gate.set()
    assert (await raw.answer()).json()["id"] == "file-slow"
    for _ in range(count):
        assert (await raw.answer()).status == 200
    assert not connection._reading_paused


class _Transport:
    """Just enough of a transport for one `_Connection` driven by hand."""

    def __init__(self) -> None:
        self.reading = True
        self.written = b""

    def get_extra_info(self, _name: str, default: Any = None) -> Any:
        return default

    def pause_reading(self) -> None:
        self.reading = False

    def resume_reading(self) -> None:
        self.reading = True

    def write(self, data: bytes) -> None:
        self.written += data

    def close(self) -> None:
        pass

    def abort(self) -> None:
        pass


async def test_reading_pauses_while_the_client_reads_no_answers(stack: Stack) -> None:
    transport = _Transport()
    connection = stack.edge._front()
    connection.connection_made(transport)  # type: ignore[arg-type]
    connection.pause_writing()  # the client stopped reading: no request may start
    request = get("/healthz")
    for _ in range(2 * MAX_BODY // len(request) // 64):
        connection.data_received(request * 64)
        if not transport.reading:
            break
    assert not transport.reading and transport.written == b""
    connection.connection_lost(None)
