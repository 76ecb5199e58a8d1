"""OpenAI chat completions on Bedrock's Converse / ConverseStream API.

A Bedrock model (a fine-tuned custom model's deployment, a provisioned model, a base model) answers
OpenAI's `CreateChatCompletionRequest` through three pure translations and one call:

- `converse_request`: the OpenAI body → the keyword arguments of aiobotocore's
  `bedrock-runtime` `converse(**kw)` / `converse_stream(**kw)`;
- `completion_from_converse`: Converse's answer → OpenAI's `chat.completion`;
- `chunks_from_converse_stream`: ConverseStream's events → OpenAI's server-sent events
  (`data: {chat.completion.chunk}\\n\\n` …, `data: [DONE]\\n\\n`);
- `converse_chat`: parses the body, calls the client and returns a `ChatReply`.

Request translation (lossless or refused — never a silent change of meaning):

- `messages`: `system` and `developer` messages → `system` text blocks (wherever they stand:
  Converse has one system prompt); `user` → user turns of text blocks; `assistant` → assistant
  turns of text blocks (content text and `refusal` parts) and `toolUse` blocks (its
  `tool_calls`; `arguments` must be a JSON object, `""` meaning `{}`); `tool` → a `toolResult`
  block (`toolUseId` = `tool_call_id`, the content's text) in a user turn. Consecutive turns of
  one role are merged into one message (Converse requires alternating roles; tool results that
  follow an assistant's calls become one user turn). Empty texts are left out (Bedrock refuses
  blank text blocks), and a turn left empty is dropped. A message's `name` is ignored. Refused:
  other roles (`function`), content parts other than text (images, audio, files), an assistant's
  `audio` or `function_call`, a conversation whose first turn is the assistant's.
- `max_completion_tokens` (else `max_tokens`) → `inferenceConfig.maxTokens`; `temperature` →
  `temperature` and `top_p` → `topP`, both 0–1 on Bedrock (a larger value is refused, not
  clipped); `stop` (a string or a list) → `stopSequences`.
- `tools` (function tools) → `toolConfig.tools[].toolSpec` (`parameters` → `inputSchema.json`,
  an empty object schema when absent; `strict` kept); `tool_choice` `"auto"` → `auto`,
  `"required"` → `any`, `{"type": "function", "function": {"name"}}` → `tool`; `"none"` is
  accepted only without tools (Converse cannot forbid tools it was given).
- Ignored (they do not change the answer): `model` (the caller's name; the Bedrock model is
  `model_id`), `stream` and `stream_options` (read by `converse_chat`), `user`,
  `safety_identifier`, `metadata`, `store`, `prompt_cache_key`, `prompt_cache_retention`. Any
  field set to `null` is ignored too.
- Accepted only at their neutral value: `n` 1, `frequency_penalty` / `presence_penalty` 0,
  `logprobs` false, `top_logprobs` 0, `logit_bias` `{}`, `response_format` `{"type": "text"}`,
  `modalities` `["text"]`, `parallel_tool_calls` true, `service_tier` `auto` / `default`.
- Anything else (`seed`, `reasoning_effort`, `verbosity`, `prediction`, `audio`,
  `web_search_options`, `functions`, `function_call`, unknown fields …) is refused:
  `InvalidArgument` whose `param` names the OpenAI field (`n`, `messages[2].content[0].type`).

Answer translation: text blocks are concatenated into `message.content`; `toolUse` blocks become
`tool_calls` (`arguments` the input's JSON); reasoning and citation blocks are left out. Stop
reasons: `end_turn` / `stop_sequence` → `stop`, `max_tokens` / `model_context_window_exceeded` →
`length`, `tool_use` → `tool_calls`, `guardrail_intervened` / `content_filtered` →
`content_filter`, anything else (`malformed_model_output`, `malformed_tool_use`, a future one) →
`stop`. `usage` → `prompt_tokens` / `completion_tokens` / `total_tokens`.

Streams: the first chunk carries `delta.role = "assistant"`; each text delta is one chunk; a
`toolUse` block's start is a `tool_calls` chunk with its id and name and each input delta one with
`arguments` text (tool call `index` counts tool blocks from 0); `messageStop` is the chunk with
`finish_reason`; the `metadata` event's usage is a chunk with `choices: []` when `include_usage`
(every other chunk then carries `usage: null`, as OpenAI's do); `[DONE]` ends it. An exception
event, a stream that ends before `messageStop`, or a broken connection raises `UpstreamError`
after what was already yielded.
"""

