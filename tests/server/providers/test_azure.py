"""`AzureOpenAIProvider` against a scripted upstream on 127.0.0.1 (real sockets): the dated surface
translated both ways, the v1 surface as OpenAI."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from tunegate.server.errors import InvalidArgument, Unsupported
from tunegate.server.providers import (
    TAG_KEY,
    AzureOpenAIProvider,
    Capability,
    Provider,
    ProviderFile,
    capabilities_for,
)

from tests.openapi_schema import validate

from .support import SECRET, Sleeps, Upstream, azure_account, openai_job, page

TAG = "ftjob-gw-0002"


def provider() -> AzureOpenAIProvider:
    return AzureOpenAIProvider(sleep=Sleeps(), jitter=lambda: 0.0)


def dated_job(job_id: str = "ftjob-az1", **fields: Any) -> dict[str, Any]:
    """A job as the 2024-10-21 API sends it."""
    job: dict[str, Any] = {
        "object": "fine_tuning.job",
        "id": job_id,
        "model": "gpt-4o-mini-2024-07-18",
        "created_at": 1_750_000_100,
        "status": "pending",
        "training_file": "file-train",
        "hyperparameters": {"n_epochs": 3, "batch_size": -1, "learning_rate_multiplier": 0.5},
        "organisation_id": "org-az",
        "seed": 11,
        "suffix": "mine",
        "error": {"code": None, "message": None, "param": None},
    }
    job.update(fields)
    return job


def test_conforms_to_the_protocol() -> None:
    adapter: Provider = AzureOpenAIProvider()
    assert adapter.name == "azure-openai" and adapter.capabilities == frozenset(Capability) - {
        Capability.RESULT_FILES,
        Capability.STAGED_FILES,
    }


def test_capabilities_depend_on_the_api_version() -> None:
    adapter = AzureOpenAIProvider()
    dated = capabilities_for(adapter, azure_account("2024-10-21"))
    assert (
        Capability.PAUSE not in dated
        and Capability.RESUME not in dated
        and Capability.TAG_LOOKUP not in dated
    )
    assert Capability.CREATE in dated and Capability.CHECKPOINTS in dated
    assert capabilities_for(adapter, azure_account("v1")) == frozenset(Capability) - {
        Capability.RESULT_FILES,
        Capability.STAGED_FILES,
    }
    assert adapter.capabilities_for(azure_account("preview")) == frozenset(Capability) - {
        Capability.RESULT_FILES,
        Capability.STAGED_FILES,
    }


def test_unknown_api_version() -> None:
    with pytest.raises(InvalidArgument) as caught:
        AzureOpenAIProvider().capabilities_for(azure_account("latest"))
    assert caught.value.param == "x-portkey-azure-api-version"


# -- dated surface: requests ---------------------------------------------------------------------


async def test_dated_create_request_and_answer() -> None:
    upstream = Upstream().on("POST", "/myres/openai/fine_tuning/jobs", httpx.Response(201, json=dated_job()))
    request = {
        "model": "gpt-4o-mini-2024-07-18",
        "training_file": "file-train",
        "validation_file": None,
        "suffix": "mine",
        "seed": 11,
        "method": {
            "type": "supervised",
            "supervised": {
                "hyperparameters": {"n_epochs": 3, "batch_size": "auto", "learning_rate_multiplier": 0.5}
            },
        },
        "metadata": {"team": "a"},
        "request_id": "r",
    }
    job = await provider().create_job(azure_account(upstream=upstream), request, tag=TAG)

    (sent,) = upstream.requests
    assert str(sent.url) == f"{upstream.url}/myres/openai/fine_tuning/jobs?api-version=2024-10-21"
    assert sent.headers["api-key"] == SECRET and "authorization" not in sent.headers
    assert json.loads(sent.content) == {
        "model": "gpt-4o-mini-2024-07-18",
        "training_file": "file-train",
        "suffix": "mine",
        "seed": 11,
        "hyperparameters": {"n_epochs": 3, "learning_rate_multiplier": 0.5},  # "auto" is omitted
    }
    validate("FineTuningJob", job)
    assert job["status"] == "queued" and job["organization_id"] == "org-az" and "organisation_id" not in job
    assert job["error"] is None and job["metadata"] is None and job["integrations"] is None
    assert job["hyperparameters"] == {"n_epochs": 3, "batch_size": "auto", "learning_rate_multiplier": 0.5}
    assert job["user_provided_suffix"] == "mine"


async def test_dated_legacy_hyperparameters_and_bearer_auth() -> None:
    upstream = Upstream().on("POST", "/myres/openai/fine_tuning/jobs", httpx.Response(201, json=dated_job()))
    request = {"model": "m", "training_file": "f", "hyperparameters": {"n_epochs": "auto", "batch_size": 8}}
    await provider().create_job(azure_account(auth="bearer", upstream=upstream), request, tag=TAG)
    sent = upstream.requests[0]
    assert sent.headers["authorization"] == f"Bearer {SECRET}" and "api-key" not in sent.headers
    assert json.loads(sent.content) == {
        "model": "m",
        "training_file": "f",
        "hyperparameters": {"batch_size": 8},
    }


@pytest.mark.parametrize(
    ("field", "value", "param"),
    [
        ("method", {"type": "dpo", "dpo": {"hyperparameters": {"beta": 0.1}}}, "method"),
        ("method", {"type": "reinforcement"}, "method"),
        ("suffix", "x" * 41, "suffix"),
        ("suffix", "has space", "suffix"),
        ("integrations", [{"type": "wandb", "wandb": {"project": "p"}}], "integrations"),
    ],
)
async def test_dated_check_request(field: str, value: object, param: str) -> None:
    upstream = Upstream()
    adapter = provider()
    request = {"model": "m", "training_file": "f", field: value}
    with pytest.raises(InvalidArgument) as caught:
        adapter.check_request(azure_account(upstream=upstream), request)
    assert caught.value.param == param and "2024-10-21" in caught.value.message
    with pytest.raises(InvalidArgument):
        await adapter.create_job(azure_account(upstream=upstream), request, tag=TAG)
    assert upstream.requests == []
    adapter.check_request(
        azure_account("v1", upstream=upstream), request
    )  # the v1 surface takes all of these


def test_dated_check_request_accepts_the_supported_shape() -> None:
    request = {
        "model": "m",
        "training_file": "f",
        "suffix": "a-Z_0" * 8,
        "integrations": None,
        "metadata": {f"k{i}": "v" for i in range(16)},
    }  # metadata is not sent, so no limit here
    AzureOpenAIProvider().check_request(azure_account(), request)


# -- dated surface: answers ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("azure", "openai"),
    [
        ("created", "queued"),
        ("pending", "queued"),
        ("running", "running"),
        ("succeeded", "succeeded"),
        ("failed", "failed"),
        ("cancelled", "cancelled"),
    ],
)
async def test_dated_job_status(azure: str, openai: str) -> None:
    fields: dict[str, Any] = {"status": azure}
    if azure == "failed":
        fields["error"] = {"code": "invalidTrainingFile", "message": "line 3 is bad"}
    if azure == "succeeded":
        fields.update(
            fine_tuned_model="gpt-4o-mini.ft-1",
            finished_at=1_750_009_999,
            trained_tokens=1234,
            result_files=["file-res"],
        )
    upstream = Upstream().on(
        "GET", "/myres/openai/fine_tuning/jobs/ftjob-az1", httpx.Response(200, json=dated_job(**fields))
    )
    job = await provider().get_job(azure_account(upstream=upstream), "ftjob-az1")
    assert job["status"] == openai
    validate("FineTuningJob", job)
    if azure == "failed":
        assert job["error"] == {"code": "invalidTrainingFile", "message": "line 3 is bad", "param": None}
    assert upstream.requests[0].url.params["api-version"] == "2024-10-21"


async def test_dated_job_with_missing_fields_still_validates() -> None:
    sparse = {"id": "ftjob-s", "model": "m", "created_at": 5, "status": "running", "training_file": "f"}
    upstream = Upstream().on("GET", "/myres/openai/fine_tuning/jobs", page([sparse], has_more=True))
    result = await provider().list_jobs(azure_account(upstream=upstream), limit=1, page_token=None)
    (job,) = result.data
    validate("FineTuningJob", job)
    assert result.next_token == "ftjob-s"
    assert dict(upstream.requests[0].url.params) == {"api-version": "2024-10-21", "limit": "1"}


async def test_dated_events_and_checkpoints() -> None:
    event = {"id": "ftevent-1", "created_at": 9, "level": "warning", "message": "slow", "type": "message"}
    checkpoint = {
        "id": "ftchkpt-1",
        "created_at": 9,
        "fine_tuned_model_checkpoint": "m:ckpt-step-10",
        "fine_tuning_job_id": "ftjob-az1",
        "step_number": 10,
        "metrics": {"step": 10, "train_loss": 0.4, "azure_only": 1.0, "full_valid_loss": 0.3},
    }
    upstream = (
        Upstream()
        .on("GET", "/myres/openai/fine_tuning/jobs/ftjob-az1/events", page([event]))
        .on("GET", "/myres/openai/fine_tuning/jobs/ftjob-az1/checkpoints", page([checkpoint]))
    )
    adapter = provider()
    (got_event,) = (
        await adapter.list_events(azure_account(upstream=upstream), "ftjob-az1", limit=5, page_token=None)
    ).data
    validate("FineTuningJobEvent", got_event)
    assert got_event["level"] == "warn" and got_event["object"] == "fine_tuning.job.event"
    (got,) = (
        await adapter.list_checkpoints(
            azure_account(upstream=upstream), "ftjob-az1", limit=5, page_token=None
        )
    ).data
    validate("FineTuningJobCheckpoint", got)
    assert got["metrics"] == {"step": 10, "train_loss": 0.4, "full_valid_loss": 0.3}


@pytest.mark.parametrize("action", ["pause", "resume"])
async def test_dated_pause_and_resume_are_unsupported(action: str) -> None:
    upstream = Upstream()
    with pytest.raises(Unsupported) as caught:
        await getattr(provider(), f"{action}_job")(azure_account(upstream=upstream), "ftjob-az1")
    assert caught.value.code == "unsupported_by_provider" and "azure-openai" in caught.value.message
    assert upstream.requests == []  # never falls back to another operation


async def test_dated_cancel() -> None:
    path = "/myres/openai/fine_tuning/jobs/ftjob-az1/cancel"
    upstream = Upstream().on("POST", path, httpx.Response(200, json=dated_job(status="cancelled")))
    job = await provider().cancel_job(azure_account(upstream=upstream), "ftjob-az1")
    assert job["status"] == "cancelled"


@pytest.mark.parametrize(
    ("azure", "expected"),
    [
        ("pending", "uploaded"),
        ("running", "uploaded"),
        ("processed", "processed"),
        ("error", "error"),
        ("deleted", "error"),
    ],
)
async def test_dated_file_upload_and_states(azure: str, expected: str) -> None:
    async def source() -> AsyncIterator[bytes]:
        yield b'{"messages": []}\n'

    record = {"id": "file-az", "object": "file", "status": azure, "purpose": "fine-tune", "bytes": 17}
    upstream = (
        Upstream()
        .on("POST", "/myres/openai/files", httpx.Response(201, json=record))
        .on("GET", "/myres/openai/files/file-az", httpx.Response(200, json=record))
    )
    adapter = provider()
    uploaded = await adapter.upload_file(
        azure_account(upstream=upstream), filename="t.jsonl", purpose="fine-tune", size=17, chunks=source()
    )
    assert uploaded.id == "file-az" and uploaded.status == expected
    assert upstream.requests[0].url.params["api-version"] == "2024-10-21"
    fetched = await adapter.get_file(azure_account(upstream=upstream), "file-az")
    assert fetched == uploaded
    if azure == "deleted":
        assert fetched.status_details


async def test_dated_find_job_falls_back_to_the_request() -> None:
    request = {"model": "gpt-4o-mini-2024-07-18", "training_file": "file-train", "suffix": "mine"}
    jobs = [
        dated_job("ftjob-later", created_at=2_010),
        dated_job("ftjob-ours", created_at=2_005),
        dated_job("ftjob-other-file", created_at=2_004, training_file="file-x"),
        dated_job("ftjob-before", created_at=1_000),
    ]
    older = [dated_job("ftjob-older", created_at=999)]
    upstream = Upstream().on("GET", "/myres/openai/fine_tuning/jobs", page(jobs, True), page(older, True))
    adapter = provider()
    job = await adapter.find_job_by_tag(
        azure_account(upstream=upstream), TAG, created_after=2_000, request=request
    )
    assert job is not None and job["id"] == "ftjob-ours"  # the oldest match at or after the intent
    validate("FineTuningJob", job)
    assert len(upstream.requests) == 2  # a page wholly older than the intent ends the scan
    assert await adapter.find_job_by_tag(azure_account(upstream=upstream), TAG, created_after=2_000) is None


# -- v1 surface ----------------------------------------------------------------------------------


def echo_v1(request: httpx.Request) -> httpx.Response:
    body = json.loads(request.content)
    return httpx.Response(
        201, json=openai_job("ftjob-v1", metadata=body.get("metadata"), user_provided_suffix=None)
    )


@pytest.mark.parametrize(("version", "query"), [("v1", {}), ("preview", {"api-version": "preview"})])
async def test_v1_create_is_openai_shaped(version: str, query: dict[str, str]) -> None:
    upstream = Upstream().on("POST", "/myres/openai/v1/fine_tuning/jobs", echo_v1)
    request = {
        "model": "gpt-4o-mini-2024-07-18",
        "training_file": "file-1",
        "suffix": None,
        "method": {"type": "dpo", "dpo": {"hyperparameters": {"beta": 0.1}}},
        "metadata": {"a": "b"},
    }
    job = await provider().create_job(azure_account(version, upstream=upstream), request, tag=TAG)
    sent = upstream.requests[0]
    assert dict(sent.url.params) == query and sent.headers["api-key"] == SECRET
    body = json.loads(sent.content)
    validate("CreateFineTuningJobRequest", body)
    assert body["metadata"] == {"a": "b", TAG_KEY: TAG} and body["method"]["type"] == "dpo"
    assert job["metadata"] == {"a": "b"}


async def test_v1_pause_and_find_by_tag_scan() -> None:
    ours = openai_job("ftjob-v1", created_at=2_000, metadata={TAG_KEY: TAG})
    upstream = (
        Upstream()
        .on("POST", "/myres/openai/v1/fine_tuning/jobs/ftjob-v1/pause", httpx.Response(200, json=ours))
        .on(
            "GET",
            "/myres/openai/v1/fine_tuning/jobs",
            page([openai_job("ftjob-x", created_at=2_001)], True),
            page([ours]),
        )
    )
    adapter = provider()
    assert (await adapter.pause_job(azure_account("v1", upstream=upstream), "ftjob-v1"))["metadata"] is None
    found = await adapter.find_job_by_tag(azure_account("v1", upstream=upstream), TAG, created_after=1_999)
    assert found is not None and found["id"] == "ftjob-v1"
    listing = upstream.requests[1:]
    assert len(listing) == 2 and all(not k.startswith("metadata") for r in listing for k in r.url.params)


async def test_v1_file_states_are_azure_states() -> None:
    upstream = Upstream().on(
        "GET",
        "/myres/openai/v1/files/file-1",
        httpx.Response(200, json={"id": "file-1", "status": "pending"}),
    )
    assert await provider().get_file(azure_account("v1", upstream=upstream), "file-1") == ProviderFile(
        "file-1", "uploaded"
    )
