"""OpenAI fine-tuning JSONL → Vertex AI Gemini tuning data (supervised and preference)."""

from __future__ import annotations

import random
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from tunegate.server.errors import InvalidArgument, Unsupported
from tunegate.server.providers.vertex import _convert
from tunegate.server.providers.vertex._convert import (
    ConversionError,
    Converter,
    aconvert_chunks,
    convert_chunks,
    kind_for_method,
)

ORACLE = Path(__file__).resolve().parents[3] / "oracles" / "aiplatform-v1-content.json"


def msg(role: str, content: Any, **extra: Any) -> dict[str, Any]:
    return {"role": role, "content": content, **extra}


def line(*messages: dict[str, Any], **extra: Any) -> bytes:
    return orjson.dumps({"messages": list(messages), **extra})


def pref(messages: list[dict[str, Any]], good: Any, bad: Any, **extra: Any) -> bytes:
    return orjson.dumps(
        {
            "input": {"messages": messages},
            "preferred_output": [msg("assistant", good)] if isinstance(good, str) else good,
            "non_preferred_output": [msg("assistant", bad)] if isinstance(bad, str) else bad,
            **extra,
        }
    )


def convert(data: bytes, kind: Any = "supervised") -> bytes:
    return b"".join(convert_chunks([data], kind))


def refused(data: bytes, kind: Any = "supervised") -> ConversionError:
    with pytest.raises(ConversionError) as info:
        convert(data, kind)
    return info.value


def precise(raw: bytes, kind: Any = "supervised") -> bytes:
    """The dict-based path alone, as the fast path must match it."""
    conv = _convert._supervised if kind == "supervised" else _convert._preference
    return _convert._encode(conv(orjson.loads(raw))) + b"\n"


CALL = {"id": "c1", "type": "function", "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'}}
WEATHER: dict[str, Any] = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Weather now",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    },
}

SUPERVISED_CASES = [
    (
        line(msg("system", "s"), msg("user", "q"), msg("assistant", "a")),
        b'{"systemInstruction":{"parts":[{"text":"s"}]},"contents":[{"role":"user","parts":[{"text":"q"}]},'
        b'{"role":"model","parts":[{"text":"a"}]}]}\n',
    ),
    (
        line(msg("user", "q"), msg("assistant", "a", weight=1)),
        b'{"contents":[{"role":"user","parts":[{"text":"q"}]},{"role":"model","parts":[{"text":"a"}]}]}\n',
    ),
    (
        line(
            msg("developer", "d"),
            msg("system", [{"type": "text", "text": "s1"}, {"type": "text", "text": "s2"}]),
            msg("user", "u1"),
            msg("user", [{"type": "text", "text": "u2"}]),
            msg("assistant", "a1"),
            msg("user", "u3"),
            msg("assistant", ""),
        ),
        b'{"systemInstruction":{"parts":[{"text":"d"},{"text":"s1"},{"text":"s2"}]},"contents":['
        b'{"role":"user","parts":[{"text":"u1"},{"text":"u2"}]},{"role":"model","parts":[{"text":"a1"}]},'
        b'{"role":"user","parts":[{"text":"u3"}]},{"role":"model","parts":[{"text":""}]}]}\n',
    ),
    (
        line(
            msg("user", "weather?"),
            msg("assistant", None, tool_calls=[CALL], refusal=None),
            {"role": "tool", "tool_call_id": "c1", "content": '{"temp": 21}'},
            msg("user", "thanks"),
            msg("assistant", "21 degrees"),
            tools=[WEATHER],
            parallel_tool_calls=True,
        ),
        b'{"contents":[{"role":"user","parts":[{"text":"weather?"}]},'
        b'{"role":"model","parts":[{"functionCall":{"name":"get_weather","args":{"city":"Paris"}}}]},'
        b'{"role":"user","parts":[{"functionResponse":{"name":"get_weather",'
        b'"response":{"content":"{\\"temp\\": 21}"}}},'
        b'{"text":"thanks"}]},{"role":"model","parts":[{"text":"21 degrees"}]}],'
        b'"tools":[{"functionDeclarations":[{"name":"get_weather","description":"Weather now",'
        b'"parametersJsonSchema":{"type":"object","properties":{"city":{"type":"string"}},"required":["city"]}}]}]}\n',
    ),
]


@pytest.mark.parametrize(("src", "expected"), SUPERVISED_CASES)
def test_supervised_exact_output(src: bytes, expected: bytes) -> None:
    assert convert(src) == expected
    assert precise(src) == expected


