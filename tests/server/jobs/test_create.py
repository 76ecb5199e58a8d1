"""Creating jobs over gRPC: validation before cost, gateway ids, idempotency, failures."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

import grpc
import grpc.aio
import pytest
from tunegate.server import GatewayServer
from tunegate.server.errors import InvalidArgument, ProviderUnreachable, ResourceExhausted, UpstreamError
from tunegate.v1 import files_pb2, files_pb2_grpc, fine_tuning_pb2_grpc
from tunegate.v1 import fine_tuning_pb2 as ft

from tests.server.jobs.fakes import TAG_KEY, FakeProvider
from tests.server.jobs.support import (
    ALICE,
    ALICE_BARE,
    BOB,
    NATIVE_FILE,
    TEAM,
    as_json,
    create_request,
    upload,
)
from tests.server.support import error_of

if TYPE_CHECKING:
    Stub = fine_tuning_pb2_grpc.FineTuningAsyncStub
    FilesStub = files_pb2_grpc.FilesAsyncStub

SUPERVISED = {"type": "supervised", "supervised": {"hyperparameters": {"n_epochs": 3}}}
BAD_REQUESTS: list[tuple[dict[str, Any], str, str]] = [
    ({"model": ""}, "MISSING_REQUIRED_PARAMETER", "model"),
    ({"training_file": ""}, "MISSING_REQUIRED_PARAMETER", "training_file"),
    ({"suffix": ""}, "INVALID_VALUE", "suffix"),
    ({"suffix": "x" * 65}, "INVALID_VALUE", "suffix"),
    ({"seed": -1}, "INVALID_VALUE", "seed"),
    ({"seed": 2_147_483_648}, "INVALID_VALUE", "seed"),
    ({"metadata": {f"k{i}": "v" for i in range(17)}}, "INVALID_VALUE", "metadata"),
    ({"metadata": {"k" * 65: "v"}}, "INVALID_VALUE", "metadata." + "k" * 65),
    ({"metadata": {"k": "v" * 513}}, "INVALID_VALUE", "metadata.k"),
    ({"hyperparameters": {"n_epochs": 0}}, "INVALID_VALUE", "hyperparameters.n_epochs"),
    ({"hyperparameters": {"n_epochs": 51}}, "INVALID_VALUE", "hyperparameters.n_epochs"),
    ({"hyperparameters": {"batch_size": 257}}, "INVALID_VALUE", "hyperparameters.batch_size"),
    (
        {"hyperparameters": {"learning_rate_multiplier": 0}},
        "INVALID_VALUE",
        "hyperparameters.learning_rate_multiplier",
    ),
    (
        {"method": {"type": "dpo", "dpo": {"hyperparameters": {"beta": 0}}}},
        "INVALID_VALUE",
        "method.dpo.hyperparameters.beta",
    ),
    (
        {"method": {"type": "dpo", "dpo": {"hyperparameters": {"beta": 2.5}}}},
        "INVALID_VALUE",
        "method.dpo.hyperparameters.beta",
    ),
    ({"method": {"type": "dpo", "supervised": {}}}, "INVALID_METHOD", "method"),
    ({"method": {"supervised": {}}}, "INVALID_VALUE", "method.type"),
    ({"method": {"type": "reinforcement"}}, "MISSING_REQUIRED_PARAMETER", "method.reinforcement.grader"),
    (
        {
            "method": {
                "type": "reinforcement",
                "reinforcement": {"grader": {"type": "python"}, "hyperparameters": {"eval_interval": 0}},
            }
        },
        "INVALID_VALUE",
        "method.reinforcement.hyperparameters.eval_interval",
    ),
    ({"integrations": [{"type": "wandb", "wandb": {"project": "p"}}] * 6}, "INVALID_VALUE", "integrations"),
    (
        {"integrations": [{"type": "wandb", "wandb": {}}]},
        "MISSING_REQUIRED_PARAMETER",
        "integrations[0].wandb.project",
    ),
    ({"suffix": "provider-refuses"}, "INVALID_VALUE", "suffix"),
]


@pytest.mark.parametrize(("fields", "reason", "param"), BAD_REQUESTS, ids=[p for _, _, p in BAD_REQUESTS])
async def test_bad_requests_are_refused_before_any_provider_cost(
    jobs: Stub, provider: FakeProvider, fields: dict[str, Any], reason: str, param: str
) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await jobs.CreateFineTuningJob(create_request(**fields), metadata=ALICE)
    assert error_of(info.value) == (grpc.StatusCode.INVALID_ARGUMENT, reason, param)
    assert [c for c in provider.calls if c[0] != "check_request"] == []


async def test_gateway_file_of_another_purpose_is_refused(
    jobs: Stub, files: FilesStub, provider: FakeProvider
) -> None:
    batch = await upload(files, md=ALICE_BARE, purpose=files_pb2.FILE_PURPOSE_BATCH)  # no background copy
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await jobs.CreateFineTuningJob(create_request(training_file=batch), metadata=ALICE)
    assert error_of(info.value) == (grpc.StatusCode.INVALID_ARGUMENT, "INVALID_FILE_PURPOSE", "training_file")
    assert provider.ops("upload_file") == provider.ops("create_job") == []


async def test_another_owners_gateway_file_is_not_found(jobs: Stub, files: FilesStub) -> None:
    bobs = await upload(files, md=BOB)
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await jobs.CreateFineTuningJob(create_request(training_file=bobs), metadata=ALICE)
    assert error_of(info.value) == (grpc.StatusCode.INVALID_ARGUMENT, "FILE_NOT_FOUND", "training_file")


async def test_ids_the_gateway_never_issued_are_the_providers(jobs: Stub, provider: FakeProvider) -> None:
    # OpenAI's own file ids look exactly like the gateway's (`file-` + 24 alphanumerics): such an
    # id passes through when the provider has it, and is `file_not_found` before any cost if not.
    native = "file-" + "A" * 24
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await jobs.CreateFineTuningJob(create_request(training_file=native), metadata=ALICE)
    assert error_of(info.value) == (grpc.StatusCode.INVALID_ARGUMENT, "FILE_NOT_FOUND", "training_file")
    provider.files[native] = b"{}"
    await jobs.CreateFineTuningJob(
        create_request(training_file=native, validation_file=native), metadata=ALICE
    )
    [(_, _, sent, _)] = provider.ops("create_job")
    assert (sent["training_file"], sent["validation_file"]) == (native, native)
    assert provider.ops("upload_file") == []


async def test_a_deleted_gateway_file_is_not_found(jobs: Stub, files: FilesStub) -> None:
    training = await upload(files)
    await files.DeleteFile(files_pb2.DeleteFileRequest(file_id=training), metadata=ALICE)
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await jobs.CreateFineTuningJob(create_request(validation_file=training), metadata=ALICE)
    assert error_of(info.value) == (grpc.StatusCode.INVALID_ARGUMENT, "FILE_NOT_FOUND", "validation_file")


async def test_a_create_must_name_a_provider(jobs: Stub, provider: FakeProvider) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await jobs.CreateFineTuningJob(create_request(), metadata=(("authorization", "Bearer sk-alice"),))
    assert error_of(info.value) == (
        grpc.StatusCode.INVALID_ARGUMENT,
        "MISSING_PROVIDER",
        "x-portkey-provider",
    )
    assert provider.calls == []


async def test_create_renders_gateway_ids_and_tags_the_provider_job(
    jobs: Stub, files: FilesStub, provider: FakeProvider
) -> None:
    training = await upload(files)
    request = create_request(
        training_file=training, validation_file=NATIVE_FILE, metadata={"team": "a"}, seed=3
    )
    job = await jobs.CreateFineTuningJob(request, metadata=ALICE)
    assert job.id.startswith("ftjob-") and len(job.id) == 30
    assert (job.training_file, job.validation_file) == (training, NATIVE_FILE)
    assert dict(job.metadata.values) == {"team": "a"}
    assert job.status == ft.JOB_STATUS_VALIDATING_FILES
    assert job.organization_id == "org-fake"

    [(_, _, sent, tag)] = provider.ops("create_job")
    assert tag == job.id
    native_job = next(iter(provider.jobs.values()))
    assert native_job["metadata"][TAG_KEY] == job.id
    assert sent["training_file"] != training and sent["training_file"] in provider.files
    assert sent["validation_file"] == NATIVE_FILE
    assert "request_id" not in sent and "portkey_options" not in sent


async def test_the_intent_is_attempted_before_the_provider_call_and_not_before_a_copy(
    jobs: Stub, files: FilesStub, provider: FakeProvider, gateway: GatewayServer
) -> None:
    seen: list[tuple[str, bool]] = []  # (training file, the intent's `attempted`) at create_job

    async def create_job(account: Any, request: Any, *, tag: str) -> Any:
        record = await gateway.database.jobs.get_any(tag)
        assert record is not None
        seen.append((request["training_file"], record.attempted))
        return await original(account, request, tag=tag)

    async def upload_file(account: Any, **kwargs: Any) -> Any:
        intents = await gateway.database.jobs.intents_before(2**40)
        seen.append(("copy", all(not record.attempted for record in intents) and len(intents) == 1))
        return await original_upload(account, **kwargs)

    original, provider.create_job = provider.create_job, create_job  # type: ignore[method-assign]
    original_upload, provider.upload_file = provider.upload_file, upload_file  # type: ignore[method-assign]
    first = await jobs.CreateFineTuningJob(create_request(), metadata=ALICE)  # nothing to copy: one write
    record = await gateway.database.jobs.get_any(first.id)
    assert record is not None and record.state == "created"  # completed before the answer
    training = await upload(files, ALICE_BARE)  # no provider named: copied on first use
    job = await jobs.CreateFineTuningJob(create_request(training_file=training), metadata=ALICE)
    copied = provider.ops("create_job")[1][2]["training_file"]
    assert seen == [(NATIVE_FILE, True), ("copy", True), (copied, True)]
    assert provider.ops("find_job_by_tag") == []  # a fresh intent has nothing to look for
    record = await gateway.database.jobs.get_any(job.id)
    assert record is not None and record.state == "created" and record.attempted


async def test_body_options_route_a_create(jobs: Stub, provider: FakeProvider) -> None:
    request = create_request()
    request.portkey_options.update({"virtual_key": "team"})
    job = await jobs.CreateFineTuningJob(request)
    assert provider.ops("create_job")[0][1] == "vk:team"
    assert (await jobs.GetFineTuningJob(ft.GetFineTuningJobRequest(fine_tuning_job_id=job.id))).id == job.id


async def test_same_key_same_body_returns_the_first_job(jobs: Stub, provider: FakeProvider) -> None:
    first = await jobs.CreateFineTuningJob(create_request(request_id="key-1"), metadata=ALICE)
    again = await jobs.CreateFineTuningJob(create_request(), metadata=(*ALICE, ("idempotency-key", "key-1")))
    assert again.id == first.id
    assert len(provider.ops("create_job")) == 1


async def test_same_key_different_body_is_a_conflict(jobs: Stub, provider: FakeProvider) -> None:
    await jobs.CreateFineTuningJob(create_request(request_id="key-1"), metadata=ALICE)
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await jobs.CreateFineTuningJob(create_request(request_id="key-1", seed=9), metadata=ALICE)
    assert error_of(info.value) == (grpc.StatusCode.ALREADY_EXISTS, "IDEMPOTENCY_KEY_REUSED", "request_id")
    assert "different request" in (info.value.details() or "")
    assert len(provider.ops("create_job")) == 1


async def test_keys_are_scoped_per_owner(jobs: Stub, provider: FakeProvider) -> None:
    a = await jobs.CreateFineTuningJob(create_request(request_id="shared"), metadata=ALICE)
    b = await jobs.CreateFineTuningJob(create_request(request_id="shared"), metadata=BOB)
    assert a.id != b.id and len(provider.ops("create_job")) == 2


async def test_fifty_concurrent_creates_with_one_key_make_one_provider_job(
    jobs: Stub, files: FilesStub, provider: FakeProvider
) -> None:
    training = await upload(files)
    provider.create_delay = 0.2
    request = create_request(training_file=training, request_id="retry-storm")
    results = await asyncio.gather(*(jobs.CreateFineTuningJob(request, metadata=ALICE) for _ in range(50)))
    assert len({job.id for job in results}) == 1
    assert len(provider.ops("create_job")) == 1
    assert len(provider.ops("upload_file")) == 1
    listed = await jobs.ListFineTuningJobs(ft.ListFineTuningJobsRequest(), metadata=ALICE_BARE)
    assert [job.id for job in listed.data] == [results[0].id]


async def test_a_definite_provider_refusal_is_stored_and_replayed(jobs: Stub, provider: FakeProvider) -> None:
    provider.create_error = InvalidArgument("Model not available.", code="model_not_found", param="model")
    for _ in range(2):
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await jobs.CreateFineTuningJob(create_request(request_id="k"), metadata=ALICE)
        assert error_of(info.value) == (grpc.StatusCode.INVALID_ARGUMENT, "MODEL_NOT_FOUND", "model")
    assert len(provider.ops("create_job")) == 1  # the retry replays, it does not call again
    listed = await jobs.ListFineTuningJobs(ft.ListFineTuningJobsRequest(), metadata=ALICE_BARE)
    assert list(listed.data) == []  # a refused create is not a job


async def test_ambiguous_failure_is_resolved_by_tag(jobs: Stub, provider: FakeProvider) -> None:
    provider.create_error_after = UpstreamError("connection reset")  # the job exists anyway
    job = await jobs.CreateFineTuningJob(create_request(request_id="k"), metadata=ALICE)
    assert len(provider.jobs) == 1
    assert provider.ops("find_job_by_tag") == [("find_job_by_tag", job.id)]
    provider.create_error_after = None
    again = await jobs.CreateFineTuningJob(create_request(request_id="k"), metadata=ALICE)
    assert again.id == job.id and len(provider.jobs) == 1


async def test_an_unknown_outcome_answers_the_intent_and_is_never_created_again(
    jobs: Stub, provider: FakeProvider
) -> None:
    provider.create_error = UpstreamError("502 from upstream")  # no job was made, as far as we know
    job = await jobs.CreateFineTuningJob(create_request(request_id="k"), metadata=ALICE)
    assert job.status == ft.JOB_STATUS_VALIDATING_FILES  # an answer, not an error the SDK retries
    provider.create_error = None
    again = await jobs.CreateFineTuningJob(create_request(request_id="k"), metadata=ALICE)
    assert again.id == job.id and again.status == ft.JOB_STATUS_VALIDATING_FILES
    assert [c[0] for c in provider.calls if c[0] in ("create_job", "find_job_by_tag")] == [
        "create_job",
        "find_job_by_tag",  # after the ambiguous failure
        "find_job_by_tag",  # the retry only looks: the first create may still land
    ]
    assert provider.jobs == {}


@pytest.mark.parametrize(
    ("error", "code"),
    [
        (ProviderUnreachable("Could not connect to the 'openai' provider."), grpc.StatusCode.UNAVAILABLE),
        (ResourceExhausted("Rate limit reached.", retry_after=1.0), grpc.StatusCode.RESOURCE_EXHAUSTED),
    ],
)
async def test_a_create_that_made_nothing_leaves_no_job(
    jobs: Stub, provider: FakeProvider, error: Exception, code: grpc.StatusCode
) -> None:
    provider.create_error = error  # never reached the provider, or refused for now
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await jobs.CreateFineTuningJob(create_request(request_id="k"), metadata=ALICE)
    assert info.value.code() == code  # both retryable
    listed = await jobs.ListFineTuningJobs(ft.ListFineTuningJobsRequest(), metadata=ALICE_BARE)
    assert list(listed.data) == []
    provider.create_error = None
    job = await jobs.CreateFineTuningJob(create_request(request_id="k"), metadata=ALICE)  # a clean retry
    assert job.status != ft.JOB_STATUS_FAILED and len(provider.jobs) == 1
    listed = await jobs.ListFineTuningJobs(ft.ListFineTuningJobsRequest(), metadata=ALICE_BARE)
    assert [j.id for j in listed.data] == [job.id]


async def test_a_cancel_of_an_unconfirmed_job_is_kept_and_carried_out_when_it_is_found(
    jobs: Stub, provider: FakeProvider, monkeypatch: pytest.MonkeyPatch
) -> None:
    provider.create_error_after = UpstreamError("connection reset")  # the job exists anyway
    lookup = provider.find_job_by_tag
    down = UpstreamError("Could not connect.")

    async def find_while_down(*args: Any, **kwargs: Any) -> Any:
        provider.calls.append(("find_job_by_tag_failed",))
        raise down

    monkeypatch.setattr(provider, "find_job_by_tag", find_while_down)
    job = await jobs.CreateFineTuningJob(create_request(), metadata=ALICE)
    assert job.status == ft.JOB_STATUS_VALIDATING_FILES  # unconfirmed
    cancel = ft.CancelFineTuningJobRequest(fine_tuning_job_id=job.id)
    accepted = await jobs.CancelFineTuningJob(cancel, metadata=ALICE)
    assert accepted.id == job.id and accepted.status == ft.JOB_STATUS_CANCELLED
    assert provider.ops("cancel_job") == []  # nothing to cancel yet: the wish is kept
    (native,) = provider.jobs
    assert provider.jobs[native]["status"] != "cancelled"

    monkeypatch.setattr(provider, "find_job_by_tag", lookup)  # the provider is back
    got = await jobs.GetFineTuningJob(ft.GetFineTuningJobRequest(fine_tuning_job_id=job.id), metadata=ALICE)
    assert got.status == ft.JOB_STATUS_CANCELLED
    assert [c[1] for c in provider.ops("cancel_job")] == [native]
    assert provider.jobs[native]["status"] == "cancelled"


async def test_reading_a_job_whose_provider_fails_serves_the_stored_job(
    jobs: Stub, provider: FakeProvider, monkeypatch: pytest.MonkeyPatch
) -> None:
    job = await jobs.CreateFineTuningJob(create_request(), metadata=ALICE)

    async def down(*args: Any, **kwargs: Any) -> Any:
        provider.calls.append(("get_job_failed",))
        raise UpstreamError("Could not connect.")

    monkeypatch.setattr(provider, "get_job", down)
    got = await jobs.GetFineTuningJob(ft.GetFineTuningJobRequest(fine_tuning_job_id=job.id), metadata=ALICE)
    assert got.id == job.id and got.status == job.status
    assert provider.ops("get_job_failed") == [("get_job_failed",)]


async def test_unknown_ids_and_other_owners_jobs_are_not_found(jobs: Stub, gateway: GatewayServer) -> None:
    job = await jobs.CreateFineTuningJob(create_request(), metadata=ALICE)
    for md, job_id in ((BOB, job.id), (ALICE, "ftjob-" + "x" * 24), (ALICE, "nope")):
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await jobs.GetFineTuningJob(ft.GetFineTuningJobRequest(fine_tuning_job_id=job_id), metadata=md)
        assert error_of(info.value) == (grpc.StatusCode.NOT_FOUND, "JOB_NOT_FOUND", "fine_tuning_job_id")
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await jobs.CancelFineTuningJob(ft.CancelFineTuningJobRequest(fine_tuning_job_id=job.id), metadata=BOB)
    assert info.value.code() == grpc.StatusCode.NOT_FOUND


async def test_virtual_key_jobs_need_no_headers_afterwards(jobs: Stub, provider: FakeProvider) -> None:
    job = await jobs.CreateFineTuningJob(create_request(), metadata=TEAM)
    cancelled = await jobs.CancelFineTuningJob(ft.CancelFineTuningJobRequest(fine_tuning_job_id=job.id))
    assert cancelled.status == ft.JOB_STATUS_CANCELLED
    assert as_json(cancelled)["object"] == "fine_tuning.job"
