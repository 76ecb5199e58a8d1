"""Tuning Gemini on Vertex AI through the official SDKs, against one fake Vertex on loopback
(tuningJobs checked against the aiplatform discovery document, GCS's resumable protocol, an
OAuth token endpoint that verifies the key file's signature, the tuned endpoint's chat)."""

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
from tests.fakes.vertex_upstream import FakeVertex
from tests.server.providers.vertex.test_auth import key_file

TENANT = {"x-portkey-api-key": "pk-vertex-tenant"}
EMAIL = "tuner@proj-123456.iam.gserviceaccount.com"
BUCKET = "tuning-data"


class Stack:
    def __init__(self, gateway: Gateway, fake: FakeVertex, key: str) -> None:
        self.gateway = gateway
        self.fake = fake
        self.key = key

    def headers(self, **extra: str) -> dict[str, str]:
        return {
            **TENANT,
            "x-portkey-provider": "vertex-ai",
            "x-portkey-vertex-region": "us-central1",
            "x-portkey-vertex-service-account-json": self.key,
            "x-portkey-vertex-storage-bucket-name": BUCKET,
            **extra,
        }

    def sdk(self, **extra: str) -> openai.OpenAI:
        return openai.OpenAI(
            base_url=self.gateway.base_url,
            api_key="unused",
            default_headers=self.headers(**extra),
            max_retries=0,
        )

    def fresh_key(self, email: str) -> str:
        """A new key file the fake's token endpoint knows (its own token cache entry)."""
        key, public = key_file(f"{self.fake.host}/token", email)
        self.fake.call(lambda: self.fake.oauth.accounts.__setitem__(email, public))
        return key

    def token_requests(self) -> int:
        return int(self.fake.call(lambda: self.fake.oauth.requests))

    def native(self, gateway_id: str) -> dict[str, Any] | None:
        from tunegate.server.providers.vertex._jobs import tag_from_labels

        found = [j for j in self.fake.jobs.values() if tag_from_labels(j.get("labels") or {}) == gateway_id]
        assert len(found) <= 1
        return found[0] if found else None


