"""OpenAI chat ⇄ Vertex AI Gemini: the pure translations, checked against Vertex's discovery
document (``tests/oracles/aiplatform.v1.json.gz``) and the ``openai`` package's types, and
``gemini_chat`` through a real ``ChatClient`` against the fake Vertex AI (``tests.fakes.vertex_chat``)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Mapping
from contextlib import aclosing
from typing import Any

import aiohttp
import pytest
from openai.types.chat import ChatCompletion
from tunegate.server.errors import InvalidArgument, NotFound, ResourceExhausted, UpstreamError
from tunegate.server.providers._chat import ChatClient
from tunegate.server.providers._http import Endpoint, HttpClient
from tunegate.server.providers.vertex._gemini import (
    chunks_from_gemini_stream,
    completion_from_gemini,
    finish_reason,
    gemini_chat,
    gemini_path,
    gemini_request,
    sse_data,
)

from tests.fakes._discovery_schema import aiplatform_v1
from tests.fakes.vertex_chat import (
    RESPONSE_SCHEMA,
    FakeVertexChat,
    FunctionCall,
    GeminiScript,
    request_errors,
    response_errors,
)
from tests.server.providers.support import collect, items_of, parse_chunks, read_all, sse_items

RESOURCE = "projects/my-project/locations/us-central1/endpoints/1234567890"
WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "The weather in a city.",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    },
}


def check_request(request: Mapping[str, Any]) -> None:
    assert request_errors(dict(request)) == []


def check_response(answer: Mapping[str, Any]) -> None:
    assert response_errors(dict(answer)) == []


def chat(**fields: Any) -> dict[str, Any]:
    return {"model": "my-tuned-model", "messages": [{"role": "user", "content": "Hi"}], **fields}


# ---------------------------------------------------------------------------------------------
# gemini_request


def test_request_maps_roles_texts_and_generation_config() -> None:
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
        temperature=1.5,
        top_p=1,
        n=2,
        stop="END",
        presence_penalty=0.5,
        frequency_penalty=-1,
        seed=42,
    )
    request = gemini_request(body)
    assert request == {
        "systemInstruction": {"parts": [{"text": "Be brief."}, {"text": "Answer in French."}]},
        "contents": [
            {"role": "user", "parts": [{"text": "Hello"}, {"text": "there"}]},
            {"role": "model", "parts": [{"text": "Bonjour"}, {"text": "Non."}]},
            {"role": "user", "parts": [{"text": "Why?"}]},
        ],
        "generationConfig": {
            "maxOutputTokens": 64,
            "temperature": 1.5,
            "topP": 1,
            "presencePenalty": 0.5,
            "frequencyPenalty": -1,
            "candidateCount": 2,
            "seed": 42,
            "stopSequences": ["END"],
        },
    }
    check_request(request)


@pytest.mark.parametrize(
    ("response_format", "expected"),
    [
        ({"type": "text"}, {}),
        ({"type": "json_object"}, {"responseMimeType": "application/json"}),
        ({"type": "json_schema", "json_schema": {"name": "x"}}, {"responseMimeType": "application/json"}),
        (
            {
                "type": "json_schema",
                "json_schema": {
                    "name": "city",
                    "strict": True,
                    "schema": {
                        "type": "object",
                        "properties": {"name": {"type": "string"}},
                        "required": ["name"],
                        "additionalProperties": False,
                    },
                },
            },
            {
                "responseMimeType": "application/json",
                "responseJsonSchema": {
                    "type": "object",
                    "properties": {"name": {"type": "string"}},
                    "required": ["name"],
                    "additionalProperties": False,
                },
            },
        ),
    ],
)
def test_request_response_format(response_format: Any, expected: dict[str, Any]) -> None:
    request = gemini_request(chat(response_format=response_format, stop=["a", "b"]))
    assert request["generationConfig"] == {"stopSequences": ["a", "b"], **expected}
    check_request(request)


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
            {"role": "tool", "tool_call_id": "call_2", "content": [{"type": "text", "text": "done"}]},
            {"role": "tool", "tool_call_id": "call_1", "content": "sunny"},
            {"role": "user", "content": "Thanks"},
        ],
        tools=[WEATHER_TOOL, {"type": "function", "function": {"name": "noop", "strict": True}}],
        tool_choice="required",
    )
    request = gemini_request(body)
    assert request["contents"][1:] == [
        {
            "role": "model",
            "parts": [
                {"functionCall": {"name": "get_weather", "args": {"city": "Paris"}}},
                {"functionCall": {"name": "noop", "args": {}}},
            ],
        },
        {
            "role": "user",
            "parts": [
                {"functionResponse": {"name": "noop", "response": {"output": "done"}}},
                {"functionResponse": {"name": "get_weather", "response": {"output": "sunny"}}},
                {"text": "Thanks"},
            ],
        },
    ]
    assert request["tools"] == [
        {
            "functionDeclarations": [
                {
                    "name": "get_weather",
                    "description": "The weather in a city.",
                    "parametersJsonSchema": WEATHER_TOOL["function"]["parameters"],  # type: ignore[index]
                },
                {"name": "noop"},
            ]
        }
    ]
    assert request["toolConfig"] == {"functionCallingConfig": {"mode": "ANY"}}
    check_request(request)


@pytest.mark.parametrize(
    ("choice", "expected"),
    [
        (None, None),
        ("auto", {"functionCallingConfig": {"mode": "AUTO"}}),
        ("required", {"functionCallingConfig": {"mode": "ANY"}}),
        ("none", {"functionCallingConfig": {"mode": "NONE"}}),
        (
            {"type": "function", "function": {"name": "get_weather"}},
            {"functionCallingConfig": {"mode": "ANY", "allowedFunctionNames": ["get_weather"]}},
        ),
    ],
)
def test_request_tool_choice(choice: Any, expected: Any) -> None:
    request = gemini_request(chat(tools=[WEATHER_TOOL], tool_choice=choice))
    assert request.get("toolConfig") == expected
    check_request(request)


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
        logprobs=False,
        top_logprobs=0,
        logit_bias={},
        response_format={"type": "text"},
        modalities=["text"],
        parallel_tool_calls=True,
        service_tier="auto",
        seed=None,
        tools=[],
        tool_choice="none",
    )
    request = gemini_request(body)
    assert request == {"contents": [{"role": "user", "parts": [{"text": "Hi"}]}]}
    check_request(request)


@pytest.mark.parametrize(
    ("fields", "param"),
    [
        ({"n": 9}, "n"),
        ({"n": True}, "n"),
        ({"logprobs": True}, "logprobs"),
        ({"top_logprobs": 3}, "top_logprobs"),
        ({"seed": 2**40}, "seed"),
        ({"seed": "7"}, "seed"),
        ({"frequency_penalty": 2.5}, "frequency_penalty"),
        ({"presence_penalty": "x"}, "presence_penalty"),
        ({"logit_bias": {"50256": -100}}, "logit_bias"),
        ({"response_format": {"type": "grammar", "grammar": "x"}}, "response_format.type"),
        ({"response_format": {"type": "json_schema"}}, "response_format.json_schema"),
        (
            {"response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": "s"}}},
            "response_format.json_schema.schema",
        ),
        ({"modalities": ["text", "audio"]}, "modalities"),
        ({"reasoning_effort": "low"}, "reasoning_effort"),
        ({"parallel_tool_calls": False}, "parallel_tool_calls"),
        ({"service_tier": "flex"}, "service_tier"),
        ({"functions": [{"name": "f"}]}, "functions"),
        ({"no_such_field": 1}, "no_such_field"),
        ({"temperature": 2.5}, "temperature"),
        ({"top_p": 1.1}, "top_p"),
        ({"max_tokens": 0}, "max_tokens"),
        ({"max_completion_tokens": "10"}, "max_completion_tokens"),
        ({"stop": 3}, "stop"),
        ({"messages": []}, "messages"),
        ({"messages": "hi"}, "messages"),
        ({"messages": [{"role": "system", "content": "only"}]}, "messages"),
        ({"messages": [{"role": "function", "name": "f", "content": "x"}]}, "messages[0].role"),
        ({"messages": [{"role": "user"}]}, "messages[0].content"),
        ({"messages": [{"role": "user", "content": 5}]}, "messages[0].content"),
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
            {
                "messages": [
                    {"role": "user", "content": "x"},
                    {
                        "role": "assistant",
                        "tool_calls": [
                            {"id": "c", "type": "function", "function": {"name": "f", "arguments": "[1]"}}
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
        (
            {
                "messages": [
                    {"role": "user", "content": "x"},
                    {"role": "tool", "tool_call_id": "c9", "content": "?"},
                ]
            },
            "messages[1].tool_call_id",
        ),
        ({"messages": [{"role": "assistant", "audio": {"id": "a"}}]}, "messages[0].audio"),
        ({"tools": [{"type": "custom", "custom": {"name": "x"}}]}, "tools[0].type"),
        (
            {"tools": [{"type": "function", "function": {"name": "f", "parameters": []}}]},
            "tools[0].function.parameters",
        ),
        ({"tools": [WEATHER_TOOL], "tool_choice": {"type": "allowed_tools"}}, "tool_choice"),
        ({"tool_choice": "required"}, "tool_choice"),
    ],
)
def test_request_refuses_what_gemini_cannot_express(fields: dict[str, Any], param: str) -> None:
    with pytest.raises(InvalidArgument) as caught:
        gemini_request(chat(**fields))
    assert caught.value.param == param


def test_path_of_an_endpoint() -> None:
    assert gemini_path(RESOURCE, stream=False) == f"/v1/{RESOURCE}:generateContent"
    assert gemini_path(RESOURCE, stream=True) == f"/v1/{RESOURCE}:streamGenerateContent?alt=sse"
    with pytest.raises(ValueError):
        gemini_path("projects/p/locations/l/endpoints/1:x?y", stream=False)


# ---------------------------------------------------------------------------------------------
# completion_from_gemini


def gemini_answer(
    parts: list[dict[str, Any]], reason: str = "STOP", candidates: int = 1, **usage: int
) -> dict[str, Any]:
    answer = {
        "candidates": [
            {"index": i, "content": {"role": "model", "parts": parts}, "finishReason": reason}
            for i in range(candidates)
        ],
        "usageMetadata": {"promptTokenCount": 12, "candidatesTokenCount": 5, "totalTokenCount": 17, **usage},
        "modelVersion": "gemini-2.5-flash",
        "responseId": "r-1",
    }
    check_response(answer)
    return answer


def test_completion_with_text_and_usage() -> None:
    parts: list[dict[str, Any]] = [
        {"text": "I think…", "thought": True},
        {"text": "Hello "},
        {"text": "world"},
    ]
    answer = gemini_answer(parts, "MAX_TOKENS", thoughtsTokenCount=3, totalTokenCount=20)
    completion = completion_from_gemini(answer, model="my-tuned-model", completion_id="chatcmpl-1", created=7)
    parsed = ChatCompletion.model_validate(completion)
    assert parsed.id == "chatcmpl-1" and parsed.created == 7 and parsed.model == "my-tuned-model"
    assert parsed.choices[0].message.content == "Hello world"
    assert parsed.choices[0].message.tool_calls is None
    assert parsed.choices[0].finish_reason == "length"
    assert parsed.usage is not None
    assert (parsed.usage.prompt_tokens, parsed.usage.completion_tokens, parsed.usage.total_tokens) == (
        12,
        8,
        20,
    )
    assert parsed.usage.completion_tokens_details is not None
    assert parsed.usage.completion_tokens_details.reasoning_tokens == 3


def test_completion_with_tool_calls() -> None:
    parts: list[dict[str, Any]] = [
        {"functionCall": {"name": "get_weather", "args": {"city": "Paris"}}},
        {"functionCall": {"id": "fc-2", "name": "noop"}},
    ]
    completion = completion_from_gemini(
        gemini_answer(parts), model="m", completion_id="chatcmpl-2", created=1
    )
    parsed = ChatCompletion.model_validate(completion)
    message = parsed.choices[0].message
    assert message.content is None
    assert parsed.choices[0].finish_reason == "tool_calls"
    assert message.tool_calls is not None and len(message.tool_calls) == 2
    first, second = message.tool_calls
    assert first.id.startswith("call_") and first.type == "function"
    assert first.function.name == "get_weather"
    assert json.loads(first.function.arguments) == {"city": "Paris"}
    assert second.id == "fc-2" and second.type == "function" and second.function.arguments == "{}"


def test_completion_with_candidates_is_one_choice_each() -> None:
    completion = completion_from_gemini(
        gemini_answer([{"text": "x"}], candidates=3), model="m", completion_id="c", created=1
    )
    parsed = ChatCompletion.model_validate(completion)
    assert [c.index for c in parsed.choices] == [0, 1, 2]


def test_completion_of_a_blocked_prompt_is_filtered() -> None:
    answer = {"promptFeedback": {"blockReason": "SAFETY"}, "usageMetadata": {"promptTokenCount": 4}}
    check_response(answer)
    parsed = ChatCompletion.model_validate(
        completion_from_gemini(answer, model="m", completion_id="c", created=1)
    )
    assert parsed.choices[0].finish_reason == "content_filter"
    assert parsed.choices[0].message.content == ""
    assert parsed.usage is not None and parsed.usage.total_tokens == 4


def test_every_finish_reason_maps_to_an_openai_finish_reason() -> None:
    schema = aiplatform_v1().schema("GoogleCloudAiplatformV1Candidate")
    reasons = schema["properties"]["finishReason"]["enum"]
    mapped = {reason: finish_reason(reason) for reason in reasons}
    assert set(mapped.values()) == {"stop", "length", "content_filter"}
    assert mapped["STOP"] == "stop" and finish_reason("STOP", called=True) == "tool_calls"
    assert mapped["MAX_TOKENS"] == "length"
    for reason in ("SAFETY", "RECITATION", "BLOCKLIST", "PROHIBITED_CONTENT", "SPII", "MODEL_ARMOR"):
        assert mapped[reason] == "content_filter"
    assert mapped["MALFORMED_FUNCTION_CALL"] == mapped["OTHER"] == "stop"


# ---------------------------------------------------------------------------------------------
# chunks_from_gemini_stream


def content(parts: list[dict[str, Any]], **candidate: Any) -> dict[str, Any]:
    return {"candidates": [{"content": {"role": "model", "parts": parts}, **candidate}]}


STREAM: list[dict[str, Any]] = [
    {**content([{"text": "Let me "}]), "usageMetadata": {"promptTokenCount": 3}},
    content([{"text": "hmm", "thought": True}, {"text": "check."}]),
    content([{"functionCall": {"name": "get_weather", "args": {"city": "Paris"}}}]),
    {
        **content([{"text": ""}], finishReason="STOP"),
        "usageMetadata": {"promptTokenCount": 3, "candidatesTokenCount": 4, "totalTokenCount": 7},
    },
]


def test_stream_events_fit_the_discovery_document() -> None:
    for event in STREAM:
        check_response(event)


@pytest.mark.parametrize("include_usage", [False, True])
async def test_stream_translation(include_usage: bool) -> None:
    data = await collect(
        chunks_from_gemini_stream(
            items_of(STREAM),
            model="m",
            completion_id="chatcmpl-3",
            created=5,
            include_usage=include_usage,
        )
    )
    chunks = parse_chunks(data)
    assert all(c.id == "chatcmpl-3" and c.model == "m" and c.created == 5 for c in chunks)
    assert chunks[0].choices[0].delta.role == "assistant"
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "Let me check."
    calls = [call for c in chunks if c.choices for call in c.choices[0].delta.tool_calls or []]
    assert len(calls) == 1 and calls[0].index == 0 and calls[0].id and calls[0].id.startswith("call_")
    assert calls[0].function is not None and calls[0].function.name == "get_weather"
    assert json.loads(calls[0].function.arguments or "") == {"city": "Paris"}
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


async def test_stream_with_two_candidates() -> None:
    events: list[dict[str, Any]] = [
        {
            "candidates": [
                {"index": i, "content": {"role": "model", "parts": [{"text": t}]}}
                for i, t in ((0, "a"), (1, "b"))
            ]
        },
        {
            "candidates": [
                {"index": i, "content": {"role": "model", "parts": [{"text": ""}]}, "finishReason": "STOP"}
                for i in (0, 1)
            ]
        },
    ]
    for event in events:
        check_response(event)
    chunks = parse_chunks(
        await collect(
            chunks_from_gemini_stream(
                items_of(events), model="m", completion_id="c", created=1, include_usage=False
            )
        )
    )
    for index, text in ((0, "a"), (1, "b")):
        mine = [c.choices[0] for c in chunks if c.choices[0].index == index]
        assert mine[0].delta.role == "assistant"
        assert "".join(c.delta.content or "" for c in mine) == text
        assert mine[-1].finish_reason == "stop"


async def test_stream_of_a_blocked_prompt() -> None:
    chunks = parse_chunks(
        await collect(
            chunks_from_gemini_stream(
                items_of([{"promptFeedback": {"blockReason": "PROHIBITED_CONTENT"}}]),
                model="m",
                completion_id="c",
                created=1,
                include_usage=False,
            )
        )
    )
    assert [c.choices[0].finish_reason for c in chunks] == [None, "content_filter"]


async def test_stream_error_event_raises_after_what_was_sent() -> None:
    error = {"error": {"code": 500, "message": "Internal error encountered.", "status": "INTERNAL"}}
    sent: list[bytes] = []
    with pytest.raises(UpstreamError) as caught:
        async for chunk in chunks_from_gemini_stream(
            items_of([STREAM[0], error, *STREAM[1:]]),
            model="m",
            completion_id="c",
            created=1,
            include_usage=False,
        ):
            sent.append(chunk)
    assert len(sent) == 2 and b"Let me " in sent[1]
    assert "Internal error encountered." in caught.value.message and caught.value.code == "internal"


async def test_stream_ending_before_a_finish_reason_raises() -> None:
    with pytest.raises(UpstreamError):
        await collect(
            chunks_from_gemini_stream(
                items_of(STREAM[:3]), model="m", completion_id="c", created=1, include_usage=True
            )
        )
    with pytest.raises(UpstreamError):
        await collect(
            chunks_from_gemini_stream(
                items_of([]), model="m", completion_id="c", created=1, include_usage=True
            )
        )


async def test_sse_data_reads_the_event_stream_format() -> None:
    items = [
        b'data: {"a": 1}\r\n\r\n: a comment\r\nevent: x\r\ndata: {"b":\r\ndata: 2}\r\n\r\n',
        b'data:{"c": 3}\n\nid: 7\n\n',
        b'data: {"d": 4}',  # the remainder of a body without its blank line
    ]
    assert [dict(e) async for e in sse_data(items_of(items))] == [{"a": 1}, {"b": 2}, {"c": 3}, {"d": 4}]
    with pytest.raises(UpstreamError):
        [e async for e in sse_data(items_of([b"data: [1]\n\n"]))]
    with pytest.raises(UpstreamError):
        [e async for e in sse_data(items_of([b"data: {nope\n\n"]))]


# ---------------------------------------------------------------------------------------------
# gemini_chat through a ChatClient against the fake Vertex AI


@pytest.fixture
async def fake() -> AsyncIterator[FakeVertexChat]:
    server = FakeVertexChat(endpoints={"1234567890"})
    await server.start()
    yield server
    await server.stop()


@pytest.fixture
async def client() -> AsyncIterator[ChatClient]:
    http = HttpClient("vertex-ai")
    chat_client = ChatClient(http)
    yield chat_client
    await chat_client.aclose()
    await http.aclose()


@pytest.fixture
def endpoint(fake: FakeVertexChat) -> Endpoint:
    return Endpoint(fake.url, {"Authorization": "Bearer ya29.token"}, {})


def body_of(**fields: Any) -> bytes:
    return json.dumps(chat(**fields)).encode()


async def test_unary_answer(fake: FakeVertexChat, client: ChatClient, endpoint: Endpoint) -> None:
    fake.script = GeminiScript(text="Bonjour !", finish_reason="STOP", prompt_tokens=4, candidates_tokens=3)
    body = body_of(
        temperature=0.2,
        stop=["###"],
        user="u",
        messages=[{"role": "system", "content": "Be nice."}, {"role": "user", "content": "Salut"}],
    )
    reply = await gemini_chat(client, endpoint, body, resource=RESOURCE, stream=False)
    assert reply.content_type == "application/json"
    assert reply.headers["x-request-id"]
    completion = ChatCompletion.model_validate_json(await read_all(reply))
    assert completion.model == "my-tuned-model" and completion.id.startswith("chatcmpl-")
    assert completion.choices[0].message.content == "Bonjour !"
    assert completion.choices[0].finish_reason == "stop"
    assert completion.usage is not None and completion.usage.total_tokens == 7
    (call,) = fake.calls
    assert call.method == "generateContent" and call.resource == RESOURCE
    assert call.body["generationConfig"] == {"temperature": 0.2, "stopSequences": ["###"]}
    assert call.body["systemInstruction"] == {"parts": [{"text": "Be nice."}]}
    assert fake.requests[0].headers["authorization"] == "***"
    assert fake.violations == []


async def test_unary_candidates(fake: FakeVertexChat, client: ChatClient, endpoint: Endpoint) -> None:
    reply = await gemini_chat(client, endpoint, body_of(n=3), resource=RESOURCE, stream=False)
    completion = ChatCompletion.model_validate_json(await read_all(reply))
    assert [c.index for c in completion.choices] == [0, 1, 2]
    assert fake.calls[0].body["generationConfig"] == {"candidateCount": 3}
    assert fake.violations == []


async def test_conversation_with_tools_passes_vertex_checks(
    fake: FakeVertexChat, client: ChatClient, endpoint: Endpoint
) -> None:
    fake.script = GeminiScript(text="", function_calls=[FunctionCall("get_weather", {"city": "Rome"})])
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
    body = body_of(
        messages=messages,
        tools=[WEATHER_TOOL],
        tool_choice={"type": "function", "function": {"name": "get_weather"}},
    )
    completion = ChatCompletion.model_validate_json(
        await read_all(await gemini_chat(client, endpoint, body, resource=RESOURCE, stream=False))
    )
    assert completion.choices[0].finish_reason == "tool_calls"
    tool_calls = completion.choices[0].message.tool_calls
    assert tool_calls is not None and tool_calls[0].function.name == "get_weather"  # type: ignore[union-attr]
    assert json.loads(tool_calls[0].function.arguments) == {"city": "Rome"}  # type: ignore[union-attr]
    assert fake.violations == []
    assert [c["role"] for c in fake.calls[0].body["contents"]] == ["user", "model", "user", "model", "user"]


@pytest.mark.parametrize("include_usage", [False, True])
async def test_streamed_answer(
    fake: FakeVertexChat, client: ChatClient, endpoint: Endpoint, include_usage: bool
) -> None:
    fake.script = GeminiScript(text="A streamed answer, in pieces.", chunk_size=5, finish_reason="MAX_TOKENS")
    body = body_of(stream=True, stream_options={"include_usage": include_usage}, max_tokens=30)
    reply = await gemini_chat(client, endpoint, body, resource=RESOURCE, stream=True)
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
        assert len(usage) == 1 and usage[0] is not None
        assert (usage[0].prompt_tokens, usage[0].completion_tokens, usage[0].total_tokens) == (11, 7, 18)
    else:
        assert usage == []
    (call,) = fake.calls
    assert call.method == "streamGenerateContent" and call.completed
    assert fake.requests[0].query == [("alt", "sse")]
    assert fake.violations == []


async def test_streamed_function_call(fake: FakeVertexChat, client: ChatClient, endpoint: Endpoint) -> None:
    fake.script = GeminiScript(
        text="Checking.", function_calls=[FunctionCall("get_weather", {"city": "Oslo"}, "fc-9")]
    )
    reply = await gemini_chat(
        client, endpoint, body_of(tools=[WEATHER_TOOL], stream=True), resource=RESOURCE, stream=True
    )
    chunks = parse_chunks(await read_all(reply))
    calls = [call for c in chunks if c.choices for call in c.choices[0].delta.tool_calls or []]
    assert len(calls) == 1 and calls[0].id == "fc-9" and calls[0].function is not None
    assert json.loads(calls[0].function.arguments or "") == {"city": "Oslo"}
    assert chunks[-1].choices[0].finish_reason == "tool_calls"
    assert fake.violations == []


@pytest.mark.parametrize("stream", [False, True])
async def test_rate_limit_is_429_with_retry_after(
    fake: FakeVertexChat, client: ChatClient, endpoint: Endpoint, stream: bool
) -> None:
    fake.inject("429", "GenerateContent$|:generateContent$", retry_after=7)
    with pytest.raises(ResourceExhausted) as caught:
        await gemini_chat(client, endpoint, body_of(), resource=RESOURCE, stream=stream)
    assert caught.value.http_status == 429 and caught.value.provider == "vertex-ai"
    assert caught.value.retry_after == 7 and "Rate limit" in caught.value.message
    assert len(fake.requests) == 1  # a paid request is not sent again


@pytest.mark.parametrize("stream", [False, True])
async def test_unknown_endpoint_is_404_on_model(
    fake: FakeVertexChat, client: ChatClient, endpoint: Endpoint, stream: bool
) -> None:
    resource = "projects/my-project/locations/us-central1/endpoints/999"
    with pytest.raises(NotFound) as caught:
        await gemini_chat(client, endpoint, body_of(), resource=resource, stream=stream)
    assert caught.value.param == "model" and caught.value.code == "model_not_found"
    assert caught.value.http_status == 404 and "not found" in caught.value.message
    assert fake.violations == []


async def test_server_error_is_upstream_error(
    fake: FakeVertexChat, client: ChatClient, endpoint: Endpoint
) -> None:
    fake.inject("503")
    with pytest.raises(UpstreamError) as caught:
        await gemini_chat(client, endpoint, body_of(), resource=RESOURCE, stream=False)
    assert caught.value.http_status == 502 and caught.value.provider == "vertex-ai"


async def test_missing_token_is_a_violation(fake: FakeVertexChat, client: ChatClient) -> None:
    with pytest.raises(Exception) as caught:
        await gemini_chat(client, Endpoint(fake.url, {}, {}), body_of(), resource=RESOURCE, stream=False)
    assert getattr(caught.value, "http_status", None) == 401
    assert len(fake.violations) == 1


@pytest.mark.parametrize("kind", ["event", "disconnect"])
async def test_mid_stream_error_raises_upstream_error(
    fake: FakeVertexChat, client: ChatClient, endpoint: Endpoint, kind: Any
) -> None:
    fake.script = GeminiScript(text="abcdefghij", chunk_size=2, error_after=2, error_kind=kind)
    reply = await gemini_chat(client, endpoint, body_of(stream=True), resource=RESOURCE, stream=True)
    received: list[bytes] = []
    with pytest.raises(UpstreamError) as caught:
        async with aclosing(reply.chunks) as chunks:  # type: ignore[type-var]
            async for chunk in chunks:
                received.append(chunk)
    text = b"".join(received)
    assert text.count(b"data: ") == 3  # the role chunk and two deltas
    assert b"[DONE]" not in text
    assert caught.value.provider == "vertex-ai"
    if kind == "event":
        assert "INTERNAL" in caught.value.message and caught.value.code == "internal"


@pytest.mark.parametrize(
    ("body", "param"),
    [
        (b"{not json", None),
        (b"[1]", None),
        (json.dumps(chat(n=9)).encode(), "n"),
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
async def test_invalid_input_is_400_before_any_request(
    fake: FakeVertexChat, client: ChatClient, endpoint: Endpoint, body: bytes, param: str | None
) -> None:
    with pytest.raises(InvalidArgument) as caught:
        await gemini_chat(client, endpoint, body, resource=RESOURCE, stream=True)
    assert caught.value.param == param
    assert fake.requests == []


async def test_closing_the_stream_early_closes_the_connection(
    fake: FakeVertexChat, client: ChatClient, endpoint: Endpoint
) -> None:
    fake.script = GeminiScript(text="x" * 64, chunk_size=4, hold_after=1)
    reply = await gemini_chat(client, endpoint, body_of(stream=True), resource=RESOURCE, stream=True)
    async with aclosing(reply.chunks) as chunks:  # type: ignore[type-var]
        first = await anext(chunks)
        second = await anext(chunks)
    assert b'"role":"assistant"' in first and b"xxxx" in second
    await asyncio.wait_for(fake.calls[0].closed.wait(), 10)
    assert fake.calls[0].cancelled and not fake.calls[0].completed


async def test_closing_before_iterating_closes_the_connection(
    fake: FakeVertexChat, client: ChatClient, endpoint: Endpoint
) -> None:
    fake.script = GeminiScript(hold_after=0)
    reply = await gemini_chat(client, endpoint, body_of(stream=True), resource=RESOURCE, stream=True)
    await reply.chunks.aclose()  # type: ignore[attr-defined]
    await asyncio.wait_for(fake.calls[0].closed.wait(), 10)
    assert fake.calls[0].cancelled and fake.calls[0].events_sent == 0


# ---------------------------------------------------------------------------------------------
# the fake itself


async def test_fake_refuses_requests_outside_the_discovery_document(fake: FakeVertexChat) -> None:
    bad = {
        "contents": [{"role": "user", "parts": [{"text": "hi", "image": {}}]}],
        "generationConfig": {"max_output_tokens": 5, "temperature": "hot"},
    }
    async with (
        aiohttp.ClientSession() as session,
        session.post(
            f"{fake.url}/v1/{RESOURCE}:generateContent", json=bad, headers={"Authorization": "Bearer t"}
        ) as response,
    ):
        assert response.status == 400
        error = (await response.json())["error"]
    assert error["code"] == 400 and error["status"] == "INVALID_ARGUMENT"
    assert (
        "image" in error["message"]
        and "max_output_tokens" in error["message"]
        and "temperature" in error["message"]
    )
    assert len(fake.violations) == 1


@pytest.mark.parametrize(
    ("request_body", "words"),
    [
        ({"contents": [{"role": "model", "parts": [{"text": "a"}]}]}, ["end with a user turn"]),
        ({"contents": [{"role": "user", "parts": [{"text": ""}]}]}, ["empty"]),
        (
            {"contents": [{"role": "user", "parts": [{"text": "a", "functionCall": {"name": "f"}}]}]},
            ["exactly one"],
        ),
        (
            {
                "contents": [
                    {"role": "user", "parts": [{"text": "a"}]},
                    {"role": "model", "parts": [{"functionCall": {"name": "f", "args": {}}}]},
                    {"role": "user", "parts": [{"functionResponse": {"name": "g", "response": {}}}]},
                ]
            },
            ["one for one"],
        ),
        ({"contents": [{"role": "user", "parts": [{"functionResponse": {"name": "g"}}]}]}, ["required"]),
        (
            {
                "contents": [{"role": "user", "parts": [{"text": "a"}]}],
                "generationConfig": {"temperature": 2.5},
            },
            ["range"],
        ),
        (
            {
                "contents": [{"role": "user", "parts": [{"text": "a"}]}],
                "generationConfig": {"responseJsonSchema": {"type": "object"}},
            },
            ["application/json"],
        ),
        (
            {
                "contents": [{"role": "user", "parts": [{"text": "a"}]}],
                "tools": [{"functionDeclarations": [{"name": "1bad"}]}],
                "toolConfig": {"functionCallingConfig": {"mode": "AUTO", "allowedFunctionNames": ["x"]}},
            },
            ["valid function name", "only with mode ANY", "no function 'x'"],
        ),
        ({"contents": [{"role": "user", "parts": [{"text": "a"}]}], "candidates": []}, ["unknown field"]),
    ],
)
def test_fake_checks_vertex_rules(request_body: dict[str, Any], words: list[str]) -> None:
    errors = "; ".join(request_errors(request_body))
    for word in words:
        assert word in errors


def test_fake_answers_fit_the_response_schema() -> None:
    fake = FakeVertexChat(
        script=GeminiScript(function_calls=[FunctionCall("f", {"a": [1]}, "id-1")], thoughts_tokens=2)
    )
    for count in (1, 2):
        for _, event in fake._stream_events(count):
            assert response_errors(event) == []
    assert aiplatform_v1().validate({"candidates": [{"index": "0"}]}, RESPONSE_SCHEMA, direction="response")
