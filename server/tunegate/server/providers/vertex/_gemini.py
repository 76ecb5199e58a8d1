"""OpenAI chat completions on Vertex AI's Gemini `generateContent` / `streamGenerateContent`.

A tuned Gemini model is served from a Vertex endpoint (`projects/p/locations/l/endpoints/123`);
it answers OpenAI's `CreateChatCompletionRequest` through three pure translations and one call:

- `gemini_request`: the OpenAI body → a `GenerateContentRequest` (`aiplatform.v1` JSON);
- `completion_from_gemini`: a `GenerateContentResponse` → OpenAI's `chat.completion`;
- `chunks_from_gemini_stream`: the `GenerateContentResponse`s of a stream → OpenAI's
  server-sent events (`data: {chat.completion.chunk}\\n\\n` …, `data: [DONE]\\n\\n`);
- `gemini_chat`: parses the body, POSTs through the adapter's `ChatClient` and returns a
  `ChatReply`.

Request translation (lossless or refused — never a silent change of meaning):

- `messages`: `system` and `developer` messages → `systemInstruction` text parts (wherever they
  stand: Gemini has one system instruction); `user` → `user` turns of text parts; `assistant` →
  `model` turns of text parts (content text and `refusal` parts) and `functionCall` parts (its
  `tool_calls`: `name`, `args` the parsed `arguments`, which must be a JSON object, `""` meaning
  `{}`); `tool` → a `functionResponse` part in a `user` turn, `name` that of the earlier tool
  call with the same `tool_call_id`, `response` `{"output": <the content's text>}` (Google's
  convention for a function's output). Call ids are not sent (Gemini pairs calls and responses
  by name and order; a tuned model answers none). Consecutive turns of one role are merged into
  one `Content`. Empty texts are left out and a turn left empty is dropped. A message's `name`
  is ignored. Refused: other roles (`function`), content parts other than text (images, audio,
  files), an assistant's `audio` or `function_call`, a `tool_call_id` that no earlier tool call
  has, a conversation without a user or assistant turn.
- `max_completion_tokens` (else `max_tokens`) → `generationConfig.maxOutputTokens`;
  `temperature` (0–2) → `temperature`; `top_p` (0–1) → `topP`; `n` (1–8) → `candidateCount`
  (one choice per candidate, by its `index`); `stop` (a string or a list) → `stopSequences`;
  `presence_penalty` / `frequency_penalty` (−2–2) → `presencePenalty` / `frequencyPenalty`;
  `seed` → `seed` (int32); `response_format` `json_object` → `responseMimeType`
  `application/json`, `json_schema` → that and `responseJsonSchema` (the schema as given: Vertex
  takes JSON Schema itself), `text` → nothing.
- `tools` (function tools) → one `tools[0].functionDeclarations` (`parameters` →
  `parametersJsonSchema` as given, so no schema conversion can lose a keyword); `tool_choice`
  `"auto"` → `AUTO`, `"required"` → `ANY`, `"none"` → `NONE`, a named function → `ANY` with
  `allowedFunctionNames: [name]` (`toolConfig.functionCallingConfig.mode`). `"none"` without
  tools is accepted and sends nothing.
- Ignored (they do not change the answer): `model` (the caller's name; the Vertex resource is
  `gemini_chat`'s `resource`), `stream` and `stream_options` (read by `gemini_chat`), `user`,
  `safety_identifier`, `metadata`, `store`, `prompt_cache_key`, `prompt_cache_retention`. Any
  field set to `null` is ignored too.
- Accepted only at their neutral value: `logprobs` false, `top_logprobs` 0, `logit_bias` `{}`,
  `modalities` `["text"]`, `parallel_tool_calls` true (Gemini cannot be held to one call),
  `service_tier` `auto` / `default`.
- Anything else (`reasoning_effort`, `verbosity`, `prediction`, `audio`, `web_search_options`,
  `functions`, `function_call`, unknown fields …) is refused: `InvalidArgument` whose `param`
  names the OpenAI field (`n`, `messages[2].content[0].type`).

Answer translation: each candidate is a choice (`index` = the candidate's); its text parts are
concatenated into `message.content` (parts marked `thought` are left out); `functionCall` parts
become `tool_calls` (`id` the call's own, else a new `call_…`; `arguments` the args' JSON).
Finish reasons: `STOP` → `stop` (`tool_calls` when the candidate called a function),
`MAX_TOKENS` → `length`, the safety family (`SAFETY`, `RECITATION`, `BLOCKLIST`,
`PROHIBITED_CONTENT`, `SPII`, `MODEL_ARMOR`, `IMAGE_SAFETY`, `IMAGE_PROHIBITED_CONTENT`,
`IMAGE_RECITATION`) → `content_filter`, anything else (`OTHER`, `MALFORMED_FUNCTION_CALL`, a
future one) → `stop`. A prompt blocked before any candidate (`promptFeedback.blockReason`) is
one empty choice with `content_filter`. `usageMetadata` → `usage`: `prompt_tokens` = prompt +
tool-use prompt tokens, `completion_tokens` = candidates + thoughts tokens (OpenAI counts
reasoning in completion tokens), `total_tokens` = `totalTokenCount`, with
`completion_tokens_details.reasoning_tokens` / `prompt_tokens_details.cached_tokens` when
Gemini reports them.

Streams (`:streamGenerateContent?alt=sse`, each event `data: {GenerateContentResponse}`): per
choice, the first chunk carries `delta.role = "assistant"`; each text part is a content chunk;
each `functionCall` part (Gemini sends it whole) one `tool_calls` chunk with id, name and the
whole `arguments` (tool call `index` counts a choice's calls from 0); a candidate's
`finishReason` is the chunk with `finish_reason`; Gemini's last `usageMetadata` is a chunk with
`choices: []` when `include_usage` (every other chunk then carries `usage: null`, as OpenAI's
do); `[DONE]` ends it. An `{"error": …}` event, a stream that ends before every choice finished,
or a broken connection raises `UpstreamError` after what was already yielded.

Errors before the answer (Google's `{"error": {"code", "message", "status"}}`) are mapped by
the adapter's `HttpClient.error_for_answer` through `ChatClient.post` — the HTTP status kept
(400 `InvalidArgument`, 403 `PermissionDenied`, 429 `ResourceExhausted` with `Retry-After`,
5xx `UpstreamError`) —, and a 404 is the model's: code `model_not_found`, param `model`.
"""

