"""Training-data validation (OpenAI's rules, first error with its line) and the chat template."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from tunegate.server.providers.local._data import (
    Conversation,
    DataError,
    Preference,
    Turn,
    read_examples,
    render_preference,
    render_prompt,
    render_supervised,
    validate_file,
)
from tunegate.server.providers.local._tokenizer import ByteTokenizer


def sft_line(question: str, answer: str, **assistant: Any) -> dict[str, Any]:
    return {
        "messages": [
            {"role": "system", "content": "You are terse."},
            {"role": "user", "content": question},
            {"role": "assistant", "content": answer, **assistant},
        ]
    }


def dpo_line(question: str, chosen: str, rejected: str) -> dict[str, Any]:
    return {
        "input": {"messages": [{"role": "user", "content": question}]},
        "preferred_output": [{"role": "assistant", "content": chosen}],
        "non_preferred_output": [{"role": "assistant", "content": rejected}],
    }


def write_jsonl(path: Path, lines: list[Any]) -> Path:
    path.write_text("".join((line if isinstance(line, str) else json.dumps(line)) + "\n" for line in lines))
    return path


def sft_lines(n: int = 12) -> list[dict[str, Any]]:
    return [sft_line(f"question {i}?", f"answer {i}.") for i in range(n)]


def test_valid_supervised_file_counts_examples_and_tokens(tmp_path: Path) -> None:
    report = validate_file(
        write_jsonl(tmp_path / "t.jsonl", sft_lines()), "supervised", param="training_file"
    )
    assert report.examples == 12
    # bos + 3 × (marker + eos) + the UTF-8 bytes of the three contents
    expected = sum(
        1 + 6 + len("You are terse.") + len(f"question {i}?") + len(f"answer {i}.") for i in range(12)
    )
    assert report.tokens == expected


_BAD_SUPERVISED: list[tuple[Any, str]] = [
    ("{not json", "Line 7: not valid JSON"),
    ([1, 2], "Line 7: each line must be a JSON object"),
    ({"prompt": "x", "completion": "y"}, "Line 7: missing 'messages'"),
    ({"messages": []}, "Line 7: 'messages' must be a non-empty list"),
    ({"messages": [{"role": "user", "content": "hi"}]}, "Line 7: 'messages' has no assistant message"),
    ({"messages": [{"role": "robot", "content": "hi"}]}, "Line 7: messages[0] has unrecognized role 'robot'"),
    ({"messages": [{"content": "hi"}]}, "Line 7: messages[0] is missing 'role'"),
    ({"messages": [{"role": "user"}]}, "Line 7: messages[0] is missing 'content'"),
    (sft_line("q", "a", weight=2), "Line 7: messages[2]: 'weight' must be 0 or 1"),
    (sft_line("q", "a", weight=True), "Line 7: messages[2]: 'weight' must be 0 or 1"),
    (
        {"messages": [{"role": "user", "content": "q", "weight": 1}, {"role": "assistant", "content": "a"}]},
        "Line 7: messages[0]: 'weight' is only allowed on assistant messages",
    ),
    (sft_line("q", "a", color="red"), "Line 7: messages[2] has unrecognized key 'color'"),
    (
        {"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}]},
        "Line 7: messages[0]: only text content parts are supported",
    ),
]


@pytest.mark.parametrize(("line", "message"), _BAD_SUPERVISED)
def test_supervised_errors_name_the_first_bad_line(tmp_path: Path, line: Any, message: str) -> None:
    lines: list[Any] = [*sft_lines(6), line, *sft_lines(6), "{also bad"]
    with pytest.raises(DataError) as info:
        validate_file(write_jsonl(tmp_path / "t.jsonl", lines), "supervised", param="validation_file")
    assert info.value.message == message
    assert info.value.line == 7
    assert info.value.param == "validation_file"
    assert info.value.code == "invalid_validation_file"
    assert info.value.to_json()["line"] == 7


def test_too_few_examples_and_missing_file(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "t.jsonl", [*sft_lines(9), ""])  # blank lines do not count
    with pytest.raises(DataError, match="has 9 example\\(s\\); at least 10 are required") as info:
        validate_file(path, "supervised", param="training_file")
    assert info.value.line is None
    assert validate_file(path, "supervised", param="training_file", min_examples=9).examples == 9
    with pytest.raises(DataError, match="does not exist"):
        validate_file(tmp_path / "nope.jsonl", "supervised", param="training_file")


def test_not_utf8(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "t.jsonl", sft_lines(3))
    path.write_bytes(path.read_bytes() + b'{"messages": "\xff"}\n')
    with pytest.raises(DataError, match="Line 4: not valid UTF-8"):
        validate_file(path, "supervised", param="training_file")


def test_text_parts_and_tool_calls_are_accepted(tmp_path: Path) -> None:
    call = {"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}}
    lines = [
        {
            "messages": [
                {"role": "user", "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]},
                {"role": "assistant", "content": None, "tool_calls": [call]},
                {"role": "tool", "content": "42", "tool_call_id": "c1"},
                {"role": "assistant", "content": "It is 42.", "weight": 1},
            ]
        }
    ] * 10
    (example, *_) = read_examples(
        write_jsonl(tmp_path / "t.jsonl", lines), "supervised", param="training_file"
    )
    assert isinstance(example, Conversation)
    assert example.turns[0].text == "ab"
    assert '"name": "f"' in example.turns[1].text


_BAD_DPO: list[tuple[Any, str]] = [
    ({"messages": []}, "Line 3: missing 'input.messages'"),
    (
        {**dpo_line("q", "a", "b"), "input": {"messages": "x"}},
        "Line 3: 'input.messages' must be a non-empty list",
    ),
    (
        {k: v for k, v in dpo_line("q", "a", "b").items() if k != "preferred_output"},
        "Line 3: missing 'preferred_output'",
    ),
    (
        {k: v for k, v in dpo_line("q", "a", "b").items() if k != "non_preferred_output"},
        "Line 3: missing 'non_preferred_output'",
    ),
    (
        {**dpo_line("q", "a", "b"), "preferred_output": [{"role": "assistant", "content": "a"}] * 2},
        "Line 3: 'preferred_output' must be a list with exactly one assistant message",
    ),
    (
        {**dpo_line("q", "a", "b"), "non_preferred_output": [{"role": "user", "content": "a"}]},
        "Line 3: 'non_preferred_output' must hold an assistant message",
    ),
]


@pytest.mark.parametrize(("line", "message"), _BAD_DPO)
def test_dpo_errors(tmp_path: Path, line: Any, message: str) -> None:
    lines = [dpo_line("q", "a", "b")] * 2 + [line] + [dpo_line("q", "a", "b")] * 10
    with pytest.raises(DataError) as info:
        validate_file(write_jsonl(tmp_path / "t.jsonl", lines), "dpo", param="training_file")
    assert (info.value.message, info.value.line) == (message, 3)


def test_dpo_accepts_the_older_completion_names(tmp_path: Path) -> None:
    old = {
        "input": {"messages": [{"role": "user", "content": "q"}]},
        "preferred_completion": [{"role": "assistant", "content": "good"}],
        "non_preferred_completion": [{"role": "assistant", "content": "bad"}],
    }
    examples = read_examples(write_jsonl(tmp_path / "t.jsonl", [old] * 10), "dpo", param="training_file")
    assert examples[0] == Preference((Turn("user", "q"),), "good", "bad")
    assert validate_file(tmp_path / "t.jsonl", "dpo", param="training_file").examples == 10


def test_loss_mask_trains_assistant_turns_and_honours_weight_zero() -> None:
    tok = ByteTokenizer()
    conversation = Conversation(
        (
            Turn("user", "hi"),
            Turn("assistant", "no", weight=0),
            Turn("user", "again"),
            Turn("assistant", "ok"),
        )
    )
    enc = render_supervised(conversation, tok, 512)
    trained = [i for i, m in zip(enc.input_ids, enc.loss_mask, strict=True) if m]
    assert trained == [*b"ok", tok.eos_id]  # the weight-0 answer is context only
    assert tok.decode(enc.input_ids) == "hinoagainok"
    assert enc.input_ids[0] == tok.bos_id
    assert render_supervised(conversation, tok, 5).input_ids == enc.input_ids[:5]  # cut from the end


def test_preference_pairs_share_the_prompt_and_mask_only_the_responses() -> None:
    tok = ByteTokenizer()
    chosen, rejected = render_preference(Preference((Turn("user", "q"),), "yes", "no"), tok, 512)
    prompt = render_prompt((Turn("user", "q"),), tok)
    assert chosen.input_ids[: len(prompt)] == rejected.input_ids[: len(prompt)] == prompt
    assert [i for i, m in zip(chosen.input_ids, chosen.loss_mask, strict=True) if m] == [*b"yes", tok.eos_id]
    assert [i for i, m in zip(rejected.input_ids, rejected.loss_mask, strict=True) if m] == [
        *b"no",
        tok.eos_id,
    ]
