"""HttpClient on a real socket (httpx over TCP, as in production): timeouts, refused connections, retries,
streamed bodies with an exact Content-Length, query spelling — against 127.0.0.1:0."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator

import pytest
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
