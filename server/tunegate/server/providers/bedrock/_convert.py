"""OpenAI chat-format training data → the data format of a Bedrock base model's family.

Pure and self-contained: no AWS calls, no I/O. Three parts:

- `FAMILIES`, the one table of Bedrock base-model families: which model ids belong to a family
  (`fnmatch` patterns over the model id, an ARN's `…/model-id` tail included), the family's data
  format, its supported fine-tuning methods and its hyperparameters (Bedrock names, ranges and
  defaults as the references give them; `HyperParameter.source` says where a value is a guess).
  `family_for(model_id)` looks a model up, `require_method(family, method)` refuses a method the
  family lacks (an `Unsupported`, i.e. a 400, raised before anything is uploaded).
- `Converter`: a push converter fed byte chunks of an OpenAI chat JSONL file, returning converted
  JSONL bytes per chunk. Memory is bounded by the chunk size plus the longest line
  (`max_line_bytes`); the file is never held whole.
- `convert_chunks` / `aconvert_chunks`: the same over a sync / async iterator of chunks.

Conversion is lossless or refused. Every message text is kept exactly (orjson parses and
writes it; unicode is written as UTF-8, escapes as JSON requires). A line that cannot be
converted without losing or changing content is recorded with its 1-based line number and a
reason; conversion goes on to the end of the file, and `finish()` raises one `ConversionError`
listing every offending line. Once a line has been refused, no more output is produced (the
upload it feeds is going to be aborted anyway); the remaining lines are still checked.

Rules, for every family:

- A line is one JSON object with a non-empty `messages` list and no other key; `tools`,
  `functions` and `parallel_tool_calls` are refused (tool use is not supported by these
  formats), as is any other key (nothing is dropped silently).
- A message has `role` and `content` and optionally `weight` (only `1` is accepted: Bedrock has
  no per-turn weights, so `weight: 0` would train a turn the file excludes). `name`,
  `tool_calls`, `function_call`, `refusal`, `audio` and any other key are refused; so are the
  roles `tool` and `function`.
- `content` is a string or a list of `{"type": "text", "text": …}` parts; an image, audio, file
  or any other part is refused.
- `developer` is treated as `system`. System messages must come before the first user message.
- Blank lines (only whitespace) are skipped: they carry nothing and are not counted as refused.
  They still count for line numbers. A trailing `\\r` (CRLF files) is whitespace too. The last
  line needs no trailing newline.

`bedrock-conversation-2024` (Nova): system messages become one `{"text": …}` block each in
`system` (omitted when there is none); user / assistant messages become `{"role", "content":
[{"text": …}, …]}` with one block per text part. Consecutive messages of the same role are merged
into one message, their blocks kept in order (Bedrock requires strict alternation). The first
turn must be `user` and the last `assistant`. Nova refuses the strings `User:`, `Bot:`,
`Assistant:`, `System:`, `<image>`, `<video>` and `[EOS]`; a line containing one in any text is
refused here rather than failing the job on Bedrock.

`prompt-completion` (Titan Text, Cohere Command, Llama 3.x): exactly one user message and then
one assistant message, optionally preceded by system messages; anything multi-turn is refused.
`completion` is the assistant text; `prompt` is the user text, preceded by each system text and
`SYSTEM_SEPARATOR` (these formats have no system field). Text parts of one message are joined
without a separator.
"""

from __future__ import annotations

import re
from array import array
from collections.abc import AsyncIterable, AsyncIterator, Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from fnmatch import fnmatchcase
from typing import Any, Final, Literal

import msgspec
import orjson
from tunegate.server.errors import InvalidArgument, Unsupported
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
    "CONVERSATION",
    "FAMILIES",
    "PROMPT_COMPLETION",
    "SYSTEM_SEPARATOR",
    "ConversionError",
    "Converter",
    "DataFormat",
    "Family",
    "HyperParameter",
    "UnknownModel",
    "aconvert_chunks",
    "convert_chunks",
    "family_for",
    "require_method",
]

