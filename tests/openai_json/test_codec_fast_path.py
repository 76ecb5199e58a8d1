"""The codec's fast paths (`_build`): `from_openai` through constructor arguments builds exactly
what the general parser builds, `rendered` is exactly what rendering the parsed message gives,
and both hand everything unusual to the general path."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, cast

import pytest
from google.protobuf.message import Message
from tunegate.openai_json import CodecError, from_openai, rendered, to_openai
from tunegate.openai_json import _codec as codec
from tunegate.openai_json._build import Unusual, builder, json_builder
from tunegate.openai_json._options import descriptor_of
from tunegate.v1 import files_pb2, fine_tuning_pb2, uploads_pb2

from tests.openai_json.test_codec import SPEC_EXAMPLES
from tests.openai_json.test_codec_lenient import _JOB

ft = fine_tuning_pb2

REQUESTS: list[tuple[type[Message], dict[str, Any]]] = [
    (
        ft.CreateFineTuningJobRequest,
        {
            "model": "gpt-4o-mini",
            "training_file": "file-abc",
            "validation_file": None,
            "suffix": "s",
            "seed": 7,
            "hyperparameters": {"n_epochs": "auto", "batch_size": 4, "learning_rate_multiplier": 0.5},
            "method": {"type": "dpo", "dpo": {"hyperparameters": {"beta": "auto", "n_epochs": 2}}},
            "integrations": [{"type": "wandb", "wandb": {"project": "p", "tags": ["a", "b"]}}],
            "metadata": {},
            "portkey_options": {"provider": "openai", "nested": {"n": 1.5}},
        },
    ),
    (ft.CreateFineTuningJobRequest, {"model": "m", "metadata": {"k": "v"}, "integrations": []}),
    (files_pb2.ListFilesResponse, {"object": "list", "data": [], "has_more": False}),
    (uploads_pb2.CompleteUploadRequest, {"part_ids": ["part_a", "part_b"], "md5": "x"}),
    (
        ft.FineTuningJobEvent,
        {"object": "fine_tuning.job.event", "id": "e", "data": {"step": 1, "a": [1, None]}},
    ),
]


def general(data: dict[str, Any], cls: type[Message], strict: bool) -> Message:
    message = cls()
    codec._parse_object(message, data, "", strict)
    return message


def cases() -> list[tuple[type[Message], dict[str, Any]]]:
    examples = [(cls, cast(Callable[[], dict[str, Any]], load)()) for _, cls, load in SPEC_EXAMPLES]
    return examples + REQUESTS


@pytest.mark.parametrize("strict", [True, False])
@pytest.mark.parametrize(("cls", "data"), cases())
def test_fast_path_takes_well_typed_bodies_and_equals_the_general_parser(
    cls: type[Message], data: dict[str, Any], strict: bool
) -> None:
    builder(descriptor_of(cls), strict)(data)  # would raise Unusual: then the fast path is not tested
    assert from_openai(data, cls, lenient=not strict) == general(data, cls, strict)


def test_lenient_provider_job_takes_the_fast_path() -> None:
    builder(descriptor_of(ft.FineTuningJob), False)(_JOB)
    assert from_openai(_JOB, ft.FineTuningJob, lenient=True) == general(_JOB, ft.FineTuningJob, False)


@pytest.mark.parametrize(
    ("data", "unusual_because"),
    [
        ({"seed": 7.0}, "an integral float for an integer"),
        ({"model": "m", "colour": "blue"}, "an unknown key (strict)"),
        ({"object": "file"}, "another object discriminator"),
        ({"method": {"type": "rlhf"}}, "an unknown enum spelling"),
        ({"metadata": {"k": 1}}, "a map value of the wrong type"),
        ({"integrations": [1]}, "a list item that is not an object"),
        ({"hyperparameters": {"n_epochs": True}}, "a boolean for a number"),
    ],
)
def test_unusual_values_go_to_the_general_parser(data: dict[str, Any], unusual_because: str) -> None:
    with pytest.raises(Unusual):
        builder(descriptor_of(ft.CreateFineTuningJobRequest), True)(data)
    try:
        expected: Message | CodecError = general(data, ft.CreateFineTuningJobRequest, True)
    except CodecError as error:
        expected = error
    try:
        got: Message | CodecError = from_openai(data, ft.CreateFineTuningJobRequest)
    except CodecError as error:
        got = error
    if isinstance(expected, CodecError):
        assert isinstance(got, CodecError) and (got.param, got.message) == (expected.param, expected.message)
    else:
        assert got == expected, unusual_because


# --- `rendered`: the JSON `to_openai(from_openai(...))` gives, without the message ---------------

PROVIDER_JOBS: list[dict[str, Any]] = [
    _JOB,
    {  # OpenAI's shape, as the benchmark's fake upstream answers
        "object": "fine_tuning.job",
        "id": "ftjob-1",
        "model": "gpt-4o-mini-2024-07-18",
        "created_at": 1721764800,
        "finished_at": 1721768400,
        "fine_tuned_model": "ft:gpt-4o-mini:org:bench:abc",
        "organization_id": "org-bench",
        "result_files": ["file-result123"],
        "status": "succeeded",
        "validation_file": None,
        "training_file": "file-abc123",
        "hyperparameters": {"n_epochs": 3, "batch_size": 1, "learning_rate_multiplier": 2},
        "trained_tokens": 123456,
        "error": {"code": "x", "message": "m", "param": None},
        "user_provided_suffix": None,
        "seed": 42,
        "estimated_finish": None,
        "integrations": [],
        "metadata": {},
        "method": {"type": "supervised", "supervised": {"hyperparameters": {"n_epochs": "auto"}}},
    },
    {"id": "ftjob-2", "status": "queued"},  # nearly everything absent
]
EVENTS: list[dict[str, Any]] = [
    {"id": "e", "created_at": 1, "level": "info", "message": "m", "type": "metrics", "data": {"a": 2**60}},
    {"id": "e", "data": {"step": 1.0, "loss": 0.25, "flag": True, "nested": {"list": [1, 2.5, None, "s"]}}},
]


# Struct fields: protobuf keeps a map, so their keys come back in no particular order.
STRUCT_FIELDS = frozenset({"data", "portkey_options", "provider_options", "grader"})


def exact(value: Any, in_struct: bool = False) -> Any:
    """A view of JSON in which key order (outside Struct fields) and int vs float count."""
    if isinstance(value, dict):
        items = [
            (k, exact(v, in_struct or (k in STRUCT_FIELDS and isinstance(v, dict)))) for k, v in value.items()
        ]
        return sorted(items, key=lambda item: item[0]) if in_struct else items
    if isinstance(value, list):
        return [exact(v, in_struct) for v in value]
    return (type(value).__name__, value)


def rendered_cases() -> list[tuple[type[Message], dict[str, Any]]]:
    jobs = [(ft.FineTuningJob, job) for job in PROVIDER_JOBS]
    events = [(ft.FineTuningJobEvent, event) for event in EVENTS]
    listing = (ft.ListFineTuningJobsResponse, {"data": PROVIDER_JOBS, "has_more": True})
    return [*cases(), *jobs, *events, listing]


@pytest.mark.parametrize(("cls", "data"), rendered_cases())
def test_rendered_json_is_exactly_the_rendered_message(cls: type[Message], data: dict[str, Any]) -> None:
    json_builder(descriptor_of(cls))(data)  # would raise Unusual: then the fast path is not tested
    got = rendered(data, cls)
    assert got.message_type is cls and to_openai(got) is got.json
    assert exact(got.json) == exact(to_openai(from_openai(data, cls, lenient=True)))


@pytest.mark.parametrize(
    "data",
    [
        {"seed": 7.0},  # odd but valid: the general path takes it
        {"status": "no-such-status"},
        {"created_at": "yesterday"},
        {"hyperparameters": {"n_epochs": [3]}},
        {"result_files": ["file-1", 2]},  # a list item of the wrong type, after a good one
        {"result_files": "file-1"},
        {"metadata": {"a": "b", "k": 1}},  # a map value of the wrong type, after a good one
        {"metadata": ["k"]},
    ],
)
def test_rendered_takes_the_general_path_for_the_unusual(data: dict[str, Any]) -> None:
    with pytest.raises(Unusual):
        json_builder(descriptor_of(ft.FineTuningJob))(data)
    try:
        expected: Any = exact(to_openai(from_openai(data, ft.FineTuningJob, lenient=True)))
    except CodecError as error:
        with pytest.raises(CodecError) as info:
            rendered(data, ft.FineTuningJob)
        assert (info.value.param, info.value.message) == (error.param, error.message)
        return
    assert exact(rendered(data, ft.FineTuningJob).json) == expected