def test_parallel_tool_calls_of_one_function_pair_in_order() -> None:
    second = {**CALL, "id": "c2", "function": {"name": "get_weather", "arguments": '{"city": "Oslo"}'}}
    ok = line(
        msg("user", "two cities"),
        msg("assistant", "", tool_calls=[CALL, second]),
        {"role": "tool", "tool_call_id": "c1", "content": "21"},
        {"role": "tool", "tool_call_id": "c2", "content": "4"},
        msg("assistant", "21 and 4"),
        tools=[WEATHER],
    )
    got = orjson.loads(convert(ok))
    assert [p["functionCall"]["args"]["city"] for p in got["contents"][1]["parts"]] == ["Paris", "Oslo"]
    results = got["contents"][2]["parts"]
    assert [p["functionResponse"]["response"]["content"] for p in results] == ["21", "4"]
    swapped = ok.replace(b'"c1","content":"21"', b'"cX"').replace(
        b'"c2","content":"4"', b'"c1","content":"21"'
    )
    swapped = swapped.replace(b'"cX"', b'"c2","content":"4"')
    assert b"out of call order" not in swapped  # sanity: the replacement changed the order
    error = refused(swapped)
    assert "tool results out of call order" in error.message


PREFERENCE_CASES = [
    (
        pref([msg("system", "s"), msg("user", "q")], "good", "bad"),
        b'{"system_instruction":{"parts":[{"text":"s"}]},"contents":[{"role":"user","parts":[{"text":"q"}]}],'
        b'"completions":[{"score":1,"completion":{"role":"model","parts":[{"text":"good"}]}},'
        b'{"score":0,"completion":{"role":"model","parts":[{"text":"bad"}]}}]}\n',
    ),
    (
        pref([msg("user", "q1"), msg("assistant", "a1"), msg("user", "q2")], "g", "b"),
        b'{"contents":[{"role":"user","parts":[{"text":"q1"}]},{"role":"model","parts":[{"text":"a1"}]},'
        b'{"role":"user","parts":[{"text":"q2"}]}],'
        b'"completions":[{"score":1,"completion":{"role":"model","parts":[{"text":"g"}]}},'
        b'{"score":0,"completion":{"role":"model","parts":[{"text":"b"}]}}]}\n',
    ),
]


@pytest.mark.parametrize(("src", "expected"), PREFERENCE_CASES)
def test_preference_exact_output(src: bytes, expected: bytes) -> None:
    assert convert(src, "preference") == expected


OK = line(msg("user", "q"), msg("assistant", "a"))
SUPERVISED_REFUSALS = [
    (
        line(
            msg("user", [{"type": "image_url", "image_url": {"url": "https://x/y.png"}}]),
            msg("assistant", "a"),
        ),
        "non-text content part 'image_url'",
    ),
    (line(msg("user", [{"type": "input_audio", "input_audio": {}}]), msg("assistant", "a")), "'input_audio'"),
    (line(msg("user", [{"type": "file", "file": {}}]), msg("assistant", "a")), "'file'"),
    (line(msg("user", "q"), msg("assistant", "a", weight=0)), "weight 0"),
    (line(msg("user", "q"), msg("assistant", "a", weight=2)), "weight other than 0 or 1"),
    (line(msg("user", "q"), msg("assistant", "a", refusal="no")), "`refusal`"),
    (line(msg("user", "q", name="bob"), msg("assistant", "a")), "`name`"),
    (line(msg("user", "q"), msg("assistant", "a", extra=1)), "unsupported message key extra"),
    (line(msg("user", "q"), msg("function", "r"), msg("assistant", "a")), "`function` role"),
    (line(msg("user", "q"), msg("assistant", None, function_call={"name": "f"})), "`function_call`"),
    (line(msg("user", "q"), msg("robot", "r"), msg("assistant", "a")), "unknown role 'robot'"),
    (line(msg("user", "q")), "no assistant message"),
    (line(msg("user", "q"), msg("assistant", "a"), msg("user", "r")), "last message must be the assistant's"),
    (line(msg("assistant", "a")), "must start with a user message"),
    (line(msg("user", "q"), msg("system", "s"), msg("assistant", "a")), "system message after"),
    (line(msg("user", "q"), msg("assistant", None)), "without content"),
    (line(msg("user", "q"), msg("assistant", "a"), extra=1), "unsupported key extra"),
    (line(msg("user", "q"), msg("assistant", "a"), functions=[]), "deprecated `functions`"),
    (line(msg("user", "q"), msg("assistant", "a"), parallel_tool_calls=False), "`parallel_tool_calls`"),
    (
        line(
            msg("user", "q"),
            msg("assistant", "a"),
            tools=[{**WEATHER, "function": {**WEATHER["function"], "strict": True}}],
        ),
        "strict",
    ),
    (
        line(msg("user", "q"), msg("assistant", "a"), tools=[{"type": "code_interpreter"}]),
        "a tool that is not",
    ),
    (
        line(
            msg("user", "q"),
            msg("assistant", None, tool_calls=[{**CALL, "function": {"name": "f", "arguments": "[1]"}}]),
        ),
        "not a JSON object",
    ),
    (
        line(
            msg("user", "q"),
            msg("assistant", None, tool_calls=[{**CALL, "function": {"name": "f", "arguments": "{"}}]),
        ),
        "not a JSON object",
    ),
    (
        line(
            msg("user", "q"), {"role": "tool", "tool_call_id": "nope", "content": "r"}, msg("assistant", "a")
        ),
        "answers no earlier tool call",
    ),
    (line(msg("user", "q"), msg("assistant", None, tool_calls=[CALL, CALL])), "same id"),
    (b'{"messages": [', "invalid JSON"),
    (b'{"messages": [{"role": "user", "content": "\xff"}]}', "not UTF-8"),
    (b"[1, 2]", "not a JSON object"),
    (b'{"messages": []}', "non-empty list"),
    (PREFERENCE_CASES[0][0], "a preference example"),
]


