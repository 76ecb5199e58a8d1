"""Http1Pool against real sockets on 127.0.0.1:0: scripted byte-level peers for framing, reuse and
failures; aiohttp servers for chunked uploads and TLS (trustme's throwaway CA)."""

from __future__ import annotations

import asyncio
import gzip
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest
import trustme
from aiohttp import web
from tunegate.server.providers._http1 import ConnectionFailed, ConnectTimeout, Http1Pool, ReadTimeout

Script = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


class Peer:
    """A TCP server running `script` per connection; records what each connection received."""

    def __init__(self, script: Script) -> None:
        self.script = script
        self.connections = 0
        self.received: list[bytes] = []
        self.server: asyncio.Server | None = None
        self.url = ""

    async def __aenter__(self) -> Peer:
        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            self.connections += 1
            try:
                await self.script(reader, writer)
            except (ConnectionError, asyncio.IncompleteReadError, asyncio.CancelledError):
                pass
            finally:
                writer.close()

        self.server = await asyncio.start_server(handle, "127.0.0.1", 0)
        self.url = f"http://127.0.0.1:{self.server.sockets[0].getsockname()[1]}"
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self.server is not None
        self.server.close()


async def read_request(reader: asyncio.StreamReader, peer: Peer) -> bytes:
    head = await reader.readuntil(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            length = int(line.split(b":")[1])
    body = await reader.readexactly(length)
    peer.received.append(head + body)
    return head + body


def pool(**kwargs: float) -> Http1Pool:
    settings: dict[str, float] = {"connect_timeout": 2.0, "read_timeout": 2.0, **kwargs}
    return Http1Pool(**settings)  # type: ignore[arg-type]


async def test_keep_alive_reuses_one_connection_and_sends_exact_bytes() -> None:
    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            await read_request(reader, peer)
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}")

    async with Peer(script) as peer:
        client = pool()
        first = await client.request("GET", peer.url + "/v1/files?limit=2", {"Authorization": "Bearer k"})
        second = await client.request("POST", peer.url + "/v1/jobs", {"X-A": "1"}, b'{"a":1}')
        await client.aclose()
    assert (first.status_code, first.content) == (200, b"{}")
    assert first.headers["content-type"] == "application/json"
    assert second.content == b"{}"
    assert peer.connections == 1
    port = peer.url.rsplit(":", 1)[1]
    assert peer.received == [
        b"GET /v1/files?limit=2 HTTP/1.1\r\nHost: 127.0.0.1:%s\r\n"
        b"Authorization: Bearer k\r\nUser-Agent: tunegate\r\n\r\n" % port.encode(),
        b"POST /v1/jobs HTTP/1.1\r\nHost: 127.0.0.1:%s\r\n"
        b'X-A: 1\r\nUser-Agent: tunegate\r\nContent-Length: 7\r\n\r\n{"a":1}' % port.encode(),
    ]


async def test_chunked_gzip_informational_and_eof_delimited_answers() -> None:
    packed = gzip.compress(b'{"ok": true}')
    answers = [
        b"HTTP/1.1 100 Continue\r\n\r\n"
        b"HTTP/1.1 201 Created\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Encoding: gzip\r\nContent-Length: %d\r\n\r\n%s" % (len(packed), packed),
        b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nuntil the end",
    ]

    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while answers:
            await read_request(reader, peer)
            answer = answers.pop(0)
            writer.write(answer)
            if b"Connection: close" in answer:
                await writer.drain()
                return

    async with Peer(script) as peer:
        client = pool()
        chunked = await client.request("GET", peer.url + "/a", {})
        zipped = await client.request("GET", peer.url + "/b", {})
        eof = await client.request("GET", peer.url + "/c", {})
        assert (chunked.status_code, chunked.content) == (201, b"abcde")
        assert zipped.content == b'{"ok": true}'
        assert (eof.status_code, eof.content) == (200, b"until the end")
        assert peer.connections == 1
        answers.append(b"HTTP/1.1 204 No Content\r\n\r\n")
        after_close = await client.request("DELETE", peer.url + "/d", {})
        assert after_close.status_code == 204
        assert peer.connections == 2  # the connection: close answer was not reused
        await client.aclose()


async def test_a_connection_closed_by_the_peer_while_idle_is_not_reused() -> None:
    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader, peer)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\nx")
        await writer.drain()  # then the script returns: the peer closes a keep-alive connection

    async with Peer(script) as peer:
        client = pool()
        await client.request("GET", peer.url + "/", {})
        await asyncio.sleep(0.05)
        again = await client.request("GET", peer.url + "/", {})
        await client.aclose()
    assert again.content == b"x"
    assert peer.connections == 2


async def test_a_broken_answer_is_a_connection_failure_and_the_connection_is_dropped() -> None:
    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            await read_request(reader, peer)
            if peer.connections == 1:
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nshort")
                await writer.drain()
                return
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")

    async with Peer(script) as peer:
        client = pool()
        with pytest.raises(ConnectionFailed):
            await client.request("GET", peer.url + "/", {})
        assert (await client.request("GET", peer.url + "/", {})).content == b"ok"
        await client.aclose()
    assert peer.connections == 2


