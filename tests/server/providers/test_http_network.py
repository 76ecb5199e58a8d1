"""HttpClient on a real socket (httpx over TCP, as in production): timeouts, refused connections, retries,
streamed bodies with an exact Content-Length, query spelling — against 127.0.0.1:0."""

from __future__ import annotations

import asyncio
import contextlib
import json
import pathlib
import socket
import ssl
from collections.abc import AsyncIterator
from typing import Any, cast

import h2.config
import h2.connection
import h2.events
import pytest
import trustme
from aiohttp import web
from tunegate.server.errors import DeadlineExceeded, InvalidArgument, UpstreamError
from tunegate.server.providers._http import Endpoint, HttpClient, HttpSettings


async def no_sleep(_: float) -> None:
    return None


@pytest.fixture
async def upstream() -> AsyncIterator[tuple[str, list[web.Request], dict[str, int]]]:
    seen: list[web.Request] = []
    counts = {"flaky": 0}

    async def echo(request: web.Request) -> web.Response:
        seen.append(request)
        body = await request.read()
        return web.json_response(
            {
                "query": dict(request.query),
                "length": request.headers.get("Content-Length"),
                "bytes": len(body),
            }
        )

    async def slow(request: web.Request) -> web.Response:
        await asyncio.sleep(1)
        return web.json_response({})

    async def flaky(request: web.Request) -> web.Response:
        counts["flaky"] += 1
        if counts["flaky"] == 1:
            return web.json_response({"error": {"message": "busy"}}, status=503)
        return web.json_response({"ok": True})

    async def bad(request: web.Request) -> web.Response:
        return web.json_response(
            {
                "error": {
                    "message": "bad model",
                    "type": "invalid_request_error",
                    "param": "model",
                    "code": None,
                }
            },
            status=400,
        )

    app = web.Application()
    app.router.add_route("*", "/echo", echo)
    app.router.add_get("/slow", slow)
    app.router.add_get("/flaky", flaky)
    app.router.add_post("/bad", bad)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    yield f"http://127.0.0.1:{port}", seen, counts
    await runner.cleanup()


def endpoint(base: str) -> Endpoint:
    return Endpoint(base_url=base, headers={"Authorization": "Bearer sk-x"}, params={"api-version": "v1"})


async def test_streamed_body_query_and_json(upstream: tuple[str, list[web.Request], dict[str, int]]) -> None:
    base, _, _ = upstream
    client = HttpClient("openai", sleep=no_sleep)

    async def chunks() -> AsyncIterator[bytes]:
        for _ in range(4):
            yield b"x" * 100_000

    try:
        answer = await client.request_json(
            "POST", endpoint(base), "/echo", content=chunks(), headers={"Content-Length": "400000"}
        )
        assert answer == {"query": {"api-version": "v1"}, "length": "400000", "bytes": 400_000}
        answer = await client.request_json(
            "GET",
            endpoint(base),
            "/echo",
            params={"metadata[tunegate_job_id]": "ftjob-1", "limit": 5, "x": True},
        )
        assert answer["query"] == {
            "api-version": "v1",
            "metadata[tunegate_job_id]": "ftjob-1",
            "limit": "5",
            "x": "true",
        }
    finally:
        await client.aclose()


async def test_errors_keep_their_class(upstream: tuple[str, list[web.Request], dict[str, int]]) -> None:
    base, _, counts = upstream
    client = HttpClient("openai", HttpSettings(timeout_seconds=0.3, max_retries=1), sleep=no_sleep)
    try:
        with pytest.raises(DeadlineExceeded):
            await client.request("GET", endpoint(base), "/slow")
        assert (await client.request_json("GET", endpoint(base), "/flaky")) == {"ok": True}
        assert counts["flaky"] == 2  # one 503, retried once (GET is idempotent)
        with pytest.raises(InvalidArgument) as bad:
            await client.request("POST", endpoint(base), "/bad", json={"model": "x"})
        assert (bad.value.param, bad.value.message) == ("model", "bad model")
    finally:
        await client.aclose()