DataFormat = Literal["bedrock-conversation-2024", "prompt-completion"]
CONVERSATION: Final = "bedrock-conversation-2024"
PROMPT_COMPLETION: Final = "prompt-completion"

SYSTEM_SEPARATOR: Final = "\n\n"
"""Between a system text and what follows it in a prompt/completion `prompt`."""

_REFS = "providers.md §5.6 / providers-2026-12.md"


@dataclass(frozen=True)
class HyperParameter:
    """One Bedrock `hyperParameters` key of a family (sent as a string)."""

    name: str
    """Bedrock's key, e.g. `epochCount`."""
    openai: str | None
    """The OpenAI hyperparameter it comes from (`learning_rate_multiplier` × `default` for
    `learningRate`), or None when OpenAI has no equivalent."""
    minimum: float
    maximum: float
    default: float
    integer: bool
    source: str = _REFS


@dataclass(frozen=True)
class Family:
    """A Bedrock base-model family: the models in it, their data format, methods and knobs."""

    name: str
    patterns: tuple[str, ...]
    """`fnmatch` patterns (case-sensitive) over the bare model id."""
    data_format: DataFormat
    methods: frozenset[str]
    """OpenAI `method.type`s the family can be fine-tuned with."""
    hyperparameters: Mapping[str, HyperParameter] = field(default_factory=dict)
    """By Bedrock key. Empty when the references give none: nothing is checked here then."""
    note: str = ""


def _hp(*params: HyperParameter) -> Mapping[str, HyperParameter]:
    return {p.name: p for p in params}


_SUPERVISED = frozenset({"supervised"})

FAMILIES: Final[tuple[Family, ...]] = (
    Family(
        name="amazon-nova",
        patterns=("amazon.nova-micro-*", "amazon.nova-lite-*", "amazon.nova-pro-*"),
        data_format=CONVERSATION,
        methods=_SUPERVISED,
        hyperparameters=_hp(
            HyperParameter("epochCount", "n_epochs", 1, 5, 2, integer=True),
            HyperParameter("learningRate", "learning_rate_multiplier", 1e-6, 1e-4, 1e-5, integer=False),
            HyperParameter("learningRateWarmupSteps", None, 0, 100, 10, integer=True),
        ),
        note="Nova Micro/Lite/Pro; no batchSize. Other Nova models (Canvas, Reel, Premier, Nova 2) "
        "are not in the references and are not listed.",
    ),
    # Premier before the other Titan Text models: the first matching family wins.
    Family(
        name="amazon-titan-text-premier",
        patterns=("amazon.titan-text-premier-*",),
        data_format=PROMPT_COMPLETION,
        methods=_SUPERVISED,
        hyperparameters=_hp(
            HyperParameter("epochCount", "n_epochs", 1, 5, 2, integer=True),
            HyperParameter("batchSize", "batch_size", 1, 1, 1, integer=True),
            HyperParameter("learningRate", "learning_rate_multiplier", 1e-7, 1e-5, 1e-6, integer=False),
            HyperParameter("learningRateWarmupSteps", None, 0, 20, 5, integer=True),
        ),
    ),
    Family(
        name="amazon-titan-text",
        patterns=("amazon.titan-text-express-*", "amazon.titan-text-lite-*"),
        data_format=PROMPT_COMPLETION,
        methods=_SUPERVISED,
        hyperparameters=_hp(
            HyperParameter("epochCount", "n_epochs", 1, 10, 5, integer=True),
            HyperParameter("batchSize", "batch_size", 1, 64, 1, integer=True),
            HyperParameter("learningRate", "learning_rate_multiplier", 0, 1, 1e-5, integer=False),
            HyperParameter("learningRateWarmupSteps", None, 0, 250, 5, integer=True),
        ),
        note="Titan Text G1 Express / Lite.",
    ),
    Family(
        name="cohere-command",
        patterns=("cohere.command-text-*", "cohere.command-light-text-*"),
        data_format=PROMPT_COMPLETION,
        methods=_SUPERVISED,
        note="Command and Command Light. The references give no hyperparameter ranges or "
        "defaults for Cohere; none are checked here (Bedrock validates them).",
    ),
    Family(
        name="meta-llama3",
        patterns=("meta.llama3*",),
        data_format=PROMPT_COMPLETION,
        methods=_SUPERVISED,
        hyperparameters=_hp(
            HyperParameter("epochCount", "n_epochs", 1, 10, 5, integer=True),
            HyperParameter("batchSize", "batch_size", 1, 1, 1, integer=True),
            HyperParameter("learningRate", "learning_rate_multiplier", 5e-6, 0.1, 1e-4, integer=False),
        ),
        note="The references give ranges for Llama 3.1 / 3.2 and the prompt/completion format for "
        "Llama 3.1 Instruct; applying both to every `meta.llama3*` id (3.3 included) is a guess.",
    ),
)


