"""Fine-tuning jobs on OpenAI through the gateway: the official SDKs, curl, and gRPC stubs,
against a fake OpenAI that checks every request it receives against OpenAI's spec."""

from __future__ import annotations

import concurrent.futures
import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import grpc
import httpx
import openai
import pytest
from portkey_ai import Portkey
from tunegate.v1 import fine_tuning_pb2, fine_tuning_pb2_grpc

from tests.e2e.providers import TRAINING, ProviderStack, stack, write_training
from tests.e2e.sdk import check_response, openai_client

__all__ = ["stack"]  # the module-scoped fixture

MODEL = "gpt-4o-mini-2024-07-18"


@pytest.fixture
def client(stack: ProviderStack, api_key: str) -> openai.OpenAI:
    return openai_client(
        stack.gateway.base_url, api_key, max_retries=0, default_headers={"x-portkey-provider": "openai"}
    )


@pytest.fixture(autouse=True)
def no_violations(stack: ProviderStack):
    yield
    assert stack.openai.violations == []


def provider_jobs_for(stack: ProviderStack, gateway_id: str) -> list[Any]:
    """The fake's jobs carrying the gateway's tag for `gateway_id`."""
    return [j for j in stack.openai.jobs.values() if (j.metadata or {}).get("tunegate_job_id") == gateway_id]


def test_whole_lifecycle_with_the_openai_sdk(
    stack: ProviderStack, client: openai.OpenAI, tmp_path: Path
) -> None:
    training = client.files.create(file=write_training(tmp_path), purpose="fine-tune")
    job = client.fine_tuning.jobs.create(
        model=MODEL,
        training_file=training.id,
        suffix="support-bot",
        seed=7,
        metadata={"team": "support"},
        method={
            "type": "supervised",
            "supervised": {"hyperparameters": {"n_epochs": 2, "batch_size": "auto"}},
        },
    )
    assert job.id.startswith("ftjob-") and job.object == "fine_tuning.job"
    assert job.training_file == training.id  # the gateway id, not the provider's copy
    assert job.metadata == {"team": "support"}  # the gateway's tag never shows
    assert job.status in ("validating_files", "queued")
    (native,) = provider_jobs_for(stack, job.id)
    assert native.id != job.id and native.training_file != training.id

    for _ in range(10):
        stack.openai.advance(native.id)
        job = client.fine_tuning.jobs.retrieve(job.id)
        if job.status == "succeeded":
            break
    assert job.status == "succeeded"
    assert job.fine_tuned_model and job.fine_tuned_model.startswith("ft:")
    assert isinstance(job.finished_at, int) and job.trained_tokens

    events = list(client.fine_tuning.jobs.list_events(job.id, limit=2))
    assert len(events) >= 3 and len({e.id for e in events}) == len(events)
    assert all(e.object == "fine_tuning.job.event" for e in events)
    again = list(client.fine_tuning.jobs.list_events(job.id, limit=100))
    assert [e.id for e in again] == [e.id for e in events]  # stable cursors, stable ids
    checkpoints = list(client.fine_tuning.jobs.checkpoints.list(job.id, limit=1))
    assert checkpoints and all(c.fine_tuning_job_id == job.id for c in checkpoints)

    # The same file is copied to the provider once, then reused.
    files_before = len(stack.openai.files)
    second = client.fine_tuning.jobs.create(model=MODEL, training_file=training.id)
    assert len(stack.openai.files) == files_before
    assert client.fine_tuning.jobs.retrieve(second.id).training_file == training.id


def test_list_paginates_the_registry_and_filters_by_metadata(
    stack: ProviderStack, client: openai.OpenAI, tmp_path: Path
) -> None:
    training = client.files.create(file=write_training(tmp_path), purpose="fine-tune")
    plain = openai_client(stack.gateway.base_url, client.api_key, max_retries=0)  # no provider header
    ids = [
        client.fine_tuning.jobs.create(model=MODEL, training_file=training.id, metadata={"run": str(i)}).id
        for i in range(5)
    ]
    listed = [j.id for j in plain.fine_tuning.jobs.list(limit=2)]
    assert listed == ids[::-1]
    assert [j.id for j in plain.fine_tuning.jobs.list(metadata={"run": "3"})] == [ids[3]]


def test_cancel_pause_resume(stack: ProviderStack, client: openai.OpenAI, tmp_path: Path) -> None:
    training = client.files.create(file=write_training(tmp_path), purpose="fine-tune")
    job = client.fine_tuning.jobs.create(model=MODEL, training_file=training.id)
    (native,) = provider_jobs_for(stack, job.id)
    stack.openai.advance(native.id, to="running")
    paused: str = client.fine_tuning.jobs.pause(job.id).status  # "paused" predates the SDK's Literal
    assert paused == "paused"
    assert client.fine_tuning.jobs.resume(job.id).status == "running"
    assert client.fine_tuning.jobs.cancel(job.id).status == "cancelled"
    assert client.fine_tuning.jobs.retrieve(job.id).status == "cancelled"


