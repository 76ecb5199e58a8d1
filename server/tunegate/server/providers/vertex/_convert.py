"""OpenAI fine-tuning JSONL → the JSONL Vertex AI's Gemini tuning reads from Cloud Storage.

Pure and self-contained: no Google calls, no I/O. Two formats, chosen by `kind`:

- `supervised` (OpenAI `method.type` `supervised`): an OpenAI chat line
  `{"messages": [...], "tools"?: [...], "parallel_tool_calls"?: true}` becomes
  `{"systemInstruction"?: {"parts": [...]}, "contents": [{"role": "user"|"model", "parts": [...]}, ...],
  "tools"?: [{"functionDeclarations": [...]}]}`.
- `preference` (OpenAI `method.type` `dpo`): an OpenAI preference line `{"input": {"messages":
  [...]}, "preferred_output": [assistant], "non_preferred_output": [assistant]}` becomes
  `{"system_instruction"?: {"parts": [...]}, "contents": [... ending with a user turn],
  "completions": [{"score": 1, "completion": {"role": "model", "parts": [...]}},
  {"score": 0, "completion": {...}}]}`.

What this relies on (providers.md §6.4, providers-2026-12.md "Google Vertex AI", and Google's
pages "Prepare supervised fine-tuning data for Gemini models", "Tune function calling" and "Prepare
preference tuning data for Gemini models"): the supervised line's keys are camelCase
(`systemInstruction`, `contents`, `tools`; `functionCall {name, args}`, `functionResponse {name,
response}`, `functionDeclarations`), the roles are `user` and `model`, and the role of
`systemInstruction` is ignored (none is written). The preference example of Google's page spells
the system instruction `system_instruction` (snake case) and this module writes it so; its
`contents` must end with a user turn, the completions are one `score: 1` and one `score: 0` model
turn, text only. The key names are checked against the `GoogleCloudAiplatformV1Content` / `Part` /
`FunctionCall` / `FunctionResponse` / `Tool` / `FunctionDeclaration` schemas of the aiplatform v1
discovery document (tests/oracles/aiplatform-v1-content.json).

Choices where the references are silent (each keeps content or refuses the line):

- Consecutive messages that map to the same Gemini role are merged into one turn, their parts in
  order (Gemini's multi-turn `contents` alternate user / model; merging loses nothing). Tool
  results (`role: tool`) are `functionResponse` parts of a user turn, so they merge with a
  following user message.
- An OpenAI tool's `parameters` (JSON Schema) is written verbatim as the declaration's
  `parametersJsonSchema`, not translated into Vertex's OpenAPI-subset `parameters` (which would
  drop keywords it lacks). `strict: true` has no Gemini counterpart and is refused.
- A tool result becomes `"response": {"content": <text>}` with the text exactly as sent (not
  parsed as JSON, so nothing about it changes). Its `name` is the function name of the earlier
  assistant tool call whose `id` equals the result's `tool_call_id`; the ids themselves are not
  written (Gemini pairs calls and results by name and order), so a result must answer the
  earliest unanswered call of that name, otherwise the pairing would change and the line is
  refused. `arguments` must be a JSON object; it becomes `args`.
- An empty-string `content` next to tool calls is no text and writes no part; everywhere else
  every text part is kept, empty or not. `refusal: null` carries nothing and is accepted, as is
  `parallel_tool_calls: true` (Gemini may always call in parallel); `false` is refused.
- `weight` 1 is accepted; 0 is refused (Gemini tuning has no per-turn weights, so a turn the file
  excludes would be trained on).

Refused, with the 1-based line number: invalid JSON or UTF-8; images, audio, files or any
non-text part; `weight` 0; a non-null `refusal`; `name` on a message; `function_call`,
`functions` and the `function` role; unknown keys anywhere; a system message after the first
user / assistant turn; a conversation not starting with a user turn or (supervised) not ending
with an assistant turn; tool calls or tools in preference data; a tool result answering no earlier
call. Nothing is dropped silently. Blank lines are skipped but counted; CRLF is accepted; the last
line needs no newline.

Streaming: `Converter` is fed byte chunks and returns converted bytes per chunk; memory is bounded
by the chunk plus the longest line (`max_line_bytes`). Every refused line is recorded and
conversion continues to the end; `finish()` raises one `ConversionError` listing them all. Once a
line is refused, no more output is produced.

Speed: the common supervised line (text-only messages of the four text roles, string contents,
optional `weight: 1`) is decoded by a typed msgspec decoder into gc-free Structs and written from
byte templates plus one `encode` per text; anything that decoder rejects or that the template
cannot express goes through the precise dict-based path, whose output is byte-identical for the
lines both accept. All JSON is written by msgspec (compact, keys in a fixed order, unicode as
UTF-8), so output is stable.
"""