class UnknownModel(InvalidArgument):
    """The model id belongs to no Bedrock family in `FAMILIES`."""

    default_code = "model_not_supported"


class ConversionError(LineConversionError):
    """Lines of a training file that cannot be converted for `family`; `problems` lists every
    one of them."""

    def __init__(self, family: Family, problems: Mapping[str, array[int]], param: str) -> None:
        self.family = family
        super().__init__(f"{family.data_format} for {family.name}", problems, param)


def _bare_model_id(model_id: str) -> str:
    # arn:aws:bedrock:us-east-1::foundation-model/amazon.nova-micro-v1:0:128k → the id after "/".
    if model_id.startswith("arn:"):
        return model_id.rsplit("/", 1)[-1]
    return model_id


def family_for(model_id: str, *, param: str = "model") -> Family:
    """The family of a Bedrock model id or foundation-model ARN; `UnknownModel` when none."""
    bare = _bare_model_id(model_id)
    for family in FAMILIES:
        if any(fnmatchcase(bare, pattern) for pattern in family.patterns):
            return family
    known = ", ".join(p for f in FAMILIES for p in f.patterns)
    raise UnknownModel(
        f"{model_id!r} is not a Bedrock base model this gateway can fine-tune (known: {known})",
        param=param,
    )


def require_method(family: Family, method: str, *, param: str = "method.type") -> None:
    """Refuse (`Unsupported`, a 400) a fine-tuning method the family does not support."""
    if method not in family.methods:
        supported = ", ".join(sorted(family.methods))
        raise Unsupported(
            f"Bedrock {family.name} models cannot be fine-tuned with method {method!r} "
            f"(supported: {supported})",
            param=param,
        )


# --- conversion --------------------------------------------------------------------------------

_RESERVED_NOVA_STRINGS = (b"User:", b"Bot:", b"Assistant:", b"System:", b"<image>", b"<video>", b"[EOS]")
_RESERVED_NOVA = re.compile(b"|".join(re.escape(r) for r in _RESERVED_NOVA_STRINGS))
_RESERVED_NOVA_TEXT = re.compile("|".join(re.escape(r.decode()) for r in _RESERVED_NOVA_STRINGS))
_TOOL_KEYS = frozenset({"tools", "functions", "parallel_tool_calls"})
_SYSTEM_ROLES = frozenset({"system", "developer"})

_loads = orjson.loads
_dumps = orjson.dumps


_text = text_parts


def _message(msg: Any) -> tuple[str, list[str]]:
    """(role, text blocks) of one OpenAI message, refused when it carries more than text."""
    if type(msg) is not dict:
        raise _Refused("a message is not an object")
    n = len(msg)
    if n != 2:
        if "tool_calls" in msg or "function_call" in msg:
            raise _Refused("tool calls are not supported")
        if "weight" in msg:
            if msg["weight"] != 1 or type(msg["weight"]) is bool:
                raise _Refused("a message weight other than 1 (Bedrock has no per-turn weights)")
            n -= 1
        if n != 2 or "role" not in msg or "content" not in msg:
            extra = sorted(set(msg) - {"role", "content", "weight"})
            if extra:
                raise _Refused(f"message key{'s' if len(extra) > 1 else ''} {', '.join(extra)} not supported")
            raise _Refused("a message needs `role` and `content`")
    role = msg.get("role")
    if role is None or "content" not in msg:
        raise _Refused("a message needs `role` and `content`")
    if role == "user" or role == "assistant":
        return role, _text(msg["content"])
    if role in _SYSTEM_ROLES:
        return "system", _text(msg["content"])
    if role == "tool" or role == "function":
        raise _Refused("tool calls are not supported")
    raise _Refused(f"unknown role {_short(role)}")


