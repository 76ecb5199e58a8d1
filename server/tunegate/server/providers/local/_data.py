"""Training data: OpenAI's JSONL formats, their validation rules, and the chat template.

Validation follows OpenAI's documented rules (reference/providers.md §2.1–2.4) and stops at the
first error, naming its line (`Line 7: missing 'messages'`). Supervised lines are
`{"messages": [...]}`; preference (DPO) lines are `{"input": {"messages": [...]},
"preferred_output": [assistant], "non_preferred_output": [assistant]}` (the older
`preferred_completion` / `non_preferred_completion` names are accepted too).

The chat template, shared by training and inference::

    [bos] <role> content [eos] <role> content [eos] ... <assistant>      (prompt for generation)

`<role>` is a role marker (one special id for the byte tokenizer). The loss mask is 1 exactly on
the content and `eos` of assistant turns with `weight` 1 (the default); everything else, the
assistant marker included, is context. Sequences longer than the model's context are truncated
from the end, as OpenAI does.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from tunegate.server.providers.local._tokenizer import ROLES, ChatTokenizer

__all__ = [
    "Conversation",
    "DataError",
    "DataReport",
    "Encoded",
    "Example",
    "Method",
    "Preference",
    "Turn",
    "read_examples",
    "render_preference",
    "render_prompt",
    "render_supervised",
    "turns_from_messages",
    "validate_file",
]

Method = Literal["supervised", "dpo"]

_MESSAGE_KEYS = {
    "role",
    "content",
    "name",
    "weight",
    "tool_calls",
    "tool_call_id",
    "function_call",
    "refusal",
}


class DataError(Exception):
    """A training or validation file breaks a rule. `param` is `training_file` or
    `validation_file`; `line` is 1-based (None for whole-file problems); `code` is snake_case."""

    def __init__(self, message: str, *, param: str, line: int | None = None, code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.param = param
        self.line = line
        self.code = code or f"invalid_{param}"

    def to_json(self) -> dict[str, Any]:
        return {"code": self.code, "message": self.message, "param": self.param, "line": self.line}


@dataclass(frozen=True, slots=True)
class DataReport:
    examples: int
    tokens: int
    """Tokens after rendering with the chat template (both sequences of a DPO pair)."""


@dataclass(frozen=True, slots=True)
class Turn:
    role: str
    text: str
    weight: int = 1
    """Only meaningful for assistant turns: 0 = context only, not trained on."""


@dataclass(frozen=True, slots=True)
class Conversation:
    turns: tuple[Turn, ...]


@dataclass(frozen=True, slots=True)
class Preference:
    prompt: tuple[Turn, ...]
    chosen: str
    rejected: str


Example = Conversation | Preference


@dataclass(frozen=True, slots=True)
class Encoded:
    input_ids: list[int]
    loss_mask: list[int]


class _Bad(Exception):
    """A rule broken inside one line; becomes a DataError with the line number."""


def _content_text(content: Any, *, where: str) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        parts = []
        for part in content:
            if (
                not isinstance(part, dict)
                or part.get("type") != "text"
                or not isinstance(part.get("text"), str)
            ):
                raise _Bad(f"{where}: only text content parts are supported")
            parts.append(part["text"])
        return "".join(parts)
    raise _Bad(f"{where}: 'content' must be a string or a list of text parts")


def _turn(message: Any, index: int, *, strict: bool) -> Turn:
    where = f"messages[{index}]"
    if not isinstance(message, dict):
        raise _Bad(f"{where} must be an object")
    role = message.get("role")
    if role is None:
        raise _Bad(f"{where} is missing 'role'")
    if role not in ROLES:
        raise _Bad(f"{where} has unrecognized role {role!r}")
    if strict and (unknown := sorted(set(message) - _MESSAGE_KEYS)):
        raise _Bad(f"{where} has unrecognized key {unknown[0]!r}")
    weight = message.get("weight", 1)
    if "weight" in message:
        if role != "assistant":
            raise _Bad(f"{where}: 'weight' is only allowed on assistant messages")
        if type(weight) is not int or weight not in (0, 1):
            raise _Bad(f"{where}: 'weight' must be 0 or 1")
    content = message.get("content")
    calls = message.get("tool_calls") or message.get("function_call")
    if content is None:
        if role == "assistant" and calls:
            return Turn(role, json.dumps(calls, ensure_ascii=False, sort_keys=True), weight)
        raise _Bad(f"{where} is missing 'content'")
    text = _content_text(content, where=where)
    if role == "assistant" and calls:
        text += json.dumps(calls, ensure_ascii=False, sort_keys=True)
    return Turn(role, text, weight)


def turns_from_messages(messages: Sequence[Mapping[str, Any]]) -> tuple[Turn, ...]:
    """Chat-completions messages to turns, leniently (`developer` counts as `system`, unknown
    keys are ignored). Raises `ValueError` on a message it cannot render."""
    turns = []
    for i, message in enumerate(messages):
        m = dict(message)
        if m.get("role") == "developer":
            m["role"] = "system"
        m.pop("weight", None)
        try:
            turns.append(_turn(m, i, strict=False))
        except _Bad as exc:
            raise ValueError(str(exc)) from None
    return tuple(turns)


def _messages(value: Any, *, name: str) -> tuple[Turn, ...]:
    if not isinstance(value, list) or not value:
        raise _Bad(f"'{name}' must be a non-empty list")
    return tuple(_turn(m, i, strict=True) for i, m in enumerate(value))


def _output(obj: dict[str, Any], names: tuple[str, str]) -> str:
    key = next((n for n in names if n in obj), None)
    if key is None:
        raise _Bad(f"missing '{names[0]}'")
    value = obj[key]
    if not isinstance(value, list) or len(value) != 1:
        raise _Bad(f"'{key}' must be a list with exactly one assistant message")
    turn = _turn(value[0], 0, strict=True)
    if turn.role != "assistant":
        raise _Bad(f"'{key}' must hold an assistant message")
    return turn.text


def _parse(obj: Any, method: Method) -> Example:
    if not isinstance(obj, dict):
        raise _Bad("each line must be a JSON object")
    if method == "supervised":
        if "messages" not in obj:
            raise _Bad("missing 'messages'")
        turns = _messages(obj["messages"], name="messages")
        if not any(t.role == "assistant" for t in turns):
            raise _Bad("'messages' has no assistant message")
        return Conversation(turns)
    inp = obj.get("input")
    if not isinstance(inp, dict) or "messages" not in inp:
        raise _Bad("missing 'input.messages'")
    prompt = _messages(inp["messages"], name="input.messages")
    chosen = _output(obj, ("preferred_output", "preferred_completion"))
    rejected = _output(obj, ("non_preferred_output", "non_preferred_completion"))
    return Preference(prompt, chosen, rejected)


def _lines(path: Path, param: str) -> Iterator[tuple[int, str]]:
    try:
        with path.open("rb") as f:
            for number, raw in enumerate(f, 1):
                try:
                    yield number, raw.decode("utf-8")
                except UnicodeDecodeError:
                    raise DataError(f"Line {number}: not valid UTF-8", param=param, line=number) from None
    except FileNotFoundError:
        raise DataError(f"The {param.replace('_', ' ')} does not exist", param=param) from None


def read_examples(path: Path, method: Method, *, param: str, min_examples: int = 10) -> list[Example]:
    """Parses and validates a JSONL file; the first broken rule raises `DataError`. Blank lines
    are skipped (they still count for line numbers)."""
    examples: list[Example] = []
    for number, line in _lines(path, param):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError:
            raise DataError(f"Line {number}: not valid JSON", param=param, line=number) from None
        try:
            examples.append(_parse(obj, method))
        except _Bad as exc:
            raise DataError(f"Line {number}: {exc}", param=param, line=number) from None
    if len(examples) < min_examples:
        raise DataError(
            f"The {param.replace('_', ' ')} has {len(examples)} example(s);"
            f" at least {min_examples} are required",
            param=param,
        )
    return examples


def validate_file(
    path: Path,
    method: Method,
    *,
    param: str,
    min_examples: int = 10,
    tokenizer: ChatTokenizer | None = None,
    max_length: int = 512,
) -> DataReport:
    """Checks a file against OpenAI's rules and counts its tokens with `tokenizer` (the built-in
    model's byte tokenizer when None), after truncation to `max_length`."""
    from tunegate.server.providers.local._tokenizer import ByteTokenizer

    examples = read_examples(path, method, param=param, min_examples=min_examples)
    tok: ChatTokenizer = tokenizer or ByteTokenizer()
    tokens = 0
    for example in examples:
        if isinstance(example, Conversation):
            tokens += len(render_supervised(example, tok, max_length).input_ids)
        else:
            chosen, rejected = render_preference(example, tok, max_length)
            tokens += len(chosen.input_ids) + len(rejected.input_ids)
    return DataReport(examples=len(examples), tokens=tokens)