from __future__ import annotations

from array import array
from collections.abc import AsyncIterable, AsyncIterator, Callable, Iterable, Iterator, Mapping
from typing import Any, Final, Literal

import msgspec
from tunegate.server.errors import Unsupported

# The Bedrock converter's line-range formatting ("2, 4-5"); see the report about sharing it.
from tunegate.server.providers._jsonl import (
    DEFAULT_MAX_LINE,
    LineConversionError,
    LineConverter,
    aconvert_with,
    convert_with,
    text_parts,
)
from tunegate.server.providers._jsonl import Refused as _Refused
from tunegate.server.providers._jsonl import short as _short

__all__ = [
    "KINDS",
    "PREFERENCE",
    "SUPERVISED",
    "ConversionError",
    "Converter",
    "Kind",
    "aconvert_chunks",
    "convert_chunks",
    "kind_for_method",
]

Kind = Literal["supervised", "preference"]
SUPERVISED: Final = "supervised"
PREFERENCE: Final = "preference"
KINDS: Final[Mapping[str, Kind]] = {"supervised": SUPERVISED, "dpo": PREFERENCE}
"""OpenAI `method.type` → the Vertex data format it is converted to."""

_DESCRIPTION: Final[Mapping[str, str]] = {
    SUPERVISED: "Vertex AI Gemini supervised tuning data",
    PREFERENCE: "Vertex AI Gemini preference tuning data",
}


def kind_for_method(method: str, *, param: str = "method.type") -> Kind:
    """The data format for an OpenAI fine-tuning method; `Unsupported` (a 400) for any other."""
    kind = KINDS.get(method)
    if kind is None:
        raise Unsupported(
            f"Vertex AI Gemini models cannot be tuned with method {method!r} (supported: dpo, supervised)",
            param=param,
        )
    return kind


class ConversionError(LineConversionError):
    """Lines of a training file that cannot be converted to `kind`; `problems` lists every one
    of them."""

    def __init__(self, kind: Kind, problems: Mapping[str, array[int]], param: str) -> None:
        self.kind = kind
        super().__init__(_DESCRIPTION[kind], problems, param)


# --- the precise path: any line, dicts in, dicts out -------------------------------------------


_decode_any = msgspec.json.Decoder().decode
_encode = msgspec.json.Encoder().encode
_SYSTEM_ROLES = frozenset({"system", "developer"})
_MESSAGE_KEYS: Final[Mapping[str, frozenset[str]]] = {
    "system": frozenset({"role", "content"}),
    "developer": frozenset({"role", "content"}),
    "user": frozenset({"role", "content", "weight"}),
    "assistant": frozenset({"role", "content", "weight", "tool_calls", "refusal"}),
    "tool": frozenset({"role", "content", "tool_call_id"}),
}
_KEY_REASONS: Final[Mapping[str, str]] = {
    "name": "a message `name` (Gemini has no per-message names)",
    "function_call": "a `function_call` (deprecated; use `tool_calls`)",
    "audio": "an assistant `audio` reply",
}


