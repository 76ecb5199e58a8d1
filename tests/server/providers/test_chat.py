"""Chat completions and models on the OpenAI and Azure adapters, against the fakes on 127.0.0.1
(real sockets): the caller's bytes reach the provider unchanged, the provider's answer comes back
unchanged (a stream as whole events, as they arrive), paid requests are never sent twice, and a
closed stream cancels the provider's request."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import socket
from collections.abc import AsyncIterator, Awaitable, Callable

import aiohttp
import pytest
from aiohttp import web
from tunegate.server.errors import (
    DeadlineExceeded,
    NotFound,
    ProviderUnreachable,
    ResourceExhausted,
    UpstreamError,
)
from tunegate.server.providers import Account, AzureOpenAIProvider, Capability, HttpSettings, OpenAIProvider
from tunegate.server.providers.interface import ChatProvider, ChatReply

from tests.fakes import FakeAzureOpenAI, FakeOpenAI
from tests.fakes._chat import ChatCall
from tests.openapi_schema import validate

from .support import Sleeps

# Odd spacing, a parameter no spec names, an integer past 2**53 and non-ASCII text: a relay that
# re-renders JSON changes at least one of them.
BODY = (
    b'{"model": "ft:gpt-4o-mini-2024-07-18:org-name:custom-model-v1:abc123",  "messages":'
    b' [{"role": "user", "content": "Hello! \\u00e9t\xc3\xa9"}], "seed": 9007199254740993,'
    b' "future_param": {"x": 1}, "temperature": 0.70}'
)


def streamed(body: bytes = BODY) -> bytes:
    return body[:-1] + b', "stream": true}'


@pytest.fixture
async def fake() -> AsyncIterator[FakeOpenAI]:
    server = FakeOpenAI(steps_per_get=0)
    await server.start()
    yield server
    await server.stop()


@pytest.fixture
async def azure() -> AsyncIterator[FakeAzureOpenAI]:
    server = FakeAzureOpenAI(steps_per_get=0)
    await server.start()
    yield server
    await server.stop()


@pytest.fixture
async def sleeps() -> Sleeps:
    return Sleeps()


@pytest.fixture
async def openai(sleeps: Sleeps) -> AsyncIterator[OpenAIProvider]:
    provider = OpenAIProvider(sleep=sleeps, jitter=lambda: 0.0)
    yield provider
    await provider.aclose()


@pytest.fixture
async def azure_provider(sleeps: Sleeps) -> AsyncIterator[AzureOpenAIProvider]:
    provider = AzureOpenAIProvider(sleep=sleeps, jitter=lambda: 0.0)
    yield provider
    await provider.aclose()


def account(fake: FakeOpenAI) -> Account:
    return Account(provider="openai", key="openai:key:chat", base_url=fake.base_url, credential="sk-chat")


def azure_account(fake: FakeAzureOpenAI, api_version: str, **options: str) -> Account:
    return Account(
        provider="azure-openai",
        key="azure-openai:key:chat",
        base_url=fake.base_url("res"),
        credential="az-key",
        options={"resource_name": "res", "api_version": api_version, **options},
    )


async def read_all(reply: ChatReply) -> list[bytes]:
    async with contextlib.aclosing(reply.chunks) as chunks:  # type: ignore[type-var]
        return [chunk async for chunk in chunks]


async def eventually(condition: Callable[[], bool], what: str) -> None:
    for _ in range(500):
        if condition():
            return
        await asyncio.sleep(0.02)
    raise AssertionError(f"never happened: {what}")


def free_port() -> int:
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def offline(base: str) -> Account:
    return Account(provider="openai", key="k", base_url=f"{base}/v1", credential="c")


@contextlib.asynccontextmanager
async def serve(handler: Callable[[web.Request], Awaitable[web.StreamResponse]]) -> AsyncIterator[str]:
    """`handler` answering every path on 127.0.0.1 (aiohttp.web); yields the base URL."""
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handler)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        yield f"http://127.0.0.1:{runner.addresses[0][1]}"
    finally:
        await runner.cleanup()


def only_call(calls: list[ChatCall]) -> ChatCall:
    assert len(calls) == 1, calls
    return calls[0]


def test_openai_and_azure_declare_chat_and_models() -> None:
    offline = Account(provider="azure-openai", key="k", base_url="http://x/openai", credential="c")
    for provider, caps in (
        (OpenAIProvider(), OpenAIProvider.capabilities),
        (AzureOpenAIProvider(), AzureOpenAIProvider().capabilities_for(offline)),
        (
            AzureOpenAIProvider(),
            AzureOpenAIProvider().capabilities_for(
                Account(
                    provider="azure-openai",
                    key="k",
                    base_url="http://x/openai",
                    credential="c",
                    options={"api_version": "2024-10-21"},
                )
            ),
        ),
    ):
        adapter: ChatProvider = provider
        assert adapter is provider and {Capability.CHAT, Capability.MODELS} <= caps


async def test_unary_chat_relays_the_exact_bytes_both_ways(fake: FakeOpenAI, openai: OpenAIProvider) -> None:
    reply = await openai.chat(account(fake), BODY, model="ft:gpt-4o-mini", stream=False)
    received = b"".join(await read_all(reply))

    call = only_call(fake.chat_calls)
    assert call.body == BODY  # unknown field, 64-bit seed and spacing all reached the provider
    assert json.loads(call.body)["seed"] == 9007199254740993
    assert call.headers["content-type"] == "application/json"
    assert received == bytes(call.sent)
    validate("CreateChatCompletionResponse", json.loads(received))
    assert reply.content_type.startswith("application/json")
    assert reply.headers["openai-processing-ms"] == "3"
    assert reply.headers["x-ratelimit-remaining-requests"] == "4999"
    assert reply.headers["x-request-id"].startswith("req_")
    assert all(name == name.lower() for name in reply.headers)
    assert "content-length" not in reply.headers
    assert fake.violations == []


async def test_streamed_chat_relays_whole_events_as_they_arrive(
    fake: FakeOpenAI, openai: OpenAIProvider
) -> None:
    fake.chat.chunks, fake.chat.chunk_size = 200, 37
    reply = await openai.chat(account(fake), streamed(), model="m", stream=True)
    items = await read_all(reply)

    call = only_call(fake.chat_calls)
    assert call.body == streamed() and call.completed and not call.cancelled
    assert b"".join(items) == bytes(call.sent)
    assert reply.content_type.startswith("text/event-stream")
    assert reply.headers["x-request-id"].startswith("req_")
    assert all(item.startswith(b"data: ") and item.endswith(b"\n\n") for item in items)
    assert items[-1].endswith(b"data: [DONE]\n\n")
    events = b"".join(items).split(b"\n\n")[:-1]
    assert len(events) == 200 + 3  # role chunk, content chunks, stop chunk, [DONE]
    for event in events[:-1]:
        validate("CreateChatCompletionStreamResponse", json.loads(event.removeprefix(b"data: ")))
    assert fake.violations == []


async def test_partial_events_are_held_until_they_are_whole(openai: OpenAIProvider) -> None:
    events = [b'data: {"a":1}\n\n', b'data: {"b":"\\n"}\r\n\r\n', b"data: [DONE]\n\n"]
    wire = b"".join(events)
    pieces = [wire[:3], wire[3:16], wire[16:17], wire[17:30], wire[30:]]  # splits inside and between

    async def answer(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        for piece in pieces:
            await response.write(piece)
            await asyncio.sleep(0.02)  # each piece its own read at the client
        return response

    async with serve(answer) as base:
        items = await read_all(await openai.chat(offline(base), streamed(), model="m", stream=True))
    assert b"".join(items) == wire
    assert all(item.endswith((b"\n\n", b"\r\n\r\n")) for item in items)
    assert items[0] == events[0]


async def test_the_events_at_hand_at_a_read_are_one_item(openai: OpenAIProvider) -> None:
    events = [f'data: {{"n":{n}}}\n\n'.encode() for n in range(5)] + [b"data: [DONE]\n\n"]
    written, release = asyncio.Event(), asyncio.Event()

    async def answer(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        for event in events[:4]:
            await response.write(event)  # four writes, all at the client before it reads
        await response.write(events[4][:5])  # and the start of a fifth
        written.set()
        await release.wait()
        await response.write(events[4][5:] + events[5])
        return response

    async with serve(answer) as base:
        reply = await openai.chat(offline(base), streamed(), model="m", stream=True)
        async with contextlib.aclosing(reply.chunks) as chunks:  # type: ignore[type-var]
            await written.wait()
            await asyncio.sleep(0.1)  # the client's socket has everything written so far
            first = await anext(chunks)
            release.set()
            rest = [item async for item in chunks]
    assert first == b"".join(events[:4])  # one item, not four; the partial fifth held back
    assert b"".join(rest) == events[4] + events[5]


async def test_a_bad_request_is_the_providers_400(fake: FakeOpenAI, openai: OpenAIProvider) -> None:
    with pytest.raises(Exception) as raised:
        await openai.chat(account(fake), b'{"model": "m", "messages": "hi"}', model="m", stream=False)
    error = raised.value
    assert getattr(error, "http_status", None) == 400 and getattr(error, "param", None) == "messages"
    assert fake.violations  # the fake saw a request against the spec (the test sent it on purpose)


@pytest.mark.parametrize("stream", [False, True])
async def test_429_keeps_status_and_retry_after_and_is_not_retried(
    fake: FakeOpenAI, openai: OpenAIProvider, sleeps: Sleeps, stream: bool
) -> None:
    fake.inject("429", "/chat/completions", retry_after=1)  # short enough that a GET would retry
    with pytest.raises(ResourceExhausted) as raised:
        await openai.chat(account(fake), streamed() if stream else BODY, model="m", stream=stream)
    error = raised.value
    assert (error.http_status, error.retry_after, error.code) == (429, 1.0, "rate_limit_exceeded")
    assert error.type == "rate_limit_error" and "Rate limit" in error.message
    assert len(fake.requests_to("POST", "/chat/completions$")) == 1 and sleeps.delays == []


async def test_a_5xx_is_a_502_and_is_not_retried(
    fake: FakeOpenAI, openai: OpenAIProvider, sleeps: Sleeps
) -> None:
    fake.inject("503", "/chat/completions")
    with pytest.raises(UpstreamError) as raised:
        await openai.chat(account(fake), BODY, model="m", stream=False)
    assert raised.value.http_status == 502 and "openai" in raised.value.message
    assert len(fake.requests_to("POST", "/chat/completions$")) == 1 and sleeps.delays == []


async def test_a_dropped_connection_after_sending_is_not_retried(
    fake: FakeOpenAI, openai: OpenAIProvider, sleeps: Sleeps
) -> None:
    fake.inject("disconnect", "/chat/completions")
    with pytest.raises(UpstreamError) as raised:
        await openai.chat(account(fake), BODY, model="m", stream=True)
    assert not isinstance(raised.value, ProviderUnreachable)
    assert len(fake.requests_to("POST", "/chat/completions$")) == 1 and sleeps.delays == []


async def test_a_refused_connection_is_retried_then_unreachable(
    openai: OpenAIProvider, sleeps: Sleeps
) -> None:
    closed = offline(f"http://127.0.0.1:{free_port()}")
    with pytest.raises(ProviderUnreachable):
        await openai.chat(closed, BODY, model="m", stream=False)
    assert len(sleeps.delays) == openai.http.settings.max_retries


async def test_only_a_request_never_sent_is_sent_again(fake: FakeOpenAI) -> None:
    port = free_port()
    later = FakeOpenAI(steps_per_get=0)
    delays: list[float] = []

    async def start_the_provider(seconds: float) -> None:  # the backoff: the provider comes up
        delays.append(seconds)
        if not later.port:
            await later.start(port)

    provider = OpenAIProvider(sleep=start_the_provider, jitter=lambda: 0.0)
    try:
        target = offline(f"http://127.0.0.1:{port}")
        reply = await provider.chat(target, BODY, model="m", stream=False)
        received = b"".join(await read_all(reply))
        assert received == bytes(only_call(later.chat_calls).sent) and len(delays) == 1

        fake.inject("disconnect", "/chat/completions")  # sent, then the connection drops
        with pytest.raises(UpstreamError) as raised:
            await provider.chat(account(fake), BODY, model="m", stream=False)
        assert not isinstance(raised.value, ProviderUnreachable)
        assert len(fake.requests_to("POST", "/chat/completions$")) == 1 and len(delays) == 1
    finally:
        await provider.aclose()
        await later.stop()


async def test_a_slow_provider_is_a_deadline_and_is_not_retried(fake: FakeOpenAI, sleeps: Sleeps) -> None:
    provider = OpenAIProvider(HttpSettings(chat_timeout_seconds=0.3), sleep=sleeps)
    try:
        fake.inject("slow", "/chat/completions", delay=5)  # no head within the read timeout
        with pytest.raises(DeadlineExceeded) as raised:
            await provider.chat(account(fake), BODY, model="m", stream=False)
        assert raised.value.http_status == 504 and "0.3 s" in raised.value.message

        fake.chat.chunks, fake.chat.delay = 3, 5.0  # the head, then nothing within the timeout
        reply = await provider.chat(account(fake), streamed(), model="m", stream=True)
        with pytest.raises(DeadlineExceeded):
            await read_all(reply)
        assert len(fake.requests_to("POST", "/chat/completions$")) == 2 and sleeps.delays == []
    finally:
        await provider.aclose()


async def test_no_free_connection_in_time_is_unreachable(fake: FakeOpenAI, sleeps: Sleeps) -> None:
    settings = HttpSettings(max_connections=1, max_keepalive_connections=1, timeout_seconds=0.2)
    provider = OpenAIProvider(settings, sleep=sleeps, jitter=lambda: 0.0)
    try:
        fake.chat.chunks, fake.chat.delay = 100, 0.05
        holding = await provider.chat(account(fake), streamed(), model="m", stream=True)
        with pytest.raises(ProviderUnreachable) as raised:
            await provider.chat(account(fake), BODY, model="m", stream=False)
        assert "timed out" in raised.value.message
        assert len(sleeps.delays) == settings.max_retries  # never sent, so retried
        assert len(fake.requests_to("POST", "/chat/completions$")) == 1
        await holding.chunks.aclose()  # type: ignore[attr-defined]
        fake.chat.delay = 0.0
        await read_all(await provider.chat(account(fake), BODY, model="m", stream=False))  # freed
    finally:
        await provider.aclose()


async def test_redirects_are_not_followed(openai: OpenAIProvider) -> None:
    seen: list[str] = []

    async def answer(request: web.Request) -> web.StreamResponse:
        seen.append(request.path)
        if request.path.endswith("/chat/completions"):
            raise web.HTTPTemporaryRedirect("/elsewhere/chat/completions")
        return web.json_response({"stolen": True})

    async with serve(answer) as base:
        with pytest.raises(UpstreamError) as raised:
            await openai.chat(offline(base), BODY, model="m", stream=False)
    assert "307" in raised.value.message and seen == ["/v1/chat/completions"]


async def test_a_compressed_answer_is_relayed_decoded(openai: OpenAIProvider) -> None:
    body = b'{"id": "chatcmpl-1", "object": "chat.completion", "pad": "' + b"x" * 5000 + b'"}'

    async def answer(request: web.Request) -> web.StreamResponse:
        assert "gzip" in request.headers["Accept-Encoding"]
        response = web.Response(body=body, content_type="application/json")
        response.enable_compression(web.ContentCoding.gzip)
        return response

    async with serve(answer) as base:
        reply = await openai.chat(offline(base), BODY, model="m", stream=False)
        assert b"".join(await read_all(reply)) == body


async def test_proxies_come_from_the_environment(monkeypatch: pytest.MonkeyPatch, sleeps: Sleeps) -> None:
    seen: list[tuple[str, str]] = []

    async def proxy(request: web.Request) -> web.StreamResponse:
        seen.append((request.host, request.path))  # a forward proxy gets the absolute URL
        return web.json_response({"via": "proxy"})

    for name in ("http_proxy", "https_proxy", "all_proxy", "no_proxy"):
        for variant in (name, name.upper()):
            monkeypatch.delenv(variant, raising=False)
    async with serve(proxy) as proxy_url:
        monkeypatch.setenv("http_proxy", proxy_url)
        target = offline("http://upstream.invalid")
        proxied = OpenAIProvider(sleep=sleeps)
        try:
            reply = await proxied.chat(target, BODY, model="m", stream=False)
            assert b"".join(await read_all(reply)) == b'{"via": "proxy"}'
            assert seen == [("upstream.invalid", "/v1/chat/completions")]
        finally:
            await proxied.aclose()

        monkeypatch.setenv("no_proxy", "upstream.invalid")
        direct = OpenAIProvider(sleep=sleeps)
        try:
            with pytest.raises(ProviderUnreachable):  # not proxied: the name does not resolve
                await direct.chat(target, BODY, model="m", stream=False)
            assert len(seen) == 1
        finally:
            await direct.aclose()


async def test_the_session_is_built_at_first_chat_and_closed_with_the_adapter(fake: FakeOpenAI) -> None:
    provider = OpenAIProvider()

    def session() -> aiohttp.ClientSession | None:
        return provider.chat_http._session

    assert session() is None  # nothing built before the first chat (nor outside a loop)
    await read_all(await provider.chat(account(fake), BODY, model="m", stream=False))
    built = session()
    assert built is not None
    open_before_close = not built.closed
    await provider.aclose()
    assert open_before_close and built.closed and session() is None


async def test_closing_the_stream_cancels_the_providers_request(
    fake: FakeOpenAI, openai: OpenAIProvider
) -> None:
    fake.chat.chunks, fake.chat.delay = 1000, 0.01
    reply = await openai.chat(account(fake), streamed(), model="m", stream=True)
    async with contextlib.aclosing(reply.chunks) as chunks:  # type: ignore[type-var]
        received = 0
        async for _ in chunks:
            received += 1
            if received == 3:
                break
    call = only_call(fake.chat_calls)
    await eventually(lambda: call.cancelled, "the fake saw the client close the stream")
    assert not call.completed and call.chunks_sent < 1000


async def test_an_unstarted_stream_closes_its_response_too(fake: FakeOpenAI, openai: OpenAIProvider) -> None:
    fake.chat.chunks, fake.chat.delay = 1000, 0.01
    reply = await openai.chat(account(fake), streamed(), model="m", stream=True)
    await reply.chunks.aclose()  # type: ignore[attr-defined]
    call = only_call(fake.chat_calls)
    await eventually(lambda: call.cancelled, "the fake saw the client close the stream")


async def test_a_stream_cut_midway_raises_after_the_whole_events(
    fake: FakeOpenAI, openai: OpenAIProvider
) -> None:
    fake.chat.chunks, fake.chat.cut_after = 50, 5
    reply = await openai.chat(account(fake), streamed(), model="m", stream=True)
    items: list[bytes] = []
    with pytest.raises(UpstreamError):
        async with contextlib.aclosing(reply.chunks) as chunks:  # type: ignore[type-var]
            async for item in chunks:
                items.append(item)
    assert only_call(fake.chat_calls).cut
    assert b"".join(items).count(b"\n\n") <= 6 and all(item.endswith(b"\n\n") for item in items)
    assert b"[DONE]" not in b"".join(items)


# -- Azure ------------------------------------------------------------------------------------


@pytest.mark.parametrize("stream", [False, True])
async def test_azure_dated_chat_goes_through_the_deployment(
    azure: FakeAzureOpenAI, azure_provider: AzureOpenAIProvider, stream: bool
) -> None:
    azure.deployments = {"my-ft-deployment"}
    target = azure_account(azure, "2024-10-21", deployment_id="my-ft-deployment")
    body = streamed() if stream else BODY
    reply = await azure_provider.chat(target, body, model="ft:whatever", stream=stream)
    items = await read_all(reply)

    call = only_call(azure.chat_calls)
    assert call.path == "/res/openai/deployments/my-ft-deployment/chat/completions"
    assert call.query == {"api-version": "2024-10-21"} and call.body == body
    (recorded,) = azure.requests_to("POST", "/chat/completions$")
    assert recorded.headers["api-key"] == "***" and "authorization" not in recorded.headers
    assert b"".join(items) == bytes(call.sent)
    assert reply.headers["apim-request-id"]
    assert azure.violations == []


async def test_azure_dated_chat_without_a_deployment_uses_the_model(
    azure: FakeAzureOpenAI, azure_provider: AzureOpenAIProvider
) -> None:
    target = azure_account(azure, "2024-10-21")
    await read_all(await azure_provider.chat(target, BODY, model="gpt-4o-mini-ft", stream=False))
    assert only_call(azure.chat_calls).path == "/res/openai/deployments/gpt-4o-mini-ft/chat/completions"


async def test_azure_v1_chat_names_the_deployment_in_the_body(
    azure: FakeAzureOpenAI, azure_provider: AzureOpenAIProvider
) -> None:
    reply = await azure_provider.chat(azure_account(azure, "v1"), streamed(), model="m", stream=True)
    items = await read_all(reply)
    call = only_call(azure.chat_calls)
    assert call.path == "/res/openai/v1/chat/completions" and call.query == {} and call.body == streamed()
    assert items[-1].endswith(b"data: [DONE]\n\n") and azure.violations == []


async def test_azure_429_keeps_retry_after(
    azure: FakeAzureOpenAI, azure_provider: AzureOpenAIProvider, sleeps: Sleeps
) -> None:
    azure.inject("429", "/chat/completions", retry_after=2)
    with pytest.raises(ResourceExhausted) as raised:
        await azure_provider.chat(
            azure_account(azure, "2024-10-21", deployment_id="d"), BODY, model="m", stream=False
        )
    assert (raised.value.http_status, raised.value.retry_after) == (429, 2.0)
    assert (
        len(azure.chat_calls) + len(azure.requests_to("POST", "/chat/completions$")) == 1
        and sleeps.delays == []
    )


# -- models -----------------------------------------------------------------------------------


async def test_openai_models_list_and_get(fake: FakeOpenAI, openai: OpenAIProvider) -> None:
    models = await openai.list_models(account(fake))
    assert [m["id"] for m in models] == list(fake.base_models)
    for model in models:
        validate("Model", model)
    assert await openai.get_model(account(fake), fake.base_models[0]) == models[0]
    with pytest.raises(NotFound) as raised:
        await openai.get_model(account(fake), "ft:gpt-4o-mini:org:none:xyz")
    assert raised.value.code == "model_not_found"
    assert fake.violations == []


@pytest.mark.parametrize("api_version", ["v1", "2024-10-21"])
async def test_azure_models_are_openai_models(
    azure: FakeAzureOpenAI, azure_provider: AzureOpenAIProvider, api_version: str
) -> None:
    target = azure_account(azure, api_version)
    models = await azure_provider.list_models(target)
    assert [m["id"] for m in models] == list(azure.base_models)
    for model in models:
        validate("Model", model)
    assert await azure_provider.get_model(target, azure.base_models[1]) == models[1]
    with pytest.raises(NotFound):
        await azure_provider.get_model(target, "nope")
    assert azure.violations == []


async def test_an_azure_deployment_is_the_one_model(
    azure: FakeAzureOpenAI, azure_provider: AzureOpenAIProvider
) -> None:
    target = azure_account(azure, "2024-10-21", deployment_id="my-ft-deployment")
    (model,) = await azure_provider.list_models(target)
    validate("Model", model)
    assert model["id"] == "my-ft-deployment"
    assert await azure_provider.get_model(target, "my-ft-deployment") == model
    with pytest.raises(NotFound):
        await azure_provider.get_model(target, "other")
    assert azure.requests == []


async def test_a_10_mb_stream_is_relayed_piece_by_piece(fake: FakeOpenAI, openai: OpenAIProvider) -> None:
    fake.chat.chunks, fake.chat.chunk_size = 8_000, 1_200  # ~10 MB of events
    reply = await openai.chat(account(fake), streamed(), model="m", stream=True)
    total, largest, digest = 0, 0, hashlib.sha256()
    async with contextlib.aclosing(reply.chunks) as chunks:  # type: ignore[type-var]
        async for item in chunks:
            assert item.endswith(b"\n\n")
            total, largest = total + len(item), max(largest, len(item))
            digest.update(item)
    call = only_call(fake.chat_calls)
    assert total == len(call.sent) > 10_000_000 and digest.digest() == hashlib.sha256(call.sent).digest()
    assert largest < 1_000_000  # never the whole body at once