def test_validation_happens_before_any_provider_cost(stack: ProviderStack, client: openai.OpenAI) -> None:
    before = len(stack.openai.requests)
    batch = client.files.create(file=("b.jsonl", TRAINING), purpose="batch")
    after_upload = len(stack.openai.requests)
    cases: list[tuple[dict[str, Any], str]] = [
        ({"training_file": batch.id}, "training_file"),
        ({"training_file": "file-" + "Z" * 24}, "training_file"),
        ({"suffix": "x" * 65}, "suffix"),
        ({"metadata": {f"k{i}": "v" for i in range(17)}}, "metadata"),
        ({"seed": -1}, "seed"),
        (
            {"method": {"type": "dpo", "dpo": {"hyperparameters": {"beta": 3}}}},
            "method.dpo.hyperparameters.beta",
        ),
    ]
    for override, param in cases:
        body: dict[str, Any] = {"model": MODEL, "training_file": batch.id, **override}
        if "training_file" not in override:
            body["training_file"] = client.files.create(file=("t.jsonl", TRAINING), purpose="fine-tune").id
        with pytest.raises(openai.BadRequestError) as err:
            client.fine_tuning.jobs.create(**body)
        assert err.value.param == param, (override, err.value.body)
    assert not [r for r in stack.openai.requests[before:after_upload] if "fine_tuning" in r.path]
    assert not [
        r
        for r in stack.openai.requests[before:]
        if r.path.endswith("/fine_tuning/jobs") and r.method == "POST"
    ]


def test_provider_native_file_ids_pass_through(stack: ProviderStack, api_key: str, tmp_path: Path) -> None:
    direct = openai.OpenAI(api_key=api_key, base_url=stack.openai.base_url, max_retries=0)
    native_file = direct.files.create(file=write_training(tmp_path), purpose="fine-tune")
    client = openai_client(
        stack.gateway.base_url, api_key, max_retries=0, default_headers={"x-portkey-provider": "openai"}
    )
    job = client.fine_tuning.jobs.create(model=MODEL, training_file=native_file.id)
    assert job.training_file == native_file.id
    (native,) = provider_jobs_for(stack, job.id)
    assert native.training_file == native_file.id


def test_idempotency_key_50_concurrent_creates_one_provider_job(
    stack: ProviderStack, client: openai.OpenAI, tmp_path: Path
) -> None:
    training = client.files.create(file=write_training(tmp_path), purpose="fine-tune")
    headers = {"Idempotency-Key": "create-once-" + training.id}

    def create(_: int) -> str:
        return client.fine_tuning.jobs.create(
            model=MODEL, training_file=training.id, extra_headers=headers
        ).id

    with concurrent.futures.ThreadPoolExecutor(max_workers=16) as pool:
        ids = set(pool.map(create, range(50)))
    assert len(ids) == 1
    (job_id,) = ids
    assert len(provider_jobs_for(stack, job_id)) == 1

    with pytest.raises(openai.ConflictError) as err:
        client.fine_tuning.jobs.create(
            model=MODEL, training_file=training.id, suffix="other", extra_headers=headers
        )
    assert err.value.response.headers["x-should-retry"] == "false"


def test_provider_faults(stack: ProviderStack, client: openai.OpenAI, tmp_path: Path) -> None:
    training = client.files.create(file=write_training(tmp_path), purpose="fine-tune")
    job = client.fine_tuning.jobs.create(model=MODEL, training_file=training.id)
    (native,) = provider_jobs_for(stack, job.id)
    jobs_path = r"/v1/fine_tuning/jobs/" + native.id

    stack.openai.inject("429", jobs_path, method="GET", times=1, retry_after=0)
    assert client.fine_tuning.jobs.retrieve(job.id).id == job.id  # retried by the gateway (idempotent GET)
    stack.openai.inject("500", jobs_path, method="GET", times=1)
    assert client.fine_tuning.jobs.retrieve(job.id).id == job.id
    # A provider that keeps failing: the stored job, after one provider call (no retries).
    stack.openai.inject("500", jobs_path, method="GET", times=10)
    before = len(stack.openai.requests)
    assert client.fine_tuning.jobs.retrieve(job.id).id == job.id
    assert [r.method for r in stack.openai.requests[before:]] == ["GET"]
    stack.openai.call(stack.openai.faults.clear)

    # A create whose answer is lost after the provider made the job: found again by its tag.
    key = {"Idempotency-Key": "dropped-" + training.id}
    stack.openai.inject("drop_after_create", r"/v1/fine_tuning/jobs", method="POST", times=1)
    try:
        dropped = client.fine_tuning.jobs.create(model=MODEL, training_file=training.id, extra_headers=key)
    except openai.APIStatusError:
        dropped = client.fine_tuning.jobs.create(model=MODEL, training_file=training.id, extra_headers=key)
    assert len(provider_jobs_for(stack, dropped.id)) == 1


