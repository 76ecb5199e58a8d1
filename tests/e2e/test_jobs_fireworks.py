"""Fine-tuning on Fireworks AI through the official SDKs, against a fake Fireworks on loopback that
checks every request and answer against the `fireworks-ai` SDK's typed models (datasets with the
multipart and signed-URL uploads, SFT and DPO jobs, the OpenAI-compatible inference API)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from tunegate.server.routing import DEFAULT_PROVIDERS, ProviderSettings, RoutingConfig

from tests.conftest import Gateway, start_gateway
from tests.e2e.bedrock import wait_for
from tests.e2e.crash import crash_after_create_then_reconcile
from tests.fakes.fireworks_upstream import FakeFireworks

TENANT = {"x-portkey-api-key": "pk-fireworks-tenant"}
ACCOUNT = "acme-ml"
API_KEY = "fw-test-key"
MODEL = "llama-v3p1-8b-instruct"


class Stack:
    def __init__(self, gateway: Gateway, fake: FakeFireworks) -> None:
        self.gateway = gateway
        self.fake = fake

    def headers(self, **extra: str) -> dict[str, str]:
        return {
            **TENANT,
            "x-portkey-provider": "fireworks-ai",
            "x-portkey-fireworks-account-id": ACCOUNT,
            **extra,
        }

    def sdk(self, **extra: Any) -> openai.OpenAI:
        return openai.OpenAI(
            base_url=self.gateway.base_url,
            api_key=API_KEY,
            default_headers=self.headers(),
            max_retries=0,
            **extra,
        )

    def native(self, gateway_id: str) -> Any:
        """The fake's job carrying `gateway_id` in its display name (at most one)."""
        found = [
            job
            for job in self.fake.call(lambda: list(self.fake.jobs.values()))
            if job.body.get("displayName") == f"tunegate-{gateway_id}"
        ]
        assert len(found) <= 1
        return found[0] if found else None

    def upload(self, sdk: openai.OpenAI, lines: list[dict[str, Any]], name: str = "train.jsonl") -> str:
        return sdk.files.create(file=(name, jsonl(lines)), purpose="fine-tune").id


@pytest.fixture(scope="module")
def fireworks(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    fake = FakeFireworks(api_keys={API_KEY}, accounts={ACCOUNT}, steps_per_get=0).start_in_thread(0)
    # Files above 4 KiB take the signed-URL flow, so both flows run on small files.
    settings = ProviderSettings(
        base_url=fake.base_url, timeout_seconds=10.0, options={"upload_multipart_limit_bytes": "4096"}
    )
    gateway = start_gateway(
        tmp_path_factory.mktemp("fireworks"),
        routing=RoutingConfig(providers={**DEFAULT_PROVIDERS, "fireworks-ai": settings}),
        reconcile_grace_seconds=0.0,
    )
    yield Stack(gateway, fake)
    gateway.close()
    fake.close()


def chat_line(i: int) -> dict[str, Any]:
    return {
        "messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": f"q{i} ünï"},
            {"role": "assistant", "content": f"a{i}"},
        ]
    }


def pref_line(i: int) -> dict[str, Any]:
    return {
        "input": {"messages": [{"role": "user", "content": f"Pick {i}"}]},
        "preferred_output": [{"role": "assistant", "content": "good"}],
        "non_preferred_output": [{"role": "assistant", "content": "bad"}],
    }


def jsonl(lines: list[dict[str, Any]]) -> bytes:
    return b"".join(json.dumps(line, ensure_ascii=False).encode() + b"\n" for line in lines)


def settled(sdk: openai.OpenAI, job_id: str) -> Any:
    return wait_for(
        lambda: (job := sdk.fine_tuning.jobs.retrieve(job_id)).status != "validating_files" and job,
        what=f"{job_id} to leave validating_files",
    )


