"""tunegate.openai_json: proto ⇄ OpenAI JSON, checked against the spec's own examples and schemas."""

from __future__ import annotations

import json
from typing import Any

import pytest
from google.protobuf import struct_pb2
from google.protobuf.message import Message
from multidict import MultiDict
from tunegate.openai_json import CodecError, apply_form_field, from_openai, from_query, to_openai
from tunegate.v1 import files_pb2, fine_tuning_pb2, uploads_pb2

from tests.openapi_schema import component, example, path_example, validate

ft = fine_tuning_pb2


def parse(data: dict[str, Any], cls: type[Message]) -> Message:
    return from_openai(data, cls)


def assert_renders_like(rendered: Any, expected: Any, where: str = "$") -> None:
    """``rendered`` equals OpenAI's example, except that an example ``null`` may be omitted."""
    if isinstance(expected, dict):
        assert isinstance(rendered, dict), where
        for key, value in expected.items():
            if value is None:
                assert rendered.get(key) is None, f"{where}.{key}"
            else:
                assert key in rendered, f"{where}.{key}"
                assert_renders_like(rendered[key], value, f"{where}.{key}")
    elif isinstance(expected, list):
        assert isinstance(rendered, list) and len(rendered) == len(expected), where
        for index, (got, want) in enumerate(zip(rendered, expected, strict=True)):
            assert_renders_like(got, want, f"{where}[{index}]")
    else:
        assert rendered == expected, where


def with_status(file: dict[str, Any]) -> dict[str, Any]:
    """OpenAI's file examples omit `status`, which their own schema requires."""
    return {**file, "status": file.get("status", "processed")}


# --- Round trip of the spec's own examples: parse with from_openai, render with to_openai ---------

SPEC_EXAMPLES = [
    ("OpenAIFile", files_pb2.File, lambda: with_status(example("OpenAIFile"))),
    ("OpenAIFile", files_pb2.File, lambda: with_status(path_example("/files/{file_id}", "get"))),
    (
        "ListFilesResponse",
        files_pb2.ListFilesResponse,
        lambda: {**(page := path_example("/files", "get")), "data": [with_status(f) for f in page["data"]]},
    ),
    ("DeleteFileResponse", files_pb2.DeleteFileResponse, lambda: path_example("/files/{file_id}", "delete")),
    ("FineTuningJob", ft.FineTuningJob, lambda: example("FineTuningJob")),
    ("FineTuningJob", ft.FineTuningJob, lambda: path_example("/fine_tuning/jobs", "post")),
    (
        "FineTuningJob",
        ft.FineTuningJob,
        lambda: path_example("/fine_tuning/jobs/{fine_tuning_job_id}", "get"),
    ),
    ("FineTuningJobEvent", ft.FineTuningJobEvent, lambda: example("FineTuningJobEvent")),
    (
        "ListFineTuningJobEventsResponse",
        ft.ListFineTuningEventsResponse,
        lambda: path_example("/fine_tuning/jobs/{fine_tuning_job_id}/events", "get"),
    ),
    ("FineTuningJobCheckpoint", ft.FineTuningJobCheckpoint, lambda: example("FineTuningJobCheckpoint")),
    (
        "ListFineTuningJobCheckpointsResponse",
        ft.ListFineTuningCheckpointsResponse,
        lambda: path_example("/fine_tuning/jobs/{fine_tuning_job_id}/checkpoints", "get"),
    ),
    ("Upload", uploads_pb2.Upload, lambda: {**(up := example("Upload")), "file": with_status(up["file"])}),
    ("UploadPart", uploads_pb2.UploadPart, lambda: example("UploadPart")),
]


@pytest.mark.parametrize(("schema", "cls", "load"), SPEC_EXAMPLES, ids=[s[0] for s in SPEC_EXAMPLES])
def test_spec_example_round_trips(schema: str, cls: type[Message], load: Any) -> None:
    spec_json = load()
    rendered = to_openai(parse(spec_json, cls))
    assert_renders_like(rendered, spec_json)
    # Fields the example leaves out still render, and the result is what the schema demands.
    if schema in ("FineTuningJob",):
        rendered.setdefault("hyperparameters", {})  # required by the schema, absent from two examples
    validate(schema, rendered)
    assert next(iter(rendered)) == "object" or "object" not in rendered
    assert set(rendered) <= set(component(schema)["properties"])


# --- Hand-built messages: the null / omit / auto / number rules --------------------------------


