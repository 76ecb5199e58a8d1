"""OpenAI ⇄ Vertex AI tuningJobs translations (`vertex._jobs`), checked against the aiplatform
discovery document and the `openai` package's types."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
from openai.types.fine_tuning import FineTuningJob, FineTuningJobEvent
from openai.types.fine_tuning.jobs import FineTuningJobCheckpoint
from tunegate.server.errors import InvalidArgument
from tunegate.server.providers.vertex import _jobs

from tests.fakes._discovery_schema import validate

TAG = "ftjob-AbCdEf0123456789XyZwQrSt"
NAME = "projects/p-123456/locations/us-central1/tuningJobs/4242"


def test_labels_round_trip_losslessly() -> None:
    label = _jobs.tag_label(TAG)
    assert label == label.lower() and len(label) <= 63
    assert _jobs.tag_from_labels({_jobs.TAG_LABEL: label}) == TAG
    assert _jobs.tag_from_labels({}) is None
    assert _jobs.tag_from_labels({_jobs.TAG_LABEL: "Not-Valid"}) is None


@pytest.mark.parametrize(
    ("request_body", "method", "expected"),
    [
        ({"hyperparameters": {"n_epochs": 3}}, "supervised", {"epochCount": "3"}),
        (
            {
                "method": {
                    "type": "supervised",
                    "supervised": {"hyperparameters": {"n_epochs": "auto", "learning_rate_multiplier": 2}},
                }
            },
            "supervised",
            {"learningRateMultiplier": 2.0},
        ),
        ({"method": {"type": "dpo", "dpo": {"hyperparameters": {"beta": 0.1}}}}, "preference", {"beta": 0.1}),
        ({"provider_options": {"adapter_size": 8}}, "supervised", {"adapterSize": "ADAPTER_SIZE_EIGHT"}),
        (
            {"provider_options": {"adapter_size": "ADAPTER_SIZE_ONE"}},
            "supervised",
            {"adapterSize": "ADAPTER_SIZE_ONE"},
        ),
    ],
)
def test_hyperparameters(request_body: dict[str, Any], method: str, expected: dict[str, Any]) -> None:
    assert _jobs.hyperparameters_for(request_body, method=method)[0] == expected


@pytest.mark.parametrize(
    ("request_body", "param"),
    [
        ({"hyperparameters": {"batch_size": 8}}, "hyperparameters.batch_size"),
        ({"hyperparameters": {"n_epochs": 0}}, "hyperparameters.n_epochs"),
        ({"hyperparameters": {"n_epochs": 1.5}}, "hyperparameters.n_epochs"),
        (
            {
                "method": {
                    "type": "supervised",
                    "supervised": {"hyperparameters": {"learning_rate_multiplier": -1}},
                }
            },
            "method.supervised.hyperparameters.learning_rate_multiplier",
        ),
        ({"provider_options": {"adapter_size": 3}}, "provider_options.adapter_size"),
        ({"provider_options": {"adapter_size": True}}, "provider_options.adapter_size"),
    ],
)
def test_hyperparameter_errors_name_the_param(request_body: dict[str, Any], param: str) -> None:
    with pytest.raises(InvalidArgument) as caught:
        _jobs.hyperparameters_for(request_body, method="supervised")
    assert caught.value.param == param


@pytest.mark.parametrize("method", ["supervised", "preference"])
def test_create_body_fits_the_discovery_schema(method: str) -> None:
    request = {
        "hyperparameters": {"n_epochs": 2},
        "provider_options": {"adapter_size": 4, "export_last_checkpoint_only": True},
    }
    body, version = _jobs.create_body(
        request=request,
        base_model="gemini-2.5-flash",
        tag=TAG,
        training_uri="gs://b/train.jsonl",
        validation_uri="gs://b/valid.jsonl",
        method=method,
        display_name_suffix="support",
        provider_options=request["provider_options"],
    )
    assert version == "v1"
    assert validate(body, "GoogleCloudAiplatformV1TuningJob") == []
    spec = body["preferenceOptimizationSpec" if method == "preference" else "supervisedTuningSpec"]
    assert spec["exportLastCheckpointOnly"] is True and spec["hyperParameters"]["epochCount"] == "2"
    assert body["labels"] == {_jobs.TAG_LABEL: _jobs.tag_label(TAG)}


def _job(state: str, **extra: Any) -> dict[str, Any]:
    return {
        "name": NAME,
        "baseModel": "gemini-2.5-flash",
        "state": state,
        "createTime": "2026-12-04T10:00:00.123456789Z",
        "updateTime": "2026-12-04T11:00:00Z",
        "supervisedTuningSpec": {
            "trainingDatasetUri": "gs://b/t.jsonl",
            "hyperParameters": {"epochCount": "3"},
        },
        **extra,
    }


@pytest.mark.parametrize(
    ("state", "status"),
    [
        ("JOB_STATE_QUEUED", "queued"),
        ("JOB_STATE_PENDING", "queued"),
        ("JOB_STATE_RUNNING", "running"),
        ("JOB_STATE_UPDATING", "running"),
        ("JOB_STATE_SUCCEEDED", "succeeded"),
        ("JOB_STATE_PARTIALLY_SUCCEEDED", "succeeded"),
        ("JOB_STATE_FAILED", "failed"),
        ("JOB_STATE_EXPIRED", "failed"),
        ("JOB_STATE_CANCELLING", "cancelled"),
        ("JOB_STATE_CANCELLED", "cancelled"),
        ("JOB_STATE_PAUSED", "paused"),
    ],
)
def test_states(state: str, status: str) -> None:
    job = _jobs.job_from_vertex(
        _job(state, endTime="2026-12-04T12:00:00Z", error={"code": 3, "message": "bad data"})
    )
    assert job["status"] == status
    created = datetime(2026, 12, 4, 10, 0, 0, tzinfo=UTC).timestamp()
    assert job["id"] == "4242" and job["created_at"] == int(created)  # nanoseconds cut
    assert (job["finished_at"] is not None) == (status in ("succeeded", "failed", "cancelled"))
    assert (job["error"] is not None) == (status == "failed")
    if status != "paused":  # the openai package's status list has no `paused`
        FineTuningJob.model_validate(job)


def test_succeeded_job_checkpoints_and_events() -> None:
    base = "projects/p-123456/locations/us-central1"
    raw = _job(
        "JOB_STATE_SUCCEEDED",
        startTime="2026-12-04T10:05:00Z",
        endTime="2026-12-04T12:00:00Z",
        tunedModel={
            "model": f"{base}/models/77@1",
            "endpoint": f"{base}/endpoints/88",
            "checkpoints": [
                {"checkpointId": "1", "epoch": "1", "step": "10", "endpoint": f"{base}/endpoints/81"},
                {"checkpointId": "2", "epoch": "2", "step": "20"},
            ],
        },
        tuningDataStats={
            "supervisedTuningDataStats": {"totalBillableTokenCount": "999", "tuningDatasetExampleCount": "5"}
        },
    )
    assert validate(raw, "GoogleCloudAiplatformV1TuningJob", direction="response") == []
    job = _jobs.job_from_vertex(raw)
    assert job["fine_tuned_model"] == f"{base}/endpoints/88" and job["trained_tokens"] == 999
    assert job["hyperparameters"]["n_epochs"] == 3
    checkpoints = _jobs.checkpoints_from_vertex(raw)
    assert [c["step_number"] for c in checkpoints] == [20, 10]
    assert checkpoints[0]["fine_tuned_model_checkpoint"] == f"{base}/models/77@2"
    for checkpoint in checkpoints:
        FineTuningJobCheckpoint.model_validate(checkpoint)
    events = _jobs.events_from_vertex(raw)
    assert [e["created_at"] for e in events] == sorted((e["created_at"] for e in events), reverse=True)
    assert any("tuningDataStats" in e["message"] for e in events)
    for event in events:
        FineTuningJobEvent.model_validate(event)


def test_pages() -> None:
    assert _jobs.list_params(10, None) == {"pageSize": 10}
    assert _jobs.list_params(10, "t") == {"pageSize": 10, "pageToken": "t"}
    assert _jobs.page_from_vertex({"tuningJobs": [{"name": NAME}], "nextPageToken": "n"}) == (
        [{"name": NAME}],
        "n",
    )
    assert _jobs.page_from_vertex({}) == ([], None)