@pytest.mark.parametrize(("bad", "reason"), SUPERVISED_REFUSALS)
def test_supervised_refusals_with_line_numbers(bad: bytes, reason: str) -> None:
    error = refused(b"\n".join([OK, bad, OK, bad]) + b"\n")
    assert error.line_numbers() == [2, 4]
    assert reason in error.message, error.message
    assert f"{reason}" in error.message and "lines 2, 4" in error.message
    assert isinstance(error, InvalidArgument) and error.code == "invalid_training_file"
    assert error.param == "training_file"


PREF_OK = pref([msg("user", "q")], "g", "b")
PREFERENCE_REFUSALS = [
    (pref([msg("user", "q"), msg("assistant", "a")], "g", "b"), "input must end with a user message"),
    (
        pref([msg("user", "q")], [msg("assistant", "g"), msg("assistant", "h")], "b"),
        "exactly one assistant message",
    ),
    (pref([msg("user", "q")], "g", []), "`non_preferred_output` must be"),
    (pref([msg("user", "q")], [msg("user", "g")], "b"), "`preferred_output` must be"),
    (pref([msg("user", "q")], [msg("assistant", None, tool_calls=[CALL])], "b"), "text only"),
    (pref([msg("user", [{"type": "image_url", "image_url": {}}])], "g", "b"), "non-text content part"),
    (pref([msg("user", "q")], [msg("assistant", "g", weight=0)], "b"), "weight 0"),
    (
        orjson.dumps(
            {
                "input": {"messages": [msg("user", "q")], "tools": [WEATHER]},
                "preferred_output": [msg("assistant", "g")],
                "non_preferred_output": [msg("assistant", "b")],
            }
        ),
        "tools (preference tuning data is text only)",
    ),
    (
        orjson.dumps(
            {"input": {"messages": [msg("user", "q")]}, "preferred_output": [msg("assistant", "g")]}
        ),
        "missing key non_preferred_output",
    ),
    (pref([msg("user", "q")], "g", "b", extra=1), "unsupported key extra"),
    (OK, "a supervised chat example"),
]


@pytest.mark.parametrize(("bad", "reason"), PREFERENCE_REFUSALS)
def test_preference_refusals_with_line_numbers(bad: bytes, reason: str) -> None:
    error = refused(b"\n".join([PREF_OK, bad, bad, PREF_OK]), "preference")
    assert error.line_numbers() == [2, 3]
    assert reason in error.message and "lines 2-3" in error.message, error.message


def test_many_reasons_are_listed_in_line_order() -> None:
    data = b"\n".join([b"nope", OK, line(msg("user", "q")), b"nope", line(msg("user", "q"))])
    error = refused(data)
    assert error.problems == {"invalid JSON": [1, 4], "no assistant message": [3, 5]}
    assert error.message.startswith("4 lines cannot be converted to Vertex AI Gemini supervised tuning data")
    assert "invalid JSON: lines 1, 4; no assistant message: lines 3, 5" in error.message


def test_kinds_for_methods() -> None:
    assert kind_for_method("supervised") == "supervised" and kind_for_method("dpo") == "preference"
    with pytest.raises(Unsupported) as info:
        kind_for_method("reinforcement")
    assert info.value.param == "method.type"