def test_supervised_lifecycle_events_and_streamed_chat(fireworks: Stack) -> None:
    sdk = fireworks.sdk()
    lines = [chat_line(i) for i in range(120)]  # > 4 KiB: the signed-URL flow
    file_id = fireworks.upload(sdk, lines)
    job = sdk.fine_tuning.jobs.create(
        model=MODEL,
        training_file=file_id,
        suffix="Support Bot",
        method={
            "type": "supervised",
            "supervised": {"hyperparameters": {"n_epochs": 3, "learning_rate_multiplier": 2}},
        },
        extra_body={"provider_options": {"lora_rank": 16, "max_context_length": 8192}},
    )
    assert job.status == "validating_files"
    job = settled(sdk, job.id)
    assert job.status == "queued", job.error
    native = fireworks.native(job.id)
    assert native is not None and native.collection == "supervisedFineTuningJobs"
    assert native.body["baseModel"] == f"accounts/fireworks/models/{MODEL}"
    assert native.body["epochs"] == 3 and native.body["learningRate"] == 0.0002
    assert native.body["loraRank"] == 16 and native.body["maxContextLength"] == 8192
    assert native.body["outputModel"].startswith("support-bot-")
    dataset_id = native.body["dataset"].rsplit("/", 1)[-1]
    dataset = fireworks.fake.datasets[(ACCOUNT, dataset_id)]
    assert dataset.content() == jsonl(lines) and dataset.state == "READY"
    assert fireworks.fake.requests_to("PUT", "/signed-upload/.*")  # the signed-URL flow
    assert job.training_file == file_id

    fireworks.fake.advance(native.id)
    running = sdk.fine_tuning.jobs.retrieve(job.id)
    assert running.status == "running" and running.trained_tokens == 100 * len(lines)
    observed = sdk.fine_tuning.jobs.list_events(job.id, limit=50).data
    assert sdk.fine_tuning.jobs.list_events(job.id, limit=50).data == observed  # nothing doubled
    fireworks.fake.advance(native.id, to="JOB_STATE_COMPLETED")
    done = sdk.fine_tuning.jobs.retrieve(job.id)
    assert done.status == "succeeded" and done.finished_at is not None
    assert done.fine_tuned_model == native.output_model
    assert done.to_dict().get("user_provided_suffix") == "support-bot"
    events = sdk.fine_tuning.jobs.list_events(job.id, limit=50).data
    messages = [e.message for e in events]
    assert any("learning_rate_multiplier 2" in m and "0.0002" in m for m in messages), messages
    assert any("JOB_STATE_COMPLETED" in m for m in messages)
    # Seen running (50 %), then completed (100 %): one event per observed change, the older kept.
    assert sum("jobProgress" in m for m in messages) == 2
    assert sum("Fireworks state" in m for m in messages) == 2
    assert [e.id for e in events[-len(observed) :]] == [e.id for e in observed]

    tuned = done.fine_tuned_model
    assert tuned is not None
    reply = sdk.chat.completions.create(model=tuned, messages=[{"role": "user", "content": "hi"}])
    assert reply.choices[0].message.content
    stream = sdk.chat.completions.create(
        model=tuned, messages=[{"role": "user", "content": "hi"}], stream=True
    )
    streamed = "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
    assert streamed == reply.choices[0].message.content
    assert fireworks.fake.violations == []