from __future__ import annotations

import re
import time
import uuid
from collections.abc import AsyncGenerator, AsyncIterator, Mapping
from typing import Any

import aiohttp
import orjson
from botocore.exceptions import BotoCoreError, ClientError, ParamValidationError
from tunegate.server.errors import (
    DeadlineExceeded,
    InvalidArgument,
    TunegateError,
    UpstreamError,
)
from tunegate.server.providers._chat import one_item
from tunegate.server.providers._chat_translation import (
    DONE,
    IGNORED_FIELDS,
    NEUTRAL_VALUES,
    ChunkWriter,
    OpenAIChatReader,
    TranslatedChunks,
    parse_chat_body,
)
from tunegate.server.providers.bedrock._s3 import PROVIDER, _aws_error
from tunegate.server.providers.interface import ChatReply

__all__ = [
    "IGNORED_FIELDS",
    "chunks_from_converse_stream",
    "completion_from_converse",
    "converse_chat",
    "converse_request",
    "finish_reason",
]


# Fields Converse has no equivalent for, accepted only at the value that means "off".
_NEUTRAL: dict[str, tuple[Any, ...]] = {
    **NEUTRAL_VALUES,
    "n": (1,),
    "frequency_penalty": (0,),
    "presence_penalty": (0,),
    "response_format": ({"type": "text"},),
}
_TRANSLATED = frozenset(
    {
        "messages",
        "max_tokens",
        "max_completion_tokens",
        "temperature",
        "top_p",
        "stop",
        "tools",
        "tool_choice",
    }
)

_FINISH = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "max_tokens": "length",
    "model_context_window_exceeded": "length",
    "tool_use": "tool_calls",
    "guardrail_intervened": "content_filter",
    "content_filtered": "content_filter",
}

_READER = OpenAIChatReader("Bedrock's Converse API")


# ---------------------------------------------------------------------------------------------
# OpenAI request → Converse request


def converse_request(body: Mapping[str, Any], model_id: str) -> dict[str, Any]:
    """The keyword arguments of `converse` / `converse_stream` for the OpenAI chat `body` on the
    Bedrock model `model_id` (see the module docstring); `InvalidArgument` naming the OpenAI
    `param` for anything Converse cannot express."""
    _READER.check_fields(body, translated=_TRANSLATED, ignored=IGNORED_FIELDS, neutral=_NEUTRAL)
    system: list[dict[str, Any]] = []
    request: dict[str, Any] = {"modelId": model_id, "messages": _messages(body.get("messages"), system)}
    if system:
        request["system"] = system
    inference = _inference_config(body)
    if inference:
        request["inferenceConfig"] = inference
    tool_config = _tool_config(body.get("tools"), body.get("tool_choice"))
    if tool_config is not None:
        request["toolConfig"] = tool_config
    return request