async def test_refused_connection_is_an_upstream_error() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # bound, never listening: connections are refused
        client = HttpClient("openai", HttpSettings(max_retries=0), sleep=no_sleep)
        try:
            with pytest.raises(UpstreamError) as err:
                await client.request("GET", endpoint(f"http://127.0.0.1:{port}"), "/x")
            assert err.value.http_status == 502
        finally:
            await client.aclose()


MIB = 1024 * 1024


@contextlib.asynccontextmanager
async def serving(app: web.Application, **site: Any) -> AsyncIterator[int]:
    """`app` on 127.0.0.1:0 (TLS with `ssl_context=`); yields the port."""
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0, **site).start()
    try:
        yield runner.addresses[0][1]
    finally:
        await runner.cleanup()


async def test_a_streamed_request_body_is_sent_as_it_is_produced() -> None:
    received = [0]

    async def sink(request: web.Request) -> web.Response:
        async for chunk in request.content.iter_any():
            received[0] += len(chunk)
        return web.json_response({"bytes": received[0], "chunked": request.headers.get("Transfer-Encoding")})

    app = web.Application(client_max_size=1024**3)
    app.router.add_put("/sink", sink)
    chunk = b"x" * MIB
    received_when_produced: list[int] = []

    async def body() -> AsyncIterator[bytes]:
        for _ in range(64):
            received_when_produced.append(received[0])
            yield chunk

    async with serving(app) as port:
        client = HttpClient("openai", sleep=no_sleep)
        try:
            answer = await client.request_json(
                "PUT", endpoint(f"http://127.0.0.1:{port}"), "/sink", content=body()
            )
        finally:
            await client.aclose()
    assert answer == {"bytes": 64 * MIB, "chunked": "chunked"}
    # Socket buffers hold a few MiB: when the last chunk was asked for, most of the body had
    # reached the server. A client that gathered the body before sending would show 0 here.
    assert received_when_produced[-1] >= 16 * MIB


async def test_a_streamed_answer_is_read_as_it_arrives() -> None:
    sent = [0]

    async def source(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "application/octet-stream"})
        await response.prepare(request)
        for _ in range(64):
            await response.write(b"y" * MIB)  # waits while the client's side is full
            sent[0] += MIB
        await response.write_eof()
        return response

    app = web.Application()
    app.router.add_get("/source", source)
    async with serving(app) as port:
        client = HttpClient("openai", sleep=no_sleep)
        sent_at_first: int | None = None
        sizes: list[int] = []
        try:
            async with client.stream("GET", endpoint(f"http://127.0.0.1:{port}"), "/source") as response:
                assert response.headers["content-type"] == "application/octet-stream"
                async for piece in client.body_chunks(response, MIB):
                    if sent_at_first is None:
                        sent_at_first = sent[0]
                    sizes.append(len(piece))
        finally:
            await client.aclose()
    assert sum(sizes) == 64 * MIB and max(sizes) == MIB
    # The first chunk came while the server was still sending: a client that read the whole
    # answer before handing it over would see all 64 MiB sent here.
    assert sent_at_first is not None and sent_at_first <= 48 * MIB


