"""OpenAI chat ⇄ Bedrock Converse: the pure translations, checked against botocore's
``bedrock-runtime`` service model and the ``openai`` package's types, and ``converse_chat``
through a real aiobotocore client against the fake Bedrock Runtime (``tests.fakes.bedrock_runtime``)."""

from __future__ import annotations

import asyncio
import copy
import json
from collections.abc import AsyncIterator, Mapping
from contextlib import aclosing
from typing import Any

import aiohttp
import pytest
from aiobotocore.config import AioConfig
from aiobotocore.session import get_session
from botocore.validate import ParamValidator
from openai.types.chat import ChatCompletion
from tunegate.server.errors import InvalidArgument, NotFound, ResourceExhausted, UpstreamError
from tunegate.server.providers.bedrock._converse import (
    chunks_from_converse_stream,
    completion_from_converse,
    converse_chat,
    converse_request,
    finish_reason,
)

from tests.fakes.bedrock_runtime import (
    ConverseScript,
    FakeBedrockRuntime,
    ToolUse,
    event_shape,
    input_shape,
    output_shape,
    service_model,
)
from tests.server.providers.support import collect, items_of, parse_chunks, read_all, sse_items

MODEL_ID = "arn:aws:bedrock:us-east-1:123456789012:custom-model-deployment/abcdef123456"
WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "The weather in a city.",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    },
}


def check_input(operation: str, request: Mapping[str, Any]) -> None:
    report = ParamValidator().validate(dict(request), input_shape(operation))
    assert not report.has_errors(), report.generate_report()


def check_output(operation: str, answer: Mapping[str, Any]) -> None:
    report = ParamValidator().validate(dict(answer), output_shape(operation))
    assert not report.has_errors(), report.generate_report()


def chat(**fields: Any) -> dict[str, Any]:
    return {"model": "my-tuned-model", "messages": [{"role": "user", "content": "Hi"}], **fields}


# ---------------------------------------------------------------------------------------------
# converse_request


def test_request_maps_roles_texts_and_inference_config() -> None:
    body = chat(
        messages=[
            {"role": "system", "content": "Be brief."},
            {"role": "developer", "content": [{"type": "text", "text": "Answer in French."}]},
            {"role": "user", "content": "Hello", "name": "ann"},
            {"role": "user", "content": [{"type": "text", "text": "there"}, {"type": "text", "text": ""}]},
            {"role": "assistant", "content": "Bonjour"},
            {"role": "assistant", "content": [{"type": "refusal", "refusal": "Non."}]},
            {"role": "user", "content": "Why?"},
        ],
        max_completion_tokens=64,
        max_tokens=9,
        temperature=0.5,
        top_p=1,
        stop="END",
    )
    request = converse_request(body, MODEL_ID)
    assert request == {
        "modelId": MODEL_ID,
        "system": [{"text": "Be brief."}, {"text": "Answer in French."}],
        "messages": [
            {"role": "user", "content": [{"text": "Hello"}, {"text": "there"}]},
            {"role": "assistant", "content": [{"text": "Bonjour"}, {"text": "Non."}]},
            {"role": "user", "content": [{"text": "Why?"}]},
        ],
        "inferenceConfig": {"maxTokens": 64, "temperature": 0.5, "topP": 1, "stopSequences": ["END"]},
    }
    check_input("Converse", request)
    check_input("ConverseStream", request)


def test_request_stop_list_and_max_tokens() -> None:
    request = converse_request(chat(stop=["a", "b"], max_tokens=5), MODEL_ID)
    assert request["inferenceConfig"] == {"maxTokens": 5, "stopSequences": ["a", "b"]}
    check_input("Converse", request)


