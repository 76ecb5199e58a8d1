"""Hypothesis on the codec: open-ended JSON round-trips, any depth is refused without recursing,
any integer is either kept exactly or refused naming its field, any text survives."""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st
from tunegate.openai_json import MAX_JSON_DEPTH, CodecError, from_openai, to_openai
from tunegate.v1 import fine_tuning_pb2 as ft

BASE = {"model": "gpt-4o-mini-2024-07-18", "training_file": "file-abc"}

# Struct holds numbers as doubles: integers up to 2**53 are exact there.
scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**53), max_value=2**53)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text()
)
json_values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=30,
)


def _depth(value: Any) -> int:
    if isinstance(value, dict):
        return 1 + max((_depth(v) for v in value.values()), default=0)
    if isinstance(value, list):
        return 1 + max((_depth(v) for v in value), default=0)
    return 0


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(st.text(max_size=8), json_values, max_size=5))
def test_open_ended_json_round_trips(options: dict[str, Any]) -> None:
    body = {**BASE, "portkey_options": options}
    if _depth(options) > MAX_JSON_DEPTH:
        return
    rendered = to_openai(from_openai(body, ft.CreateFineTuningJobRequest))
    assert rendered["portkey_options"] == options


@settings(max_examples=100, deadline=None)
@given(st.integers(min_value=MAX_JSON_DEPTH + 1, max_value=20_000), st.sampled_from(["list", "object"]))
def test_any_depth_past_the_limit_is_refused_naming_the_field(levels: int, shape: str) -> None:
    value: Any = {}
    for _ in range(levels - 1):
        value = [value] if shape == "list" else {"k": value}
    try:
        from_openai({**BASE, "portkey_options": {"k": value}}, ft.CreateFineTuningJobRequest)
    except CodecError as error:
        assert error.param == "portkey_options"
    else:
        raise AssertionError("accepted")


@settings(max_examples=300, deadline=None)
@given(st.integers())
def test_an_integer_is_kept_exactly_or_refused_naming_its_field(seed: int) -> None:
    try:
        message = from_openai({**BASE, "seed": seed}, ft.CreateFineTuningJobRequest)
    except CodecError as error:
        assert error.param == "seed"
        assert not -(2**63) <= seed < 2**63  # an int64 field
    else:
        assert to_openai(message)["seed"] == seed


@settings(max_examples=300, deadline=None)
@given(st.text(), st.text(min_size=1, max_size=64))
def test_any_text_survives(suffix: str, key: str) -> None:
    body = {**BASE, "suffix": suffix, "metadata": {key: suffix}}
    try:
        message = from_openai(body, ft.CreateFineTuningJobRequest)
    except CodecError as error:  # a rule of the contract (length, characters), never a crash
        assert error.param is not None
        return
    rendered = to_openai(message)
    assert rendered["suffix"] == suffix and rendered["metadata"] == {key: suffix}
