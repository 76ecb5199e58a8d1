"""A tuned model's chat on the provider that trained it, through the gateway: the fine-tuning
guide's Portkey snippet, the `openai` SDK (sync and async, whole and streamed), curl -N, Azure
through its deployment, a client that leaves mid-stream, and a 429 the SDK retries — against
the fake OpenAI and Azure upstreams, which check every request against OpenAI's spec and record
the exact bytes they received and sent."""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
import time
from typing import Any

import httpx
import openai
import pytest
from openai.types.chat import ChatCompletionMessageParam
from portkey_ai import Portkey

from tests.e2e.providers import ProviderStack, stack
from tests.e2e.sdk import openai_client

__all__ = ["stack"]  # the module-scoped fixture

TUNED = "ft:gpt-4o-mini-2024-07-18:org-name:custom-model-v1:abc123"
HELLO: list[ChatCompletionMessageParam] = [{"role": "user", "content": "Hello!"}]


@pytest.fixture(autouse=True)
def clean(stack: ProviderStack):
    for fake in (stack.openai, stack.azure):
        fake.call(fake.chat_calls.clear)
        fake.chat.chunks, fake.chat.delay, fake.chat.cut_after = 3, 0.0, None
    yield
    assert stack.openai.violations == [] and stack.azure.violations == []


def _client(stack: ProviderStack, api_key: str, **kwargs: object) -> openai.OpenAI:
    options = {"max_retries": 0, **kwargs}
    headers = {"x-portkey-provider": "openai"}
    return openai_client(stack.gateway.base_url, api_key, default_headers=headers, **options)


def test_the_guides_portkey_snippet_calls_the_tuned_model_on_openai(
    stack: ProviderStack, api_key: str
) -> None:
    client = Portkey(provider="openai", Authorization=api_key, base_url=stack.gateway.base_url)
    answer: Any = client.chat.completions.create(model=TUNED, messages=HELLO)
    assert answer.choices[0].message.content and answer.model == TUNED
    (call,) = stack.openai.chat_calls
    assert call.path == "/v1/chat/completions" and json.loads(call.body)["model"] == TUNED


def test_the_openai_sdk_whole_and_streamed_relays_the_providers_answer(
    stack: ProviderStack, api_key: str
) -> None:
    client = _client(stack, api_key)
    whole = client.chat.completions.create(model=TUNED, messages=HELLO, seed=9007199254740993)
    (call,) = stack.openai.chat_calls
    assert whole.id == json.loads(call.sent)["id"]
    assert b'"seed":9007199254740993' in call.body  # 64-bit, not a rounded double

    stack.openai.chat.chunks = 5
    pieces = [
        chunk.choices[0].delta.content or ""
        for chunk in client.chat.completions.create(model=TUNED, messages=HELLO, stream=True)
        if chunk.choices
    ]
    streamed = stack.openai.chat_calls[-1]
    assert streamed.stream and streamed.completed and len([p for p in pieces if p]) == 5


def test_the_async_sdk_whole_and_streamed(stack: ProviderStack, api_key: str) -> None:
    async def run() -> tuple[str | None, int]:
        client = openai.AsyncOpenAI(
            base_url=stack.gateway.base_url,
            api_key=api_key,
            max_retries=0,
            default_headers={"x-portkey-provider": "openai"},
        )
        async with client:
            whole = await client.chat.completions.create(model=TUNED, messages=HELLO)
            stream = await client.chat.completions.create(model=TUNED, messages=HELLO, stream=True)
            chunks = [chunk async for chunk in stream]
        return whole.choices[0].message.content, len(chunks)

    content, chunks = asyncio.run(run())
    assert content and chunks == 3 + 2  # role, three content chunks, finish


def test_a_streamed_answer_is_relayed_byte_for_byte_with_unknown_fields(
    stack: ProviderStack, api_key: str
) -> None:
    body = json.dumps(
        {"model": TUNED, "messages": HELLO, "stream": True, "future_param": {"x": [1, 2.5, None]}}
    ).encode()
    with httpx.stream(
        "POST",
        stack.gateway.base_url + "/chat/completions",
        content=body,
        headers={
            "Authorization": f"Bearer {api_key}",
            "x-portkey-provider": "openai",
            "Content-Type": "application/json",
        },
        timeout=30,
    ) as response:
        assert response.status_code == 200 and response.headers["content-type"].startswith(
            "text/event-stream"
        )
        received = b"".join(response.iter_bytes())
    (call,) = stack.openai.chat_calls
    assert call.body == body  # the caller's JSON unchanged, `future_param` included
    assert received == bytes(call.sent) and received.endswith(b"data: [DONE]\n\n")


@pytest.mark.skipif(shutil.which("curl") is None, reason="curl is not installed")
def test_curl_n_prints_the_events_as_they_come(stack: ProviderStack, api_key: str) -> None:
    body = json.dumps({"model": TUNED, "messages": HELLO, "stream": True})
    done = subprocess.run(
        ["curl", "-sN", stack.gateway.base_url + "/chat/completions", "-d", body,
         "-H", f"Authorization: Bearer {api_key}", "-H", "x-portkey-provider: openai",
         "-H", "Content-Type: application/json"],
        capture_output=True, timeout=30, check=True,
    )  # fmt: skip
    events = [line for line in done.stdout.decode().split("\n\n") if line]
    assert events[-1] == "data: [DONE]" and all(event.startswith("data: ") for event in events)