def test_request_maps_tools_calls_and_results() -> None:
    body = chat(
        messages=[
            {"role": "user", "content": "Weather in Paris and Rome?"},
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {
                        "id": "call_1",
                        "type": "function",
                        "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'},
                    },
                    {"id": "call_2", "type": "function", "function": {"name": "noop", "arguments": ""}},
                ],
            },
            {"role": "tool", "tool_call_id": "call_1", "content": "sunny"},
            {"role": "tool", "tool_call_id": "call_2", "content": [{"type": "text", "text": "done"}]},
            {"role": "user", "content": "Thanks"},
        ],
        tools=[WEATHER_TOOL, {"type": "function", "function": {"name": "noop", "strict": True}}],
        tool_choice="required",
    )
    request = converse_request(body, MODEL_ID)
    assert request["messages"][1:] == [
        {
            "role": "assistant",
            "content": [
                {"toolUse": {"toolUseId": "call_1", "name": "get_weather", "input": {"city": "Paris"}}},
                {"toolUse": {"toolUseId": "call_2", "name": "noop", "input": {}}},
            ],
        },
        {
            "role": "user",
            "content": [
                {"toolResult": {"toolUseId": "call_1", "content": [{"text": "sunny"}]}},
                {"toolResult": {"toolUseId": "call_2", "content": [{"text": "done"}]}},
                {"text": "Thanks"},
            ],
        },
    ]
    assert request["toolConfig"] == {
        "tools": [
            {
                "toolSpec": {
                    "name": "get_weather",
                    "description": "The weather in a city.",
                    "inputSchema": {"json": WEATHER_TOOL["function"]["parameters"]},  # type: ignore[index]
                }
            },
            {
                "toolSpec": {
                    "name": "noop",
                    "inputSchema": {"json": {"type": "object", "properties": {}}},
                    "strict": True,
                }
            },
        ],
        "toolChoice": {"any": {}},
    }
    check_input("Converse", request)


@pytest.mark.parametrize(
    ("choice", "expected"),
    [
        (None, None),
        ("auto", {"auto": {}}),
        ("required", {"any": {}}),
        ({"type": "function", "function": {"name": "get_weather"}}, {"tool": {"name": "get_weather"}}),
    ],
)
def test_request_tool_choice(choice: Any, expected: Any) -> None:
    request = converse_request(chat(tools=[WEATHER_TOOL], tool_choice=choice), MODEL_ID)
    assert request["toolConfig"].get("toolChoice") == expected
    check_input("ConverseStream", request)


def test_request_ignores_harmless_fields_and_neutral_values() -> None:
    body = chat(
        stream=True,
        stream_options={"include_usage": True},
        user="u-1",
        safety_identifier="s-1",
        metadata={"k": "v"},
        store=False,
        prompt_cache_key="key",
        n=1,
        frequency_penalty=0,
        presence_penalty=0.0,
        logprobs=False,
        top_logprobs=0,
        logit_bias={},
        response_format={"type": "text"},
        modalities=["text"],
        parallel_tool_calls=True,
        service_tier="auto",
        seed=None,
        tool_choice="none",
    )
    assert converse_request(body, MODEL_ID) == {
        "modelId": MODEL_ID,
        "messages": [{"role": "user", "content": [{"text": "Hi"}]}],
    }


@pytest.mark.parametrize(
    ("fields", "param"),
    [
        ({"n": 2}, "n"),
        ({"n": True}, "n"),
        ({"logprobs": True}, "logprobs"),
        ({"top_logprobs": 3}, "top_logprobs"),
        ({"seed": 7}, "seed"),
        ({"frequency_penalty": 0.5}, "frequency_penalty"),
        ({"logit_bias": {"50256": -100}}, "logit_bias"),
        ({"response_format": {"type": "json_schema", "json_schema": {"name": "x"}}}, "response_format"),
        ({"modalities": ["text", "audio"]}, "modalities"),
        ({"reasoning_effort": "low"}, "reasoning_effort"),
        ({"parallel_tool_calls": False}, "parallel_tool_calls"),
        ({"service_tier": "flex"}, "service_tier"),
        ({"functions": [{"name": "f"}]}, "functions"),
        ({"no_such_field": 1}, "no_such_field"),
        ({"temperature": 1.5}, "temperature"),
        ({"top_p": -0.1}, "top_p"),
        ({"max_tokens": 0}, "max_tokens"),
        ({"max_completion_tokens": "10"}, "max_completion_tokens"),
        ({"stop": 3}, "stop"),
        ({"messages": []}, "messages"),
        ({"messages": [{"role": "system", "content": "only"}]}, "messages"),
        ({"messages": [{"role": "function", "name": "f", "content": "x"}]}, "messages[0].role"),
        ({"messages": [{"role": "assistant", "content": "first"}]}, "messages[0].role"),
        ({"messages": [{"role": "user"}]}, "messages[0].content"),
        (
            {
                "messages": [
                    {"role": "user", "content": "look"},
                    {"role": "user", "content": [{"type": "image_url", "image_url": {"url": "https://x"}}]},
                ]
            },
            "messages[1].content[0].type",
        ),
        (
            {"messages": [{"role": "user", "content": [{"type": "input_audio", "input_audio": {}}]}]},
            "messages[0].content[0].type",
        ),
        (
            {
                "messages": [
                    {"role": "user", "content": "x"},
                    {
                        "role": "assistant",
                        "tool_calls": [
                            {"id": "c", "type": "function", "function": {"name": "f", "arguments": "{"}}
                        ],
                    },
                ]
            },
            "messages[1].tool_calls[0].function.arguments",
        ),
        (
            {"messages": [{"role": "user", "content": "x"}, {"role": "tool", "content": "no id"}]},
            "messages[1].tool_call_id",
        ),
        ({"tools": [{"type": "custom", "custom": {"name": "x"}}]}, "tools[0].type"),
        ({"tools": [WEATHER_TOOL], "tool_choice": "none"}, "tool_choice"),
        ({"tool_choice": "required"}, "tool_choice"),
    ],
)
def test_request_refuses_what_converse_cannot_express(fields: dict[str, Any], param: str) -> None:
    with pytest.raises(InvalidArgument) as caught:
        converse_request(chat(**fields), MODEL_ID)
    assert caught.value.param == param


