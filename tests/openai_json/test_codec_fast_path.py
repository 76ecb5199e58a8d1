"""`from_openai`'s fast path (constructor arguments, `_build`) builds exactly what the general
parser builds, and hands everything unusual to it."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, cast

import pytest
from google.protobuf.message import Message
from tunegate.openai_json import CodecError, from_openai
from tunegate.openai_json import _codec as codec
from tunegate.openai_json._build import Unusual, builder
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
