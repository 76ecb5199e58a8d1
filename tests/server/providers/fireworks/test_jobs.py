"""OpenAI ⇄ Fireworks job translations (`fireworks._jobs`), checked against the `fireworks-ai`
SDK's typed models (request and answer shapes) and the `openai` package's types."""

from __future__ import annotations

from typing import Any

import pytest
from fireworks.types import DpoJob, SupervisedFineTuningJob
from openai.types.fine_tuning import FineTuningJob, FineTuningJobEvent
from pydantic import BaseModel
from tunegate.server.errors import InvalidArgument
from tunegate.server.providers.fireworks import _jobs

TAG = "ftjob-AbCdEf0123456789XyZwQrSt"
ACCOUNT = "my-acct"
NAME = f"accounts/{ACCOUNT}/supervisedFineTuningJobs/tg-abcdef0123456789xyzwqrst-1"


def assert_fits(model: type[BaseModel], value: dict[str, Any]) -> None:
    """Every key of `value` (nested) is a wire name of `model`, and the model accepts it."""
    parsed = model.model_validate(value)
    assert parsed.model_dump(by_alias=True, exclude_unset=True, mode="json") == value
    assert not parsed.model_extra


# --- names ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("model", "expected"),
    [
        ("llama-v3p1-8b-instruct", "accounts/fireworks/models/llama-v3p1-8b-instruct"),
        ("accounts/me/models/my-base", "accounts/me/models/my-base"),
        ("accounts/fireworks/models/qwen3-8b", "accounts/fireworks/models/qwen3-8b"),
    ],
)
def test_base_model_name(model: str, expected: str) -> None:
    assert _jobs.base_model_name(model) == expected


@pytest.mark.parametrize("model", ["", "accounts/me/datasets/x", "a/b", "accounts//models/x", "-x", "x y"])
def test_base_model_name_refuses(model: str) -> None:
    with pytest.raises(InvalidArgument) as caught:
        _jobs.base_model_name(model)
    assert caught.value.param == "model"


def test_job_ids_are_valid_and_distinct() -> None:
    other = "ftjob-abCdEf0123456789XyZwQrSt"  # differs in case only
    a, b = _jobs.job_id_for(TAG), _jobs.job_id_for(other)
    assert a != b and a == a.lower() and len(a) <= 63
    assert _jobs.create_query(TAG, "supervised") == {"supervisedFineTuningJobId": a}
    assert _jobs.create_query(TAG, "dpo") == {"dpoJobId": a}
    with pytest.raises(ValueError):
        _jobs.job_id_for("not-a-tag")


@pytest.mark.parametrize(
    ("suffix", "expected"),
    [
        (None, None),
        ("", None),
        ("!!!", None),
        ("Support Bot", "support-bot-abcdef0123456789xyzwqrst"),
        ("café_v2", "cafe-v2-abcdef0123456789xyzwqrst"),
        ("x" * 64, "x" * 38 + "-abcdef0123456789xyzwqrst"),
    ],
)
def test_output_model_id(suffix: str | None, expected: str | None) -> None:
    got = _jobs.output_model_id(suffix, TAG)
    assert got == expected
    if got is not None:
        assert len(got) <= 63