def running_job() -> ft.FineTuningJob:
    job = ft.FineTuningJob(
        id="ftjob-abc123",
        created_at=1721764800,
        model="gpt-4o-mini-2024-07-18",
        organization_id="org-123",
        status=ft.JOB_STATUS_RUNNING,
        training_file="file-abc123",
        seed=42,
    )
    job.hyperparameters.n_epochs.auto = True
    job.hyperparameters.learning_rate_multiplier.auto = True
    job.method.type = ft.METHOD_TYPE_SUPERVISED
    job.method.supervised.hyperparameters.n_epochs.value = 3
    job.method.supervised.hyperparameters.batch_size.auto = True
    job.method.supervised.hyperparameters.learning_rate_multiplier.value = 1.8
    return job


def test_job_nulls_auto_and_numbers() -> None:
    body = to_openai(running_job())
    assert list(body)[:2] == ["object", "id"]
    assert body["object"] == "fine_tuning.job"
    for key in ("error", "fine_tuned_model", "finished_at", "trained_tokens", "validation_file"):
        assert key in body and body[key] is None, key
    assert body["integrations"] is None and body["metadata"] is None and body["estimated_finish"] is None
    assert body["hyperparameters"] == {
        "batch_size": None,
        "learning_rate_multiplier": "auto",
        "n_epochs": "auto",
    }
    assert body["method"] == {
        "type": "supervised",
        "supervised": {
            "hyperparameters": {"batch_size": "auto", "learning_rate_multiplier": 1.8, "n_epochs": 3}
        },
    }
    assert body["result_files"] == [] and body["seed"] == 42
    assert "user_provided_suffix" not in body  # optional, not nullable: omitted
    validate("FineTuningJob", body)


def test_job_failed_with_error_metadata_integrations_dpo() -> None:
    job = running_job()
    job.status = ft.JOB_STATUS_FAILED
    job.error.code = "invalid_training_file"
    job.error.message = "Bad line 3"
    job.finished_at = 1721764900
    job.trained_tokens = 0
    job.metadata.values["team"] = "search"
    job.integrations.items.add(type=ft.INTEGRATION_TYPE_WANDB).wandb.project = "p"
    job.method.Clear()
    job.method.type = ft.METHOD_TYPE_DPO
    job.method.dpo.hyperparameters.beta.value = 0.1
    job.method.dpo.hyperparameters.n_epochs.auto = True
    body = to_openai(job)
    assert body["error"] == {"code": "invalid_training_file", "message": "Bad line 3", "param": None}
    assert body["finished_at"] == 1721764900 and body["trained_tokens"] == 0  # presence: 0 is not null
    assert body["metadata"] == {"team": "search"}
    assert body["integrations"] == [
        {"type": "wandb", "wandb": {"project": "p", "name": None, "entity": None, "tags": []}}
    ]
    assert body["method"] == {"type": "dpo", "dpo": {"hyperparameters": {"beta": 0.1, "n_epochs": "auto"}}}
    validate("FineTuningJob", body)


def test_metadata_set_but_empty_is_an_empty_map_not_null() -> None:
    job = running_job()
    job.metadata.SetInParent()
    job.integrations.SetInParent()
    body = to_openai(job)
    assert body["metadata"] == {} and body["integrations"] == []


def test_int64_is_a_json_number_and_struct_numbers_are_ints() -> None:
    event = ft.FineTuningJobEvent(
        id="ftevent-1", created_at=2**40, level=ft.EVENT_LEVEL_INFO, message="m", type=ft.EVENT_TYPE_METRICS
    )
    event.data.update({"step": 88, "train_loss": 0.25, "nested": [1, 2.5, None, {"x": 3}]})
    body = to_openai(event)
    assert json.dumps(body["created_at"]) == str(2**40)
    assert body["data"] == {"step": 88, "train_loss": 0.25, "nested": [1, 2.5, None, {"x": 3}]}
    assert isinstance(body["data"]["step"], int)
    validate("FineTuningJobEvent", body)


def test_file_enum_wire_spellings_and_omitted_optionals() -> None:
    file = files_pb2.File(
        id="file-1",
        bytes=3,
        created_at=1,
        filename="a.jsonl",
        purpose=files_pb2.FILE_PURPOSE_FINE_TUNE_RESULTS,
        status=files_pb2.FILE_STATUS_PROCESSED,
    )
    body = to_openai(file)
    assert body == {
        "object": "file",
        "id": "file-1",
        "bytes": 3,
        "created_at": 1,
        "filename": "a.jsonl",
        "purpose": "fine-tune-results",
        "status": "processed",
    }
    validate("OpenAIFile", body)


def test_unset_enum_is_omitted_and_empty_lists_render() -> None:
    body = to_openai(files_pb2.ListFilesResponse())
    assert body == {"object": "list", "data": [], "first_id": "", "last_id": "", "has_more": False}
    validate("ListFilesResponse", body)
    assert "purpose" not in to_openai(files_pb2.File(id="x"))


def test_checkpoint_list_nullable_cursors() -> None:
    empty = to_openai(ft.ListFineTuningCheckpointsResponse())
    assert empty == {"object": "list", "data": [], "first_id": None, "last_id": None, "has_more": False}
    validate("ListFineTuningJobCheckpointsResponse", empty)