def _messages(raw: Any, system: list[dict[str, Any]]) -> list[dict[str, Any]]:
    read = _READER
    if not isinstance(raw, list) or not raw:
        raise read.invalid("messages", "'messages' must be a non-empty array")
    turns: list[dict[str, Any]] = []
    for i, message in enumerate(raw):
        where = f"messages[{i}]"
        if not isinstance(message, dict):
            raise read.invalid(where, f"'{where}' must be an object")
        role = message.get("role")
        if role in ("system", "developer"):
            system.extend({"text": text} for text in read.texts(message.get("content"), where))
            continue
        if role == "user":
            if message.get("content") is None:
                raise read.invalid(f"{where}.content", f"'{where}.content' is required")
            blocks: list[dict[str, Any]] = [{"text": t} for t in read.texts(message["content"], where)]
        elif role == "assistant":
            blocks = [{"text": t} for t in read.texts(message.get("content"), where, refusals=True)]
            blocks += [
                {"toolUse": {"toolUseId": call.id, "name": call.name, "input": call.arguments}}
                for call in read.tool_calls(message, where)
            ]
        elif role == "tool":
            content = [{"text": t} for t in read.texts(message.get("content"), where)]
            blocks = [{"toolResult": {"toolUseId": read.tool_call_id(message, where), "content": content}}]
            role = "user"
        else:
            raise read.refuse(f"{where}.role", f"The role {role!r} cannot be expressed in {read.api}")
        if not blocks:
            continue
        if not turns and role == "assistant":
            raise read.invalid(
                f"{where}.role", f"{read.api} needs the conversation to begin with a user turn"
            )
        if turns and turns[-1]["role"] == role:
            turns[-1]["content"].extend(blocks)
        else:
            turns.append({"role": role, "content": blocks})
    if not turns:
        raise read.invalid("messages", "'messages' needs at least one user message with content")
    return turns


def _inference_config(body: Mapping[str, Any]) -> dict[str, Any]:
    config: dict[str, Any] = {}
    max_tokens = _READER.max_tokens(body)
    if max_tokens is not None:
        config["maxTokens"] = max_tokens
    for name, key in (("temperature", "temperature"), ("top_p", "topP")):
        value = _READER.number(body, name, 0, 1)
        if value is not None:
            config[key] = value
    stop = _READER.stop_sequences(body)
    if stop is not None:
        config["stopSequences"] = stop
    return config


def _tool_config(tools: Any, choice: Any) -> dict[str, Any] | None:
    if tools is None or tools == []:
        if choice is not None and choice != "none":
            raise _READER.invalid("tool_choice", "'tool_choice' needs 'tools'")
        return None
    specs: list[dict[str, Any]] = []
    for tool in _READER.function_tools(tools):
        parameters = tool.parameters if tool.parameters is not None else {"type": "object", "properties": {}}
        spec: dict[str, Any] = {"name": tool.name, "inputSchema": {"json": parameters}}
        if tool.description is not None:
            spec["description"] = tool.description
        if tool.strict is not None:
            spec["strict"] = tool.strict
        specs.append({"toolSpec": spec})
    config: dict[str, Any] = {"tools": specs}
    named = _READER.named_function(choice)
    if choice == "auto":
        config["toolChoice"] = {"auto": {}}
    elif choice == "required":
        config["toolChoice"] = {"any": {}}
    elif named is not None:
        config["toolChoice"] = {"tool": {"name": named}}
    elif choice == "none":
        raise _READER.refuse(
            "tool_choice",
            f"{_READER.api} cannot forbid the tools it is given: leave out 'tools' instead of "
            "sending tool_choice 'none'",
        )
    elif choice is not None:
        raise _READER.refuse(
            "tool_choice", f"'tool_choice' must be 'auto', 'required' or a function tool on {_READER.api}"
        )
    return config


# ---------------------------------------------------------------------------------------------
# Converse answer → OpenAI completion


def finish_reason(stop_reason: Any) -> str:
    """OpenAI's `finish_reason` for Converse's `stopReason` (see the module docstring)."""
    return _FINISH.get(stop_reason, "stop") if isinstance(stop_reason, str) else "stop"


def _usage(usage: Any) -> dict[str, int] | None:
    if not isinstance(usage, Mapping):
        return None
    prompt = int(usage.get("inputTokens") or 0)
    completion = int(usage.get("outputTokens") or 0)
    total = usage.get("totalTokens")
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": int(total) if total is not None else prompt + completion,
    }


def _tool_call(block: Mapping[str, Any]) -> dict[str, Any]:
    arguments = orjson.dumps(block.get("input") if block.get("input") is not None else {}).decode()
    return {
        "id": block.get("toolUseId", ""),
        "type": "function",
        "function": {"name": block.get("name", ""), "arguments": arguments},
    }