TRICKY = [
    "héllo wörld — 日本語 🎉",
    'quote " backslash \\ slash / tab \t newline \n cr \r nul \x00 bell \x07 del \x7f',
    "\u2028\u2029 separators, \ufeff bom",
    '"}]}]}\n{"contents":[{"role":"user"',
    "",
]


def test_unicode_and_escapes_survive() -> None:
    lines = [line(msg("system", t), msg("user", t + "?"), msg("assistant", t + "!")) for t in TRICKY]
    # Escapes as Python's json.dumps writes them (ensure_ascii), `\/` and a surrogate pair.
    lines.append(
        rb'{"messages":[{"role":"user","content":"caf\u00e9 \ud83c\udf89 \/ \u2028"},'
        rb'{"role":"assistant","content":"\"x\"\b\f"}]}'
    )
    out = convert(b"\n".join(lines) + b"\n").split(b"\n")
    assert out[-1] == b"" and len(out) == len(lines) + 1
    for src, dst in zip(lines, out, strict=False):
        texts = [m["content"] for m in orjson.loads(src)["messages"]]
        got = orjson.loads(dst)
        system = [p["text"] for p in got.get("systemInstruction", {"parts": []})["parts"]]
        assert system + [p["text"] for c in got["contents"] for p in c["parts"]] == texts
        assert precise(src) == dst + b"\n"
    # Unicode is written as UTF-8, never as \u escapes; \u2028 stays raw.
    assert "café 🎉 / \u2028".encode() in out[-2]


def _corpus() -> bytes:
    rng = random.Random(7)
    roles = ["system", "developer", "user", "assistant", "tool", "robot"]
    lines = []
    for _ in range(400):
        messages = []
        for _ in range(rng.randint(0, 6)):
            role = rng.choice(roles)
            content: Any = rng.choice([*TRICKY, "plain", None, [{"type": "text", "text": "p"}], 3])
            m = msg(role, content)
            if rng.random() < 0.1:
                m["weight"] = rng.choice([0, 1, 1.0, True])
            if rng.random() < 0.05:
                m["name"] = "n"
            messages.append(m)
        lines.append(orjson.dumps({"messages": messages}))
    for _ in range(200):  # plausible shapes: system?, then user / assistant runs ending with assistant
        shaped = [msg(rng.choice(["system", "developer"]), rng.choice(TRICKY))] * rng.randint(0, 2)
        for _ in range(rng.randint(1, 3)):
            shaped += [msg("user", rng.choice(TRICKY))] * rng.randint(1, 2)
            shaped += [msg("assistant", rng.choice(TRICKY), **({"weight": 1} if rng.random() < 0.3 else {}))]
        lines.append(orjson.dumps({"messages": shaped}))
    lines += [OK, b"", b"  ", b"{", line(msg("user", "q"), msg("assistant", "a")) + b"\r"]
    return b"\n".join(lines)


def test_fast_path_equals_precise_path_on_a_varied_corpus() -> None:
    fast_hits = 0
    for raw in _corpus().split(b"\n"):
        out: list[bytes] = []
        try:
            chat = _convert._decode_text_chat(raw)
        except Exception:
            continue
        if not _convert._fast_supervised(chat, out):
            continue
        fast_hits += 1
        assert b"".join(out) == precise(raw), raw
    assert fast_hits > 200


def test_conversion_checks_every_corpus_line_the_same_whatever_the_chunks() -> None:
    data = _corpus()
    with pytest.raises(ConversionError) as whole:
        convert(data)
    rng = random.Random(3)
    for _ in range(20):
        cuts = sorted(rng.sample(range(len(data)), 12))
        chunks = [data[a:b] for a, b in zip([0, *cuts], [*cuts, len(data)], strict=True)]
        with pytest.raises(ConversionError) as split:
            b"".join(convert_chunks(chunks, "supervised"))
        assert split.value.problems == whole.value.problems