def test_every_enum_value_has_a_wire_spelling() -> None:
    for module in (files_pb2, ft, uploads_pb2):
        for enum in module.DESCRIPTOR.enum_types_by_name.values():
            for value in enum.values[1:]:
                from tunegate.v1 import options_pb2

                assert value.GetOptions().Extensions[options_pb2.wire], value.full_name


# --- from_openai --------------------------------------------------------------------------------

FULL_CREATE: dict[str, Any] = {
    "model": "gpt-4o-mini-2024-07-18",
    "training_file": "file-abc123",
    "hyperparameters": {"batch_size": "auto", "learning_rate_multiplier": 0.5, "n_epochs": 4},
    "suffix": "custom",
    "validation_file": "file-def456",
    "integrations": [
        {"type": "wandb", "wandb": {"project": "proj", "name": None, "entity": "team", "tags": ["a", "b"]}}
    ],
    "seed": 7,
    "method": {
        "type": "dpo",
        "dpo": {
            "hyperparameters": {
                "beta": "auto",
                "batch_size": 8,
                "learning_rate_multiplier": "auto",
                "n_epochs": 2,
            }
        },
    },
    "metadata": {"team": "search", "ticket": "T-1"},
    "portkey_options": {"provider": "openai", "retry": {"attempts": 3}},
    "provider_options": {},
}


def test_full_create_request() -> None:
    req = from_openai(FULL_CREATE, ft.CreateFineTuningJobRequest, headers={"idempotency-key": "idem-1"})
    assert req.model == "gpt-4o-mini-2024-07-18"
    assert req.hyperparameters.batch_size.auto and req.hyperparameters.n_epochs.value == 4
    assert req.hyperparameters.learning_rate_multiplier.value == 0.5
    assert req.HasField("suffix") and req.seed == 7
    assert req.integrations.items[0].wandb.entity == "team"
    assert not req.integrations.items[0].wandb.HasField("name")
    assert req.method.type == ft.METHOD_TYPE_DPO and req.method.dpo.hyperparameters.beta.auto
    assert dict(req.metadata.values) == {"team": "search", "ticket": "T-1"}
    assert req.request_id == "idem-1"
    assert req.HasField("provider_options")
    rendered = to_openai(req)
    for key in FULL_CREATE:
        assert rendered[key] == FULL_CREATE[key], key


def test_method_supervised_and_body_request_id_beats_header() -> None:
    body = {
        "model": "m",
        "training_file": "f",
        "method": {"type": "supervised", "supervised": {"hyperparameters": {"n_epochs": 3}}},
        "request_id": "from-body",
    }
    req = from_openai(body, ft.CreateFineTuningJobRequest, headers={"idempotency-key": "from-header"})
    assert req.method.supervised.hyperparameters.n_epochs.value == 3
    assert req.request_id == "from-body"


def test_null_leaves_fields_unset() -> None:
    req = from_openai(
        {"model": "m", "metadata": None, "seed": None, "integrations": None}, ft.CreateFineTuningJobRequest
    )
    assert not req.HasField("metadata") and not req.HasField("seed") and not req.HasField("integrations")


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"model": "m", "colour": "blue"}, "colour"),
        (
            {"method": {"type": "dpo", "dpo": {"hyperparameters": {"gamma": 1}}}},
            "method.dpo.hyperparameters.gamma",
        ),
        ({"model": 3}, "model"),
        ({"seed": "7"}, "seed"),
        ({"seed": 1.5}, "seed"),
        ({"seed": True}, "seed"),
        ({"seed": 2**64}, "seed"),
        (
            {"method": {"supervised": {"hyperparameters": {"n_epochs": "four"}}}},
            "method.supervised.hyperparameters.n_epochs",
        ),
        (
            {"method": {"supervised": {"hyperparameters": {"n_epochs": 2.5}}}},
            "method.supervised.hyperparameters.n_epochs",
        ),
        ({"hyperparameters": {"learning_rate_multiplier": [1]}}, "hyperparameters.learning_rate_multiplier"),
        ({"method": {"type": "rlhf"}}, "method.type"),
        ({"metadata": ["a"]}, "metadata"),
        ({"metadata": {"k": 1}}, "metadata.k"),
        ({"integrations": {"type": "wandb"}}, "integrations"),
        ({"integrations": [{"type": "wandb", "wandb": {"project": 1}}]}, "integrations[0].wandb.project"),
        ({"integrations": [{"type": "slack"}]}, "integrations[0].type"),
        ({"portkey_options": "x"}, "portkey_options"),
        ({"hyperparameters": 5}, "hyperparameters"),
    ],
)
def test_bad_bodies_name_the_param(body: dict[str, Any], param: str) -> None:
    with pytest.raises(CodecError) as info:
        from_openai(body, ft.CreateFineTuningJobRequest)
    assert info.value.param == param
    assert param in info.value.message