def completion_from_converse(
    answer: Mapping[str, Any], *, model: str, completion_id: str, created: int
) -> dict[str, Any]:
    """OpenAI's `chat.completion` for a Converse `answer` (see the module docstring)."""
    output = answer.get("output") or {}
    content = (output.get("message") or {}).get("content") or []
    texts: list[str] = []
    calls: list[dict[str, Any]] = []
    for block in content:
        if isinstance(block.get("text"), str):
            texts.append(block["text"])
        elif isinstance(block.get("toolUse"), Mapping):
            calls.append(_tool_call(block["toolUse"]))
    message: dict[str, Any] = {
        "role": "assistant",
        "content": "".join(texts) if texts or not calls else None,
        "refusal": None,
    }
    if calls:
        message["tool_calls"] = calls
    completion: dict[str, Any] = {
        "id": completion_id,
        "object": "chat.completion",
        "created": created,
        "model": model,
        "choices": [
            {
                "index": 0,
                "message": message,
                "logprobs": None,
                "finish_reason": finish_reason(answer.get("stopReason")),
            }
        ],
    }
    usage = _usage(answer.get("usage"))
    if usage is not None:
        completion["usage"] = usage
    return completion


# ---------------------------------------------------------------------------------------------
# ConverseStream events → OpenAI server-sent events


def _event_error(name: str, body: Any) -> UpstreamError:
    message = body.get("message") if isinstance(body, Mapping) else None
    err = UpstreamError(f"Bedrock's stream failed: {name}: {message or name}", code=_snake(name))
    err.provider = PROVIDER
    return err


def _snake(name: str) -> str:
    return re.sub(r"(?<=[a-z0-9])(?=[A-Z])", "_", name).lower()


async def chunks_from_converse_stream(
    events: AsyncIterator[Mapping[str, Any]],
    *,
    model: str,
    completion_id: str,
    created: int,
    include_usage: bool,
) -> AsyncGenerator[bytes, None]:
    """OpenAI's server-sent events for ConverseStream's `events` (see the module docstring).
    Raises `UpstreamError` for an exception event or a stream that ends before `messageStop`."""
    writer = ChunkWriter(
        completion_id=completion_id, created=created, model=model, include_usage=include_usage
    )
    chunk = writer.chunk

    started = False
    stopped = False
    tools: dict[int, int] = {}  # contentBlockIndex → OpenAI tool call index
    async for event in events:
        if not started and (
            "messageStart" in event or "contentBlockStart" in event or "contentBlockDelta" in event
        ):
            started = True
            yield chunk({"role": "assistant", "content": ""})
        if "contentBlockDelta" in event:
            body = event["contentBlockDelta"]
            delta = body.get("delta") or {}
            if isinstance(delta.get("text"), str):
                if delta["text"]:
                    yield chunk({"content": delta["text"]})
            elif isinstance(delta.get("toolUse"), Mapping):
                index = tools.setdefault(body.get("contentBlockIndex", -1), len(tools))
                arguments = delta["toolUse"].get("input") or ""
                yield chunk({"tool_calls": [{"index": index, "function": {"arguments": arguments}}]})
            # reasoning, citation, tool result and image deltas have no OpenAI chunk field
        elif "contentBlockStart" in event:
            body = event["contentBlockStart"]
            tool = (body.get("start") or {}).get("toolUse")
            if isinstance(tool, Mapping):
                index = tools.setdefault(body.get("contentBlockIndex", -1), len(tools))
                call = {
                    "index": index,
                    "id": tool.get("toolUseId", ""),
                    "type": "function",
                    "function": {"name": tool.get("name", ""), "arguments": ""},
                }
                yield chunk({"tool_calls": [call]})
        elif "messageStop" in event:
            stopped = True
            yield chunk({}, finish_reason(event["messageStop"].get("stopReason")))
        elif "metadata" in event:
            usage = _usage(event["metadata"].get("usage"))
            if include_usage and usage is not None:
                yield writer.usage(usage)
        else:
            for name, body in event.items():
                if name.endswith("Exception"):
                    raise _event_error(name, body)
            # messageStart, contentBlockStop: nothing to send
    if not stopped:
        err = UpstreamError("Bedrock's stream ended before the message was complete (no messageStop)")
        err.provider = PROVIDER
        raise err
    yield DONE


