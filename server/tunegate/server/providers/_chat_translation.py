"""What the adapters that translate OpenAI chat into another API share (Bedrock's Converse,
Vertex AI's Gemini): reading OpenAI's `CreateChatCompletionRequest` and writing its answer's
`chat.completion.chunk` server-sent events.

Reading (`OpenAIChatReader`, one per target API, whose name it puts into its messages): the
body's fields are sorted into translated, ignored, accepted-at-a-neutral-value and refused ones
(`check_fields`); message contents are read as texts (`texts`: a string or text parts, optionally
`refusal` parts; every other part refused); an assistant's `tool_calls` are read as
`ToolCall`s with their `arguments` parsed into a JSON object (`tool_calls`); tools as
`FunctionTool`s (`function_tools`); `max_completion_tokens` / `max_tokens` and `stop` as their
values (`max_tokens`, `stop_sequences`). Every failure is an `InvalidArgument` whose `param` is
the OpenAI field (`messages[2].content[0].type`); a refusal of a valid OpenAI value that the
target cannot express has code `unsupported_parameter`.

Relaying (`TranslatedChunks`): `ChatReply.chunks` of a translated stream — the translation, an
async generator over the provider's events, read once; closing it (also before the first item)
closes the translation, the events and then the provider's response.

Writing (`ChunkWriter`): the bytes of one `data: {chat.completion.chunk}\\n\\n` event per delta,
the id, creation time and model rendered once per stream; with `include_usage` every chunk
carries `"usage": null` and `usage()` is the last chunk, `choices: []`, as OpenAI's are.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, Awaitable, Callable, Mapping
from contextlib import aclosing
from dataclasses import dataclass
from typing import Any

import orjson
from tunegate.server.errors import InvalidArgument

__all__ = [
    "DONE",
    "IGNORED_FIELDS",
    "NEUTRAL_VALUES",
    "ChunkWriter",
    "FunctionTool",
    "OpenAIChatReader",
    "ToolCall",
    "TranslatedChunks",
    "is_int",
    "is_number",
    "parse_chat_body",
]

IGNORED_FIELDS = frozenset(
    {
        "model",
        "stream",
        "stream_options",
        "user",
        "safety_identifier",
        "metadata",
        "store",
        "prompt_cache_key",
        "prompt_cache_retention",
    }
)
"""Request fields that do not change a translated answer: the caller's `model` name (the
adapter knows the provider's model), `stream` / `stream_options` (read by the adapter), and
fields about the caller, storage or caching."""

NEUTRAL_VALUES: Mapping[str, tuple[Any, ...]] = {
    "logprobs": (False,),
    "top_logprobs": (0,),
    "logit_bias": ({},),
    "modalities": (["text"],),
    "parallel_tool_calls": (True,),
    "service_tier": ("auto", "default"),
}
"""Fields neither translated API can express, accepted only at the value that means "off"
(`parallel_tool_calls` true: neither can be held to one call per turn)."""

DONE = b"data: [DONE]\n\n"
"""The last server-sent event of an OpenAI chat stream."""


def is_int(value: Any) -> bool:
    """A JSON integer (not a boolean)."""
    return isinstance(value, int) and not isinstance(value, bool)


def is_number(value: Any) -> bool:
    """A JSON number (not a boolean)."""
    return isinstance(value, int | float) and not isinstance(value, bool)


def parse_chat_body(body: bytes) -> dict[str, Any]:
    """The request body as a JSON object; `InvalidArgument` (no param) otherwise."""
    try:
        request = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise InvalidArgument(f"The request body is not valid JSON: {exc}.") from exc
    if not isinstance(request, dict):
        raise InvalidArgument("The request body must be a JSON object.")
    return request


@dataclass(frozen=True, slots=True)
class ToolCall:
    """An assistant's function tool call: its `id`, function `name` and parsed `arguments`."""

    id: str
    name: str
    arguments: dict[str, Any]


@dataclass(frozen=True, slots=True)
class FunctionTool:
    """A function tool: `parameters` is its JSON Schema as given (None when absent),
    `description` None when absent or empty, `strict` None unless a boolean was given."""

    name: str
    description: str | None
    parameters: dict[str, Any] | None
    strict: bool | None