# ---------------------------------------------------------------------------------------------
# completion_from_converse


def converse_answer(content: list[dict[str, Any]], stop_reason: str = "end_turn") -> dict[str, Any]:
    answer = {
        "output": {"message": {"role": "assistant", "content": content}},
        "stopReason": stop_reason,
        "usage": {"inputTokens": 12, "outputTokens": 5, "totalTokens": 17},
        "metrics": {"latencyMs": 40},
        "ResponseMetadata": {"RequestId": "r-1", "HTTPStatusCode": 200},
    }
    check_output("Converse", {k: v for k, v in answer.items() if k != "ResponseMetadata"})
    return answer


def test_completion_with_text_and_usage() -> None:
    answer = converse_answer([{"text": "Hello "}, {"text": "world"}], "max_tokens")
    completion = completion_from_converse(
        answer, model="my-tuned-model", completion_id="chatcmpl-1", created=7
    )
    parsed = ChatCompletion.model_validate(completion)
    assert parsed.id == "chatcmpl-1" and parsed.created == 7 and parsed.model == "my-tuned-model"
    assert parsed.choices[0].message.content == "Hello world"
    assert parsed.choices[0].message.tool_calls is None
    assert parsed.choices[0].finish_reason == "length"
    assert parsed.usage is not None
    assert (parsed.usage.prompt_tokens, parsed.usage.completion_tokens, parsed.usage.total_tokens) == (
        12,
        5,
        17,
    )


def test_completion_with_tool_calls() -> None:
    content: list[dict[str, Any]] = [
        {"reasoningContent": {"reasoningText": {"text": "hmm"}}},
        {"toolUse": {"toolUseId": "tooluse_1", "name": "get_weather", "input": {"city": "Paris"}}},
    ]
    completion = completion_from_converse(
        converse_answer(content, "tool_use"), model="m", completion_id="chatcmpl-2", created=1
    )
    parsed = ChatCompletion.model_validate(completion)
    message = parsed.choices[0].message
    assert message.content is None
    assert parsed.choices[0].finish_reason == "tool_calls"
    assert message.tool_calls is not None and len(message.tool_calls) == 1
    call = message.tool_calls[0]
    assert call.id == "tooluse_1" and call.type == "function"
    assert call.function.name == "get_weather"
    assert json.loads(call.function.arguments) == {"city": "Paris"}


def test_every_stop_reason_maps_to_an_openai_finish_reason() -> None:
    reasons = service_model().shape_for("StopReason").enum  # type: ignore[attr-defined]
    mapped = {reason: finish_reason(reason) for reason in reasons}
    assert set(mapped.values()) <= {"stop", "length", "tool_calls", "content_filter"}
    assert mapped["end_turn"] == mapped["stop_sequence"] == "stop"
    assert mapped["max_tokens"] == "length"
    assert mapped["tool_use"] == "tool_calls"
    assert mapped["guardrail_intervened"] == mapped["content_filtered"] == "content_filter"


# ---------------------------------------------------------------------------------------------
# chunks_from_converse_stream