def test_a_lost_create_answer_with_the_sdks_default_retries_is_one_job(
    stack: ProviderStack, api_key: str, tmp_path: Path
) -> None:
    """The provider makes the job and the answer is lost, every time: the SDK (default retries,
    no idempotency key) gets one answer, and there is one provider job and one gateway job."""
    client = openai_client(stack.gateway.base_url, api_key, default_headers={"x-portkey-provider": "openai"})
    training = client.files.create(file=write_training(tmp_path), purpose="fine-tune")
    before = len(stack.openai.jobs)
    stack.openai.inject("drop_after_create", r"/v1/fine_tuning/jobs$", method="POST", times=3)
    tag = {"case": "lost-" + tmp_path.name}
    job = client.fine_tuning.jobs.create(model=MODEL, training_file=training.id, metadata=tag)
    stack.openai.call(stack.openai.faults.clear)
    assert len(stack.openai.jobs) == before + 1
    (native,) = provider_jobs_for(stack, job.id)
    stack.openai.advance(native.id, to="running")
    assert client.fine_tuning.jobs.retrieve(job.id).status == "running"
    mine = list(client.fine_tuning.jobs.list(metadata=tag))
    assert [j.id for j in mine] == [job.id]


def test_routing_errors_name_the_header(stack: ProviderStack, api_key: str) -> None:
    base = stack.gateway.base_url
    cases = [
        ({"x-portkey-provider": "nope"}, "x-portkey-provider"),
        (
            {"x-portkey-provider": "openai", "x-portkey-custom-host": "http://169.254.169.254/v1"},
            "x-portkey-custom-host",
        ),
        ({"x-portkey-provider": "azure-openai"}, "x-portkey-azure-resource-name"),
        ({"x-portkey-virtual-key": "no-such-key"}, "x-portkey-virtual-key"),
        ({"x-portkey-config": "{not json"}, "x-portkey-config"),
    ]
    for headers, param in cases:
        client = openai_client(base, api_key, max_retries=0, default_headers=headers)
        with pytest.raises(openai.BadRequestError) as err:
            client.fine_tuning.jobs.create(model=MODEL, training_file="file-abc")
        assert err.value.param == param, (headers, err.value.body)
    anonymous = httpx.post(
        base + "/fine_tuning/jobs",
        json={"model": MODEL, "training_file": "file-abc"},
        headers={"x-portkey-provider": "openai"},
    )
    assert anonymous.status_code == 400
    assert anonymous.json()["error"]["param"] == "authorization"


def test_virtual_key_follow_ups_need_no_provider_headers(stack: ProviderStack, tmp_path: Path) -> None:
    tenant = {"x-portkey-api-key": "pk-tenant-" + tmp_path.name}
    creating = openai_client(
        stack.gateway.base_url,
        "unused",
        max_retries=0,
        default_headers={**tenant, "x-portkey-virtual-key": "team-openai"},
    )
    training = creating.files.create(file=write_training(tmp_path), purpose="fine-tune")
    job = creating.fine_tuning.jobs.create(model=MODEL, training_file=training.id)
    (native,) = provider_jobs_for(stack, job.id)
    stack.openai.advance(native.id, to="running")
    later = openai_client(stack.gateway.base_url, "unused", max_retries=0, default_headers=tenant)
    assert later.fine_tuning.jobs.retrieve(job.id).status == "running"
    assert later.fine_tuning.jobs.cancel(job.id).status == "cancelled"
    stranger = openai_client(
        stack.gateway.base_url, "unused", max_retries=0, default_headers={"x-portkey-api-key": "pk-other"}
    )
    with pytest.raises(openai.NotFoundError):
        stranger.fine_tuning.jobs.retrieve(job.id)


def test_portkey_sdk_seed_snippet(stack: ProviderStack, api_key: str, tmp_path: Path) -> None:
    portkey = Portkey(provider="openai", Authorization=api_key, base_url=stack.gateway.base_url)
    portkey.openai_client._client.event_hooks["response"].append(check_response)
    with open(write_training(tmp_path), "rb") as dataset:
        training = portkey.files.create(file=dataset, purpose="fine-tune")
    assert training.id is not None
    job = portkey.fine_tuning.jobs.create(
        model=MODEL, training_file=training.id, hyperparameters={"n_epochs": 1}
    )
    assert job.id is not None and job.id.startswith("ftjob-")
    assert portkey.fine_tuning.jobs.retrieve(job.id).id == job.id
    assert job.id in [j.id for j in portkey.fine_tuning.jobs.list().data or []]
    assert portkey.fine_tuning.jobs.cancel(job.id).status == "cancelled"


