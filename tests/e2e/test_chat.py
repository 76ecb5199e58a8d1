"""Chat completions through the contract, on a provider: the edge's pass-through of the caller's
JSON, `stream` choosing the RPC, events relayed as they arrive, a client that leaves cancelling
the provider's answer, errors before and after the first event, the gateway's own 404.

The provider is `ScriptedChat`, an adapter registered as `openai` whose answers each model name
scripts (the spec-validating fake upstream and the real adapters are tested with the providers).
"""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import grpc
import httpx
import openai
import pytest
from google.api import httpbody_pb2
from openai.types.chat import ChatCompletionMessageParam
from tunegate.server.errors import InvalidArgument, ResourceExhausted, UpstreamError
from tunegate.server.providers.interface import Account, Capability, ChatReply
from tunegate.v1 import chat_pb2, chat_pb2_grpc

from tests.conftest import Gateway, start_gateway

PROVIDER = {"x-portkey-provider": "openai"}
MESSAGES: list[ChatCompletionMessageParam] = [{"role": "user", "content": "Hello!"}]
WAIT = 30.0  # an upper bound for what must happen, never a speed claim


def chunk(model: str, delta: dict[str, Any], finish: str | None = None) -> bytes:
    body = {
        "id": "chatcmpl-1",
        "object": "chat.completion.chunk",
        "created": 1,
        "model": model,
        "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}],
    }
    return b"data: " + json.dumps(body).encode() + b"\n\n"


def completion(model: str, text: str) -> bytes:
    return json.dumps(
        {
            "id": "chatcmpl-1",
            "object": "chat.completion",
            "created": 1,
            "model": model,
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": text, "refusal": None},
                    "logprobs": None,
                    "finish_reason": "stop",
                }
            ],
            "usage": {"prompt_tokens": 2, "completion_tokens": 1, "total_tokens": 3},
        }
    ).encode()


class ScriptedChat:
    """A chat adapter whose model names script the answer: `gated` waits for `release` after
    its first event, `hangs` never sends a second one, `breaks` fails after its first one,
    `rate-limited` is a 429 with Retry-After. Records each request and each closed stream."""

    name = "openai"
    capabilities = frozenset({Capability.CHAT})
    pages_by_id = True

    def __init__(self) -> None:
        self.requests: list[tuple[bytes, str, bool]] = []
        self.release = threading.Event()
        self.closed: dict[str, threading.Event] = {}

    def closed_event(self, model: str) -> threading.Event:
        return self.closed.setdefault(model, threading.Event())

    async def chat(self, account: Account, body: bytes, *, model: str, stream: bool) -> ChatReply:
        assert account.provider == "openai"
        self.requests.append((body, model, stream))
        if model == "rate-limited":
            raise ResourceExhausted("Rate limit reached for requests.", retry_after=7)
        if not stream:
            return ChatReply("application/json", _once(completion(model, "Hello")))
        return ChatReply("text/event-stream", self._events(model))

    async def _events(self, model: str) -> AsyncIterator[bytes]:
        try:
            yield chunk(model, {"role": "assistant", "content": "Hel"})
            if model == "gated":
                await asyncio.to_thread(self.release.wait, WAIT)
            elif model == "hangs":
                await asyncio.sleep(3600)
            elif model == "breaks":
                raise UpstreamError("The provider's stream broke off.")
            yield chunk(model, {"content": "lo"}) + chunk(model, {}, "stop")
            yield b"data: [DONE]\n\n"
        finally:
            self.closed_event(model).set()


async def _once(data: bytes) -> AsyncIterator[bytes]:
    yield data


class Providers:
    """The provider set: `openai` is the scripted adapter; there is no local provider."""

    def __init__(self, chat: ScriptedChat) -> None:
        self.chat = chat

    def get(self, name: str) -> Any:
        if name == "openai":
            return self.chat
        raise InvalidArgument(f"Unknown provider '{name}'.", code="unknown_provider")


class Stack:
    def __init__(self, gateway: Gateway, chat: ScriptedChat) -> None:
        self.gateway = gateway
        self.chat = chat