# --- hyperparameters -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("request_body", "method", "lr", "expected"),
    [
        ({"hyperparameters": {"n_epochs": 3, "batch_size": "auto"}}, "supervised", None, {"epochs": 3}),
        ({"hyperparameters": {"batch_size": 16}}, "supervised", None, {"batchSizeSamples": 16}),
        (
            {
                "method": {
                    "type": "supervised",
                    "supervised": {"hyperparameters": {"learning_rate_multiplier": 3}},
                }
            },
            "supervised",
            1e-4,
            {"learningRate": 0.0003},
        ),
        (
            {"method": {"type": "dpo", "dpo": {"hyperparameters": {"beta": 0.1, "n_epochs": 2}}}},
            "dpo",
            None,
            {"epochs": 2, "lossConfig": {"method": "DPO", "dpo": {"beta": 0.1}}},
        ),
        ({"method": {"type": "dpo", "dpo": {}}}, "dpo", None, {"lossConfig": {"method": "DPO"}}),
        (
            {
                "provider_options": {
                    "lora_rank": 16,
                    "max_context_length": 8192,
                    "early_stop": True,
                    "learning_rate": 2e-4,
                    "gradient_accumulation_steps": 4,
                    "learning_rate_warmup_steps": 10,
                    "batch_size_tokens": 65536,
                    "eval_auto_carveout": False,
                    "evaluation_dataset": "ignored-here",
                }
            },
            "supervised",
            None,
            {
                "loraRank": 16,
                "maxContextLength": 8192,
                "earlyStop": True,
                "learningRate": 2e-4,
                "gradientAccumulationSteps": 4,
                "learningRateWarmupSteps": 10,
                "batchSize": 65536,
                "evalAutoCarveout": False,
            },
        ),
    ],
)
def test_hyperparameters(
    request_body: dict[str, Any], method: _jobs.Method, lr: float | None, expected: dict[str, Any]
) -> None:
    fields, notes = _jobs.hyperparameters_for(request_body, method=method, base_default_lr=lr)
    assert fields == expected
    assert len(notes) == len([k for k in expected if k != "lossConfig" or "dpo" in expected[k]])


def test_multiplier_note_shows_the_conversion() -> None:
    _fields, notes = _jobs.hyperparameters_for(
        {"hyperparameters": {"learning_rate_multiplier": 2}}, method="supervised", base_default_lr=1e-4
    )
    assert notes == [
        "learning_rate_multiplier 2 × base model default learning rate 0.0001 = 0.0002 sent as learningRate"
    ]


SFT_HP = "method.supervised.hyperparameters"
DPO_HP = "method.dpo.hyperparameters"


@pytest.mark.parametrize(
    ("request_body", "method", "param"),
    [
        ({"hyperparameters": {"n_epochs": 0}}, "supervised", "hyperparameters.n_epochs"),
        ({"hyperparameters": {"n_epochs": 1.5}}, "supervised", "hyperparameters.n_epochs"),
        ({"hyperparameters": {"n_epochs": True}}, "supervised", "hyperparameters.n_epochs"),
        ({"hyperparameters": {"batch_size": 0}}, "supervised", "hyperparameters.batch_size"),
        ({"hyperparameters": {"beta": 0.1}}, "supervised", "hyperparameters.beta"),
        ({"hyperparameters": {"seed": 1}}, "supervised", "hyperparameters.seed"),
        (
            {
                "method": {
                    "type": "supervised",
                    "supervised": {"hyperparameters": {"learning_rate_multiplier": 2}},
                }
            },
            "supervised",
            f"{SFT_HP}.learning_rate_multiplier",
        ),  # no known default rate
        ({"method": {"type": "dpo", "dpo": {"hyperparameters": {"beta": 0.5}}}}, "dpo", f"{DPO_HP}.beta"),
        ({"method": {"type": "dpo", "dpo": {"hyperparameters": {"beta": 0}}}}, "dpo", f"{DPO_HP}.beta"),
        ({"provider_options": {"lora_rank": 12}}, "supervised", "provider_options.lora_rank"),
        ({"provider_options": {"lora_rank": 512}}, "supervised", "provider_options.lora_rank"),
        ({"provider_options": {"learning_rate": 0}}, "supervised", "provider_options.learning_rate"),
        ({"provider_options": {"learning_rate": "1e-4"}}, "supervised", "provider_options.learning_rate"),
        ({"provider_options": {"early_stop": "yes"}}, "supervised", "provider_options.early_stop"),
        ({"provider_options": {"early_stop": True}}, "dpo", "provider_options.early_stop"),
        (
            {"provider_options": {"max_context_length": 0}},
            "supervised",
            "provider_options.max_context_length",
        ),
        (
            {"provider_options": {"gradient_accumulation_steps": 2.5}},
            "supervised",
            "provider_options.gradient_accumulation_steps",
        ),
        ({"provider_options": {"adapter_size": 8}}, "supervised", "provider_options.adapter_size"),
    ],
)
def test_hyperparameter_errors_name_the_param(
    request_body: dict[str, Any], method: _jobs.Method, param: str
) -> None:
    with pytest.raises(InvalidArgument) as caught:
        _jobs.hyperparameters_for(request_body, method=method, base_default_lr=None)
    assert caught.value.param == param