async def test_streamed_answers_map_errors(upstream: tuple[str, list[web.Request], dict[str, int]]) -> None:
    base, _, _ = upstream

    async def broken(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Length": str(2 * MIB)})
        await response.prepare(request)
        await response.write(b"z" * MIB)
        assert request.transport is not None
        request.transport.abort()  # half the promised body, then the connection drops
        return response

    app = web.Application()
    app.router.add_get("/broken", broken)
    client = HttpClient("openai", HttpSettings(max_retries=0), sleep=no_sleep)
    try:
        with pytest.raises(InvalidArgument) as bad:  # an error answer: its body read for the error
            await client.open_stream("POST", endpoint(base), "/bad", json={"model": "x"})
        assert (bad.value.param, bad.value.message) == ("model", "bad model")
        async with serving(app) as port:
            response = await client.open_stream("GET", endpoint(f"http://127.0.0.1:{port}"), "/broken")
            with pytest.raises(UpstreamError) as dropped:
                async for _ in client.body_chunks(response):
                    pass
            assert dropped.value.http_status == 502 and response.is_closed
    finally:
        await client.aclose()


@pytest.fixture
async def proxy() -> AsyncIterator[str]:
    """A forward proxy's stand-in: answers every request itself, saying which URL it was asked for."""

    async def answer(request: web.Request) -> web.Response:
        return web.json_response({"via": "proxy", "url": str(request.url)})

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", answer)
    async with serving(app) as port:
        yield f"http://127.0.0.1:{port}"


async def test_proxies_come_from_the_environment(
    upstream: tuple[str, list[web.Request], dict[str, int]], proxy: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    base, _, _ = upstream
    for name in ("HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy", "NO_PROXY", "no_proxy"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HTTP_PROXY", proxy)

    async def via(settings: HttpSettings) -> Any:
        client = HttpClient("openai", settings, sleep=no_sleep)
        try:
            return (await client.request_json("GET", endpoint(base), "/echo")).get("via", "direct")
        finally:
            await client.aclose()

    assert await via(HttpSettings()) == "proxy"
    assert await via(HttpSettings(trust_env=False)) == "direct"
    monkeypatch.setenv("NO_PROXY", "127.0.0.1")
    assert await via(HttpSettings()) == "direct"


class H2Peer(asyncio.Protocol):
    """An HTTP/2 server of one route, on the `h2` library: answers each request with its
    `:path` and the HTTP version it arrived over."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)
        self.h2 = h2.connection.H2Connection(h2.config.H2Configuration(client_side=False))
        self.h2.initiate_connection()
        self.transport.write(self.h2.data_to_send())

    def data_received(self, data: bytes) -> None:
        for event in self.h2.receive_data(data):
            if isinstance(event, h2.events.RequestReceived) and event.stream_id is not None:
                path = dict(event.headers or [])[b":path"].decode()
                body = json.dumps({"path": path, "http": "2"}).encode()
                head = [
                    (":status", "200"),
                    ("content-type", "application/json"),
                    ("content-length", str(len(body))),
                ]
                self.h2.send_headers(event.stream_id, head)
                self.h2.send_data(event.stream_id, body, end_stream=True)
        self.transport.write(self.h2.data_to_send())


async def test_http2_over_tls_with_the_environments_ca(
    tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ca = trustme.CA()
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("localhost").configure_cert(server_context)
    server_context.set_alpn_protocols(["h2", "http/1.1"])
    ca.cert_pem.write_to_path(str(tmp_path / "ca.pem"))
    monkeypatch.setenv("SSL_CERT_FILE", str(tmp_path / "ca.pem"))  # trust_env reads it
    loop = asyncio.get_running_loop()
    server = await loop.create_server(H2Peer, "127.0.0.1", 0, ssl=server_context)
    port = server.sockets[0].getsockname()[1]
    untrusting = HttpClient("openai", HttpSettings(trust_env=False, max_retries=0), sleep=no_sleep)
    client = HttpClient("openai", sleep=no_sleep)
    try:
        with pytest.raises(UpstreamError):  # the peer is verified: without the CA it is refused
            await untrusting.request("GET", endpoint(f"https://localhost:{port}"), "/v1/files")
        response = await client.request("GET", endpoint(f"https://localhost:{port}"), "/v1/files")
        assert response.http_version == "HTTP/2"
        assert json.loads(response.content) == {"path": "/v1/files?api-version=v1", "http": "2"}
    finally:
        await untrusting.aclose()
        await client.aclose()
        server.close()
        await server.wait_closed()


async def test_one_pool_reuses_connections_within_its_limit() -> None:
    peers: list[object] = []

    async def who(request: web.Request) -> web.Response:
        assert request.transport is not None
        peers.append(request.transport.get_extra_info("peername"))
        await asyncio.sleep(0)  # let the other calls queue up behind this one
        return web.json_response({})

    app = web.Application()
    app.router.add_get("/who", who)
    client = HttpClient(
        "openai", HttpSettings(max_connections=1, max_keepalive_connections=1), sleep=no_sleep
    )
    try:
        async with serving(app) as port:
            base = endpoint(f"http://127.0.0.1:{port}")
            await asyncio.gather(*(client.request("GET", base, "/who") for _ in range(5)))
            await client.request("GET", base, "/who")
    finally:
        await client.aclose()
    assert len(peers) == 6 and len(set(peers)) == 1  # one connection, kept alive and shared