def test_dpo_lifecycle_with_the_portkey_sdk(fireworks: Stack) -> None:
    from portkey_ai import Portkey

    portkey = Portkey(
        base_url=fireworks.gateway.base_url,
        api_key="pk-fireworks-tenant",
        provider="fireworks-ai",
        Authorization=f"Bearer {API_KEY}",
        fireworks_account_id=ACCOUNT,
    )
    file_id = portkey.files.create(
        file=("pref.jsonl", jsonl([pref_line(i) for i in range(3)])), purpose="fine-tune"
    ).id
    assert file_id is not None
    created = portkey.fine_tuning.jobs.create(
        model=f"accounts/{ACCOUNT}/models/my-base",
        training_file=file_id,
        method={"type": "dpo", "dpo": {"hyperparameters": {"beta": 0.2, "n_epochs": 2}}},
    )
    created_id = created.id
    assert created_id is not None
    job = wait_for(
        lambda: (j := portkey.fine_tuning.jobs.retrieve(created_id)).status != "validating_files" and j,
        what="the DPO job",
    )
    assert job.status == "queued", job.error
    native = fireworks.native(created_id)
    assert native is not None and native.collection == "dpoJobs"
    assert native.body["trainingConfig"] == {"baseModel": f"accounts/{ACCOUNT}/models/my-base", "epochs": 2}
    assert native.body["lossConfig"] == {"method": "DPO", "dpo": {"beta": 0.2}}
    dataset = fireworks.fake.datasets[(ACCOUNT, native.body["dataset"].rsplit("/", 1)[-1])]
    assert dataset.content() == jsonl([pref_line(i) for i in range(3)])  # as it is, one request
    fireworks.fake.advance(native.id, to="JOB_STATE_COMPLETED")
    done = portkey.fine_tuning.jobs.retrieve(created_id)
    assert done.status == "succeeded" and done.method is not None and done.method.type == "dpo"
    assert fireworks.fake.violations == []


def test_cancel_then_resume_never_deletes(fireworks: Stack) -> None:
    sdk = fireworks.sdk()
    file_id = fireworks.upload(sdk, [chat_line(i) for i in range(3)])
    job = settled(sdk, sdk.fine_tuning.jobs.create(model=MODEL, training_file=file_id).id)
    native = fireworks.native(job.id)
    fireworks.fake.advance(native.id)
    cancelled = sdk.fine_tuning.jobs.cancel(job.id)
    assert cancelled.status == "cancelled"
    assert native.state == "JOB_STATE_CANCELLED" and fireworks.native(job.id) is native  # kept
    resumed = sdk.fine_tuning.jobs.resume(job.id)
    assert resumed.status == "running" and native.state == "JOB_STATE_RUNNING"
    with pytest.raises(openai.BadRequestError) as raised:
        sdk.fine_tuning.jobs.pause(job.id)
    assert raised.value.code == "unsupported_by_provider"
    assert fireworks.fake.requests_to("DELETE", ".*") == []
    assert fireworks.fake.violations == []


def test_lines_fireworks_would_refuse_fail_the_job_by_number(fireworks: Stack) -> None:
    sdk = fireworks.sdk()
    lines = [chat_line(i) for i in range(4)]
    lines[1] = {"prompt": "old completions format", "completion": "x"}
    lines[3]["messages"].append({"role": "system", "content": "late"})
    file_id = fireworks.upload(sdk, lines)
    before = fireworks.fake.job_count()
    job = settled(sdk, sdk.fine_tuning.jobs.create(model=MODEL, training_file=file_id).id)
    assert job.status == "failed" and job.error is not None
    assert job.error.code == "invalid_training_file"
    assert "2" in job.error.message and "4" in job.error.message
    assert fireworks.fake.job_count() == before
    dataset = fireworks.fake.datasets.get((ACCOUNT, _dataset_of(file_id)))
    assert dataset is None or not dataset.validated  # never validated, never READY


def test_a_dataset_rejected_by_validation_fails_the_job_with_the_reason(fireworks: Stack) -> None:
    sdk = fireworks.sdk()
    file_id = fireworks.upload(sdk, [chat_line(i) for i in range(3)])
    fireworks.fake.call(
        lambda: fireworks.fake.fail_validation.__setitem__(_dataset_of(file_id), "token count over the limit")
    )
    before = fireworks.fake.job_count()
    job = settled(sdk, sdk.fine_tuning.jobs.create(model=MODEL, training_file=file_id).id)
    assert job.status == "failed" and job.error is not None
    assert "token count over the limit" in job.error.message
    assert fireworks.fake.job_count() == before
    # Validation passes now: the same file is uploaded into its dataset again and trains.
    fireworks.fake.call(lambda: fireworks.fake.fail_validation.clear())
    again = settled(sdk, sdk.fine_tuning.jobs.create(model=MODEL, training_file=file_id).id)
    assert again.status == "queued", again.error