def _plural(keys: list[str]) -> str:
    return f"key{'s' if len(keys) > 1 else ''} {', '.join(keys)}"


def _texts(content: Any) -> list[str]:
    """The text parts of a message's content; refuses anything that is not text."""
    return text_parts(content, note=" (only text is converted)")


def _check_keys(msg: dict[str, Any], role: str) -> None:
    extra = [k for k in msg if k not in _MESSAGE_KEYS[role]]
    if not extra:
        return
    for key in extra:
        if key in _KEY_REASONS:
            raise _Refused(_KEY_REASONS[key])
    if "tool_calls" in extra:
        raise _Refused(f"`tool_calls` on a {role} message")
    raise _Refused(f"unsupported message {_plural(sorted(extra))}")


def _weight(msg: dict[str, Any]) -> None:
    if "weight" in msg:
        weight = msg["weight"]
        if type(weight) is not int or weight not in (0, 1):
            raise _Refused("a message weight other than 0 or 1")
        if weight == 0:
            raise _Refused("a message with weight 0 (Gemini tuning has no per-turn weights)")


class _Turns:
    """Gemini `contents` being built: consecutive parts of one role merge into one turn."""

    def __init__(self) -> None:
        self.system: list[dict[str, Any]] = []
        self.contents: list[dict[str, Any]] = []
        self.last: str | None = None

    def add(self, role: str, parts: list[dict[str, Any]]) -> None:
        if role == self.last:
            self.contents[-1]["parts"].extend(parts)
            return
        if self.last is None and role != "user":
            raise _Refused("the conversation must start with a user message")
        self.contents.append({"role": role, "parts": parts})
        self.last = role

    def add_system(self, texts: list[str]) -> None:
        if self.contents:
            raise _Refused("a system message after the conversation started")
        self.system.extend({"text": t} for t in texts)


class _Calls:
    """Tool calls seen so far and not yet answered, for naming the tool results."""

    def __init__(self) -> None:
        self.names: dict[str, str] = {}  # call id → function name, unanswered
        self.seen: set[str] = set()

    def call(self, call: Any) -> dict[str, Any]:
        if type(call) is not dict:
            raise _Refused("a tool call is not an object")
        if call.get("type") != "function" or set(call) != {"id", "type", "function"}:
            raise _Refused("a tool call needs exactly `id`, `type: function` and `function`")
        call_id, function = call["id"], call["function"]
        if type(call_id) is not str or type(function) is not dict:
            raise _Refused("a tool call needs a string `id` and a `function` object")
        if set(function) != {"name", "arguments"} or type(function["name"]) is not str:
            raise _Refused("a tool call's `function` needs exactly a string `name` and `arguments`")
        arguments = function["arguments"]
        try:
            args = _decode_any(arguments) if type(arguments) is str else None
        except (msgspec.DecodeError, UnicodeDecodeError):
            args = None
        if type(args) is not dict:
            raise _Refused("tool call arguments that are not a JSON object")
        if call_id in self.seen:
            raise _Refused("two tool calls with the same id")
        self.seen.add(call_id)
        self.names[call_id] = function["name"]
        return {"functionCall": {"name": function["name"], "args": args}}

    def result(self, msg: dict[str, Any]) -> dict[str, Any]:
        call_id = msg.get("tool_call_id")
        name = self.names.get(call_id) if type(call_id) is str else None
        if name is None:
            raise _Refused("a tool message that answers no earlier tool call")
        # Gemini pairs results with calls by name and order (`names` keeps call order): an
        # earlier unanswered call of the same name would be paired with this result instead.
        if next(i for i, n in self.names.items() if n == name) != call_id:
            raise _Refused("tool results out of call order for calls of the same function")
        del self.names[call_id]
        texts = _texts(msg.get("content"))
        if len(texts) != 1:
            raise _Refused("a tool message with more than one content part")
        return {"functionResponse": {"name": name, "response": {"content": texts[0]}}}