def test_multiplier_without_default_points_at_learning_rate() -> None:
    with pytest.raises(InvalidArgument) as caught:
        _jobs.hyperparameters_for(
            {"hyperparameters": {"learning_rate_multiplier": 2}}, method="supervised", base_default_lr=None
        )
    assert "provider_options.learning_rate" in str(caught.value)


def test_rate_and_multiplier_together_are_refused() -> None:
    with pytest.raises(InvalidArgument) as caught:
        _jobs.hyperparameters_for(
            {"hyperparameters": {"learning_rate_multiplier": 2}, "provider_options": {"learning_rate": 1e-4}},
            method="supervised",
            base_default_lr=1e-4,
        )
    assert caught.value.param == "provider_options.learning_rate"


# --- create bodies -------------------------------------------------------------------------------


def test_sft_body_fits_the_sdk_model() -> None:
    request = {
        "model": "llama-v3p1-8b-instruct",
        "hyperparameters": {"n_epochs": 2, "batch_size": 8},
        "provider_options": {"lora_rank": 8, "early_stop": True},
    }
    path, body = _jobs.job_body(
        request=request,
        method="supervised",
        tag=TAG,
        dataset="train-ds",
        evaluation_dataset="valid-ds",
        account_id=ACCOUNT,
        suffix="support",
    )
    assert path == "supervisedFineTuningJobs"
    assert body == {
        "dataset": f"accounts/{ACCOUNT}/datasets/train-ds",
        "displayName": f"tunegate-{TAG}",
        "evaluationDataset": f"accounts/{ACCOUNT}/datasets/valid-ds",
        "baseModel": "accounts/fireworks/models/llama-v3p1-8b-instruct",
        "outputModel": "support-abcdef0123456789xyzwqrst",
        "epochs": 2,
        "batchSizeSamples": 8,
        "loraRank": 8,
        "earlyStop": True,
    }
    assert_fits(SupervisedFineTuningJob, body)
    assert _jobs.tag_of(body) == TAG


def test_dpo_body_fits_the_sdk_model() -> None:
    request = {
        "model": "accounts/me/models/base",
        "method": {"type": "dpo", "dpo": {"hyperparameters": {"beta": 0.2}}},
        "provider_options": {"learning_rate": 5e-5},
    }
    path, body = _jobs.job_body(
        request=request,
        method="dpo",
        tag=TAG,
        dataset=f"accounts/{ACCOUNT}/datasets/prefs",
        evaluation_dataset=None,
        account_id=ACCOUNT,
        suffix=None,
    )
    assert path == "dpoJobs"
    assert body == {
        "dataset": f"accounts/{ACCOUNT}/datasets/prefs",
        "displayName": f"tunegate-{TAG}",
        "trainingConfig": {"baseModel": "accounts/me/models/base", "learningRate": 5e-5},
        "lossConfig": {"method": "DPO", "dpo": {"beta": 0.2}},
    }
    assert_fits(DpoJob, body)