def _messages(record: Any) -> list[Any]:
    if type(record) is not dict:
        raise _Refused("not a JSON object")
    messages = record.get("messages")
    if len(record) != 1 or messages is None:
        if _TOOL_KEYS.intersection(record):
            raise _Refused("tool definitions are not supported")
        if "input" in record or "preferred_output" in record:
            raise _Refused("a preference example, not a supervised chat example")
        if messages is None:
            raise _Refused("no `messages`")
        extra = sorted(k for k in record if k != "messages")
        raise _Refused(f"unsupported key{'s' if len(extra) > 1 else ''} {', '.join(extra)}")
    if type(messages) is not list or not messages:
        raise _Refused("`messages` is not a non-empty list")
    return messages


def _conversation(record: Any) -> dict[str, Any]:
    system: list[dict[str, str]] = []
    turns: list[dict[str, Any]] = []
    last_role = None
    for msg in _messages(record):
        role, texts = _message(msg)
        if role == "system":
            if turns:
                raise _Refused("a system message after the conversation started")
            system.extend({"text": t} for t in texts)
            continue
        if role == last_role:
            turns[-1]["content"].extend({"text": t} for t in texts)
        else:
            if last_role is None and role != "user":
                raise _Refused("the conversation must start with a user message")
            turns.append({"role": role, "content": [{"text": t} for t in texts]})
            last_role = role
    if last_role != "assistant":
        has_assistant = any(turn["role"] == "assistant" for turn in turns)
        raise _Refused(
            "the last message must be the assistant's" if has_assistant else "no assistant message"
        )
    out: dict[str, Any] = {"schemaVersion": CONVERSATION}
    if system:
        out["system"] = system
    out["messages"] = turns
    return out


def _reserved_in(line: bytes) -> bytes | None:
    """The first Nova-reserved string in an output line (orjson escapes only `"`, `\\` and
    control characters, and no key or fixed value contains one, so a match is in message text)."""
    found = _RESERVED_NOVA.search(line)
    return found.group() if found is not None else None


def _prompt_completion(record: Any) -> dict[str, Any]:
    messages = _messages(record)
    system: list[str] = []
    user: str | None = None
    completion: str | None = None
    for msg in messages:
        role, texts = _message(msg)
        if completion is not None:
            raise _Refused("a multi-turn conversation (this format has one prompt and one completion)")
        if role == "system":
            if user is not None:
                raise _Refused("a system message after the conversation started")
            system.append("".join(texts))
        elif role == "user":
            if user is not None:
                raise _Refused("a multi-turn conversation (this format has one prompt and one completion)")
            user = "".join(texts)
        elif user is None:
            raise _Refused("the conversation must start with a user message")
        else:
            completion = "".join(texts)
    if completion is None or user is None:
        raise _Refused("no assistant message")
    prompt = SYSTEM_SEPARATOR.join([*system, user]) if system else user
    return {"prompt": prompt, "completion": completion}


# --- the fast path: text-only conversation lines, Structs in, byte templates out --------------


class _TextMessage(msgspec.Struct, forbid_unknown_fields=True, gc=False):
    role: str
    content: str
    weight: int = 1


class _TextChat(msgspec.Struct, forbid_unknown_fields=True, gc=False):
    # gc=False, one line at a time: nothing is tracked by the cyclic GC, whose collections
    # otherwise cost more than the conversion.
    messages: list[_TextMessage]