async def test_timeouts_and_cancellation_close_the_connection() -> None:
    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader, peer)
        if peer.connections <= 2:
            await asyncio.sleep(5)  # never answers in time
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
        await writer.drain()
        await reader.read()

    async with Peer(script) as peer:
        client = pool(read_timeout=0.2)
        loop = asyncio.get_running_loop()
        started = loop.time()
        with pytest.raises(ReadTimeout):
            await client.request("GET", peer.url + "/", {})
        assert 0.15 < loop.time() - started < 1.5
        call = asyncio.ensure_future(client.request("GET", peer.url + "/", {}))
        await asyncio.sleep(0.05)
        call.cancel()
        with pytest.raises(asyncio.CancelledError):
            await call
        assert (await client.request("GET", peer.url + "/", {})).content == b"ok"
        await client.aclose()
    assert peer.connections == 3


async def test_bad_headers_and_bad_lengths_send_nothing_whole() -> None:
    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read()

    async with Peer(script) as peer:
        client = pool()
        for headers in ({"X-Evil": "a\r\nInjected: 1"}, {"X\nY": "1"}):
            with pytest.raises(ValueError):
                await client.request("GET", peer.url + "/", headers)
        with pytest.raises(ValueError):
            await client.request("GET", peer.url + "/a b", {})
        with pytest.raises(ValueError):
            await client.request("POST", peer.url + "/", {"Content-Length": "3"}, b"four")

        async def chunks() -> AsyncIterator[bytes]:
            yield b"12345"

        with pytest.raises(ValueError):
            await client.request("POST", peer.url + "/", {"Content-Length": "3"}, chunks())
        await client.aclose()
    assert peer.connections == 1  # only the streamed call connected, and it was closed


async def test_refused_and_unreachable_connections() -> None:
    server = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    server.close()
    await server.wait_closed()
    client = pool(connect_timeout=0.5)
    with pytest.raises(ConnectionFailed):
        await client.request("GET", f"http://127.0.0.1:{port}/", {})
    with pytest.raises(ValueError):
        await client.request("GET", "ftp://127.0.0.1/", {})
    await client.aclose()
    assert issubclass(ConnectTimeout, Exception)


async def test_connection_limit_queues_calls_on_one_connection() -> None:
    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            await read_request(reader, peer)
            await asyncio.sleep(0.01)
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\n.")

    async with Peer(script) as peer:
        client = Http1Pool(connect_timeout=2, read_timeout=2, max_connections=1)
        answers = await asyncio.gather(*(client.request("GET", peer.url + "/", {}) for _ in range(5)))
        await client.aclose()
    assert [a.content for a in answers] == [b"."] * 5
    assert peer.connections == 1


async def echo_app() -> web.Application:
    async def echo(request: web.Request) -> web.Response:
        body = await request.read()
        return web.json_response(
            {"bytes": len(body), "chunked": request.headers.get("Transfer-Encoding"), "sum": sum(body) % 997}
        )

    app = web.Application(client_max_size=64 * 1024 * 1024)
    app.router.add_post("/echo", echo)
    return app


async def test_streamed_body_without_a_length_is_chunked_and_arrives_whole() -> None:
    runner = web.AppRunner(await echo_app())
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    payload = bytes(range(256)) * 4096  # 1 MiB

    async def chunks() -> AsyncIterator[bytes]:
        for start in range(0, len(payload) * 16, 65536):
            yield payload[start % len(payload) : start % len(payload) + 65536]

    client = pool()
    try:
        answer = await client.request("POST", f"http://127.0.0.1:{port}/echo", {}, chunks())
    finally:
        await client.aclose()
        await runner.cleanup()
    assert answer.status_code == 200
    expected = (16 * len(payload), (sum(payload) * 16) % 997)
    assert answer.content == b'{"bytes": %d, "chunked": "chunked", "sum": %d}' % expected


async def test_tls_verifies_the_peer() -> None:
    ca = trustme.CA()
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("localhost").configure_cert(server_context)
    client_context = ssl.create_default_context()
    ca.configure_trust(client_context)
    runner = web.AppRunner(await echo_app())
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=server_context)
    await site.start()
    port = runner.addresses[0][1]
    trusting = Http1Pool(connect_timeout=2, read_timeout=2, ssl_context=client_context)
    default = pool()
    try:
        answer = await trusting.request("POST", f"https://localhost:{port}/echo", {}, b"abc")
        assert answer.content == b'{"bytes": 3, "chunked": null, "sum": 294}'
        with pytest.raises(ConnectionFailed):  # an unknown CA is refused by the default context
            await default.request("POST", f"https://localhost:{port}/echo", {}, b"abc")
    finally:
        await trusting.aclose()
        await default.aclose()
        await runner.cleanup()


async def test_an_answer_before_the_whole_body_stops_the_upload_and_drops_the_connection() -> None:
    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        peer.received.append(head)
        writer.write(b"HTTP/1.1 413 Payload Too Large\r\nContent-Length: 3\r\n\r\nbig")
        await writer.drain()
        await reader.read()

    sent: list[int] = []

    async def chunks() -> AsyncIterator[bytes]:
        for index in range(50):
            sent.append(index)
            yield b"x" * 1024
            await asyncio.sleep(0.01)

    async with Peer(script) as peer:
        client = pool()
        answer = await client.request(
            "POST", peer.url + "/files", {"Content-Length": str(50 * 1024)}, chunks()
        )
        assert (answer.status_code, answer.content) == (413, b"big")
        assert len(sent) < 50  # stopped sending once answered
        await client.request("POST", peer.url + "/files", {}, b"")
        await client.aclose()
    assert peer.connections == 2