def _dataset_of(file_id: str) -> str:
    from tunegate.server.providers.fireworks._datasets import dataset_id

    return dataset_id(file_id)


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"model": "not a model!"}, "model"),
        (
            {"method": {"type": "dpo", "dpo": {"hyperparameters": {"beta": 0.9}}}},
            "method.dpo.hyperparameters.beta",
        ),
        ({"provider_options": {"lora_rank": 3}}, "provider_options.lora_rank"),
        ({"provider_options": {"warm_start": "x"}}, "provider_options.warm_start"),
        ({"validation_file": "file-missing", "method": {"type": "dpo"}}, "validation_file"),
    ],
)
def test_bad_values_are_400s_before_any_cost(fireworks: Stack, body: dict[str, Any], param: str) -> None:
    sdk = fireworks.sdk()
    file_id = fireworks.upload(sdk, [chat_line(i) for i in range(3)])
    before = fireworks.fake.call(lambda: (len(fireworks.fake.datasets), fireworks.fake.job_count()))
    answer = httpx.post(
        f"{fireworks.gateway.base_url}/fine_tuning/jobs",
        json={"model": MODEL, "training_file": file_id, **body},
        headers={**fireworks.headers(), "Authorization": f"Bearer {API_KEY}"},
        timeout=30,
    )
    assert answer.status_code == 400, answer.text
    assert answer.json()["error"]["param"] == param
    assert fireworks.fake.call(lambda: (len(fireworks.fake.datasets), fireworks.fake.job_count())) == before


def test_a_bad_account_id_is_refused_before_any_url(fireworks: Stack) -> None:
    answer = httpx.get(
        f"{fireworks.gateway.base_url}/fine_tuning/jobs",
        headers={
            **fireworks.headers(**{"x-portkey-fireworks-account-id": "../evil"}),
            "Authorization": "Bearer k",
        },
        timeout=30,
    )
    assert answer.status_code == 400, answer.text
    assert answer.json()["error"]["param"] == "x-portkey-fireworks-account-id"


def test_provider_listing_pages_through_both_kinds(fireworks: Stack) -> None:
    sdk = fireworks.sdk()
    seen: list[str] = []
    page = sdk.fine_tuning.jobs.list(limit=2)
    while True:
        seen.extend(j.id for j in page.data)
        if not page.has_more:
            break
        page = sdk.fine_tuning.jobs.list(limit=2, after=page.data[-1].id)
    assert len(seen) == len(set(seen)) == fireworks.fake.job_count()


def test_a_retried_create_makes_one_fireworks_job(fireworks: Stack) -> None:
    """The SDK's retry of a create (same Idempotency-Key) is answered with the first job."""
    sdk = fireworks.sdk()
    file_id = fireworks.upload(sdk, [chat_line(i) for i in range(3)])
    before = fireworks.fake.job_count()
    key = {"Idempotency-Key": "stainless-python-retry-fireworks-1"}
    first = sdk.fine_tuning.jobs.create(model=MODEL, training_file=file_id, extra_headers=key)
    second = sdk.fine_tuning.jobs.create(model=MODEL, training_file=file_id, extra_headers=key)
    assert second.id == first.id
    assert settled(sdk, first.id).status == "queued"
    assert fireworks.fake.job_count() == before + 1


def test_a_lost_create_answer_is_found_by_its_job_id(fireworks: Stack) -> None:
    """Fireworks creates the job but its answer never arrives: the gateway finds the job by the id
    it asked for instead of creating another."""
    sdk = fireworks.sdk()
    file_id = fireworks.upload(sdk, [chat_line(i) for i in range(3)])
    fireworks.fake.inject("drop_after_create", r"/v1/accounts/.*/supervisedFineTuningJobs", method="POST")
    before = fireworks.fake.job_count()
    job = (
        wait_for(
            lambda: (j := sdk.fine_tuning.jobs.retrieve(created.id)).status == "queued" and j,
            what="the job to be found",
        )
        if (created := sdk.fine_tuning.jobs.create(model=MODEL, training_file=file_id))
        else None
    )
    assert job is not None and fireworks.native(job.id) is not None
    assert fireworks.fake.job_count() == before + 1


