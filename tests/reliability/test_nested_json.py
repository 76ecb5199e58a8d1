"""Open-ended JSON nested too deeply is a 400 naming the field, over REST and over gRPC — never a
500, never a traceback in the log (the codec, protobuf's Struct and its decoder all recurse)."""

from __future__ import annotations

import logging

import grpc
import httpx
import pytest
from google.protobuf import struct_pb2
from tunegate.openai_json import (
    MAX_JSON_DEPTH,
    CodecError,
    from_openai,
    nested_deeper_than,
    too_deep_field,
    too_deep_param,
)
from tunegate.v1 import fine_tuning_pb2, fine_tuning_pb2_grpc

from tests.conftest import Gateway


def nested_text(levels: int) -> str:
    """`{"a": {"a": … {}}}` with `levels` objects, written as text: json.dumps recurses too."""
    return '{"a":' * (levels - 1) + "{}" + "}" * (levels - 1)


def nested(levels: int) -> dict[str, object]:
    value: dict[str, object] = {}
    for _ in range(levels - 1):
        value = {"a": value}
    return value


def create_body(field: str, inner: str) -> str:
    if field == "method.reinforcement.grader":
        extra = f'"method": {{"type": "reinforcement", "reinforcement": {{"grader": {inner}}}}}'
    else:
        extra = f'"{field}": {inner}'
    return f'{{"model": "tunegate-tiny", "training_file": "file-nope", {extra}}}'


FIELDS = ["portkey_options", "provider_options", "method.reinforcement.grader"]


@pytest.mark.parametrize("levels", [MAX_JSON_DEPTH + 1, 200, 1000])
@pytest.mark.parametrize("field", FIELDS)
def test_a_create_nested_too_deep_is_a_400_naming_the_field(
    gateway: Gateway, api_key: str, field: str, levels: int, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    answer = httpx.post(
        gateway.base_url + "/fine_tuning/jobs",
        content=create_body(field, nested_text(levels)),
        headers={"Authorization": f"Bearer {api_key}", "Content-Type": "application/json"},
    )
    assert answer.status_code == 400, answer.text
    error = answer.json()["error"]
    assert (error["type"], error["param"]) == ("invalid_request_error", field)
    assert f"at most {MAX_JSON_DEPTH} levels" in error["message"]
    assert "Traceback" not in caplog.text and "RecursionError" not in caplog.text


@pytest.mark.parametrize("field", FIELDS)
def test_the_deepest_allowed_value_still_reaches_the_job_checks(
    gateway: Gateway, api_key: str, field: str
) -> None:
    answer = httpx.post(
        gateway.base_url + "/fine_tuning/jobs",
        content=create_body(field, nested_text(MAX_JSON_DEPTH)),
        headers={"Authorization": f"Bearer {api_key}", "Content-Type": "application/json"},
    )
    assert answer.status_code in (400, 404), answer.text
    assert "levels deep" not in answer.json()["error"]["message"]  # refused for its file, not its depth


def test_a_body_past_the_json_readers_own_limit_is_a_400(gateway: Gateway, api_key: str) -> None:
    answer = httpx.post(
        gateway.base_url + "/fine_tuning/jobs",
        content=create_body("portkey_options", nested_text(5000)),
        headers={"Authorization": f"Bearer {api_key}", "Content-Type": "application/json"},
    )
    assert answer.status_code == 400, answer.text
    assert answer.json()["error"]["type"] == "invalid_request_error"


def test_chat_content_nested_too_deep_is_a_400(gateway: Gateway, api_key: str) -> None:
    body = '{"model": "tunegate-tiny", "messages": [{"role": "user", "content": [' + nested_text(300) + "]}]}"
    answer = httpx.post(
        gateway.base_url + "/chat/completions",
        content=body,
        headers={"Authorization": f"Bearer {api_key}", "Content-Type": "application/json"},
    )
    assert answer.status_code == 400, answer.text
    assert answer.json()["error"]["param"].startswith("messages[0].content")


def _deep_struct(levels: int) -> struct_pb2.Struct:
    struct = struct_pb2.Struct()
    inner = struct
    for _ in range(levels - 1):
        inner = inner.fields["a"].struct_value
    inner.Clear()
    return struct


@pytest.mark.parametrize("levels", [MAX_JSON_DEPTH + 1, 60, 400])
async def test_grpc_refuses_a_struct_nested_too_deep(gateway: Gateway, api_key: str, levels: int) -> None:
    """33 levels decode but are over the limit; 60 and 400 are past protobuf's own decoding
    limit: both are INVALID_ARGUMENT, not grpc's INTERNAL."""
    request = fine_tuning_pb2.CreateFineTuningJobRequest(model="tunegate-tiny", training_file="file-nope")
    request.portkey_options.CopyFrom(_deep_struct(levels))
    async with grpc.aio.insecure_channel(gateway.grpc_target) as channel:
        stub = fine_tuning_pb2_grpc.FineTuningStub(channel)
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await stub.CreateFineTuningJob(request, metadata=[("authorization", f"Bearer {api_key}")])
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT, raised.value.details()


def test_the_codec_refuses_depth_without_recursing() -> None:
    assert not nested_deeper_than(nested(MAX_JSON_DEPTH), MAX_JSON_DEPTH)
    assert nested_deeper_than(nested(MAX_JSON_DEPTH + 1), MAX_JSON_DEPTH)
    deep: list[object] = []
    for _ in range(100_000):  # far past Python's recursion limit
        deep = [deep]
    assert nested_deeper_than(deep, MAX_JSON_DEPTH)
    with pytest.raises(CodecError) as raised:
        from_openai(
            {"model": "m", "training_file": "f", "portkey_options": {"x": deep}},
            fine_tuning_pb2.CreateFineTuningJobRequest,
        )
    assert raised.value.param == "portkey_options"
    assert too_deep_param({"model": "m", "messages": [{"role": "user", "content": deep}]}) == (
        "messages[0].content"
    )


def test_the_deepest_grader_still_crosses_grpc() -> None:
    """`MAX_JSON_DEPTH` is what protobuf can decode at the deepest open-ended field."""
    request = from_openai(
        {
            "model": "m",
            "training_file": "f",
            "method": {"type": "reinforcement", "reinforcement": {"grader": nested(MAX_JSON_DEPTH)}},
        },
        fine_tuning_pb2.CreateFineTuningJobRequest,
    )
    decoded = fine_tuning_pb2.CreateFineTuningJobRequest.FromString(request.SerializeToString())
    assert decoded == request and too_deep_field(decoded) is None
    request.method.reinforcement.grader.CopyFrom(_deep_struct(MAX_JSON_DEPTH + 1))
    assert too_deep_field(request) == "method.reinforcement.grader"
