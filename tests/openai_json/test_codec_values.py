"""The codec on the values the other tests leave out: odd-but-valid JSON, oneofs, bytes,
well-known types, presence of empty messages, and the exact JSON (key order, int vs float) of
provider objects read leniently and rendered again — what the servicers and the edge do to
every job, event and list."""

from __future__ import annotations

from typing import Any

import pytest
from google.protobuf import struct_pb2
from tunegate.openai_json import CodecError, from_openai, to_openai
from tunegate.v1 import files_pb2
from tunegate.v1 import fine_tuning_pb2 as ft

# OpenAI's shape, as the shared benchmark's fake upstream answers.
OPENAI_JOB: dict[str, Any] = {
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
}


def exact(value: Any) -> Any:
    """A view of JSON in which key order and int vs float count."""
    if isinstance(value, dict):
        return [(key, exact(item)) for key, item in value.items()]
    if isinstance(value, list):
        return [exact(item) for item in value]
    return (type(value).__name__, value)


def test_a_provider_job_renders_in_declaration_order_with_doubles_as_floats() -> None:
    rendered = to_openai(from_openai(OPENAI_JOB, ft.FineTuningJob, lenient=True))
    expected = {
        "object": "fine_tuning.job",
        "id": "ftjob-1",
        "created_at": 1721764800,
        "error": {"code": "x", "message": "m", "param": None},
        "fine_tuned_model": "ft:gpt-4o-mini:org:bench:abc",
        "finished_at": 1721768400,
        "hyperparameters": {"batch_size": 1, "learning_rate_multiplier": 2.0, "n_epochs": 3},
        "model": "gpt-4o-mini-2024-07-18",
        "organization_id": "org-bench",
        "result_files": ["file-result123"],
        "status": "succeeded",
        "trained_tokens": 123456,
        "training_file": "file-abc123",
        "validation_file": None,
        "integrations": [],
        "seed": 42,
        "estimated_finish": None,
        # `batch_size` is nullable: unset, it is `null`; `learning_rate_multiplier` is omitted.
        "method": {
            "type": "supervised",
            "supervised": {"hyperparameters": {"batch_size": None, "n_epochs": "auto"}},
        },
        "metadata": {},
    }
    assert exact(rendered) == exact(expected)


def test_a_nearly_empty_job_gets_every_required_key() -> None:
    rendered = to_openai(from_openai({"id": "ftjob-2", "status": "queued"}, ft.FineTuningJob, lenient=True))
    assert exact(rendered) == exact(
        {
            "object": "fine_tuning.job",
            "id": "ftjob-2",
            "created_at": 0,
            "error": None,
            "fine_tuned_model": None,
            "finished_at": None,
            "model": "",
            "organization_id": "",
            "result_files": [],
            "status": "queued",
            "trained_tokens": None,
            "training_file": "",
            "validation_file": None,
            "integrations": None,
            "seed": 0,
            "estimated_finish": None,
            "metadata": None,
        }
    )


def test_event_data_numbers_come_back_as_json_numbers() -> None:
    event = {
        "id": "e",
        "data": {"step": 1.0, "loss": 0.25, "big": 2**60, "nested": {"list": [1, 2.5, None, "s"]}},
    }
    rendered = to_openai(from_openai(event, ft.FineTuningJobEvent, lenient=True))
    assert list(rendered) == ["object", "id", "created_at", "message", "data"]
    data = rendered["data"]
    assert exact(data["step"]) == ("int", 1) and exact(data["loss"]) == ("float", 0.25)
    assert exact(data["big"]) == ("float", float(2**60))  # past 2**53 a double is not an int
    assert data["nested"] == {"list": [1, 2.5, None, "s"]}


def test_a_list_renders_its_items_and_discriminator() -> None:
    listing = from_openai({"data": [OPENAI_JOB, OPENAI_JOB], "has_more": True}, ft.ListFineTuningJobsResponse)
    rendered = to_openai(listing)
    assert list(rendered) == ["object", "data", "has_more"] and rendered["object"] == "list"
    assert [job["id"] for job in rendered["data"]] == ["ftjob-1", "ftjob-1"]
    assert rendered["data"][0] == to_openai(from_openai(OPENAI_JOB, ft.FineTuningJob))