@pytest.fixture(scope="module")
def vertex(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    fake = FakeVertex(buckets={BUCKET}).start_in_thread(0)
    key, public = key_file(f"{fake.host}/token", EMAIL)
    fake.call(lambda: fake.oauth.accounts.__setitem__(EMAIL, public))
    providers = {**DEFAULT_PROVIDERS, "vertex-ai": ProviderSettings(base_url=fake.host, timeout_seconds=10.0)}
    gateway = start_gateway(
        tmp_path_factory.mktemp("vertex"),
        routing=RoutingConfig(providers=providers),
        reconcile_grace_seconds=0.0,
    )
    yield Stack(gateway, fake, key)
    gateway.close()
    fake.close()


def chat_line(i: int, turns: int = 1) -> dict[str, Any]:
    messages: list[dict[str, Any]] = [{"role": "system", "content": "Be brief."}]
    for t in range(turns):
        messages += [
            {"role": "user", "content": f"q{i}.{t} ünï"},
            {"role": "assistant", "content": f"a{i}.{t}"},
        ]
    return {"messages": messages}


def jsonl(lines: list[dict[str, Any]]) -> bytes:
    return b"".join(json.dumps(line, ensure_ascii=False).encode() + b"\n" for line in lines)


def settled(sdk: openai.OpenAI, job_id: str) -> Any:
    return wait_for(
        lambda: (job := sdk.fine_tuning.jobs.retrieve(job_id)).status != "validating_files" and job,
        what=f"{job_id} to leave validating_files",
    )


def test_supervised_lifecycle_checkpoints_events_and_chat(vertex: Stack) -> None:
    key = vertex.fresh_key("lifecycle@proj-123456.iam.gserviceaccount.com")
    tokens_before = vertex.token_requests()
    sdk = vertex.sdk(**{"x-portkey-vertex-service-account-json": key})
    lines = [chat_line(i, turns=2) for i in range(6)]
    file_id = sdk.files.create(file=("train.jsonl", jsonl(lines)), purpose="fine-tune").id
    job = sdk.fine_tuning.jobs.create(
        model="gemini-2.5-flash",
        training_file=file_id,
        suffix="support-bot",
        method={
            "type": "supervised",
            "supervised": {"hyperparameters": {"n_epochs": 3, "learning_rate_multiplier": 0.5}},
        },
        extra_body={"provider_options": {"adapter_size": 4}},
    )
    assert job.status == "validating_files"
    job = settled(sdk, job.id)
    assert job.status == "queued", job.error
    native = vertex.native(job.id)
    assert native is not None
    spec = native["supervisedTuningSpec"]
    assert spec["hyperParameters"] == {
        "epochCount": "3",
        "learningRateMultiplier": 0.5,
        "adapterSize": "ADAPTER_SIZE_FOUR",
    }
    assert native["tunedModelDisplayName"] == "support-bot"
    bucket, _, name = spec["trainingDatasetUri"].removeprefix("gs://").partition("/")
    stored = vertex.fake.gcs.objects[(bucket, name)]
    assert isinstance(stored, bytes)
    first = json.loads(stored.splitlines()[0])
    assert first["systemInstruction"] == {"parts": [{"text": "Be brief."}]}
    assert [c["role"] for c in first["contents"]] == ["user", "model", "user", "model"]
    assert job.training_file == file_id and file_id in name

    native_id = native["name"].rsplit("/", 1)[-1]
    vertex.fake.call(lambda: vertex.fake.advance(native_id))
    running = sdk.fine_tuning.jobs.retrieve(job.id)
    assert running.status == "running" and running.trained_tokens == 3456
    vertex.fake.call(lambda: vertex.fake.advance(native_id, to="JOB_STATE_SUCCEEDED"))
    done = sdk.fine_tuning.jobs.retrieve(job.id)
    assert done.status == "succeeded" and done.finished_at is not None
    assert (
        done.fine_tuned_model == native["tunedModel"]["endpoint"]
        if "tunedModel" in native
        else done.fine_tuned_model
    )
    assert done.fine_tuned_model and "/endpoints/" in done.fine_tuned_model
    checkpoints = sdk.fine_tuning.jobs.checkpoints.list(job.id).data
    assert [c.step_number for c in checkpoints] == [30, 15]
    events = sdk.fine_tuning.jobs.list_events(job.id).data
    assert any("tuningDataStats" in e.message for e in events)

    reply = sdk.chat.completions.create(
        model=done.fine_tuned_model, messages=[{"role": "user", "content": "hi"}]
    )
    assert reply.choices[0].message.content
    assert vertex.fake.violations == []
    stream = sdk.chat.completions.create(
        model=done.fine_tuned_model, messages=[{"role": "user", "content": "hi"}], stream=True
    )
    streamed = "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
    assert streamed == reply.choices[0].message.content
    assert vertex.fake.violations == []
    assert vertex.token_requests() - tokens_before == 1  # one token for every call of this key


def test_an_expired_token_is_refreshed_not_reused(vertex: Stack) -> None:
    key = vertex.fresh_key("short@proj-123456.iam.gserviceaccount.com")
    sdk = vertex.sdk(**{"x-portkey-vertex-service-account-json": key})
    vertex.fake.call(lambda: setattr(vertex.fake.oauth, "expires_in", 30))  # inside google-auth's margin
    try:
        before = vertex.token_requests()
        sdk.fine_tuning.jobs.list(limit=1)
        sdk.fine_tuning.jobs.list(limit=1)
        issued = vertex.fake.call(lambda: list(vertex.fake.oauth.issued))
    finally:
        vertex.fake.call(lambda: setattr(vertex.fake.oauth, "expires_in", 3600))
    assert vertex.token_requests() - before == 2  # each call found its token no longer valid
    assert len(set(issued[-2:])) == 2  # a new token each time, never the expired one again


def test_dpo_lifecycle(vertex: Stack) -> None:
    sdk = vertex.sdk()
    pref = {
        "input": {"messages": [{"role": "user", "content": "Pick one"}]},
        "preferred_output": [{"role": "assistant", "content": "good"}],
        "non_preferred_output": [{"role": "assistant", "content": "bad"}],
    }
    file_id = sdk.files.create(file=("pref.jsonl", jsonl([pref] * 3)), purpose="fine-tune").id
    job = settled(
        sdk,
        sdk.fine_tuning.jobs.create(
            model="gemini-2.5-flash",
            training_file=file_id,
            method={"type": "dpo", "dpo": {"hyperparameters": {"beta": 0.2}}},
        ).id,
    )
    assert job.status == "queued", job.error
    native = vertex.native(job.id)
    assert native is not None and native["preferenceOptimizationSpec"]["hyperParameters"] == {"beta": 0.2}
    bucket, _, name = (
        native["preferenceOptimizationSpec"]["trainingDatasetUri"].removeprefix("gs://").partition("/")
    )
    line = json.loads(vertex.fake.gcs.objects[(bucket, name)].splitlines()[0])  # type: ignore[union-attr]
    assert [c["score"] for c in line["completions"]] == [1, 0]
    assert job.method is not None and job.method.type == "dpo"


def test_cancel_and_unsupported(vertex: Stack) -> None:
    sdk = vertex.sdk()
    file_id = sdk.files.create(file=("t.jsonl", jsonl([chat_line(0)])), purpose="fine-tune").id
    job = settled(sdk, sdk.fine_tuning.jobs.create(model="gemini-2.5-flash", training_file=file_id).id)
    assert sdk.fine_tuning.jobs.cancel(job.id).status == "cancelled"
    with pytest.raises(openai.BadRequestError):
        sdk.fine_tuning.jobs.pause(job.id)


def test_conversion_error_fails_the_job_listing_lines(vertex: Stack) -> None:
    sdk = vertex.sdk()
    lines = [chat_line(0), chat_line(1), chat_line(2)]
    lines[1]["messages"][1]["content"] = [{"type": "image_url", "image_url": {"url": "https://x/y.png"}}]
    file_id = sdk.files.create(file=("bad.jsonl", jsonl(lines)), purpose="fine-tune").id
    before = vertex.fake.creates
    job = settled(sdk, sdk.fine_tuning.jobs.create(model="gemini-2.5-flash", training_file=file_id).id)
    assert job.status == "failed" and job.error is not None
    assert job.error.code == "invalid_training_file" and "2" in job.error.message
    assert vertex.fake.creates == before


@pytest.mark.parametrize(
    ("headers", "param"),
    [
        ({"x-portkey-vertex-service-account-json": "{broken"}, "x-portkey-vertex-service-account-json"),
        ({"x-portkey-vertex-storage-bucket-name": ""}, "x-portkey-vertex-storage-bucket-name"),
        ({"x-portkey-vertex-region": "us-central1/#"}, "x-portkey-vertex-region"),
    ],
)
def test_bad_routes_are_400s(vertex: Stack, headers: dict[str, str], param: str) -> None:
    file_id = vertex.sdk().files.create(file=("t.jsonl", jsonl([chat_line(0)])), purpose="fine-tune").id
    answer = httpx.post(
        f"{vertex.gateway.base_url}/fine_tuning/jobs",
        json={"model": "gemini-2.5-flash", "training_file": file_id},
        headers={**vertex.headers(), **headers},
        timeout=30,
    )
    assert answer.status_code == 400, answer.text
    assert answer.json()["error"]["param"] == param
    assert "PRIVATE KEY" not in answer.text


def test_provider_listing_pages(vertex: Stack) -> None:
    sdk = vertex.sdk()
    seen: list[str] = []
    page = sdk.fine_tuning.jobs.list(limit=2)
    while True:
        seen.extend(j.id for j in page.data)
        if not page.has_more:
            break
        page = sdk.fine_tuning.jobs.list(limit=2, after=page.data[-1].id)
    assert len(seen) == len(set(seen)) == vertex.fake.job_count()


def test_portkey_sdk_with_an_access_token(vertex: Stack) -> None:
    from portkey_ai import Portkey

    portkey = Portkey(
        base_url=vertex.gateway.base_url,
        api_key="pk-vertex-tenant",
        provider="vertex-ai",
        Authorization="Bearer ya29.caller-own-token",
        vertex_project_id="proj-123456",
        vertex_region="us-central1",
        vertex_storage_bucket_name=BUCKET,
    )
    file_id = portkey.files.create(file=("p.jsonl", jsonl([chat_line(0)])), purpose="fine-tune").id
    assert file_id is not None
    job = portkey.fine_tuning.jobs.create(model="gemini-2.5-flash", training_file=file_id)
    job_id = job.id
    assert job.status == "validating_files" and job_id is not None
    done = wait_for(lambda: vertex.native(job_id), what="the Vertex job")
    assert done["baseModel"] == "gemini-2.5-flash"


def test_sdk_retry_after_a_slow_create_makes_one_vertex_job(vertex: Stack) -> None:
    """Data already in GCS (a gs:// URI): the create is synchronous; Vertex is slow, the SDK times
    out and retries with its Idempotency-Key; one Vertex job."""
    vertex.fake.call(
        lambda: vertex.fake.inject("slow", r"/v1/projects/.*/tuningJobs", method="POST", delay=2.5)
    )
    sdk = openai.OpenAI(
        base_url=vertex.gateway.base_url,
        api_key="unused",
        default_headers=vertex.headers(),
        timeout=1.0,
        max_retries=4,
    )
    before = vertex.fake.creates
    job = sdk.fine_tuning.jobs.create(model="gemini-2.5-flash", training_file=f"gs://{BUCKET}/ready.jsonl")
    job = wait_for(
        lambda: (j := sdk.fine_tuning.jobs.retrieve(job.id)).status == "queued" and j, what="queued"
    )
    assert vertex.fake.creates == before + 1
    assert job.training_file == f"gs://{BUCKET}/ready.jsonl"


def test_crash_between_vertex_and_the_commit(vertex: Stack, tmp_path: Path) -> None:
    crash_after_create_then_reconcile(
        tmp_path,
        f"""
[providers.vertex-ai]
base_url = "{vertex.fake.host}"

[virtual_keys.gcp-team]
provider = "vertex-ai"
region = "us-central1"
api_key_env = "TG_TEST_GCP_KEY"
storage_bucket = "{BUCKET}"
""",
        env={"TG_TEST_GCP_KEY": vertex.key},
        headers={**TENANT, "x-portkey-virtual-key": "gcp-team", "authorization": "Bearer x"},
        model="gemini-2.5-flash",
        training=jsonl([chat_line(7)]),
        reconciled_status="queued",
        jobs_at_provider=lambda gateway_id: int(vertex.native(gateway_id) is not None),
    )