STREAM_EVENTS: list[dict[str, Any]] = [
    {"messageStart": {"role": "assistant"}},
    {"contentBlockDelta": {"contentBlockIndex": 0, "delta": {"text": "Let me "}}},
    {"contentBlockDelta": {"contentBlockIndex": 0, "delta": {"text": "check."}}},
    {"contentBlockStop": {"contentBlockIndex": 0}},
    {
        "contentBlockStart": {
            "contentBlockIndex": 1,
            "start": {"toolUse": {"toolUseId": "tooluse_a", "name": "get_weather"}},
        }
    },
    {"contentBlockDelta": {"contentBlockIndex": 1, "delta": {"toolUse": {"input": '{"city": '}}}},
    {"contentBlockDelta": {"contentBlockIndex": 1, "delta": {"toolUse": {"input": '"Paris"}'}}}},
    {"contentBlockStop": {"contentBlockIndex": 1}},
    {"messageStop": {"stopReason": "tool_use"}},
    {
        "metadata": {
            "usage": {"inputTokens": 3, "outputTokens": 4, "totalTokens": 7},
            "metrics": {"latencyMs": 9},
        }
    },
]


def test_stream_events_fit_the_service_model() -> None:
    for event in STREAM_EVENTS:
        ((name, body),) = event.items()
        report = ParamValidator().validate(body, event_shape(name))
        assert not report.has_errors(), report.generate_report()


@pytest.mark.parametrize("include_usage", [False, True])
async def test_stream_translation(include_usage: bool) -> None:
    data = await collect(
        chunks_from_converse_stream(
            items_of(STREAM_EVENTS),
            model="m",
            completion_id="chatcmpl-3",
            created=5,
            include_usage=include_usage,
        )
    )
    chunks = parse_chunks(data)
    assert all(c.id == "chatcmpl-3" and c.model == "m" and c.created == 5 for c in chunks)
    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "Let me check."
    calls = [call for c in chunks if c.choices for call in c.choices[0].delta.tool_calls or []]
    assert {call.index for call in calls} == {0}
    assert calls[0].id == "tooluse_a" and calls[0].function is not None
    assert calls[0].function.name == "get_weather"
    arguments = "".join(call.function.arguments or "" for call in calls if call.function is not None)
    assert json.loads(arguments) == {"city": "Paris"}
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert finishes == ["tool_calls"]
    usage_chunks = [c for c in chunks if not c.choices]
    if include_usage:
        assert len(usage_chunks) == 1 and usage_chunks[0] is chunks[-1]
        assert usage_chunks[0].usage is not None and usage_chunks[0].usage.total_tokens == 7
        assert all(json.loads(item)["usage"] is None for item in sse_items(data)[:-2])
    else:
        assert usage_chunks == []
        assert all("usage" not in json.loads(item) for item in sse_items(data)[:-1])


async def test_stream_exception_event_raises_after_what_was_sent() -> None:
    events = [*STREAM_EVENTS[:2], {"throttlingException": {"message": "Too many tokens"}}, *STREAM_EVENTS[2:]]
    sent: list[bytes] = []
    with pytest.raises(UpstreamError) as caught:
        async for chunk in chunks_from_converse_stream(
            items_of(events), model="m", completion_id="c", created=1, include_usage=False
        ):
            sent.append(chunk)
    assert len(sent) == 2 and b"Let me " in sent[1]
    assert "Too many tokens" in caught.value.message and caught.value.code == "throttling_exception"


async def test_stream_ending_before_message_stop_raises() -> None:
    with pytest.raises(UpstreamError):
        await collect(
            chunks_from_converse_stream(
                items_of(STREAM_EVENTS[:3]), model="m", completion_id="c", created=1, include_usage=True
            )
        )


# ---------------------------------------------------------------------------------------------
# converse_chat against the fake Bedrock Runtime


@pytest.fixture
async def fake() -> AsyncIterator[FakeBedrockRuntime]:
    server = FakeBedrockRuntime(models={MODEL_ID})
    await server.start()
    yield server
    await server.stop()


@pytest.fixture
async def client(fake: FakeBedrockRuntime) -> AsyncIterator[Any]:
    async with get_session().create_client(
        "bedrock-runtime",
        region_name="us-east-1",
        endpoint_url=fake.url,
        aws_access_key_id="x",
        aws_secret_access_key="y",
        config=AioConfig(retries={"total_max_attempts": 1}),
    ) as bedrock:
        yield bedrock


def body_of(**fields: Any) -> bytes:
    return json.dumps(chat(**fields)).encode()