def _assistant_parts(msg: dict[str, Any], calls: _Calls | None) -> list[dict[str, Any]]:
    refusal = msg.get("refusal")
    if refusal is not None:
        raise _Refused("an assistant `refusal`")
    tool_calls = msg.get("tool_calls")
    content = msg.get("content")
    if tool_calls is None or tool_calls == []:
        return [{"text": t} for t in _texts(content)]
    if calls is None:
        raise _Refused("tool calls (preference tuning data is text only)")
    if type(tool_calls) is not list:
        raise _Refused("`tool_calls` is not a list")
    parts: list[dict[str, Any]] = []
    if content is not None and content != "":
        parts.extend({"text": t} for t in _texts(content))
    parts.extend(calls.call(call) for call in tool_calls)
    return parts


def _conversation(messages: Any, turns: _Turns, calls: _Calls | None) -> None:
    """Adds OpenAI `messages` to `turns`; tool calls are refused when `calls` is None."""
    if type(messages) is not list or not messages:
        raise _Refused("`messages` is not a non-empty list")
    for msg in messages:
        if type(msg) is not dict:
            raise _Refused("a message is not an object")
        role = msg.get("role")
        if type(role) is not str or role not in _MESSAGE_KEYS:
            if role == "function":
                raise _Refused("the deprecated `function` role (use `tool`)")
            raise _Refused("a message without `role`" if role is None else f"unknown role {_short(role)}")
        _check_keys(msg, role)
        _weight(msg)
        if role in _SYSTEM_ROLES:
            turns.add_system(_texts(msg.get("content")))
        elif role == "user":
            turns.add("user", [{"text": t} for t in _texts(msg.get("content"))])
        elif role == "assistant":
            turns.add("model", _assistant_parts(msg, calls))
        elif calls is None:
            raise _Refused("tool messages (preference tuning data is text only)")
        else:
            turns.add("user", [calls.result(msg)])


def _tools(tools: Any) -> list[dict[str, Any]]:
    if type(tools) is not list:
        raise _Refused("`tools` is not a list")
    declarations: list[dict[str, Any]] = []
    for tool in tools:
        if type(tool) is not dict or tool.get("type") != "function" or set(tool) != {"type", "function"}:
            raise _Refused("a tool that is not `{type: function, function: {...}}`")
        function = tool["function"]
        if type(function) is not dict or type(function.get("name")) is not str:
            raise _Refused("a tool function without a string `name`")
        extra = sorted(set(function) - {"name", "description", "parameters", "strict"})
        if extra:
            raise _Refused(f"unsupported tool function {_plural(extra)}")
        if function.get("strict") not in (None, False):
            raise _Refused("a tool with `strict: true` (Gemini has no strict schemas)")
        declaration: dict[str, Any] = {"name": function["name"]}
        if "description" in function:
            if type(function["description"]) is not str:
                raise _Refused("a tool description that is not a string")
            declaration["description"] = function["description"]
        if "parameters" in function:
            if type(function["parameters"]) is not dict:
                raise _Refused("tool parameters that are not a JSON Schema object")
            declaration["parametersJsonSchema"] = function["parameters"]
        declarations.append(declaration)
    return [{"functionDeclarations": declarations}] if declarations else []


def _parallel(record: dict[str, Any]) -> None:
    if "parallel_tool_calls" in record and record["parallel_tool_calls"] is not True:
        raise _Refused("`parallel_tool_calls` other than true (Gemini cannot forbid parallel calls)")


