"""Chat completions and models for the provider fakes (OpenAI's ``/v1`` and Azure's surfaces).

``POST …/chat/completions``: the body must be JSON that fits the spec's
``CreateChatCompletionRequest`` (else OpenAI's 400 envelope, recorded as a violation). The raw
bytes received are kept in ``fake.chat_calls`` (one :class:`ChatCall` each), so tests can check
that a gateway relayed the caller's body unchanged. Answers:

- ``stream`` not true: one ``CreateChatCompletionResponse`` (validated before it leaves);
- ``stream: true``: ``text/event-stream`` — a role chunk, ``fake.chat.chunks`` content chunks of
  ``fake.chat.chunk_size`` characters each, a ``finish_reason: stop`` chunk (each a
  ``CreateChatCompletionStreamResponse``; the first of each kind is validated, the rest share its
  shape), then ``data: [DONE]``; every event is ``data: <json>\\n\\n``, written as its own write,
  ``fake.chat.delay`` seconds apart.

Knobs (``fake.chat``, a :class:`ChatSettings`): ``chunks``, ``chunk_size``, ``delay``,
``cut_after`` (drop the connection after that many content chunks, mid-body). Faults of
``tests.fakes._common`` apply as for any route (``fake.inject("429", "/chat/completions",
retry_after=7)``). :class:`ChatCall` records ``chunks_sent``, ``completed`` (``[DONE]`` written)
and ``cancelled`` (the client closed the connection before the end).

``GET …/models`` / ``GET …/models/{model}``: spec-valid ``ListModelsResponse`` / ``Model`` — the
base models in ``fake.base_models`` and the fine-tuned model of every succeeded job of the
caller; an unknown model is OpenAI's 404 ``model_not_found``.
"""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from tests.fakes._common import ApiError, new_id
from tests.openapi_schema import validate

__all__ = [
    "BASE_MODELS",
    "ChatCall",
    "ChatSettings",
    "chat_completion",
    "model_json",
    "read_chat_request",
]

BASE_MODELS = ("gpt-4o-mini-2024-07-18", "gpt-4.1-nano-2025-04-14")


@dataclass
class ChatSettings:
    """How the fake answers chat completions (see the module docstring)."""

    chunks: int = 3
    chunk_size: int = 8
    delay: float = 0.0
    cut_after: int | None = None


@dataclass
class ChatCall:
    """One chat completion request as the fake received it."""

    path: str
    body: bytes
    query: dict[str, str]
    stream: bool = False
    chunks_sent: int = 0
    completed: bool = False
    cancelled: bool = False
    cut: bool = False
    sent: bytearray = field(default_factory=bytearray)
    """The answer's body bytes as written (to compare with what a gateway relayed)."""
    headers: dict[str, str] = field(default_factory=dict)


def schema_error(exc: Exception) -> ApiError:
    path = list(getattr(exc, "absolute_path", []))
    where = "".join(f"[{p!r}]" if isinstance(p, int) else f".{p}" for p in path).lstrip(".")
    message = getattr(exc, "message", str(exc))
    return ApiError(
        400,
        f"Invalid request: {where + ': ' if where else ''}{message}",
        param=str(path[0]) if path else None,
        violation=True,
    )


async def read_chat_request(
    request: web.Request, calls: list[ChatCall], *, default_model: str | None = None
) -> tuple[ChatCall, dict[str, Any]]:
    """Records the request's raw body, then parses and validates it (``default_model`` fills an
    absent ``model``: Azure's deployment path names the model in the URL)."""
    raw = await request.read()
    call = ChatCall(
        request.path,
        raw,
        dict(request.query),
        headers={
            k.lower(): v for k, v in request.headers.items() if k.lower() not in ("authorization", "api-key")
        },
    )
    calls.append(call)
    try:
        body = json.loads(raw)
    except ValueError as exc:
        raise ApiError(
            400, f"We could not parse the JSON body of your request: {exc}", violation=True
        ) from exc
    if not isinstance(body, dict):
        raise ApiError(400, "The request body must be a JSON object.", violation=True)
    instance = {"model": default_model, **body} if default_model is not None and "model" not in body else body
    try:
        validate("CreateChatCompletionRequest", instance)
    except Exception as exc:
        raise schema_error(exc) from exc
    call.stream = body.get("stream") is True
    return call, instance


def _completion(model: str, content: str) -> dict[str, Any]:
    return {
        "id": new_id("chatcmpl-"),
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "system_fingerprint": "fp_fake",
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": content, "refusal": None, "annotations": []},
                "logprobs": None,
                "finish_reason": "stop",
            }
        ],
        "usage": {"prompt_tokens": 9, "completion_tokens": len(content) // 4 + 1, "total_tokens": 10},
    }


def _chunk(
    completion_id: str, created: int, model: str, delta: dict[str, Any], finish: str | None
) -> dict[str, Any]:
    return {
        "id": completion_id,
        "object": "chat.completion.chunk",
        "created": created,
        "model": model,
        "system_fingerprint": "fp_fake",
        "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}],
    }


def _event(payload: dict[str, Any], check: bool) -> bytes:
    if check:
        validate("CreateChatCompletionStreamResponse", payload)
    return b"data: " + json.dumps(payload, separators=(",", ":")).encode() + b"\n\n"


async def chat_completion(
    request: web.Request,
    call: ChatCall,
    body: dict[str, Any],
    settings: ChatSettings,
    headers: dict[str, str],
) -> web.StreamResponse:
    """The answer to a validated chat request (see the module docstring)."""
    model = str(body["model"])
    text = "x" * settings.chunk_size
    headers = {"openai-processing-ms": "3", "x-ratelimit-remaining-requests": "4999", **headers}
    if not call.stream:
        completion = _completion(model, text * settings.chunks)
        validate("CreateChatCompletionResponse", completion)
        call.sent += json.dumps(completion).encode()
        call.completed = True
        return web.Response(body=bytes(call.sent), content_type="application/json", headers=headers)
    response = web.StreamResponse(
        headers={"Content-Type": "text/event-stream; charset=utf-8", "Cache-Control": "no-cache", **headers}
    )
    await response.prepare(request)
    completion_id, created = new_id("chatcmpl-"), int(time.time())
    role = {"role": "assistant", "content": "", "refusal": None}
    try:
        await _write(response, call, _event(_chunk(completion_id, created, model, role, None), True))
        for index in range(settings.chunks):
            if settings.cut_after is not None and index == settings.cut_after:
                call.cut = True
                if request.transport is not None:
                    request.transport.abort()
                return response
            await _write(
                response,
                call,
                _event(_chunk(completion_id, created, model, {"content": text}, None), index == 0),
            )
            call.chunks_sent += 1
            if settings.delay:
                await asyncio.sleep(settings.delay)
        await _write(response, call, _event(_chunk(completion_id, created, model, {}, "stop"), True))
        await _write(response, call, b"data: [DONE]\n\n")
        await response.write_eof()
    except (ConnectionError, asyncio.CancelledError):
        call.cancelled = True
        raise
    call.completed = True
    return response


async def _write(response: web.StreamResponse, call: ChatCall, data: bytes) -> None:
    await response.write(data)
    call.sent += data


def model_json(model_id: str, created: int, owned_by: str) -> dict[str, Any]:
    """A spec-valid ``Model``."""
    body = {"id": model_id, "object": "model", "created": created, "owned_by": owned_by}
    validate("Model", body)
    return body


def model_not_found(model_id: str) -> ApiError:
    return ApiError(
        404,
        f"The model '{model_id}' does not exist or you do not have access to it.",
        code="model_not_found",
        param="model",
    )