from __future__ import annotations

import re
import time
import uuid
from collections.abc import AsyncGenerator, AsyncIterator, Mapping
from typing import Any

import orjson
from tunegate.server.errors import NotFound, UpstreamError
from tunegate.server.providers._chat import (
    ChatClient,
    ResponseChunks,
    one_item,
    passed_headers,
)
from tunegate.server.providers._chat_translation import (
    DONE,
    IGNORED_FIELDS,
    NEUTRAL_VALUES,
    ChunkWriter,
    OpenAIChatReader,
    TranslatedChunks,
    is_int,
    parse_chat_body,
)
from tunegate.server.providers._http import Endpoint
from tunegate.server.providers.interface import ChatReply

__all__ = [
    "IGNORED_FIELDS",
    "chunks_from_gemini_stream",
    "completion_from_gemini",
    "finish_reason",
    "gemini_chat",
    "gemini_path",
    "gemini_request",
    "sse_data",
]

PROVIDER = "vertex-ai"
"""The provider named in errors (as in `_auth` and `_gcs`)."""

_TRANSLATED = frozenset(
    {
        "messages",
        "max_tokens",
        "max_completion_tokens",
        "temperature",
        "top_p",
        "n",
        "stop",
        "presence_penalty",
        "frequency_penalty",
        "seed",
        "response_format",
        "tools",
        "tool_choice",
    }
)
# OpenAI name, Gemini name, lowest, highest
_NUMBERS = (
    ("temperature", "temperature", 0, 2),
    ("top_p", "topP", 0, 1),
    ("presence_penalty", "presencePenalty", -2, 2),
    ("frequency_penalty", "frequencyPenalty", -2, 2),
)

_FILTERED = frozenset(
    {
        "SAFETY",
        "RECITATION",
        "BLOCKLIST",
        "PROHIBITED_CONTENT",
        "SPII",
        "MODEL_ARMOR",
        "IMAGE_SAFETY",
        "IMAGE_PROHIBITED_CONTENT",
        "IMAGE_RECITATION",
    }
)
_RESOURCE = re.compile(
    r"projects/[^/?#:]+/locations/[^/?#:]+/"
    r"(?:endpoints/[^/?#:]+|publishers/[^/?#:]+/models/[^/?#:]+|tunedModels/[^/?#:]+)"
)
_READER = OpenAIChatReader("Vertex AI's Gemini API")
_LINE = re.compile(rb"\r\n|\r|\n")