def _render(turns: Sequence[Turn], tok: ChatTokenizer) -> Encoded:
    ids: list[int] = [] if tok.bos_id is None else [tok.bos_id]
    mask = [0] * len(ids)
    for turn in turns:
        marker = tok.role_marker(turn.role)
        body = [*tok.encode(turn.text), tok.eos_id]
        ids += marker + body
        trained = int(turn.role == "assistant" and turn.weight == 1)
        mask += [0] * len(marker) + [trained] * len(body)
    return Encoded(ids, mask)


def _truncate(enc: Encoded, max_length: int) -> Encoded:
    return Encoded(enc.input_ids[:max_length], enc.loss_mask[:max_length])


def render_supervised(example: Conversation, tok: ChatTokenizer, max_length: int) -> Encoded:
    """The conversation through the chat template, with the assistant-only loss mask."""
    return _truncate(_render(example.turns, tok), max_length)


def render_preference(example: Preference, tok: ChatTokenizer, max_length: int) -> tuple[Encoded, Encoded]:
    """(prompt + chosen, prompt + rejected); the mask covers only the response tokens.
    Assistant turns inside the prompt are context (mask 0)."""
    context = [Turn(t.role, t.text, 0) for t in example.prompt]
    chosen = _render([*context, Turn("assistant", example.chosen)], tok)
    rejected = _render([*context, Turn("assistant", example.rejected)], tok)
    return _truncate(chosen, max_length), _truncate(rejected, max_length)


def render_prompt(turns: Sequence[Turn], tok: ChatTokenizer) -> list[int]:
    """The generation prompt: the conversation followed by the assistant marker."""
    return _render(turns, tok).input_ids + tok.role_marker("assistant")