@pytest.mark.skipif(shutil.which("curl") is None, reason="curl is not installed")
def test_seed_curl_commands_verbatim_but_for_the_host(
    stack: ProviderStack, api_key: str, tmp_path: Path
) -> None:
    host = stack.gateway.base_url.removesuffix("/v1")
    write_training(tmp_path)

    def curl(*args: str) -> dict[str, Any]:
        done = subprocess.run(
            ["curl", "-sS", *args], cwd=tmp_path, capture_output=True, text=True, check=True
        )
        answer: dict[str, Any] = json.loads(done.stdout)
        return answer

    uploaded = curl(
        "-X",
        "POST",
        "--header",
        "x-portkey-provider: openai",
        "--header",
        f"Authorization: Bearer {api_key}",
        "--form",
        "file=@dataset.jsonl",
        "--form",
        "purpose=fine-tune",
        f"{host}/v1/files",
    )
    assert uploaded["object"] == "file"
    job = curl(
        "-X",
        "POST",
        "--header",
        "Content-Type: application/json",
        "--header",
        "x-portkey-provider: openai",
        "--header",
        f"Authorization: Bearer {api_key}",
        "--data",
        json.dumps(
            {
                "model": MODEL,
                "suffix": "finetune_name",
                "training_file": uploaded["id"],
                "method": {"type": "supervised", "supervised": {"hyperparameters": {"n_epochs": 1}}},
            }
        ),
        f"{host}/v1/fine_tuning/jobs",
    )
    assert job["object"] == "fine_tuning.job", job
    auth = ["--header", "x-portkey-provider: openai", "--header", f"Authorization: Bearer {api_key}"]
    listed = curl("-X", "GET", *auth, f"{host}/v1/fine_tuning/jobs")
    assert job["id"] in [j["id"] for j in listed["data"]]
    assert curl("-X", "GET", *auth, f"{host}/v1/fine_tuning/jobs/{job['id']}")["id"] == job["id"]
    assert (
        curl("-X", "POST", *auth, f"{host}/v1/fine_tuning/jobs/{job['id']}/cancel")["status"] == "cancelled"
    )


async def test_grpc_stubs(stack: ProviderStack, api_key: str, tmp_path: Path) -> None:
    client = openai_client(stack.gateway.base_url, api_key, max_retries=0)
    training = client.files.create(file=write_training(tmp_path), purpose="fine-tune")
    metadata = (("x-portkey-provider", "openai"), ("authorization", f"Bearer {api_key}"))
    async with grpc.aio.insecure_channel(stack.gateway.grpc_target) as channel:
        stub = fine_tuning_pb2_grpc.FineTuningStub(channel)
        request = fine_tuning_pb2.CreateFineTuningJobRequest(
            model=MODEL, training_file=training.id, request_id="grpc-1"
        )
        job = await stub.CreateFineTuningJob(request, metadata=metadata)
        again = await stub.CreateFineTuningJob(request, metadata=metadata)
        assert job.id == again.id and job.id.startswith("ftjob-")
        got = await stub.GetFineTuningJob(
            fine_tuning_pb2.GetFineTuningJobRequest(fine_tuning_job_id=job.id), metadata=metadata
        )
        assert got.training_file == training.id
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await stub.PauseFineTuningJob(
                fine_tuning_pb2.PauseFineTuningJobRequest(fine_tuning_job_id=job.id), metadata=metadata
            )
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT  # not running: OpenAI's 400, kept


def test_jobs_created_at_the_provider_directly_pass_through(
    stack: ProviderStack, client: openai.OpenAI, api_key: str, tmp_path: Path
) -> None:
    direct = openai.OpenAI(api_key=api_key, base_url=stack.openai.base_url, max_retries=0)
    native_file = direct.files.create(file=write_training(tmp_path), purpose="fine-tune")
    outside = direct.fine_tuning.jobs.create(model=MODEL, training_file=native_file.id)
    stack.openai.advance(outside.id, to="running")

    assert outside.id in [j.id for j in client.fine_tuning.jobs.list()]  # provider-named list
    fetched = client.fine_tuning.jobs.retrieve(outside.id)
    assert (fetched.id, fetched.status) == (outside.id, "running")
    assert [e.id for e in client.fine_tuning.jobs.list_events(outside.id)]
    assert client.fine_tuning.jobs.cancel(outside.id).status == "cancelled"

    no_provider = openai_client(stack.gateway.base_url, api_key, max_retries=0)
    with pytest.raises(openai.NotFoundError):
        no_provider.fine_tuning.jobs.retrieve(outside.id)  # the registry alone does not know it