def _supervised(record: Any) -> dict[str, Any]:
    if type(record) is not dict:
        raise _Refused("not a JSON object")
    if "messages" not in record:
        if "input" in record or "preferred_output" in record:
            raise _Refused("a preference example, not a supervised chat example")
        raise _Refused("no `messages`")
    extra = sorted(set(record) - {"messages", "tools", "parallel_tool_calls"})
    if extra:
        if "functions" in extra:
            raise _Refused("the deprecated `functions` (use `tools`)")
        raise _Refused(f"unsupported {_plural(extra)}")
    _parallel(record)
    tools = _tools(record["tools"]) if "tools" in record else []
    turns = _Turns()
    _conversation(record["messages"], turns, _Calls())
    if turns.last != "model":
        raise _Refused(
            "the last message must be the assistant's"
            if any(c["role"] == "model" for c in turns.contents)
            else "no assistant message"
        )
    out: dict[str, Any] = {}
    if turns.system:
        out["systemInstruction"] = {"parts": turns.system}
    out["contents"] = turns.contents
    if tools:
        out["tools"] = tools
    return out


def _completion(output: Any, key: str) -> dict[str, Any]:
    if type(output) is not list or len(output) != 1 or type(output[0]) is not dict:
        raise _Refused(f"`{key}` must be a list of exactly one assistant message")
    msg = output[0]
    if msg.get("role") != "assistant":
        raise _Refused(f"`{key}` must be a list of exactly one assistant message")
    _check_keys(msg, "assistant")
    _weight(msg)
    return {"role": "model", "parts": _assistant_parts(msg, None)}


def _preference(record: Any) -> dict[str, Any]:
    if type(record) is not dict:
        raise _Refused("not a JSON object")
    if "messages" in record and "input" not in record:
        raise _Refused("a supervised chat example, not a preference example")
    missing = [k for k in ("input", "preferred_output", "non_preferred_output") if k not in record]
    if missing:
        raise _Refused(f"missing {_plural(missing)}")
    extra = sorted(set(record) - {"input", "preferred_output", "non_preferred_output"})
    if extra:
        raise _Refused(f"unsupported {_plural(extra)}")
    given = record["input"]
    if type(given) is not dict or "messages" not in given:
        raise _Refused("`input` is not an object with `messages`")
    if given.get("tools"):
        raise _Refused("tools (preference tuning data is text only)")
    extra = sorted(set(given) - {"messages", "tools", "parallel_tool_calls"})
    if extra:
        raise _Refused(f"unsupported input {_plural(extra)}")
    if "tools" in given and given["tools"] != []:
        raise _Refused("`tools` is not a list")
    _parallel(given)
    turns = _Turns()
    _conversation(given["messages"], turns, None)
    if turns.last != "user":
        raise _Refused("the input must end with a user message")
    out: dict[str, Any] = {}
    if turns.system:
        out["system_instruction"] = {"parts": turns.system}
    out["contents"] = turns.contents
    out["completions"] = [
        {"score": 1, "completion": _completion(record["preferred_output"], "preferred_output")},
        {"score": 0, "completion": _completion(record["non_preferred_output"], "non_preferred_output")},
    ]
    return out


# --- the fast path: text-only supervised lines, Structs in, byte templates out ----------------


class _TextMessage(msgspec.Struct, forbid_unknown_fields=True, gc=False):
    role: str
    content: str
    weight: int = 1


class _TextChat(msgspec.Struct, forbid_unknown_fields=True, gc=False):
    # gc=False and one line at a time: nothing here is tracked by the cyclic GC, whose full
    # collections otherwise cost more than the conversion (measured in bench/vertex_convert_bench.py).
    messages: list[_TextMessage]


_decode_text_chat = msgspec.json.Decoder(_TextChat).decode
_encode_text = msgspec.json.Encoder().encode

_SYSTEM_OPEN = b'{"systemInstruction":{"parts":[{"text":'
_NEXT_PART = b'},{"text":'
_SYSTEM_TO_CONTENTS = b'}]},"contents":[{"role":'
_CONTENTS_OPEN = b'{"contents":[{"role":'
_NEXT_TURN = b'}]},{"role":'
_USER = b'"user","parts":[{"text":'
_MODEL = b'"model","parts":[{"text":'
_LINE_END = b"}]}]}\n"