# ---------------------------------------------------------------------------------------------
# OpenAI request → GenerateContentRequest


def gemini_request(body: Mapping[str, Any]) -> dict[str, Any]:
    """The `GenerateContentRequest` for the OpenAI chat `body` (see the module docstring);
    `InvalidArgument` naming the OpenAI `param` for anything Gemini cannot express."""
    _READER.check_fields(body, translated=_TRANSLATED, ignored=IGNORED_FIELDS, neutral=NEUTRAL_VALUES)
    system: list[dict[str, Any]] = []
    request: dict[str, Any] = {"contents": _contents(body.get("messages"), system)}
    if system:
        request["systemInstruction"] = {"parts": system}
    config = _generation_config(body)
    if config:
        request["generationConfig"] = config
    tools = body.get("tools")
    choice = body.get("tool_choice")
    if tools is None or tools == []:
        if choice is not None and choice != "none":
            raise _READER.invalid("tool_choice", "'tool_choice' needs 'tools'")
        return request
    request["tools"] = [{"functionDeclarations": _declarations(tools)}]
    calling = _function_calling(choice)
    if calling is not None:
        request["toolConfig"] = {"functionCallingConfig": calling}
    return request


def _contents(raw: Any, system: list[dict[str, Any]]) -> list[dict[str, Any]]:
    read = _READER
    if not isinstance(raw, list) or not raw:
        raise read.invalid("messages", "'messages' must be a non-empty array")
    turns: list[dict[str, Any]] = []
    call_names: dict[str, str] = {}  # tool call id → function name, from earlier assistant turns
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
            parts: list[dict[str, Any]] = [{"text": t} for t in read.texts(message["content"], where)]
        elif role == "assistant":
            parts = [{"text": t} for t in read.texts(message.get("content"), where, refusals=True)]
            for call in read.tool_calls(message, where):
                call_names[call.id] = call.name
                parts.append({"functionCall": {"name": call.name, "args": call.arguments}})
            role = "model"
        elif role == "tool":
            parts = [_function_response(message, where, call_names)]
            role = "user"
        else:
            raise read.refuse(f"{where}.role", f"The role {role!r} cannot be expressed in {read.api}")
        if not parts:
            continue
        if turns and turns[-1]["role"] == role:
            turns[-1]["parts"].extend(parts)
        else:
            turns.append({"role": role, "parts": parts})
    if not turns:
        raise read.invalid("messages", "'messages' needs at least one user or assistant message with content")
    return turns


def _function_response(
    message: Mapping[str, Any], where: str, call_names: Mapping[str, str]
) -> dict[str, Any]:
    call_id = _READER.tool_call_id(message, where)
    name = call_names.get(call_id)
    if name is None:
        raise _READER.invalid(
            f"{where}.tool_call_id",
            f"'{where}.tool_call_id' {call_id!r} answers no earlier assistant tool call (Gemini needs "
            "the function's name)",
        )
    output = "".join(_READER.texts(message.get("content"), where))
    return {"functionResponse": {"name": name, "response": {"output": output}}}


def _generation_config(body: Mapping[str, Any]) -> dict[str, Any]:
    read = _READER
    config: dict[str, Any] = {}
    max_tokens = read.max_tokens(body)
    if max_tokens is not None:
        config["maxOutputTokens"] = max_tokens
    for name, key, low, high in _NUMBERS:
        value = read.number(body, name, low, high)
        if value is not None:
            config[key] = value
    n = body.get("n")
    if n is not None:
        if not is_int(n) or not 1 <= n <= 8:
            raise read.invalid("n", f"'n' must be an integer from 1 to 8 on {read.api} (got {n!r})")
        if n != 1:
            config["candidateCount"] = n
    seed = body.get("seed")
    if seed is not None:
        if not is_int(seed) or not -(2**31) <= seed < 2**31:
            raise read.invalid("seed", f"'seed' must be a 32-bit integer on {read.api}")
        config["seed"] = seed
    stop = read.stop_sequences(body)
    if stop is not None:
        config["stopSequences"] = stop
    config.update(_response_format(body.get("response_format")))
    return config