class OpenAIChatReader:
    """Reads OpenAI chat bodies for the target API `api` ("Bedrock's Converse API"), which its
    error messages name."""

    __slots__ = ("api",)

    def __init__(self, api: str) -> None:
        self.api = api

    @staticmethod
    def refuse(param: str, message: str) -> InvalidArgument:
        """A valid OpenAI value the target cannot express (code `unsupported_parameter`)."""
        return InvalidArgument(f"{message}.", code="unsupported_parameter", param=param)

    @staticmethod
    def invalid(param: str, message: str) -> InvalidArgument:
        """A value that is not valid OpenAI (or not in the target's range)."""
        return InvalidArgument(f"{message}.", param=param)

    def check_fields(
        self,
        body: Mapping[str, Any],
        *,
        translated: frozenset[str],
        ignored: frozenset[str],
        neutral: Mapping[str, tuple[Any, ...]],
    ) -> None:
        """Refuses every field of `body` that is not null, `translated`, `ignored`, or at one of
        its `neutral` values (the JSON type must match: `1` is not `true`)."""
        for name, value in body.items():
            if value is None or name in ignored or name in translated:
                continue
            if name in neutral and _is_neutral(value, neutral[name]):
                continue
            raise self.refuse(name, f"'{name}' cannot be expressed in {self.api}")

    def texts(self, content: Any, where: str, *, refusals: bool = False) -> list[str]:
        """The non-empty texts of a message's `content` (a string or an array of text parts, and
        of `refusal` parts when `refusals`); `where` is the message's param."""
        if content is None:
            return []
        if isinstance(content, str):
            return [content] if content else []
        if not isinstance(content, list):
            raise self.invalid(
                f"{where}.content", f"'{where}.content' must be a string or an array of content parts"
            )
        texts: list[str] = []
        for j, part in enumerate(content):
            at = f"{where}.content[{j}]"
            if not isinstance(part, dict):
                raise self.invalid(at, f"'{at}' must be an object")
            kind = part.get("type")
            field = "text" if kind == "text" else "refusal" if refusals and kind == "refusal" else None
            if field is None:
                raise self.refuse(
                    f"{at}.type",
                    f"Content parts of type {kind!r} cannot be expressed in {self.api} here: "
                    "only text is supported",
                )
            text = part.get(field)
            if not isinstance(text, str):
                raise self.invalid(f"{at}.{field}", f"'{at}.{field}' must be a string")
            if text:
                texts.append(text)
        return texts

    def tool_calls(self, message: Mapping[str, Any], where: str) -> list[ToolCall]:
        """An assistant message's function `tool_calls` (`arguments` a JSON object, `""` meaning
        `{}`); its `audio` and `function_call` are refused."""
        for name in ("audio", "function_call"):
            if message.get(name) is not None:
                raise self.refuse(
                    f"{where}.{name}", f"An assistant's '{name}' cannot be expressed in {self.api}"
                )
        calls = message.get("tool_calls")
        if calls is None:
            return []
        if not isinstance(calls, list):
            raise self.invalid(f"{where}.tool_calls", f"'{where}.tool_calls' must be an array")
        parsed_calls: list[ToolCall] = []
        for k, call in enumerate(calls):
            at = f"{where}.tool_calls[{k}]"
            if not isinstance(call, dict) or call.get("type", "function") != "function":
                raise self.refuse(f"{at}.type", f"Only function tool calls can be expressed in {self.api}")
            function = call.get("function")
            if not isinstance(function, dict) or not isinstance(function.get("name"), str):
                raise self.invalid(f"{at}.function.name", f"'{at}.function.name' must be a string")
            if not isinstance(call.get("id"), str):
                raise self.invalid(f"{at}.id", f"'{at}.id' must be a string")
            arguments = function.get("arguments")
            try:
                parsed = orjson.loads(arguments) if arguments else {}
            except (orjson.JSONDecodeError, TypeError) as exc:
                raise self.invalid(
                    f"{at}.function.arguments", f"'{at}.function.arguments' is not JSON: {exc}"
                ) from exc
            if not isinstance(parsed, dict):
                raise self.invalid(
                    f"{at}.function.arguments", f"'{at}.function.arguments' must be a JSON object"
                )
            parsed_calls.append(ToolCall(call["id"], function["name"], parsed))
        return parsed_calls

    def tool_call_id(self, message: Mapping[str, Any], where: str) -> str:
        """A `tool` message's `tool_call_id` (a non-empty string)."""
        call_id = message.get("tool_call_id")
        if not isinstance(call_id, str) or not call_id:
            raise self.invalid(f"{where}.tool_call_id", f"'{where}.tool_call_id' must be a non-empty string")
        return call_id

    def max_tokens(self, body: Mapping[str, Any], highest: int = 2**31 - 1) -> int | None:
        """`max_completion_tokens`, else `max_tokens` (1 to `highest`), or None."""
        for name in ("max_completion_tokens", "max_tokens"):
            value = body.get(name)
            if value is None:
                continue
            if not is_int(value) or not 1 <= value <= highest:
                raise self.invalid(name, f"'{name}' must be an integer of at least 1")
            return int(value)
        return None

    def number(self, body: Mapping[str, Any], name: str, low: float, high: float) -> float | None:
        """The number `name` when set, which must be from `low` to `high` on the target."""
        value = body.get(name)
        if value is None:
            return None
        if not is_number(value) or not low <= value <= high:
            raise self.invalid(
                name, f"'{name}' must be a number from {low:g} to {high:g} on {self.api} (got {value!r})"
            )
        return value  # type: ignore[no-any-return]

    def stop_sequences(self, body: Mapping[str, Any]) -> list[str] | None:
        """`stop` (a string or an array of strings) as a list, or None."""
        stop = body.get("stop")
        if isinstance(stop, str):
            return [stop]
        if isinstance(stop, list) and all(isinstance(s, str) for s in stop):
            return list(stop)
        if stop is not None:
            raise self.invalid("stop", "'stop' must be a string or an array of strings")
        return None

    def function_tools(self, tools: Any) -> list[FunctionTool]:
        """The function `tools` (an array; other tool types are refused)."""
        if not isinstance(tools, list):
            raise self.invalid("tools", "'tools' must be an array")
        read: list[FunctionTool] = []
        for i, tool in enumerate(tools):
            at = f"tools[{i}]"
            if not isinstance(tool, dict) or tool.get("type") != "function":
                kind = tool.get("type") if isinstance(tool, dict) else None
                raise self.refuse(f"{at}.type", f"Tools of type {kind!r} cannot be expressed in {self.api}")
            function = tool.get("function")
            if not isinstance(function, dict) or not isinstance(function.get("name"), str):
                raise self.invalid(f"{at}.function.name", f"'{at}.function.name' must be a string")
            parameters = function.get("parameters")
            if parameters is not None and not isinstance(parameters, dict):
                raise self.invalid(
                    f"{at}.function.parameters", f"'{at}.function.parameters' must be an object"
                )
            description = function.get("description")
            strict = function.get("strict")
            read.append(
                FunctionTool(
                    function["name"],
                    description if isinstance(description, str) and description else None,
                    parameters,
                    strict if isinstance(strict, bool) else None,
                )
            )
        return read

    @staticmethod
    def named_function(choice: Any) -> str | None:
        """The function's name when `tool_choice` names one (`{"type": "function", …}`)."""
        if (
            isinstance(choice, dict)
            and choice.get("type") == "function"
            and isinstance(choice.get("function"), dict)
            and isinstance(choice["function"].get("name"), str)
        ):
            return str(choice["function"]["name"])
        return None