def test_unknown_key_message_is_openais() -> None:
    with pytest.raises(CodecError, match="Unrecognized request argument supplied: colour"):
        from_openai({"colour": 1}, ft.CreateFineTuningJobRequest)


def test_body_must_be_an_object() -> None:
    with pytest.raises(CodecError) as info:
        from_openai([1], ft.CreateFineTuningJobRequest)
    assert info.value.param is None


def test_path_params_override_body() -> None:
    req = from_openai(
        {"fine_tuning_job_id": "body"},
        ft.CancelFineTuningJobRequest,
        path_params={"fine_tuning_job_id": "path"},
    )
    assert req.fine_tuning_job_id == "path"


def test_complete_upload_repeated_strings() -> None:
    req = from_openai({"part_ids": ["p1", "p2"], "md5": "abc"}, uploads_pb2.CompleteUploadRequest)
    assert list(req.part_ids) == ["p1", "p2"]


def test_struct_any_json() -> None:
    grader = {"type": "string_check", "name": "g", "input": "{{x}}", "reference": "y", "operation": "eq"}
    req = from_openai(
        {"method": {"type": "reinforcement", "reinforcement": {"grader": grader}}},
        ft.CreateFineTuningJobRequest,
    )
    assert isinstance(req.method.reinforcement.grader, struct_pb2.Struct)
    assert to_openai(req)["method"]["reinforcement"]["grader"] == grader


# --- from_query ----------------------------------------------------------------------------------


def test_query_scalars_and_metadata_filter() -> None:
    query = MultiDict([("limit", "20"), ("after", "ftjob-1"), ("metadata[team]", "search"), ("junk", "1")])
    req = from_query(query, ft.ListFineTuningJobsRequest)
    assert req.limit == 20 and req.HasField("limit") and req.after == "ftjob-1"
    assert dict(req.metadata.values) == {"team": "search"}


def test_query_metadata_null_is_present_but_empty() -> None:
    req = from_query(MultiDict([("metadata", "null")]), ft.ListFineTuningJobsRequest)
    assert req.HasField("metadata") and not req.metadata.values
    assert not from_query(MultiDict(), ft.ListFineTuningJobsRequest).HasField("metadata")


def test_query_enums_and_path_params() -> None:
    req = from_query(MultiDict([("purpose", "fine-tune"), ("order", "asc")]), files_pb2.ListFilesRequest)
    assert req.purpose == files_pb2.FILE_PURPOSE_FINE_TUNE and req.order == files_pb2.LIST_ORDER_ASC
    events = from_query(
        MultiDict([("limit", "5"), ("fine_tuning_job_id", "evil")]),
        ft.ListFineTuningEventsRequest,
        path_params={"fine_tuning_job_id": "ftjob-1"},
    )
    assert events.fine_tuning_job_id == "ftjob-1" and events.limit == 5


@pytest.mark.parametrize(
    ("query", "param"),
    [
        ([("limit", "ten")], "limit"),
        ([("limit", "99999999999")], "limit"),
        ([("purpose", "weights")], "purpose"),
    ],
)
def test_query_bad_values_name_the_param(query: list[tuple[str, str]], param: str) -> None:
    cls = files_pb2.ListFilesRequest
    with pytest.raises(CodecError) as info:
        from_query(MultiDict(query), cls)
    assert info.value.param == param


# --- multipart text fields -----------------------------------------------------------------------


def test_form_fields_into_nested_metadata() -> None:
    meta = files_pb2.FileMetadata()
    apply_form_field(meta, "purpose", "fine-tune")
    apply_form_field(meta, "expires_after[anchor]", "created_at")
    apply_form_field(meta, "expires_after[seconds]", "3600")
    assert meta.purpose == files_pb2.FILE_PURPOSE_FINE_TUNE
    assert meta.expires_after.anchor == files_pb2.EXPIRES_AFTER_ANCHOR_CREATED_AT
    assert meta.expires_after.seconds == 3600


@pytest.mark.parametrize(
    ("name", "value", "param"),
    [
        ("colour", "blue", "colour"),
        ("expires_after[minutes]", "5", "expires_after[minutes]"),
        ("expires_after[seconds]", "soon", "expires_after[seconds]"),
        ("purpose", "weights", "purpose"),
        ("purpose[x]", "y", "purpose[x]"),
        ("bad name", "v", "bad name"),
    ],
)
def test_form_field_errors(name: str, value: str, param: str) -> None:
    with pytest.raises(CodecError) as info:
        apply_form_field(files_pb2.FileMetadata(), name, value)
    assert info.value.param == param
