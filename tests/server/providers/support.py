"""Scripted upstreams for adapter tests.

`Upstream.on(method, path, *replies)` queues replies for a route (the last one repeats); a reply
is an `httpx.Response`, an exception or a function of the request. Every request is recorded as
an `httpx.Request`, body included. Two ways to serve the script:

- `Upstream()`: an aiohttp server on 127.0.0.1 over real sockets — what the adapters meet in
  production; point an account at `upstream.url` (`openai_account(upstream)`). An exception
  reply drops the connection without an answer;
- `MockUpstream()`: `httpx.MockTransport`, no sockets, for unit tests of retries and error
  mapping (an exception reply is raised as is: a timeout, a connection error).
"""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import AsyncIterator, Callable, Iterable
from contextlib import aclosing
from typing import Any, TypeVar

import httpx
from aiohttp import web
from openai.types.chat import ChatCompletionChunk
from tunegate.server.providers import Account
from tunegate.server.providers.interface import ChatReply

T = TypeVar("T")
Reply = httpx.Response | Exception | Callable[[httpx.Request], httpx.Response]

SECRET = "sk-test-SECRET-credential-0123456789"
OFFLINE_URL = "http://upstream.test"
"""The base of accounts no request is sent to."""
_HOP_HEADERS = frozenset({"content-length", "transfer-encoding", "content-encoding", "connection"})


class Script:
    """The routes, replies and recorded requests that both upstreams serve."""

    def __init__(self) -> None:
        self.requests: list[httpx.Request] = []
        self._routes: dict[tuple[str, str], list[Reply]] = {}

    def on(self, method: str, path: str, *replies: Reply) -> Any:
        self._routes[(method.upper(), path)] = list(replies)
        return self

    def reply(self, request: httpx.Request) -> httpx.Response:
        """The scripted answer to `request` (recorded); raises an exception reply."""
        self.requests.append(request)
        queue = self._routes.get((request.method, request.url.path))
        if not queue:
            return httpx.Response(404, json={"error": {"message": f"no route {request.url.path}"}})
        reply = queue.pop(0) if len(queue) > 1 else queue[0]
        if isinstance(reply, Exception):
            raise reply
        if isinstance(reply, httpx.Response):
            return reply
        return reply(request)

    def last_json(self) -> Any:
        return json.loads(self.requests[-1].content)


class MockUpstream(Script):
    """The script behind `httpx.MockTransport` (no sockets)."""

    def on(self, method: str, path: str, *replies: Reply) -> MockUpstream:
        super().on(method, path, *replies)
        return self

    @property
    def transport(self) -> httpx.MockTransport:
        return httpx.MockTransport(self.reply)


_SERVING: list[Upstream] = []


class Upstream(Script):
    """The script served on 127.0.0.1 over TCP. Make it inside a running event loop: the socket
    listens at once and the server starts on the loop's next turn; the providers tests' conftest
    closes it after the test."""

    def __init__(self) -> None:
        super().__init__()
        self._socket = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self._socket.getsockname()[1]}"
        self._runner: web.AppRunner | None = None
        self._started = asyncio.get_running_loop().create_task(self._start())
        _SERVING.append(self)

    def on(self, method: str, path: str, *replies: Reply) -> Upstream:
        super().on(method, path, *replies)
        return self

    async def _start(self) -> None:
        app = web.Application(client_max_size=1024**3)
        app.router.add_route("*", "/{tail:.*}", self._serve)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        await web.SockSite(self._runner, self._socket).start()

    async def _serve(self, request: web.Request) -> web.StreamResponse:
        sent = httpx.Request(
            request.method,
            self.url + request.raw_path,
            headers=[(k.decode("latin-1"), v.decode("latin-1")) for k, v in request.raw_headers],
            content=await request.read(),
        )
        try:
            answer = self.reply(sent)
        except Exception:
            assert request.transport is not None
            request.transport.abort()  # no answer: the connection drops
            return web.Response(status=500)
        await answer.aread()
        headers = {k: v for k, v in answer.headers.items() if k.lower() not in _HOP_HEADERS}
        return web.Response(status=answer.status_code, headers=headers, body=answer.content)

    async def aclose(self) -> None:
        await self._started
        if self._runner is not None:
            await self._runner.cleanup()


async def close_upstreams() -> None:
    """Stops every `Upstream` started so far."""
    while _SERVING:
        await _SERVING.pop().aclose()


class Sleeps:
    """An injectable `sleep` that records the delays instead of waiting."""

    def __init__(self) -> None:
        self.delays: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.delays.append(seconds)


def openai_account(upstream: Upstream | None = None, **options: str) -> Account:
    return Account(
        provider="openai",
        key="openai:key:test",
        base_url=f"{upstream.url if upstream else OFFLINE_URL}/v1",
        credential=SECRET,
        options=options,
    )


def azure_account(
    api_version: str = "2024-10-21", *, upstream: Upstream | None = None, **options: str
) -> Account:
    return Account(
        provider="azure-openai",
        key="azure-openai:key:test",
        base_url=f"{upstream.url if upstream else OFFLINE_URL}/myres/openai/",
        credential=SECRET,
        options={"resource_name": "myres", "deployment_id": "dep", "api_version": api_version, **options},
    )


def openai_job(job_id: str = "ftjob-abc", **fields: Any) -> dict[str, Any]:
    """An OpenAI `fine_tuning.job` as the API sends it."""
    job: dict[str, Any] = {
        "object": "fine_tuning.job",
        "id": job_id,
        "model": "gpt-4o-mini-2024-07-18",
        "created_at": 1_750_000_100,
        "fine_tuned_model": None,
        "organization_id": "org-123",
        "result_files": [],
        "status": "queued",
        "validation_file": None,
        "training_file": "file-train",
        "hyperparameters": {"n_epochs": "auto", "batch_size": "auto", "learning_rate_multiplier": "auto"},
        "trained_tokens": None,
        "error": None,
        "finished_at": None,
        "integrations": None,
        "seed": 42,
        "estimated_finish": None,
        "metadata": None,
    }
    job.update(fields)
    return job


def page(data: list[dict[str, Any]], has_more: bool = False) -> httpx.Response:
    return httpx.Response(200, json={"object": "list", "data": data, "has_more": has_more})


# ---------------------------------------------------------------------------------------------
# Translated chat streams (Bedrock Converse, Vertex Gemini)


async def items_of(items: Iterable[T]) -> AsyncIterator[T]:
    """`items` as an async iterator (a provider's events, a body's chunks)."""
    for item in items:
        yield item


def sse_items(data: bytes) -> list[str]:
    """The `data:` payloads of server-sent events (each event exactly one `data:` line)."""
    assert data.endswith(b"\n\n")
    items = []
    for event in data.decode().split("\n\n")[:-1]:
        assert event.startswith("data: ") and "\n" not in event
        items.append(event.removeprefix("data: "))
    return items


def parse_chunks(data: bytes) -> list[ChatCompletionChunk]:
    """The OpenAI chunks of a chat stream, which must end with `[DONE]` (and only there)."""
    items = sse_items(data)
    assert items[-1] == "[DONE]" and "[DONE]" not in items[:-1]
    return [ChatCompletionChunk.model_validate(json.loads(item)) for item in items[:-1]]


async def collect(chunks: AsyncIterator[bytes]) -> bytes:
    return b"".join([chunk async for chunk in chunks])


async def read_all(reply: ChatReply) -> bytes:
    """A chat reply's whole body, read inside `aclosing` as the servicer reads it."""
    async with aclosing(reply.chunks) as chunks:  # type: ignore[type-var]
        return b"".join([chunk async for chunk in chunks])