# ---------------------------------------------------------------------------------------------
# The call


async def converse_chat(client: Any, body: bytes, *, model_id: str, stream: bool) -> ChatReply:
    """Answers the OpenAI chat completion `body` with the Bedrock model `model_id` through
    `client`, an aiobotocore `bedrock-runtime` client: `converse` for `stream=False` (`chunks`
    yields one `chat.completion` JSON document), `converse_stream` for `stream=True` (returns
    once the answer's head has arrived; `chunks` translates its events as they arrive, and
    closing it — also before iterating — closes Bedrock's response).

    The client's own retries apply (configure it with `retries={"total_max_attempts": 1}` or
    the like: chat is paid). Errors: a body that is not a JSON object or that Converse cannot
    express → `InvalidArgument`; Bedrock's error answers through the Bedrock S3 module's mapper
    (ValidationException 400, AccessDeniedException 403, ResourceNotFoundException 404 with
    `param` `model`, ThrottlingException 429, 5xx → 502); a failure while the stream is read →
    `UpstreamError` (`DeadlineExceeded` for a read timeout)."""
    request = parse_chat_body(body)
    kwargs = converse_request(request, model_id)
    model = request["model"] if isinstance(request.get("model"), str) else model_id
    completion_id = "chatcmpl-" + uuid.uuid4().hex
    created = int(time.time())
    doing = f"the chat completion on the model '{model_id}'"
    try:
        answer = await (client.converse_stream(**kwargs) if stream else client.converse(**kwargs))
    except ParamValidationError as exc:
        raise InvalidArgument(f"Bedrock's Converse API cannot take this request: {exc}") from exc
    except (ClientError, BotoCoreError) as exc:
        raise _chat_error(exc, doing) from exc
    headers = _headers(answer)
    if not stream:
        completion = completion_from_converse(
            answer, model=model, completion_id=completion_id, created=created
        )
        return ChatReply(
            content_type="application/json", chunks=one_item(orjson.dumps(completion)), headers=headers
        )
    options = request.get("stream_options")
    include_usage = isinstance(options, dict) and options.get("include_usage") is True
    stream_body = answer["stream"]
    events = _events(stream_body, doing)
    translation = chunks_from_converse_stream(
        events, model=model, completion_id=completion_id, created=created, include_usage=include_usage
    )

    async def close() -> None:
        stream_body.close()  # releases the connection (a no-op once the body was read whole)

    chunks = TranslatedChunks(translation, events, close)
    return ChatReply(content_type="text/event-stream", chunks=chunks, headers=headers)


def _chat_error(exc: BaseException, doing: str) -> TunegateError:
    err = _aws_error(exc, doing)
    if (
        isinstance(exc, ClientError)
        and exc.response.get("Error", {}).get("Code") == "ResourceNotFoundException"
    ):
        err.code, err.param = "model_not_found", "model"
    return err


def _headers(answer: Mapping[str, Any]) -> dict[str, str]:
    request_id = (answer.get("ResponseMetadata") or {}).get("RequestId")
    return {"x-request-id": request_id} if isinstance(request_id, str) and request_id else {}


async def _events(stream: Any, doing: str) -> AsyncGenerator[Mapping[str, Any], None]:
    """The events of aiobotocore's `EventStream`, its failures as gateway errors. An exception
    event is raised by botocore as `EventStreamError` (a `ClientError` without an HTTP status,
    which the mapper makes an `UpstreamError`)."""
    iterator = aiter(stream)
    try:
        async for event in iterator:
            yield event
    except (ClientError, BotoCoreError) as exc:
        raise _aws_error(exc, doing) from exc
    except aiohttp.ClientError as exc:
        err = UpstreamError(f"AWS's stream broke during {doing}: {type(exc).__name__}")
        err.provider = PROVIDER
        raise err from exc
    except TimeoutError as exc:
        err2 = DeadlineExceeded(f"AWS stopped sending during {doing}")
        err2.provider = PROVIDER
        raise err2 from exc
    finally:
        close = getattr(iterator, "aclose", None)
        if close is not None:
            await close()