def _response_format(value: Any) -> dict[str, Any]:
    if value is None:
        return {}
    kind = value.get("type") if isinstance(value, dict) else None
    if kind == "text":
        return {}
    if kind == "json_object":
        return {"responseMimeType": "application/json"}
    if kind == "json_schema":
        spec = value.get("json_schema")
        if not isinstance(spec, dict):
            raise _READER.invalid(
                "response_format.json_schema", "'response_format.json_schema' must be an object"
            )
        schema = spec.get("schema")
        if schema is None:
            return {"responseMimeType": "application/json"}
        if not isinstance(schema, dict):
            raise _READER.invalid(
                "response_format.json_schema.schema", "'response_format.json_schema.schema' must be an object"
            )
        return {"responseMimeType": "application/json", "responseJsonSchema": schema}
    raise _READER.refuse(
        "response_format.type", f"A response format of type {kind!r} cannot be expressed in {_READER.api}"
    )


def _declarations(tools: Any) -> list[dict[str, Any]]:
    declarations: list[dict[str, Any]] = []
    for tool in _READER.function_tools(tools):  # `strict`: Gemini's calls always fit the schema
        declaration: dict[str, Any] = {"name": tool.name}
        if tool.description is not None:
            declaration["description"] = tool.description
        if tool.parameters is not None:
            declaration["parametersJsonSchema"] = tool.parameters
        declarations.append(declaration)
    return declarations


def _function_calling(choice: Any) -> dict[str, Any] | None:
    if choice is None:
        return None
    if choice in ("auto", "required", "none"):
        return {"mode": {"auto": "AUTO", "required": "ANY", "none": "NONE"}[choice]}
    named = _READER.named_function(choice)
    if named is not None:
        return {"mode": "ANY", "allowedFunctionNames": [named]}
    raise _READER.refuse(
        "tool_choice", f"'tool_choice' must be 'auto', 'required', 'none' or a function tool on {_READER.api}"
    )


# ---------------------------------------------------------------------------------------------
# GenerateContentResponse → OpenAI completion


def finish_reason(reason: Any, *, called: bool = False) -> str:
    """OpenAI's `finish_reason` for a candidate's `finishReason` (see the module docstring);
    `called`: the candidate called a function."""
    if reason == "MAX_TOKENS":
        return "length"
    if reason in _FILTERED:
        return "content_filter"
    return "tool_calls" if called else "stop"


def _usage(metadata: Any) -> dict[str, Any] | None:
    if not isinstance(metadata, Mapping):
        return None
    prompt = int(metadata.get("promptTokenCount") or 0) + int(metadata.get("toolUsePromptTokenCount") or 0)
    thoughts = int(metadata.get("thoughtsTokenCount") or 0)
    completion = int(metadata.get("candidatesTokenCount") or 0) + thoughts
    total = metadata.get("totalTokenCount")
    usage: dict[str, Any] = {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": int(total) if total is not None else prompt + completion,
    }
    cached = metadata.get("cachedContentTokenCount")
    if cached:
        usage["prompt_tokens_details"] = {"cached_tokens": int(cached)}
    if thoughts:
        usage["completion_tokens_details"] = {"reasoning_tokens": thoughts}
    return usage


def _tool_call(call: Mapping[str, Any]) -> dict[str, Any]:
    call_id = call.get("id")
    args = call.get("args")
    return {
        "id": call_id if isinstance(call_id, str) and call_id else "call_" + uuid.uuid4().hex[:24],
        "type": "function",
        "function": {"name": call.get("name", ""), "arguments": orjson.dumps(args or {}).decode()},
    }