async def test_unary_answer(fake: FakeBedrockRuntime, client: Any) -> None:
    fake.script = ConverseScript(
        text="Bonjour !", stop_reason="stop_sequence", input_tokens=4, output_tokens=3
    )
    reply = await converse_chat(
        client, body_of(temperature=0.2, stop=["###"], user="u"), model_id=MODEL_ID, stream=False
    )
    assert reply.content_type == "application/json"
    assert reply.headers["x-request-id"]
    completion = ChatCompletion.model_validate_json(await read_all(reply))
    assert completion.model == "my-tuned-model" and completion.id.startswith("chatcmpl-")
    assert completion.choices[0].message.content == "Bonjour !"
    assert completion.choices[0].finish_reason == "stop"
    assert completion.usage is not None and completion.usage.total_tokens == 7
    (call,) = fake.calls
    assert call.operation == "Converse" and call.model_id == MODEL_ID
    assert call.body["inferenceConfig"] == {"temperature": 0.2, "stopSequences": ["###"]}
    assert fake.violations == []


async def test_conversation_with_tools_passes_bedrock_checks(fake: FakeBedrockRuntime, client: Any) -> None:
    fake.script = ConverseScript(
        text="", tool_uses=[ToolUse("get_weather", {"city": "Rome"})], stop_reason="tool_use"
    )
    messages = [
        {"role": "system", "content": "You are terse."},
        {"role": "user", "content": "Paris?"},
        {
            "role": "assistant",
            "tool_calls": [
                {
                    "id": "call_1",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": '{"city":"Paris"}'},
                }
            ],
        },
        {"role": "tool", "tool_call_id": "call_1", "content": "sunny"},
        {"role": "assistant", "content": "Sunny."},
        {"role": "user", "content": "And Rome?"},
    ]
    body = body_of(messages=messages, tools=[WEATHER_TOOL], tool_choice="auto")
    completion = ChatCompletion.model_validate_json(
        await read_all(await converse_chat(client, body, model_id=MODEL_ID, stream=False))
    )
    assert completion.choices[0].finish_reason == "tool_calls"
    tool_calls = completion.choices[0].message.tool_calls
    assert tool_calls is not None and tool_calls[0].function.name == "get_weather"  # type: ignore[union-attr]
    assert fake.violations == []
    assert [m["role"] for m in fake.calls[0].body["messages"]] == [
        "user",
        "assistant",
        "user",
        "assistant",
        "user",
    ]


@pytest.mark.parametrize("include_usage", [False, True])
async def test_streamed_answer(fake: FakeBedrockRuntime, client: Any, include_usage: bool) -> None:
    fake.script = ConverseScript(text="A streamed answer, in pieces.", chunk_size=5, stop_reason="max_tokens")
    body = body_of(stream=True, stream_options={"include_usage": include_usage}, max_tokens=30)
    reply = await converse_chat(client, body, model_id=MODEL_ID, stream=True)
    assert reply.content_type == "text/event-stream"
    chunks = parse_chunks(await read_all(reply))
    assert chunks[0].choices[0].delta.role == "assistant"
    assert (
        "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
        == "A streamed answer, in pieces."
    )
    assert [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason] == [
        "length"
    ]
    usage = [c.usage for c in chunks if not c.choices]
    if include_usage:
        assert len(usage) == 1 and usage[0] is not None and usage[0].prompt_tokens == 11
    else:
        assert usage == []
    assert fake.calls[0].operation == "ConverseStream" and fake.calls[0].completed
    assert fake.violations == []


async def test_streamed_tool_use(fake: FakeBedrockRuntime, client: Any) -> None:
    fake.script = ConverseScript(
        text="Checking.",
        tool_uses=[ToolUse("get_weather", {"city": "Oslo"}, "tooluse_x")],
        stop_reason="tool_use",
    )
    reply = await converse_chat(
        client, body_of(tools=[WEATHER_TOOL], stream=True), model_id=MODEL_ID, stream=True
    )
    chunks = parse_chunks(await read_all(reply))
    calls = [call for c in chunks if c.choices for call in c.choices[0].delta.tool_calls or []]
    assert calls[0].id == "tooluse_x"
    assert json.loads("".join(c.function.arguments or "" for c in calls if c.function)) == {"city": "Oslo"}
    assert chunks[-1].choices[0].finish_reason == "tool_calls"


@pytest.mark.parametrize("stream", [False, True])
async def test_throttling_is_429(fake: FakeBedrockRuntime, client: Any, stream: bool) -> None:
    fake.inject("429", "/converse")
    with pytest.raises(ResourceExhausted) as caught:
        await converse_chat(client, body_of(), model_id=MODEL_ID, stream=stream)
    assert caught.value.http_status == 429 and caught.value.provider == "bedrock"
    assert "ThrottlingException" in caught.value.message