@pytest.mark.parametrize(
    ("method", "evaluation", "options", "param"),
    [
        ("dpo", "valid-ds", {}, "validation_file"),
        ("dpo", None, {"evaluation_dataset": "x"}, "provider_options.evaluation_dataset"),
        ("supervised", "valid-ds", {"evaluation_dataset": "x"}, "provider_options.evaluation_dataset"),
        ("supervised", "Bad_Id", {}, "validation_file"),
    ],
)
def test_body_errors(
    method: _jobs.Method, evaluation: str | None, options: dict[str, Any], param: str
) -> None:
    with pytest.raises(InvalidArgument) as caught:
        _jobs.job_body(
            request={"model": "m", "provider_options": options},
            method=method,
            tag=TAG,
            dataset="train-ds",
            evaluation_dataset=evaluation,
            account_id=ACCOUNT,
            suffix=None,
        )
    assert caught.value.param == param


def test_tag_of() -> None:
    assert _jobs.tag_of({"displayName": f"tunegate-{TAG}"}) == TAG
    assert _jobs.tag_of({"displayName": "my job"}) is None
    assert _jobs.tag_of({"displayName": "tunegate-ftjob-"}) is None
    assert _jobs.tag_of({}) is None


# --- reading jobs --------------------------------------------------------------------------------


def sft_job(state: str, **extra: Any) -> dict[str, Any]:
    return {
        "name": NAME,
        "dataset": f"accounts/{ACCOUNT}/datasets/train-ds",
        "evaluationDataset": f"accounts/{ACCOUNT}/datasets/valid-ds",
        "displayName": f"tunegate-{TAG}",
        "baseModel": "accounts/fireworks/models/llama-v3p1-8b-instruct",
        "outputModel": "support-abcdef0123456789xyzwqrst",
        "state": state,
        "status": {"code": "INVALID_ARGUMENT", "message": "bad data"}
        if state.endswith("FAILED")
        else {"code": "OK"},
        "createTime": "2026-12-04T10:00:00.123456789Z",
        "updateTime": "2026-12-04T11:00:00Z",
        "completedTime": "2026-12-04T12:00:00Z",
        "epochs": 3,
        "learningRate": 0.0002,
        "batchSizeSamples": 8,
        "jobProgress": {"percent": 40, "epoch": 1, "inputTokens": 12345},
        **extra,
    }


STATES = [
    ("JOB_STATE_UNSPECIFIED", "queued"),
    ("JOB_STATE_CREATING", "queued"),
    ("JOB_STATE_PENDING", "queued"),
    ("JOB_STATE_RE_QUEUEING", "queued"),
    ("JOB_STATE_IDLE", "queued"),
    ("JOB_STATE_VALIDATING", "validating_files"),
    ("JOB_STATE_CREATING_INPUT_DATASET", "validating_files"),
    ("JOB_STATE_RUNNING", "running"),
    ("JOB_STATE_WRITING_RESULTS", "running"),
    ("JOB_STATE_COMPLETED", "succeeded"),
    ("JOB_STATE_EARLY_STOPPED", "succeeded"),
    ("JOB_STATE_FAILED", "failed"),
    ("JOB_STATE_EXPIRED", "failed"),
    ("JOB_STATE_CANCELLING", "cancelled"),
    ("JOB_STATE_CANCELLED", "cancelled"),
    ("JOB_STATE_DELETING", "cancelled"),
    ("JOB_STATE_DELETING_CLEANING_UP", "cancelled"),
    ("JOB_STATE_PAUSED", "paused"),
]


def test_every_sdk_state_is_mapped() -> None:
    states = SupervisedFineTuningJob.model_fields["state"].annotation
    assert set(str(states).split("'")[1::2]) == {state for state, _ in STATES}