_decode_text_chat = msgspec.json.Decoder(_TextChat).decode
_encode_text = msgspec.json.Encoder().encode
"""Writes a string exactly as orjson does (the same escapes, UTF-8 kept; checked over every code
point in the tests), about three times faster for one string."""
_CONV_OPEN = b'{"schemaVersion":"bedrock-conversation-2024"'
_CONV_SYSTEM = b',"system":[{"text":'
_CONV_NEXT_BLOCK = b'},{"text":'
_CONV_SYSTEM_TO_MESSAGES = b'}],"messages":[{"role":"user","content":[{"text":'
_CONV_MESSAGES = b',"messages":[{"role":"user","content":[{"text":'
_CONV_ASSISTANT = b'}]},{"role":"assistant","content":[{"text":'
_CONV_USER = b'}]},{"role":"user","content":[{"text":'
_CONV_END = b"}]}]}\n"
_PC_PROMPT = b'{"prompt":'
_PC_COMPLETION = b',"completion":'


def _fast_prompt_completion(raw: bytes, out: list[bytes]) -> bool:
    """Appends the prompt/completion line for a plain text chat line (system messages, then one
    user and one assistant message, string contents) to `out`, written exactly as
    `_prompt_completion` + orjson would; False (with nothing appended) for any other line."""
    try:
        chat = _decode_text_chat(raw)
    except (msgspec.DecodeError, msgspec.ValidationError):
        return False
    messages = chat.messages
    if len(messages) < 2:
        return False
    *head, user, assistant = messages
    if user.role != "user" or assistant.role != "assistant" or user.weight != 1 or assistant.weight != 1:
        return False
    system: list[str] = []
    for m in head:
        if (m.role != "system" and m.role != "developer") or m.weight != 1:
            return False
        system.append(m.content)
    prompt = SYSTEM_SEPARATOR.join([*system, user.content]) if system else user.content
    out.append(
        b"".join((_PC_PROMPT, _encode_text(prompt), _PC_COMPLETION, _encode_text(assistant.content), b"}\n"))
    )
    return True


def _fast_conversation(raw: bytes, out: list[bytes]) -> bool:
    """Appends the `bedrock-conversation-2024` line for a plain text chat line (string contents,
    roles in order, no Nova-reserved string) to `out`, written exactly as `_conversation` +
    orjson would; False (with nothing appended) for any other line, which the precise path then
    decides. Every reserved string has a `:`, `<` or `[`, so a text without one (a fast
    single-character search) needs no pattern search."""
    try:
        chat = _decode_text_chat(raw)
    except (msgspec.DecodeError, msgspec.ValidationError):
        return False
    pieces = [_CONV_OPEN]
    last = ""
    for m in chat.messages:
        role = m.role
        if m.weight != 1:
            return False
        if role == "system" or role == "developer":
            if last == "":
                pieces.append(_CONV_SYSTEM)
                last = "system"
            elif last == "system":
                pieces.append(_CONV_NEXT_BLOCK)
            else:
                return False
        elif role == "user":
            if last == "user":
                pieces.append(_CONV_NEXT_BLOCK)
            elif last == "assistant":
                pieces.append(_CONV_USER)
            else:
                pieces.append(_CONV_MESSAGES if last == "" else _CONV_SYSTEM_TO_MESSAGES)
            last = "user"
        elif role == "assistant":
            if last == "assistant":
                pieces.append(_CONV_NEXT_BLOCK)
            elif last == "user":
                pieces.append(_CONV_ASSISTANT)
            else:
                return False
            last = "assistant"
        else:
            return False
        text = m.content
        if ("<" in text or ":" in text or "[" in text) and _RESERVED_NOVA_TEXT.search(text) is not None:
            return False
        pieces.append(_encode_text(text))
    if last != "assistant":
        return False
    pieces.append(_CONV_END)
    out.append(b"".join(pieces))
    return True