def _fast_supervised(chat: _TextChat, out: list[bytes]) -> bool:
    """Appends the converted line to `out`; False (having appended anything) when the line is
    not the plain shape, for the precise path to decide."""
    last = ""
    encode = _encode_text
    for m in chat.messages:
        role = m.role
        if m.weight != 1:
            return False
        if role == "user" or role == "assistant":
            if role == last:
                out.append(_NEXT_PART)
            else:
                if last == "" or last == "system":
                    if role != "user":
                        return False
                    out.append(_CONTENTS_OPEN if last == "" else _SYSTEM_TO_CONTENTS)
                else:
                    out.append(_NEXT_TURN)
                out.append(_USER if role == "user" else _MODEL)
                last = role
        elif role == "system" or role == "developer":
            if last == "":
                out.append(_SYSTEM_OPEN)
                last = "system"
            elif last == "system":
                out.append(_NEXT_PART)
            else:
                return False
        else:
            return False
        out.append(encode(m.content))
    if last != "assistant":
        return False
    out.append(_LINE_END)
    return True


# --- streaming ---------------------------------------------------------------------------------


class Converter(LineConverter):
    """Push converter for one kind (see `LineConverter`): `feed(chunk)` returns converted bytes,
    `finish()` the rest or raises `ConversionError` listing every refused line."""

    def __init__(
        self,
        kind: Kind,
        *,
        param: str = "training_file",
        max_line_bytes: int = DEFAULT_MAX_LINE,
    ) -> None:
        if kind not in _DESCRIPTION:
            raise ValueError(f"unknown kind {kind!r}")
        super().__init__(param=param, max_line_bytes=max_line_bytes)
        self.kind: Kind = kind
        self._convert: Callable[[Any], dict[str, Any]] = _supervised if kind == SUPERVISED else _preference
        self._fast = kind == SUPERVISED

    def _error(self) -> ConversionError:
        return ConversionError(self.kind, self._problems, self._param)

    def _lines(self, lines: list[bytes]) -> bytes:
        base = self._line
        self._line += len(lines)
        out: list[bytes] = []
        done = 0
        fast = self._fast
        for number, raw in enumerate(lines, base + 1):
            if fast:
                try:
                    chat = _decode_text_chat(raw)
                except (msgspec.DecodeError, UnicodeDecodeError):  # not the plain shape
                    pass
                else:
                    mark = len(out)
                    if _fast_supervised(chat, out):
                        done += 1
                        continue
                    del out[mark:]
            if self._precise(number, raw, out):
                done += 1
        if self._problems or not done:
            return b""
        self.lines_out += done
        return b"".join(out)

    def _precise(self, number: int, raw: bytes, out: list[bytes]) -> bool:
        try:
            record = _decode_any(raw)
        except msgspec.DecodeError:
            if raw.strip():
                self._refuse(number, "invalid JSON")
            return False
        except UnicodeDecodeError:
            self._refuse(number, "text that is not UTF-8")
            return False
        try:
            converted = self._convert(record)
        except _Refused as e:
            self._refuse(number, str(e))
            return False
        out.append(_encode(converted))
        out.append(b"\n")
        return True


def convert_chunks(
    chunks: Iterable[bytes],
    kind: Kind,
    *,
    param: str = "training_file",
    max_line_bytes: int = DEFAULT_MAX_LINE,
) -> Iterator[bytes]:
    """Converted JSONL for an iterable of input chunks; raises `ConversionError` at the end."""
    return convert_with(Converter(kind, param=param, max_line_bytes=max_line_bytes), chunks)


def aconvert_chunks(
    chunks: AsyncIterable[bytes],
    kind: Kind,
    *,
    param: str = "training_file",
    max_line_bytes: int = DEFAULT_MAX_LINE,
) -> AsyncIterator[bytes]:
    """`convert_chunks` over an async iterable (CPU-bound per chunk: keep chunks ≤ a few MB)."""
    return aconvert_with(Converter(kind, param=param, max_line_bytes=max_line_bytes), chunks)