@pytest.mark.parametrize(("state", "status"), STATES)
def test_states(state: str, status: str) -> None:
    raw = sft_job(state)
    SupervisedFineTuningJob.model_validate(raw)
    job = _jobs.job_from_fireworks(raw, method="supervised", base_default_lr=1e-4)
    assert job["status"] == status
    assert job["id"] == NAME.rsplit("/", 1)[-1] and job["created_at"] == 1796378400
    terminal = status in ("succeeded", "failed", "cancelled")
    assert job["finished_at"] == (1796385600 if terminal else None)
    assert (job["error"] is not None) == (status == "failed")
    if status == "failed":
        expected = (
            "bad data" if state == "JOB_STATE_FAILED" else "Fireworks reports the job as JOB_STATE_EXPIRED"
        )
        assert job["error"]["message"].startswith(expected)
    assert job["fine_tuned_model"] == (
        f"accounts/{ACCOUNT}/models/support-abcdef0123456789xyzwqrst" if status == "succeeded" else None
    )
    assert job["hyperparameters"] == {"n_epochs": 3, "batch_size": 8, "learning_rate_multiplier": 2.0}
    assert job["trained_tokens"] == 12345 and job["user_provided_suffix"] == "support"
    if status != "paused":  # the openai package's status list has no `paused`
        FineTuningJob.model_validate(job)
    for event in _jobs.events_from_fireworks(raw):
        FineTuningJobEvent.model_validate(event)


def test_dpo_job_without_output_model() -> None:
    raw = {
        "name": f"accounts/{ACCOUNT}/dpoJobs/j1",
        "dataset": f"accounts/{ACCOUNT}/datasets/prefs",
        "displayName": "made elsewhere",
        "state": "JOB_STATE_COMPLETED",
        "createTime": "2026-12-04T10:00:00Z",
        "completedTime": "2026-12-04T12:00:00Z",
        "trainingConfig": {
            "baseModel": "accounts/fireworks/models/qwen3-8b",
            "epochs": 1,
            "learningRate": 1e-4,
        },
        "lossConfig": {"method": "DPO", "dpo": {"beta": 0.1}},
    }
    DpoJob.model_validate(raw)
    job = _jobs.job_from_fireworks(raw, method="dpo")
    assert job["fine_tuned_model"] == f"accounts/{ACCOUNT}/models/j1"  # Fireworks names it after the job
    assert job["model"] == "accounts/fireworks/models/qwen3-8b"
    assert job["method"] == {
        "type": "dpo",
        "dpo": {
            "hyperparameters": {
                "n_epochs": 1,
                "batch_size": "auto",
                "learning_rate_multiplier": "auto",
                "beta": 0.1,
            }
        },
    }
    assert "user_provided_suffix" not in job and job["trained_tokens"] is None
    FineTuningJob.model_validate(job)


def test_events() -> None:
    raw = sft_job("JOB_STATE_FAILED")
    events = _jobs.events_from_fireworks(raw, notes=["n_epochs 3 sent as epochs"])
    failed_at = _jobs.job_from_fireworks(raw, method="supervised")["finished_at"]
    assert [e["id"] for e in events] == [
        f"ftevent-{NAME.rsplit('/', 1)[-1]}-{what}"
        for what in (f"state-failed-{failed_at}", "progress-40-1-12345", "hyperparameters-1", "created")
    ]
    assert events == _jobs.events_from_fireworks(raw, notes=["n_epochs 3 sent as epochs"])  # deterministic
    assert events[0]["level"] == "error" and "bad data" in events[0]["message"]
    assert events[1]["data"] == {"percent": 40, "epoch": 1, "inputTokens": 12345}
    assert all("Fireworks" in e["message"] or "Gateway" in e["message"] for e in events)
    assert [e["created_at"] for e in events] == sorted((e["created_at"] for e in events), reverse=True)
    for event in events:
        FineTuningJobEvent.model_validate(event)


def test_pages() -> None:
    assert _jobs.list_params(10, None) == {"pageSize": 10}
    assert _jobs.list_params(500, "t") == {"pageSize": 200, "pageToken": "t"}
    answer = {"supervisedFineTuningJobs": [{"name": NAME, "dataset": "d"}], "nextPageToken": "n"}
    assert _jobs.page_from_fireworks(answer, "supervised") == ([{"name": NAME, "dataset": "d"}], "n")
    assert _jobs.page_from_fireworks({"dpoJobs": [], "nextPageToken": ""}, "dpo") == ([], None)
    assert _jobs.page_from_fireworks({}, "dpo") == ([], None)