@pytest.fixture(scope="module", params=["grpc", "in-process"])
def stack(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    chat = ScriptedChat()
    gateway = start_gateway(
        tmp_path_factory.mktemp("chat"), in_process=request.param == "in-process", providers=Providers(chat)
    )
    yield Stack(gateway, chat)
    gateway.close()


def _headers(api_key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {api_key}", **PROVIDER}


def test_sdk_sync_whole_and_streamed_relay_the_callers_json(stack: Stack, api_key: str) -> None:
    client = openai.OpenAI(
        base_url=stack.gateway.base_url, api_key=api_key, default_headers=PROVIDER, max_retries=0
    )
    seed = 2**62 + 1  # a double would lose its last digits
    answer = client.chat.completions.create(
        model="gpt-4o-mini", messages=MESSAGES, seed=seed, extra_body={"future_param": {"k": [1, 2]}}
    )
    assert answer.choices[0].message.content == "Hello" and answer.usage is not None
    body, model, stream = stack.chat.requests[-1]
    assert (model, stream) == ("gpt-4o-mini", False)
    sent = json.loads(body)
    assert sent["seed"] == seed and sent["future_param"] == {"k": [1, 2]} and sent["messages"] == MESSAGES

    chunks = list(client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES, stream=True))
    assert "".join(c.choices[0].delta.content or "" for c in chunks) == "Hello"
    assert chunks[-1].choices[0].finish_reason == "stop"
    body, model, stream = stack.chat.requests[-1]
    assert (model, stream) == ("gpt-4o-mini", True) and json.loads(body)["stream"] is True


async def test_sdk_async_whole_and_streamed(stack: Stack, api_key: str) -> None:
    client = openai.AsyncOpenAI(
        base_url=stack.gateway.base_url, api_key=api_key, default_headers=PROVIDER, max_retries=0
    )
    async with client:
        answer = await client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
        assert answer.choices[0].message.content == "Hello"
        streamed = await client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES, stream=True)
        text = "".join([c.choices[0].delta.content or "" async for c in streamed])
        assert text == "Hello"


def test_events_reach_the_client_before_the_stream_ends(stack: Stack, api_key: str) -> None:
    stack.chat.release.clear()
    body = {"model": "gated", "messages": MESSAGES, "stream": True}
    with (
        httpx.Client(timeout=WAIT) as http,
        http.stream(
            "POST", stack.gateway.base_url + "/chat/completions", json=body, headers=_headers(api_key)
        ) as r,
    ):
        assert r.status_code == 200
        assert r.headers["content-type"].startswith("text/event-stream")
        assert r.headers["cache-control"] == "no-cache" and "content-length" not in r.headers
        assert r.headers["x-request-id"]
        events = r.iter_lines()
        first = next(line for line in events if line)
        assert not stack.chat.release.is_set()  # the provider has not sent the rest yet
        assert json.loads(first.removeprefix("data: "))["choices"][0]["delta"]["content"] == "Hel"
        stack.chat.release.set()
        rest = [line for line in events if line]
    assert rest[-1] == "data: [DONE]"
    assert "".join(json.loads(x[6:])["choices"][0]["delta"].get("content", "") for x in rest[:-1]) == "lo"


def test_a_client_that_leaves_mid_stream_cancels_the_provider(stack: Stack, api_key: str) -> None:
    closed = stack.chat.closed_event("hangs")
    closed.clear()
    body = {"model": "hangs", "messages": MESSAGES, "stream": True}
    with (
        httpx.Client(timeout=WAIT) as http,
        http.stream(
            "POST", stack.gateway.base_url + "/chat/completions", json=body, headers=_headers(api_key)
        ) as r,
    ):
        assert r.status_code == 200
        lines = r.iter_lines()  # kept: dropping httpx's iterator closes the response
        assert next(line for line in lines if line).startswith("data: ")
        assert not closed.is_set()
    # The connection is closed: the provider's stream must be closed long before its hour is up.
    assert closed.wait(WAIT)


async def test_a_grpc_caller_that_cancels_cancels_the_provider(stack: Stack, api_key: str) -> None:
    closed = stack.chat.closed_event("hangs")
    closed.clear()
    request = _grpc_request({"model": "hangs", "messages": MESSAGES, "stream": True}, stream=True)
    async with grpc.aio.insecure_channel(stack.gateway.grpc_target) as channel:
        call = chat_pb2_grpc.ChatCompletionsStub(channel).StreamChatCompletion(
            request, metadata=_metadata(api_key)
        )
        first: Any = await call.read()
        assert first.content_type == "text/event-stream" and b"Hel" in first.data
        call.cancel()
    assert await asyncio.to_thread(closed.wait, WAIT)


def test_an_error_after_the_first_event_ends_the_stream_as_openai_does(stack: Stack, api_key: str) -> None:
    body = {"model": "breaks", "messages": MESSAGES, "stream": True}
    answer = httpx.post(
        stack.gateway.base_url + "/chat/completions", json=body, headers=_headers(api_key), timeout=WAIT
    )
    assert answer.status_code == 200
    events = [line for line in answer.text.split("\n\n") if line]
    assert "Hel" in events[0]
    error = json.loads(events[-1].removeprefix("data: "))["error"]
    assert error["message"] == "The provider's stream broke off." and error["type"] == "server_error"
    assert "[DONE]" not in answer.text

    client = openai.OpenAI(
        base_url=stack.gateway.base_url, api_key=api_key, default_headers=PROVIDER, max_retries=0
    )
    with pytest.raises(openai.APIError, match="broke off"):
        for _ in client.chat.completions.create(model="breaks", messages=MESSAGES, stream=True):
            pass