def test_strict_and_lenient_agree_on_a_well_typed_body() -> None:
    assert from_openai(OPENAI_JOB, ft.FineTuningJob) == from_openai(
        OPENAI_JOB, ft.FineTuningJob, lenient=True
    )


def test_odd_but_valid_values() -> None:
    request = from_openai({"seed": 7.0, "hyperparameters": {"n_epochs": 3.0}}, ft.CreateFineTuningJobRequest)
    assert request.seed == 7 and request.hyperparameters.n_epochs.value == 3
    hyper = from_openai({"learning_rate_multiplier": 2}, ft.Hyperparameters)
    assert hyper.learning_rate_multiplier.value == 2.0


def test_the_object_discriminator_may_be_echoed_but_not_changed() -> None:
    event = from_openai({"object": "fine_tuning.job.event", "id": "e"}, ft.FineTuningJobEvent)
    assert event.id == "e"
    with pytest.raises(CodecError) as info:
        from_openai({"object": "file", "id": "e"}, ft.FineTuningJobEvent)
    assert info.value.param == "object"


def test_empty_objects_are_present() -> None:
    request = from_openai({"hyperparameters": {}, "metadata": {}}, ft.CreateFineTuningJobRequest)
    assert request.HasField("hyperparameters") and request.HasField("metadata")
    assert to_openai(request)["metadata"] == {}


def test_members_of_one_oneof_cannot_be_combined() -> None:
    with pytest.raises(CodecError) as info:
        from_openai({"metadata": {"filename": "a"}, "chunk": "eA=="}, files_pb2.CreateFileRequest)
    assert info.value.param == "chunk" and "cannot be combined with 'metadata'" in info.value.message


def test_bytes_are_base64() -> None:
    assert from_openai({"chunk": "eA=="}, files_pb2.CreateFileRequest).chunk == b"x"
    assert to_openai(files_pb2.CreateFileRequest(chunk=b"x")) == {"chunk": "eA=="}
    with pytest.raises(CodecError) as info:
        from_openai({"chunk": "not base64!"}, files_pb2.CreateFileRequest)
    assert info.value.param == "chunk" and "base64" in info.value.message


def test_open_ended_fields_take_any_json() -> None:
    options = {
        "messages": [{"role": "user", "content": [{"type": "text", "text": "hi"}]}],
        "stop": ["\n"],
        "n": 3,
    }
    request = from_openai(
        {"model": "m", "training_file": "f", "provider_options": options}, ft.CreateFineTuningJobRequest
    )
    assert isinstance(request.provider_options, struct_pb2.Struct)
    assert to_openai(request)["provider_options"] == options


def test_an_open_ended_field_json_cannot_hold_names_its_param() -> None:
    with pytest.raises(CodecError) as info:
        from_openai(
            {"model": "m", "training_file": "f", "portkey_options": {1, 2}},
            ft.CreateFineTuningJobRequest,
        )
    assert info.value.param == "portkey_options"


@pytest.mark.parametrize(
    ("data", "param"),
    [
        ({"result_files": ["file-1", 2]}, "result_files[1]"),  # an item of the wrong type, after a good one
        ({"result_files": "file-1"}, "result_files"),
        ({"metadata": {"a": "b", "k": 1}}, "metadata.k"),  # a map value of the wrong type
        ({"metadata": ["k"]}, "metadata"),
        ({"status": "no-such-status"}, "status"),
        ({"created_at": "yesterday"}, "created_at"),
        ({"hyperparameters": {"n_epochs": [3]}}, "hyperparameters.n_epochs"),
        ({"integrations": [{"type": "wandb"}, 1]}, "integrations[1]"),
    ],
)
def test_lenient_reading_still_checks_types(data: dict[str, Any], param: str) -> None:
    with pytest.raises(CodecError) as info:
        from_openai(data, ft.FineTuningJob, lenient=True)
    assert info.value.param == param and f"'{param}'" in info.value.message


def test_the_first_offending_key_in_body_order_is_reported() -> None:
    with pytest.raises(CodecError) as info:
        from_openai({"seed": "x", "model": 1}, ft.CreateFineTuningJobRequest)
    assert info.value.param == "seed"
    with pytest.raises(CodecError) as info:
        from_openai({"model": 1, "seed": "x"}, ft.CreateFineTuningJobRequest)
    assert info.value.param == "model"