def _is_neutral(value: Any, allowed: tuple[Any, ...]) -> bool:
    # `True == 1` and `0 == False` in Python: the JSON type must match too.
    return any(
        value == a and (type(value) is type(a) or (is_number(value) and is_number(a))) for a in allowed
    )


class ChunkWriter:
    """The `chat.completion.chunk` events of one stream (see the module docstring)."""

    __slots__ = ("_head", "_tail")

    def __init__(self, *, completion_id: str, created: int, model: str, include_usage: bool) -> None:
        head = b'{"id":' + orjson.dumps(completion_id) + b',"object":"chat.completion.chunk","created":'
        self._head = head + orjson.dumps(created) + b',"model":' + orjson.dumps(model) + b',"choices":'
        self._tail = b',"usage":null}\n\n' if include_usage else b"}\n\n"

    def chunk(self, delta: Mapping[str, Any], finish: str | None = None, *, index: int = 0) -> bytes:
        """The event of one choice's `delta` (and `finish_reason`)."""
        choice = {"index": index, "delta": delta, "logprobs": None, "finish_reason": finish}
        return b"data: " + self._head + orjson.dumps([choice]) + self._tail

    def usage(self, usage: Mapping[str, Any]) -> bytes:
        """The usage event: `choices: []` and `usage`."""
        return b"data: " + self._head + b'[],"usage":' + orjson.dumps(usage) + b"}\n\n"


class TranslatedChunks:
    """`ChatReply.chunks` of a translated stream: `chunks` (the translation of `events`, both
    async generators) iterated once; `aclose()` — also before the first item, and on the end, a
    failure or a cancellation of the iteration — closes both and then awaits `close` (which
    closes the provider's response: a no-op once its body was read whole)."""

    __slots__ = ("_chunks", "_close", "_closed", "_events")

    def __init__(
        self,
        chunks: AsyncGenerator[bytes, None],
        events: AsyncGenerator[Any, None],
        close: Callable[[], Awaitable[None]],
    ) -> None:
        self._chunks = chunks
        self._events = events
        self._close = close
        self._closed = False

    def __aiter__(self) -> TranslatedChunks:
        return self

    async def __anext__(self) -> bytes:
        if self._closed:
            raise StopAsyncIteration
        try:
            return await anext(self._chunks)
        except BaseException:  # the end, a failure or a cancellation: the response is done with
            await self.aclose()
            raise

    async def aclose(self) -> None:
        """Stops reading and closes the provider's response (idempotent)."""
        if self._closed:
            return
        self._closed = True
        try:
            async with aclosing(self._events):
                await self._chunks.aclose()
        finally:
            await self._close()