@pytest.mark.parametrize("stream", [False, True])
def test_a_provider_error_before_the_answer_keeps_status_and_retry_after(
    stack: Stack, api_key: str, stream: bool
) -> None:
    body = {"model": "rate-limited", "messages": MESSAGES, "stream": stream}
    answer = httpx.post(stack.gateway.base_url + "/chat/completions", json=body, headers=_headers(api_key))
    assert answer.status_code == 429, answer.text
    assert answer.headers["retry-after"] == "7" and answer.headers["x-should-retry"] == "true"
    assert answer.headers["content-type"].startswith("application/json")
    assert answer.json()["error"]["code"] == "rate_limit_exceeded"


def _grpc_request(document: dict[str, Any], *, stream: bool, model: str = "") -> Any:
    return chat_pb2.CreateChatCompletionRequest(
        model=model,
        stream=stream,
        body=httpbody_pb2.HttpBody(content_type="application/json", data=json.dumps(document).encode()),
    )


def _metadata(api_key: str) -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Bearer {api_key}"), ("x-portkey-provider", "openai"))


async def test_grpc_callers_send_the_same_json_to_both_rpcs(stack: Stack, api_key: str) -> None:
    async with grpc.aio.insecure_channel(stack.gateway.grpc_target) as channel:
        stub = chat_pb2_grpc.ChatCompletionsStub(channel)
        whole = await stub.CreateChatCompletion(
            _grpc_request({"model": "gpt-4o-mini", "messages": MESSAGES}, stream=False, model="gpt-4o-mini"),
            metadata=_metadata(api_key),
        )
        assert whole.content_type == "application/json"
        assert json.loads(whole.data)["choices"][0]["message"]["content"] == "Hello"

        call = stub.StreamChatCompletion(
            _grpc_request({"model": "gpt-4o-mini", "messages": MESSAGES, "stream": True}, stream=True),
            metadata=_metadata(api_key),
        )
        data = b"".join([message.data async for message in call])
        assert data.endswith(b"data: [DONE]\n\n") and b'"Hel"' in data

        # The envelope must agree with the RPC and the body.
        for request, param in [
            (_grpc_request({"model": "m", "messages": MESSAGES, "stream": True}, stream=False), "stream"),
            (_grpc_request({"model": "m", "messages": MESSAGES}, stream=True), "stream"),
            (_grpc_request({"model": "m", "messages": MESSAGES}, stream=False, model="other"), "model"),
        ]:
            with pytest.raises(grpc.aio.AioRpcError) as raised:
                if request.stream:
                    await stub.StreamChatCompletion(request, metadata=_metadata(api_key)).read()
                else:
                    await stub.CreateChatCompletion(request, metadata=_metadata(api_key))
            assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            assert param in (raised.value.details() or "")


def test_an_unknown_model_is_the_gateways_own_404(stack: Stack, api_key: str) -> None:
    client = openai.OpenAI(base_url=stack.gateway.base_url, api_key=api_key, max_retries=0)
    with pytest.raises(openai.NotFoundError) as missing:
        client.chat.completions.create(model="gpt-4o", messages=MESSAGES)
    error = missing.value.body
    assert isinstance(error, dict)
    assert error["code"] == "model_not_found" and error["param"] == "model"
    assert "gateway" in error["message"] and "x-portkey-provider" in error["message"]
    assert "does not exist or you do not have access" not in error["message"]


def _deep(levels: int) -> Any:
    value: Any = "x"
    for _ in range(levels):
        value = [value]
    return value


@pytest.mark.parametrize(
    ("content", "param", "code"),
    [
        (b'{"model": "gpt-4o", "messages": [', None, "invalid_json"),
        (b"[1, 2]", None, "invalid_json"),
        (b'"text"', None, "invalid_json"),
        (
            json.dumps({"model": "m", "messages": MESSAGES, "stream": "yes"}).encode(),
            "stream",
            "invalid_type",
        ),
        (json.dumps({"model": "m", "messages": MESSAGES, "stream": 1}).encode(), "stream", "invalid_type"),
        (json.dumps({"model": 4, "messages": MESSAGES}).encode(), "model", "invalid_type"),
        (
            json.dumps({"model": "m", "messages": [{"role": "user", "content": _deep(300)}]}).encode(),
            "messages[0].content",
            "invalid_value",
        ),
    ],
)
def test_a_bad_body_is_a_400_naming_its_param(
    stack: Stack, api_key: str, content: bytes, param: str | None, code: str
) -> None:
    asked = len(stack.chat.requests)
    answer = httpx.post(
        stack.gateway.base_url + "/chat/completions",
        content=content,
        headers={**_headers(api_key), "Content-Type": "application/json"},
    )
    assert answer.status_code == 400, answer.text
    error = answer.json()["error"]
    assert (error["param"], error["code"]) == (param, code)
    assert len(stack.chat.requests) == asked  # the provider was never asked


def test_a_body_over_the_json_limit_is_a_413(stack: Stack, api_key: str, tmp_path: Path) -> None:
    del tmp_path
    big = json.dumps({"model": "m", "messages": [{"role": "user", "content": "x" * (2 * 1024 * 1024)}]})
    answer = httpx.post(
        stack.gateway.base_url + "/chat/completions",
        content=big,
        headers={**_headers(api_key), "Content-Type": "application/json"},
    )
    assert answer.status_code == 413