def test_crash_between_fireworks_and_the_commit(fireworks: Stack, tmp_path: Path) -> None:
    crash_after_create_then_reconcile(
        tmp_path,
        f"""
[providers.fireworks-ai]
base_url = "{fireworks.fake.base_url}"

[virtual_keys.fw-team]
provider = "fireworks-ai"
api_key_env = "TG_TEST_FIREWORKS_KEY"
account_id = "{ACCOUNT}"
""",
        env={"TG_TEST_FIREWORKS_KEY": API_KEY},
        headers={**TENANT, "x-portkey-virtual-key": "fw-team", "authorization": "Bearer x"},
        model=MODEL,
        training=jsonl([chat_line(i) for i in range(3)]),
        reconciled_status="queued",
        jobs_at_provider=lambda gateway_id: int(fireworks.native(gateway_id) is not None),
    )


async def test_grpc_metadata_routes_alike(fireworks: Stack) -> None:
    import grpc
    from tunegate.v1 import fine_tuning_pb2, fine_tuning_pb2_grpc

    sdk = fireworks.sdk()
    file_id = fireworks.upload(sdk, [chat_line(i) for i in range(3)])
    metadata = (*fireworks.headers().items(), ("authorization", f"Bearer {API_KEY}"))
    async with grpc.aio.insecure_channel(fireworks.gateway.grpc_target) as channel:
        stub = fine_tuning_pb2_grpc.FineTuningStub(channel)
        job = await stub.CreateFineTuningJob(
            fine_tuning_pb2.CreateFineTuningJobRequest(model=MODEL, training_file=file_id, suffix="grpc"),
            metadata=metadata,
        )
        assert job.status == fine_tuning_pb2.JobStatus.Value("JOB_STATUS_VALIDATING_FILES")
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await stub.CreateFineTuningJob(
                fine_tuning_pb2.CreateFineTuningJobRequest(model=MODEL, training_file=file_id),
                metadata=tuple((k, v) for k, v in metadata if k != "x-portkey-fireworks-account-id"),
            )
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "x-portkey-fireworks-account-id" in (err.value.details() or "")
    wait_for(lambda: sdk.fine_tuning.jobs.retrieve(job.id).status == "queued", what="the gRPC job")


def test_an_allow_listed_custom_host_serves_api_uploads_and_chat(fireworks: Stack, tmp_path: Path) -> None:
    """The gateway knows only https://api.fireworks.ai; a call names the fake as its custom host."""
    host = fireworks.fake.base_url.removeprefix("http://")
    gateway = start_gateway(
        tmp_path,
        routing=RoutingConfig(providers=dict(DEFAULT_PROVIDERS), allowed_custom_hosts=(host,)),
        reconcile_grace_seconds=0.0,
    )
    try:
        sdk = openai.OpenAI(
            base_url=gateway.base_url,
            api_key=API_KEY,
            default_headers=fireworks.headers(**{"x-portkey-custom-host": fireworks.fake.base_url}),
            max_retries=0,
        )
        file_id = sdk.files.create(
            file=("c.jsonl", jsonl([chat_line(i) for i in range(3)])), purpose="fine-tune"
        ).id
        job = settled(sdk, sdk.fine_tuning.jobs.create(model=MODEL, training_file=file_id).id)
        assert job.status == "queued", job.error
        reply = sdk.chat.completions.create(
            model=f"accounts/fireworks/models/{MODEL}", messages=[{"role": "user", "content": "hi"}]
        )
        assert reply.choices[0].message.content
        refused = httpx.get(
            f"{gateway.base_url}/fine_tuning/jobs",
            headers={
                **fireworks.headers(**{"x-portkey-custom-host": "http://127.0.0.2:9"}),
                "Authorization": f"Bearer {API_KEY}",
            },
            timeout=30,
        )
        assert refused.status_code == 400 and refused.json()["error"]["code"] == "custom_host_not_allowed"
    finally:
        gateway.close()
    assert fireworks.fake.violations == []