async def test_unknown_model_is_404_on_model(client: Any) -> None:
    with pytest.raises(NotFound) as caught:
        await converse_chat(client, body_of(), model_id="no-such-model", stream=False)
    assert caught.value.param == "model" and caught.value.code == "model_not_found"


async def test_mid_stream_error_raises_upstream_error(fake: FakeBedrockRuntime, client: Any) -> None:
    fake.script = ConverseScript(text="abcdefghij", chunk_size=2, error_after=2)
    reply = await converse_chat(client, body_of(stream=True), model_id=MODEL_ID, stream=True)
    received: list[bytes] = []
    with pytest.raises(UpstreamError) as caught:
        async with aclosing(reply.chunks) as chunks:  # type: ignore[type-var]
            async for chunk in chunks:
                received.append(chunk)
    assert b"".join(received).count(b"data: ") == 3  # the role chunk and two deltas
    assert b"[DONE]" not in b"".join(received)
    assert "modelStreamErrorException" in caught.value.message
    assert caught.value.provider == "bedrock"


@pytest.mark.parametrize(
    ("body", "param"),
    [
        (b"{not json", None),
        (b"[1]", None),
        (json.dumps(chat(n=3)).encode(), "n"),
        (
            json.dumps(
                chat(
                    messages=[{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}]
                )
            ).encode(),
            "messages[0].content[0].type",
        ),
    ],
)
async def test_invalid_input_is_400_before_any_call(
    fake: FakeBedrockRuntime, client: Any, body: bytes, param: str | None
) -> None:
    with pytest.raises(InvalidArgument) as caught:
        await converse_chat(client, body, model_id=MODEL_ID, stream=True)
    assert caught.value.param == param
    assert fake.requests == []


async def test_closing_the_stream_early_closes_the_response(fake: FakeBedrockRuntime, client: Any) -> None:
    fake.script = ConverseScript(text="x" * 64, chunk_size=4, hold_after=1)
    reply = await converse_chat(client, body_of(stream=True), model_id=MODEL_ID, stream=True)
    async with aclosing(reply.chunks) as chunks:  # type: ignore[type-var]
        first = await anext(chunks)
        second = await anext(chunks)
    assert b'"role":"assistant"' in first and b"xxxx" in second
    await asyncio.wait_for(fake.calls[0].closed.wait(), 10)
    assert fake.calls[0].cancelled and not fake.calls[0].completed


async def test_closing_before_iterating_closes_the_response(fake: FakeBedrockRuntime, client: Any) -> None:
    fake.script = ConverseScript(hold_after=0)
    reply = await converse_chat(client, body_of(stream=True), model_id=MODEL_ID, stream=True)
    await reply.chunks.aclose()  # type: ignore[attr-defined]
    await asyncio.wait_for(fake.calls[0].closed.wait(), 10)
    assert fake.calls[0].cancelled and fake.calls[0].events_sent == 1  # messageStart only


# ---------------------------------------------------------------------------------------------
# the fake itself


async def test_fake_refuses_requests_outside_the_service_model(fake: FakeBedrockRuntime) -> None:
    bad = {
        "messages": [{"role": "user", "content": [{"text": "hi", "image": {}}]}],
        "inferenceConfig": {"maxTokens": 0},
    }
    async with (
        aiohttp.ClientSession() as session,
        session.post(
            f"{fake.url}/model/m/converse", json=bad, headers={"Authorization": "Bearer k"}
        ) as response,
    ):
        assert response.status == 400
        assert response.headers["x-amzn-ErrorType"] == "ValidationException"
        message = (await response.json())["message"]
    assert "maxTokens" in message and "tagged union" in message
    assert len(fake.violations) == 1


async def test_fake_refuses_conversation_rules(fake: FakeBedrockRuntime, client: Any) -> None:
    # client-side validation passes (shapes fit), Bedrock's own rules do not
    with pytest.raises(Exception, match="ValidationException") as caught:
        await client.converse(
            modelId=MODEL_ID,
            messages=[
                {"role": "user", "content": [{"text": "a"}]},
                {"role": "user", "content": [{"text": " "}]},
            ],
            inferenceConfig={"temperature": 1.5},
        )
    text = str(caught.value)
    assert "alternate" in text and "blank" in text and "maximum" in text
    assert copy.deepcopy(fake.violations) != []