@pytest.mark.parametrize("kind", ["supervised", "preference"])
def test_any_chunk_boundary_gives_identical_output(kind: Any) -> None:
    if kind == "supervised":
        rows = [
            SUPERVISED_CASES[0][0],
            SUPERVISED_CASES[3][0],
            line(msg("user", TRICKY[0]), msg("assistant", TRICKY[1])),
        ]
    else:
        rows = [PREFERENCE_CASES[0][0], pref([msg("user", TRICKY[0])], TRICKY[1], TRICKY[2])]
    data = b"\n".join([rows[0], b"", *rows[1:-1], b"   ", rows[-1]])  # blank lines, no final newline
    whole = convert(data, kind)
    assert whole.count(b"\n") == len(rows)
    for cut in range(len(data) + 1):
        assert b"".join(convert_chunks([data[:cut], data[cut:]], kind)) == whole, cut
    assert b"".join(convert_chunks([data[i : i + 1] for i in range(len(data))], kind)) == whole
    rng = random.Random(5)
    for _ in range(50):
        cuts = sorted(rng.sample(range(len(data)), 5))
        chunks = [data[a:b] for a, b in zip([0, *cuts], [*cuts, len(data)], strict=True)]
        assert b"".join(convert_chunks(chunks, kind)) == whole


def test_blank_lines_are_skipped_but_counted_and_crlf_accepted() -> None:
    data = b"\r\n".join([b"", OK, b"  \t", OK, b"not json", b""])
    assert refused(data).line_numbers() == [5]
    expected = precise(OK)
    assert convert(b"\n\n" + OK + b"\r\n\n") == expected
    assert convert(OK + b"\r\n" + OK + b"\r\n") == expected * 2


def test_no_output_after_a_refusal_but_every_line_checked() -> None:
    conv = Converter("supervised", param="validation_file")
    assert conv.feed(OK + b"\n") == precise(OK) and conv.lines_out == 1
    assert conv.feed(b"oops\n" + OK + b"\n") == b""
    assert conv.feed(b"oops") == b"" and conv.failed
    with pytest.raises(ConversionError) as info:
        conv.finish()
    assert info.value.line_numbers() == [2, 4] and info.value.param == "validation_file"


def test_over_long_line_is_refused_and_memory_bounded() -> None:
    big = line(msg("user", "x" * 1000), msg("assistant", "a"))
    chunks = [OK + b"\n" + big[:300], big[300:700], big[700:] + b"\n" + OK + b"\n", big, b"\n" + big]
    with pytest.raises(ConversionError) as info:
        b"".join(convert_chunks(chunks, "supervised", max_line_bytes=256))
    assert info.value.line_numbers() == [2, 4, 5]
    assert "a line longer than 256 bytes" in info.value.message
    conv = Converter("supervised", max_line_bytes=256)
    conv.feed(OK + b"\n" + big[:200])
    assert len(conv._tail) <= 256


async def test_async_iterator() -> None:
    async def chunks() -> AsyncIterator[bytes]:
        yield PREF_OK[:10]
        yield PREF_OK[10:] + b"\n"

    out = [c async for c in aconvert_chunks(chunks(), "preference")]
    assert b"".join(out) == convert(PREF_OK, "preference")


def _keys_of(value: Any, schema: str, schemas: dict[str, Any], seen: list[tuple[str, str]]) -> None:
    props = schemas[schema]["properties"]
    for key, item in value.items():
        assert key in props, f"{key!r} is not a field of {schema}"
        seen.append((schema, key))
        ref = props[key].get("$ref") or props[key].get("items", {}).get("$ref")
        if ref in schemas:
            for element in item if isinstance(item, list) else [item]:
                _keys_of(element, ref, schemas, seen)


def test_output_keys_are_fields_of_the_aiplatform_schemas() -> None:
    schemas = orjson.loads(ORACLE.read_bytes())["schemas"]
    content, tool = "GoogleCloudAiplatformV1Content", "GoogleCloudAiplatformV1Tool"
    seen: list[tuple[str, str]] = []
    for src, _ in SUPERVISED_CASES:
        got = orjson.loads(convert(src))
        assert set(got) <= {"systemInstruction", "contents", "tools"}
        for turn in [got.get("systemInstruction", {}), *got["contents"]]:
            _keys_of(turn, content, schemas, seen)
        for t in got.get("tools", []):
            _keys_of(t, tool, schemas, seen)
    for src, _ in PREFERENCE_CASES:
        got = orjson.loads(convert(src, "preference"))
        for turn in [got.get("system_instruction", {}), *got["contents"]]:
            _keys_of(turn, content, schemas, seen)
        for completion in got["completions"]:
            assert set(completion) == {"score", "completion"}
            _keys_of(completion["completion"], content, schemas, seen)
    for expected in [
        ("GoogleCloudAiplatformV1Part", "functionCall"),
        ("GoogleCloudAiplatformV1FunctionCall", "args"),
        ("GoogleCloudAiplatformV1FunctionResponse", "response"),
        ("GoogleCloudAiplatformV1FunctionDeclaration", "parametersJsonSchema"),
    ]:
        assert expected in seen