def _parts(candidate: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    content = candidate.get("content")
    parts = content.get("parts") if isinstance(content, Mapping) else None
    return [p for p in parts if isinstance(p, Mapping)] if isinstance(parts, list) else []


def _candidates(answer: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    candidates = answer.get("candidates")
    return [c for c in candidates if isinstance(c, Mapping)] if isinstance(candidates, list) else []


def _index(candidate: Mapping[str, Any], default: int) -> int:
    index = candidate.get("index")
    return index if isinstance(index, int) and is_int(index) else default


def _blocked(answer: Mapping[str, Any]) -> bool:
    feedback = answer.get("promptFeedback")
    return isinstance(feedback, Mapping) and bool(feedback.get("blockReason"))


def completion_from_gemini(
    answer: Mapping[str, Any], *, model: str, completion_id: str, created: int
) -> dict[str, Any]:
    """OpenAI's `chat.completion` for a `GenerateContentResponse` (see the module docstring)."""
    choices: list[dict[str, Any]] = []
    for position, candidate in enumerate(_candidates(answer)):
        texts: list[str] = []
        calls: list[dict[str, Any]] = []
        for part in _parts(candidate):
            if isinstance(part.get("text"), str) and not part.get("thought"):
                texts.append(part["text"])
            elif isinstance(part.get("functionCall"), Mapping):
                calls.append(_tool_call(part["functionCall"]))
        message: dict[str, Any] = {
            "role": "assistant",
            "content": "".join(texts) if texts or not calls else None,
            "refusal": None,
        }
        if calls:
            message["tool_calls"] = calls
        choices.append(
            {
                "index": _index(candidate, position),
                "message": message,
                "logprobs": None,
                "finish_reason": finish_reason(candidate.get("finishReason"), called=bool(calls)),
            }
        )
    if not choices:  # the prompt was blocked (or nothing came back): an empty, filtered answer
        message = {"role": "assistant", "content": "", "refusal": None}
        reason = "content_filter" if _blocked(answer) else "stop"
        choices.append({"index": 0, "message": message, "logprobs": None, "finish_reason": reason})
    choices.sort(key=lambda c: c["index"])
    completion: dict[str, Any] = {
        "id": completion_id,
        "object": "chat.completion",
        "created": created,
        "model": model,
        "choices": choices,
    }
    usage = _usage(answer.get("usageMetadata"))
    if usage is not None:
        completion["usage"] = usage
    return completion


# ---------------------------------------------------------------------------------------------
# streamGenerateContent?alt=sse → OpenAI server-sent events


async def sse_data(chunks: AsyncIterator[bytes]) -> AsyncGenerator[Mapping[str, Any], None]:
    """The JSON objects in the `data` fields of the server-sent events in `chunks`, each item of
    which is whole events (`ResponseChunks` aligns them so; a remainder without its blank line is
    one last event). Per the event-stream format: lines end in CRLF, LF or CR; a line starting
    with `:` is a comment; an event's `data` lines are joined with `\\n`; other fields (`event`,
    `id`, `retry`) are ignored. A payload that is not a JSON object raises `UpstreamError`."""
    async for chunk in chunks:
        data: list[bytes] = []
        for line in [*_LINE.split(chunk), b""]:
            if not line:  # end of an event
                if data:
                    yield _payload(b"\n".join(data))
                    data = []
                continue
            field, _, value = line.partition(b":")
            if field == b"data":
                data.append(value[1:] if value.startswith(b" ") else value)


def _payload(raw: bytes) -> Mapping[str, Any]:
    try:
        value = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise _upstream(f"Vertex AI's stream sent an event that is not JSON: {exc}") from exc
    if not isinstance(value, dict):
        raise _upstream("Vertex AI's stream sent an event that is not a JSON object")
    return value


def _upstream(message: str, code: str | None = None) -> UpstreamError:
    err = UpstreamError(message, code=code)
    err.provider = PROVIDER
    return err


def _error_event(error: Any) -> UpstreamError:
    fields = error if isinstance(error, Mapping) else {}
    message = fields.get("message") or "an error event"
    status = fields.get("status")
    code = (
        status.lower()
        if isinstance(status, str) and re.fullmatch(r"[A-Z][A-Z0-9_]*[A-Z0-9]", status)
        else None
    )
    return _upstream(f"Vertex AI failed: {status or fields.get('code') or 'error'}: {message}", code)


class _Choice:
    __slots__ = ("calls", "finished", "started")

    def __init__(self) -> None:
        self.started = False
        self.finished = False
        self.calls = 0


async def chunks_from_gemini_stream(
    responses: AsyncIterator[Mapping[str, Any]],
    *,
    model: str,
    completion_id: str,
    created: int,
    include_usage: bool,
) -> AsyncGenerator[bytes, None]:
    """OpenAI's server-sent events for the `GenerateContentResponse`s of a stream (see the module
    docstring). Raises `UpstreamError` for an error event or a stream that ends before every
    choice finished."""
    writer = ChunkWriter(
        completion_id=completion_id, created=created, model=model, include_usage=include_usage
    )

    def chunk(index: int, delta: Mapping[str, Any], finish: str | None = None) -> bytes:
        return writer.chunk(delta, finish, index=index)

    choices: dict[int, _Choice] = {}
    usage: dict[str, Any] | None = None
    async for response in responses:
        if "error" in response:
            raise _error_event(response["error"])
        if isinstance(response.get("usageMetadata"), Mapping):
            usage = _usage(response["usageMetadata"])
        candidates = _candidates(response)
        if not candidates and _blocked(response) and not choices:
            choices[0] = _Choice()
            choices[0].started = choices[0].finished = True
            yield chunk(0, {"role": "assistant", "content": ""})
            yield chunk(0, {}, "content_filter")
        for position, candidate in enumerate(candidates):
            index = _index(candidate, position)
            state = choices.setdefault(index, _Choice())
            if state.finished:
                continue
            if not state.started:
                state.started = True
                yield chunk(index, {"role": "assistant", "content": ""})
            for part in _parts(candidate):
                if isinstance(part.get("text"), str) and not part.get("thought"):
                    if part["text"]:
                        yield chunk(index, {"content": part["text"]})
                elif isinstance(part.get("functionCall"), Mapping):
                    call = {"index": state.calls, **_tool_call(part["functionCall"])}
                    state.calls += 1
                    yield chunk(index, {"tool_calls": [call]})
            reason = candidate.get("finishReason")
            if isinstance(reason, str) and reason:
                state.finished = True
                yield chunk(index, {}, finish_reason(reason, called=state.calls > 0))
    if not choices or not all(state.finished for state in choices.values()):
        raise _upstream("Vertex AI's stream ended before the answer was complete (no finishReason)")
    if include_usage and usage is not None:
        yield writer.usage(usage)
    yield DONE


# ---------------------------------------------------------------------------------------------
# The call


def gemini_path(resource: str, *, stream: bool) -> str:
    """The path of the call on `resource` (`projects/p/locations/l/endpoints/123`, or a
    publisher model): `/v1/{resource}:generateContent`, or
    `/v1/{resource}:streamGenerateContent?alt=sse`. `ValueError` for another resource name."""
    if not _RESOURCE.fullmatch(resource):
        raise ValueError(f"not a Vertex AI endpoint or model resource name: {resource!r}")
    return f"/v1/{resource}:streamGenerateContent?alt=sse" if stream else f"/v1/{resource}:generateContent"


async def gemini_chat(
    client: ChatClient, endpoint: Endpoint, body: bytes, *, resource: str, stream: bool
) -> ChatReply:
    """Answers the OpenAI chat completion `body` with the Vertex AI `resource` (a tuned model's
    endpoint, `projects/p/locations/l/endpoints/123`) through `client`, the adapter's chat relay,
    at `endpoint` (`base_url` the regional API host such as
    `https://us-central1-aiplatform.googleapis.com`, `headers` with `Authorization: Bearer …`):
    `:generateContent` for `stream=False` (`chunks` yields one `chat.completion` JSON document),
    `:streamGenerateContent?alt=sse` for `stream=True` (returns once the answer's head has
    arrived; `chunks` translates its events as they arrive, and closing it — also before
    iterating — closes Vertex's response).

    Nothing is sent twice once it may have reached Vertex (`ChatClient.post`). Errors: a body
    that is not a JSON object or that Gemini cannot express → `InvalidArgument` (before any
    request); Vertex's error answers as the module docstring says (404 → `NotFound` code
    `model_not_found`, param `model`); a failure while the answer is read → `UpstreamError`
    (`DeadlineExceeded` for a read timeout)."""
    parsed = parse_chat_body(body)
    request = gemini_request(parsed)
    path = gemini_path(resource, stream=stream)
    model = parsed["model"] if isinstance(parsed.get("model"), str) else resource
    completion_id = "chatcmpl-" + uuid.uuid4().hex
    created = int(time.time())
    try:
        response = await client.post(
            endpoint, path, orjson.dumps(request), {"Content-Type": "application/json"}
        )
    except NotFound as exc:
        exc.code, exc.param = "model_not_found", "model"
        raise
    headers = dict(passed_headers(response.headers))
    if not stream:
        answer = _payload_or_error(await client.read(response))
        completion = completion_from_gemini(answer, model=model, completion_id=completion_id, created=created)
        return ChatReply(
            content_type="application/json", chunks=one_item(orjson.dumps(completion)), headers=headers
        )
    options = parsed.get("stream_options")
    include_usage = isinstance(options, dict) and options.get("include_usage") is True
    body_chunks = ResponseChunks(client, response)
    events = sse_data(body_chunks)
    translation = chunks_from_gemini_stream(
        events, model=model, completion_id=completion_id, created=created, include_usage=include_usage
    )
    chunks = TranslatedChunks(translation, events, body_chunks.aclose)
    return ChatReply(content_type="text/event-stream", chunks=chunks, headers=headers)


def _payload_or_error(data: bytes) -> Mapping[str, Any]:
    answer = _payload(data)
    if "error" in answer:
        raise _error_event(answer["error"])
    return answer