@pytest.mark.parametrize("api_version", ["2024-10-21", "v1"])
def test_azure_calls_the_tuned_model_through_its_deployment(
    stack: ProviderStack, api_key: str, api_version: str
) -> None:
    headers = {
        "x-portkey-provider": "azure-openai",
        "x-portkey-azure-resource-name": "tunegate-test",
        "x-portkey-azure-deployment-id": "support-bot",
        "x-portkey-azure-api-version": api_version,
        "api-key": api_key,
    }
    client = openai_client(stack.gateway.base_url, api_key, max_retries=0, default_headers=headers)
    model = "support-bot" if api_version == "v1" else "gpt-4o-mini-2024-07-18.ft-abc123"
    answer = client.chat.completions.create(model=model, messages=HELLO)
    chunks = list(client.chat.completions.create(model=model, messages=HELLO, stream=True))
    assert answer.choices[0].message.content and chunks
    whole, streamed = stack.azure.chat_calls
    if api_version == "v1":
        assert whole.path.endswith("/openai/v1/chat/completions")
    else:
        assert whole.path.endswith("/openai/deployments/support-bot/chat/completions")
        assert whole.query["api-version"] == api_version
    assert streamed.completed


def test_a_client_that_leaves_mid_stream_cancels_the_providers_request(
    stack: ProviderStack, api_key: str
) -> None:
    stack.openai.chat.chunks, stack.openai.chat.delay = 400, 0.02
    client = _client(stack, api_key)
    stream = client.chat.completions.create(model=TUNED, messages=HELLO, stream=True)
    for index, _chunk in enumerate(stream):
        if index == 3:
            break
    stream.close()
    deadline = time.monotonic() + 10
    while not stack.openai.chat_calls[-1].cancelled and time.monotonic() < deadline:
        time.sleep(0.05)
    call = stack.openai.chat_calls[-1]
    assert call.cancelled and not call.completed and call.chunks_sent < 400


def test_a_429_with_retry_after_reaches_the_sdk_whose_retry_works(stack: ProviderStack, api_key: str) -> None:
    def sent() -> int:
        return len(stack.openai.requests_to("POST", r".*/chat/completions$"))

    before = sent()
    stack.openai.inject("429", "/chat/completions", retry_after=1)
    with pytest.raises(openai.RateLimitError) as refused:
        _client(stack, api_key).chat.completions.create(model=TUNED, messages=HELLO)
    assert refused.value.response.headers["retry-after"] == "1"
    assert sent() == before + 1  # the gateway never resends a paid request

    stack.openai.inject("429", "/chat/completions", retry_after=1)
    answer = _client(stack, api_key, max_retries=2).chat.completions.create(model=TUNED, messages=HELLO)
    assert answer.choices[0].message.content
    assert sent() == before + 3  # the first refusal; the SDK's call, refused, then its retry


def test_a_stream_cut_by_the_provider_ends_with_an_error_event(stack: ProviderStack, api_key: str) -> None:
    stack.openai.chat.chunks, stack.openai.chat.cut_after = 10, 2
    with pytest.raises(openai.APIError):
        for _chunk in _client(stack, api_key).chat.completions.create(
            model=TUNED, messages=HELLO, stream=True
        ):
            pass


def test_a_virtual_key_routes_chat_like_jobs(stack: ProviderStack, api_key: str) -> None:
    client = openai_client(
        stack.gateway.base_url,
        api_key,
        max_retries=0,
        default_headers={"x-portkey-virtual-key": "team-openai"},
    )
    assert client.chat.completions.create(model=TUNED, messages=HELLO).choices[0].message.content
    (call,) = stack.openai.chat_calls
    assert call.path == "/v1/chat/completions"


def test_a_custom_host_not_allowed_is_refused_before_any_provider_call(
    stack: ProviderStack, api_key: str
) -> None:
    headers = {"x-portkey-provider": "openai", "x-portkey-custom-host": "http://169.254.169.254/v1"}
    client = openai_client(stack.gateway.base_url, api_key, max_retries=0, default_headers=headers)
    with pytest.raises(openai.BadRequestError) as refused:
        client.chat.completions.create(model=TUNED, messages=HELLO, stream=True)
    assert refused.value.param == "x-portkey-custom-host"
    assert stack.openai.chat_calls == []


def test_models_list_and_retrieve_ask_the_named_provider(stack: ProviderStack, api_key: str) -> None:
    client = _client(stack, api_key)
    listed = {model.id for model in client.models.list()}
    assert {"gpt-4o-mini-2024-07-18", "gpt-4.1-nano-2025-04-14"} <= listed
    assert client.models.retrieve("gpt-4o-mini-2024-07-18").id == "gpt-4o-mini-2024-07-18"
    with pytest.raises(openai.NotFoundError) as missing:
        client.models.retrieve(TUNED)  # the fake's own 404: the provider's answer, passed on
    assert missing.value.code == "model_not_found"