class Converter(LineConverter):
    """Push converter for one family (see `LineConverter`): `feed(chunk)` returns converted
    bytes, `finish()` the rest or raises `ConversionError` listing every refused line."""

    def __init__(
        self,
        family: Family,
        *,
        param: str = "training_file",
        max_line_bytes: int = DEFAULT_MAX_LINE,
    ) -> None:
        super().__init__(param=param, max_line_bytes=max_line_bytes)
        self.family = family
        if family.data_format == CONVERSATION:
            self._convert: Callable[[Any], dict[str, Any]] = _conversation
            self._separator, self._newline = b'},{"schemaVersion":', b'}\n{"schemaVersion":'
        else:
            self._convert = _prompt_completion
            self._separator, self._newline = b'},{"prompt":', b'}\n{"prompt":'

    def _error(self) -> ConversionError:
        return ConversionError(self.family, self._problems, self._param)

    def _lines(self, lines: list[bytes]) -> bytes:
        if self._convert is _conversation:
            return self._fast_lines(lines, _fast_conversation)
        return self._fast_lines(lines, _fast_prompt_completion)

    def _batch_lines(self, lines: list[bytes]) -> bytes:
        """The precise path for a batch of lines (one `dumps` for all of them)."""
        base = self._line
        self._line += len(lines)
        convert = self._convert
        out: list[dict[str, Any]] = []
        numbers: list[int] = []
        for i, raw in enumerate(lines, base + 1):
            try:
                record = _loads(raw)
            except orjson.JSONDecodeError:
                if raw.strip():
                    self._refuse(i, "invalid JSON")
                continue
            try:
                out.append(convert(record))
            except _Refused as e:
                self._refuse(i, str(e))
            else:
                numbers.append(i)
        if not out:
            return b""
        # One dumps for the batch, split into lines at the separators between its elements: the
        # separator cannot occur inside a string, where every `"` is written as `\"`.
        blob = _dumps(out)[1:-1]
        if self._convert is _conversation and any(r in blob for r in _RESERVED_NOVA_STRINGS):
            for i, record in zip(numbers, out, strict=True):
                found = _reserved_in(_dumps(record))
                if found is not None:
                    self._refuse(i, f"contains {found.decode()!r}, which Nova does not allow")
        if self._problems:
            return b""
        self.lines_out += len(out)
        return blob.replace(self._separator, self._newline) + b"\n"

    def _fast_lines(self, lines: list[bytes], fast: Callable[[bytes, list[bytes]], bool]) -> bytes:
        """`_lines`: the fast path line by line; the lines it passes over go, in order, through
        the precise path (`_batch_lines`, which numbers and refuses them)."""
        out: list[bytes] = []
        pending: list[bytes] = []
        fast_count = 0
        for raw in lines:
            if fast(raw, out):
                if pending:  # the precise lines before this one go first
                    line = out.pop()
                    out.append(self._batch_lines(pending))
                    out.append(line)
                    pending = []
                self._line += 1
                fast_count += 1
            else:
                pending.append(raw)
        if pending:
            out.append(self._batch_lines(pending))
        if self._problems:
            return b""
        self.lines_out += fast_count
        return b"".join(out)


def convert_chunks(
    chunks: Iterable[bytes],
    family: Family,
    *,
    param: str = "training_file",
    max_line_bytes: int = DEFAULT_MAX_LINE,
) -> Iterator[bytes]:
    """Converted JSONL for an iterable of input chunks; raises `ConversionError` at the end."""
    return convert_with(Converter(family, param=param, max_line_bytes=max_line_bytes), chunks)


def aconvert_chunks(
    chunks: AsyncIterable[bytes],
    family: Family,
    *,
    param: str = "training_file",
    max_line_bytes: int = DEFAULT_MAX_LINE,
) -> AsyncIterator[bytes]:
    """`convert_chunks` over an async iterable (CPU-bound per chunk: keep chunks ≤ a few MB)."""
    return aconvert_with(Converter(family, param=param, max_line_bytes=max_line_bytes), chunks)
