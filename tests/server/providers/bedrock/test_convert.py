"""Bedrock family table and the OpenAI chat JSONL → Bedrock training-data converter."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

import orjson
import pytest
from tunegate.server.errors import InvalidArgument, Unsupported
from tunegate.server.providers.bedrock._convert import (
    FAMILIES,
    ConversionError,
    Converter,
    UnknownModel,
    aconvert_chunks,
    convert_chunks,
    family_for,
    require_method,
)

NOVA = family_for("amazon.nova-micro-v1:0:128k")
TITAN = family_for("amazon.titan-text-lite-v1:0:4k")
PROMPT_FAMILIES = [f for f in FAMILIES if f.data_format == "prompt-completion"]


def line(*messages: tuple[str, object], **extra: object) -> bytes:
    return orjson.dumps({"messages": [{"role": r, "content": c} for r, c in messages], **extra})


def convert(data: bytes, family=NOVA) -> bytes:
    return b"".join(convert_chunks([data], family))


def refused(data: bytes, family=NOVA) -> ConversionError:
    with pytest.raises(ConversionError) as info:
        convert(data, family)
    return info.value


# The example record of the references (providers.md §5.7), as an OpenAI chat line.
EXAMPLE = line(("system", "..."), ("user", "..."), ("assistant", "..."))


def test_family_lookup_for_the_guides_ids() -> None:
    assert family_for("amazon.titan-text-lite-v1:0").name == "amazon-titan-text"
    assert family_for("amazon.titan-text-lite-v1:0:4k").name == "amazon-titan-text"
    assert family_for("amazon.titan-text-premier-v1:0:32k").name == "amazon-titan-text-premier"
    assert family_for("amazon.nova-lite-v1:0:300k").data_format == "bedrock-conversation-2024"
    assert family_for("cohere.command-light-text-v14:7:4k").name == "cohere-command"
    assert family_for("meta.llama3-1-8b-instruct-v1:0:128k").name == "meta-llama3"
    arn = "arn:aws:bedrock:us-east-1::foundation-model/amazon.nova-pro-v1:0:300k"
    assert family_for(arn) is family_for("amazon.nova-pro-v1:0:300k")
    with pytest.raises(UnknownModel) as info:
        family_for("anthropic.claude-3-haiku-20240307-v1:0:200k")
    assert isinstance(info.value, InvalidArgument) and info.value.param == "model"


def test_hyperparameters_follow_the_reference_table() -> None:
    nova = NOVA.hyperparameters
    assert (nova["epochCount"].minimum, nova["epochCount"].maximum, nova["epochCount"].default) == (1, 5, 2)
    assert nova["learningRate"].default == 1e-5 and "batchSize" not in nova
    llama = family_for("meta.llama3-2-1b-instruct-v1:0:128k").hyperparameters
    assert (llama["learningRate"].minimum, llama["learningRate"].maximum) == (5e-6, 0.1)


@pytest.mark.parametrize("family", FAMILIES, ids=lambda f: f.name)
@pytest.mark.parametrize("method", ["dpo", "reinforcement"])
def test_methods_other_than_supervised_are_refused(family, method) -> None:
    require_method(family, "supervised")
    with pytest.raises(Unsupported) as info:
        require_method(family, method)
    assert info.value.param == "method.type" and method in info.value.message


def test_conversation_exact_output() -> None:
    assert convert(EXAMPLE) == (
        b'{"schemaVersion":"bedrock-conversation-2024","system":[{"text":"..."}],'
        b'"messages":[{"role":"user","content":[{"text":"..."}]},'
        b'{"role":"assistant","content":[{"text":"..."}]}]}\n'
    )


def test_conversation_multi_turn_developer_and_merged_turns() -> None:
    data = line(
        ("developer", "d"),
        ("system", "s"),
        ("user", "u1"),
        ("user", [{"type": "text", "text": "u2"}]),
        ("assistant", "a1"),
        ("user", "u3"),
        ("assistant", "a2"),
    )
    assert orjson.loads(convert(data)) == {
        "schemaVersion": "bedrock-conversation-2024",
        "system": [{"text": "d"}, {"text": "s"}],
        "messages": [
            {"role": "user", "content": [{"text": "u1"}, {"text": "u2"}]},
            {"role": "assistant", "content": [{"text": "a1"}]},
            {"role": "user", "content": [{"text": "u3"}]},
            {"role": "assistant", "content": [{"text": "a2"}]},
        ],
    }
    no_system = convert(line(("user", "q"), ("assistant", "a")))
    assert orjson.loads(no_system) == {
        "schemaVersion": "bedrock-conversation-2024",
        "messages": [
            {"role": "user", "content": [{"text": "q"}]},
            {"role": "assistant", "content": [{"text": "a"}]},
        ],
    }


@pytest.mark.parametrize("family", PROMPT_FAMILIES, ids=lambda f: f.name)
def test_prompt_completion_exact_output(family) -> None:
    assert (
        convert(line(("user", "..."), ("assistant", "...")), family)
        == b'{"prompt":"...","completion":"..."}\n'
    )
    assert convert(EXAMPLE, family) == b'{"prompt":"...\\n\\n...","completion":"..."}\n'


@pytest.mark.parametrize("family", PROMPT_FAMILIES, ids=lambda f: f.name)
def test_multi_turn_is_refused_for_prompt_completion_with_every_line_number(family) -> None:
    multi = line(("user", "a"), ("assistant", "b"), ("user", "c"), ("assistant", "d"))
    ok = line(("user", "a"), ("assistant", "b"))
    data = b"\n".join([ok, multi, ok, multi, multi, ok]) + b"\n"
    error = refused(data, family)
    assert error.line_numbers() == [2, 4, 5]
    assert "lines 2, 4-5" in error.message and error.param == "training_file"
    # The same lines are fine as conversations.
    assert convert(data, NOVA).count(b"\n") == 6


@pytest.mark.parametrize(
    ("bad", "reason"),
    [
        (line(("user", "q"), ("assistant", "a"), tools=[{"type": "function"}]), "tool definitions"),
        (
            orjson.dumps(
                {
                    "messages": [
                        {"role": "user", "content": "q"},
                        {"role": "assistant", "content": None, "tool_calls": [{"id": "x"}]},
                    ]
                }
            ),
            "tool calls",
        ),
        (line(("user", "q"), ("tool", "r"), ("assistant", "a")), "tool calls"),
        (
            line(
                ("user", [{"type": "image_url", "image_url": {"url": "https://x/y.png"}}]), ("assistant", "a")
            ),
            "non-text content part 'image_url'",
        ),
        (line(("user", "q")), "no assistant message"),
        (
            line(("user", "q"), ("assistant", "a"), ("user", "r")),
            "the last message must be the assistant's|multi-turn",
        ),
        (line(("assistant", "a")), "must start with a user message"),
        (line(("user", "q"), ("system", "s"), ("assistant", "a")), "system message after"),
        (
            orjson.dumps(
                {
                    "messages": [
                        {"role": "user", "content": "q"},
                        {"role": "assistant", "content": "a", "weight": 0},
                    ]
                }
            ),
            "weight",
        ),
        (
            orjson.dumps(
                {
                    "messages": [
                        {"role": "user", "content": "q", "name": "n"},
                        {"role": "assistant", "content": "a"},
                    ]
                }
            ),
            "name",
        ),
        (b'{"messages": [', "invalid JSON"),
        (b"[1, 2]", "not a JSON object"),
        (b'{"input": {}, "preferred_output": [], "non_preferred_output": []}', "preference example"),
        (line(("user", "q"), ("assistant", "a"), extra=1), "unsupported key extra"),
    ],
)
@pytest.mark.parametrize("family", [NOVA, TITAN], ids=lambda f: f.name)
def test_unconvertible_lines_are_refused_with_their_reason(family, bad: bytes, reason: str) -> None:
    ok = line(("user", "q"), ("assistant", "a"))
    error = refused(b"\n".join([ok, bad, ok, bad]) + b"\n", family)
    assert error.line_numbers() == [2, 4]
    assert any(r in error.message for r in reason.split("|")), error.message


def test_weight_one_is_accepted() -> None:
    data = orjson.dumps(
        {"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a", "weight": 1}]}
    )
    assert convert(data, TITAN) == b'{"prompt":"q","completion":"a"}\n'


def test_nova_reserved_strings_are_refused() -> None:
    ok = line(("user", "q"), ("assistant", "a"))
    error = refused(b"\n".join([ok, line(("user", "User: hi"), ("assistant", "a")), ok]))
    assert error.line_numbers() == [2] and "'User:'" in error.message
    assert convert(line(("user", "User: hi"), ("assistant", "a")), TITAN)


TRICKY = [
    "héllo wörld — 日本語 🎉",
    'quote " backslash \\ slash / tab \t newline \n cr \r nul \x00 bell \x07',
    "\u2028\u2029 separators, \ufeff bom",
    '},{"schemaVersion": "x"}\n{"prompt": "y"}',
    "",
]


@pytest.mark.parametrize("family", [NOVA, TITAN], ids=lambda f: f.name)
def test_unicode_and_escapes_survive(family) -> None:
    lines = [line(("system", t), ("user", t + "?"), ("assistant", t + "!")) for t in TRICKY]
    # Also escapes as Python's json.dumps writes them (ensure_ascii) and a raw \u escape.
    lines.append(
        rb'{"messages":[{"role":"user","content":"caf\u00e9 \ud83c\udf89 \/"},'
        rb'{"role":"assistant","content":"\"x\""}]}'
    )
    out = convert(b"\n".join(lines) + b"\n", family).split(b"\n")
    assert out[-1] == b"" and len(out) == len(lines) + 1
    for src, dst in zip(lines, out, strict=False):
        msgs = orjson.loads(src)["messages"]
        got = orjson.loads(dst)
        if family is NOVA:
            texts = [got["system"][0]["text"]] if "system" in got else []
            texts += [b["text"] for m in got["messages"] for b in m["content"]]
            assert texts == [m["content"] for m in msgs]
        else:
            *system, user, assistant = (m["content"] for m in msgs)
            assert got == {"prompt": "\n\n".join([*system, user]), "completion": assistant}


@pytest.mark.parametrize("family", [NOVA, TITAN], ids=lambda f: f.name)
def test_any_chunk_boundary_gives_identical_output(family) -> None:
    data = b"\n".join(
        [
            EXAMPLE,
            b"",
            line(("user", TRICKY[0]), ("assistant", TRICKY[1])),
            b"   ",
            line(("user", "x"), ("assistant", "y")),
        ]
    )  # no trailing newline, blank lines inside
    whole = convert(data, family)
    assert whole.count(b"\n") == 3
    for cut in range(len(data) + 1):
        assert b"".join(convert_chunks([data[:cut], data[cut:]], family)) == whole, cut
    assert b"".join(convert_chunks([data[i : i + 1] for i in range(len(data))], family)) == whole


def test_blank_lines_are_skipped_but_counted_and_crlf_accepted() -> None:
    ok = line(("user", "q"), ("assistant", "a"))
    data = b"\r\n".join([b"", ok, b"  \t", ok, b"not json", b""])
    error = refused(data, TITAN)
    assert error.line_numbers() == [5]
    assert convert(b"\n\n" + ok + b"\r\n\n", TITAN) == b'{"prompt":"q","completion":"a"}\n'


def test_no_output_after_a_refusal_but_every_line_checked() -> None:
    ok = line(("user", "q"), ("assistant", "a"))
    conv = Converter(TITAN)
    assert conv.feed(ok + b"\n") == b'{"prompt":"q","completion":"a"}\n'
    assert conv.feed(b"oops\n" + ok + b"\n") == b""
    assert conv.feed(b"oops") == b""
    with pytest.raises(ConversionError) as info:
        conv.finish()
    assert info.value.line_numbers() == [2, 4]


def test_over_long_line_is_refused_and_memory_bounded() -> None:
    ok = line(("user", "q"), ("assistant", "a"))
    big = line(("user", "x" * 1000), ("assistant", "a"))
    chunks = [ok + b"\n" + big[:300], big[300:700], big[700:] + b"\n" + ok + b"\n"]
    with pytest.raises(ConversionError) as info:
        b"".join(convert_chunks(chunks, TITAN, max_line_bytes=256))
    assert info.value.line_numbers() == [2]


async def test_async_iterator() -> None:
    async def chunks() -> AsyncIterator[bytes]:
        yield EXAMPLE[:10]
        yield EXAMPLE[10:] + b"\n"

    out = [c async for c in aconvert_chunks(chunks(), TITAN)]
    assert b"".join(out) == b'{"prompt":"...\\n\\n...","completion":"..."}\n'


# --- the Nova fast path writes exactly what the precise path writes ----------------------------


def _slow_conversation_lines(data: bytes) -> list[bytes | None]:
    """The precise path alone: orjson in, `_conversation`, orjson out (None for a refusal)."""
    from tunegate.server.providers._jsonl import Refused as _Refused
    from tunegate.server.providers.bedrock._convert import _conversation

    out: list[bytes | None] = []
    for raw in data.splitlines():
        try:
            out.append(orjson.dumps(_conversation(orjson.loads(raw))) + b"\n")
        except (_Refused, orjson.JSONDecodeError):
            out.append(None)
    return out


_FAST_CORPUS = [
    {"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]},
    {
        "messages": [
            {"role": "system", "content": 'sys "quoted" \\ back'},
            {"role": "developer", "content": "dev\n\ttab\u0001\u001f\u007f"},
            {"role": "user", "content": "é 🎉 \u2028 \u2029 中文"},
            {"role": "user", "content": "second user block"},
            {"role": "assistant", "content": "a1", "weight": 1},
            {"role": "assistant", "content": ""},
            {"role": "user", "content": "next: <b> [x]"},
            {"role": "assistant", "content": "done"},
        ]
    },
    {"messages": [{"role": "user", "content": "User: hi"}, {"role": "assistant", "content": "a"}]},
    {"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "see <image> here"}]},
    {"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a", "weight": 0}]},
    {"messages": [{"role": "assistant", "content": "first"}, {"role": "user", "content": "q"}]},
    {
        "messages": [
            {"role": "user", "content": [{"type": "text", "text": "parts"}]},
            {"role": "assistant", "content": "a"},
        ]
    },
    {"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}], "tools": []},
    {
        "messages": [
            {"role": "user", "content": "q"},
            {"role": "system", "content": "late"},
            {"role": "assistant", "content": "a"},
        ]
    },
]


def test_fast_path_equals_precise_path() -> None:
    from tunegate.server.providers.bedrock._convert import _RESERVED_NOVA, _fast_conversation

    data = b"".join(orjson.dumps(line) + b"\n" for line in _FAST_CORPUS)
    # Written again with every non-ASCII character escaped, as some exporters do.
    escaped = b"".join(json.dumps(line).encode() + b"\n" for line in _FAST_CORPUS)
    for source in (data, escaped):
        slow = _slow_conversation_lines(source)
        for raw, expected in zip(source.splitlines(), slow, strict=True):
            out: list[bytes] = []
            if _fast_conversation(raw, out):
                assert out == [expected], raw
                assert _RESERVED_NOVA.search(out[0]) is None
            else:
                assert out == []
    taken = []
    for raw in data.splitlines():
        out.clear()
        taken.append(_fast_conversation(raw, out))
    assert taken[:2] == [True, True] and not any(taken[2:])  # the rest need the precise path


def test_string_encoder_matches_orjson_for_every_code_point() -> None:
    from tunegate.server.providers.bedrock._convert import _encode_text

    for start in range(0, 0x110000, 0x800):
        text = "".join(chr(c) for c in range(start, start + 0x800) if not 0xD800 <= c <= 0xDFFF)
        assert _encode_text(text) == orjson.dumps(text)


def test_prompt_completion_fast_path_equals_precise_path() -> None:
    from tunegate.server.providers._jsonl import Refused as _Refused
    from tunegate.server.providers.bedrock._convert import (
        _fast_prompt_completion,
        _prompt_completion,
    )

    corpus = [
        *_FAST_CORPUS,
        {
            "messages": [
                {"role": "system", "content": "s1"},
                {"role": "developer", "content": 's2 "q" é'},
                {"role": "user", "content": "u\n🎉"},
                {"role": "assistant", "content": "a\u2028"},
            ]
        },
        {
            "messages": [
                {"role": "user", "content": "u"},
                {"role": "user", "content": "u2"},
                {"role": "assistant", "content": "a"},
            ]
        },
    ]
    taken = []
    for line in corpus:
        raw = json.dumps(line).encode()
        try:
            expected: bytes | None = orjson.dumps(_prompt_completion(orjson.loads(raw))) + b"\n"
        except _Refused:
            expected = None
        out: list[bytes] = []
        took = _fast_prompt_completion(raw, out)
        taken.append(took)
        assert out == ([expected] if took else []), line
    assert taken[0] and taken[-2] and not taken[-1]
