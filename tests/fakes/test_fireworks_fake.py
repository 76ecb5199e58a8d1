"""`FakeFireworks` itself: what it accepts (shapes the `fireworks-ai` SDK's models declare), what it
refuses as a violation, its dataset and job state machines, and its chat answers — driven with a
plain httpx client and with the SDK's own client (`fireworks.AsyncFireworks`)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from fireworks import AsyncFireworks

from tests.fakes._fireworks_schema import check_model, check_params
from tests.fakes.fireworks_upstream import FakeFireworks

ACCOUNT = "acct-1"
KEY = "fw-key"
BASE = f"/v1/accounts/{ACCOUNT}"
LINES = b"".join(
    json.dumps(
        {"messages": [{"role": "user", "content": f"q{i}"}, {"role": "assistant", "content": "a"}]}
    ).encode()
    + b"\n"
    for i in range(3)
)


@pytest.fixture
async def fake() -> AsyncIterator[FakeFireworks]:
    server = FakeFireworks(api_keys={KEY}, ready_after_gets=0)
    await server.start()
    yield server
    await server.stop()


@pytest.fixture
async def client(fake: FakeFireworks) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=fake.host, headers={"Authorization": f"Bearer {KEY}"}) as http:
        yield http


async def ready_dataset(client: httpx.AsyncClient, ident: str = "ds-1", data: bytes = LINES) -> None:
    created = await client.post(
        f"{BASE}/datasets", json={"datasetId": ident, "dataset": {"userUploaded": {}}}
    )
    assert created.status_code == 200, created.text
    files = {"file": ("d.jsonl", data)}
    assert (await client.post(f"{BASE}/datasets/{ident}:upload", files=files)).status_code == 200
    assert (await client.post(f"{BASE}/datasets/{ident}:validateUpload", json={})).status_code == 200


# --- the oracle ----------------------------------------------------------------------------------


def test_schema_checks_follow_the_sdk() -> None:
    from fireworks.types import Dataset, DatasetCreateParams, SupervisedFineTuningJobCreateParams

    check_params(DatasetCreateParams, {"datasetId": "a", "dataset": {"userUploaded": {}, "format": "CHAT"}})
    for bad in (
        {"datasetId": "a"},
        {"datasetId": "a", "dataset": {"userUploaded": {}, "bogus": 1}},
        {"datasetId": "a", "dataset": {"format": "JSONL"}},
        {"datasetId": 1, "dataset": {}},
    ):
        with pytest.raises(ValueError):
            check_params(DatasetCreateParams, bad)
    with pytest.raises(ValueError, match="learning_rate"):
        check_params(SupervisedFineTuningJobCreateParams, {"dataset": "d", "learningRate": "fast"})
    check_model(Dataset, {"name": "accounts/a/datasets/d", "state": "READY", "status": {"code": "OK"}})
    with pytest.raises(ValueError, match="undeclared"):
        check_model(Dataset, {"name": "x", "status": {"code": "OK", "extra": 1}})
    with pytest.raises(ValueError):
        check_model(Dataset, {"state": "DONE"})


# --- datasets ------------------------------------------------------------------------------------


async def test_multipart_dataset_becomes_ready(fake: FakeFireworks, client: httpx.AsyncClient) -> None:
    await ready_dataset(client)
    got = (await client.get(f"{BASE}/datasets/ds-1")).json()
    assert got["state"] == "READY" and got["exampleCount"] == "3"
    assert got["name"] == f"accounts/{ACCOUNT}/datasets/ds-1"
    listed = (await client.get(f"{BASE}/datasets", params={"pageSize": 1})).json()
    assert [d["name"] for d in listed["datasets"]] == [got["name"]] and listed["totalSize"] == 1
    again = await client.post(f"{BASE}/datasets", json={"datasetId": "ds-1", "dataset": {"userUploaded": {}}})
    assert again.status_code == 409 and again.json()["code"] == 6
    assert fake.violations == []


async def test_signed_url_upload_checks_length_and_credentials(
    fake: FakeFireworks, client: httpx.AsyncClient
) -> None:
    await client.post(f"{BASE}/datasets", json={"datasetId": "big", "dataset": {"userUploaded": {}}})
    answer = await client.post(
        f"{BASE}/datasets/big:getUploadEndpoint", json={"filenameToSize": {"big.jsonl": str(len(LINES))}}
    )
    url = answer.json()["filenameToSignedUrls"]["big.jsonl"]
    signed = {
        "Content-Type": "application/octet-stream",
        "X-Goog-Content-Length-Range": f"{len(LINES)},{len(LINES)}",
    }
    async with httpx.AsyncClient() as plain:
        short = await plain.put(url, content=LINES[:-1], headers=signed)
        assert short.status_code == 400 and "Content-Length" in short.json()["message"]
        leaked = await plain.put(url, content=LINES, headers={**signed, "Authorization": f"Bearer {KEY}"})
        assert leaked.status_code == 400
        assert (await plain.put(url, content=LINES, headers=signed)).status_code == 200
        assert (await plain.put(url, content=LINES, headers=signed)).status_code == 403  # used once
    assert len(fake.violations) == 3
    assert (await client.post(f"{BASE}/datasets/big:validateUpload", json={})).status_code == 200
    assert (await client.get(f"{BASE}/datasets/big")).json()["state"] == "READY"


async def test_validation_failure_keeps_the_message(fake: FakeFireworks, client: httpx.AsyncClient) -> None:
    await ready_dataset(client, "bad", LINES + b"{oops\n")
    got = (await client.get(f"{BASE}/datasets/bad")).json()
    assert got["state"] == "UPLOADING"
    assert got["status"] == {"code": "INVALID_ARGUMENT", "message": "Line 4: invalid JSON."}
    fake.fail_validation["scripted"] = "Scripted failure."
    await ready_dataset(client, "scripted")
    assert (await client.get(f"{BASE}/datasets/scripted")).json()["status"]["message"] == "Scripted failure."


@pytest.mark.parametrize(
    ("path", "body"),
    [
        (f"{BASE}/datasets", {"datasetId": "1starts-with-digit", "dataset": {"userUploaded": {}}}),
        (f"{BASE}/datasets", {"datasetId": "Upper", "dataset": {"userUploaded": {}}}),
        (f"{BASE}/datasets", {"datasetId": "ok", "dataset": {"userUploaded": {}, "unknownField": 1}}),
        (f"{BASE}/datasets/nope:validateUpload", {}),
    ],
)
async def test_bad_dataset_requests_are_violations(
    fake: FakeFireworks, client: httpx.AsyncClient, path: str, body: dict[str, Any]
) -> None:
    answer = await client.post(path, json=body)
    assert answer.status_code in (400, 404)
    assert set(answer.json()) == {"code", "message", "details"}
    if answer.status_code == 400:
        assert len(fake.violations) == 1


async def test_auth_is_required(fake: FakeFireworks) -> None:
    async with httpx.AsyncClient(base_url=fake.host) as anonymous:
        assert (await anonymous.get(f"{BASE}/datasets")).status_code == 401
    assert len(fake.violations) == 1


# --- jobs ----------------------------------------------------------------------------------------


async def test_sft_job_progresses_and_is_cancelled_or_resumed(
    fake: FakeFireworks, client: httpx.AsyncClient
) -> None:
    body = {
        "dataset": f"accounts/{ACCOUNT}/datasets/ds-1",
        "baseModel": "accounts/fireworks/models/qwen3-8b",
        "displayName": "tunegate-ftjob-x",
        "epochs": 2,
    }
    early = await client.post(f"{BASE}/supervisedFineTuningJobs", json=body)
    assert early.status_code == 400 and len(fake.violations) == 1  # the dataset is not READY yet
    fake.violations.clear()
    await ready_dataset(client)
    created = await client.post(
        f"{BASE}/supervisedFineTuningJobs", params={"supervisedFineTuningJobId": "j-1"}, json=body
    )
    assert created.json()["state"] == "JOB_STATE_CREATING"
    assert created.json()["name"] == f"accounts/{ACCOUNT}/supervisedFineTuningJobs/j-1"
    dup = await client.post(
        f"{BASE}/supervisedFineTuningJobs", params={"supervisedFineTuningJobId": "j-1"}, json=body
    )
    assert dup.status_code == 409
    states = [(await client.get(f"{BASE}/supervisedFineTuningJobs/j-1")).json() for _ in range(2)]
    assert [s["state"] for s in states] == ["JOB_STATE_RUNNING", "JOB_STATE_COMPLETED"]
    assert states[1]["jobProgress"]["percent"] == 100 and "completedTime" in states[1]
    assert (await client.post(f"{BASE}/supervisedFineTuningJobs/j-1:cancel", json={})).status_code == 400
    listed = (await client.get(f"{BASE}/supervisedFineTuningJobs")).json()
    assert [j["name"] for j in listed["supervisedFineTuningJobs"]] == [states[1]["name"]]

    await client.post(
        f"{BASE}/supervisedFineTuningJobs", params={"supervisedFineTuningJobId": "j-2"}, json=body
    )
    cancelled = await client.post(f"{BASE}/supervisedFineTuningJobs/j-2:cancel", json={})
    assert cancelled.json()["state"] == "JOB_STATE_CANCELLED"
    resumed = await client.post(f"{BASE}/supervisedFineTuningJobs/j-2:resume", json={})
    assert resumed.json()["state"] == "JOB_STATE_RUNNING"
    fake.fail_job("j-2", "Out of memory.")
    failed = (await client.get(f"{BASE}/supervisedFineTuningJobs/j-2")).json()
    assert failed["state"] == "JOB_STATE_FAILED" and failed["status"]["message"] == "Out of memory."
    assert (await client.post(f"{BASE}/supervisedFineTuningJobs/j-2:pause", json={})).status_code == 404
    assert len(fake.violations) == 1  # the pause
    fake.violations.clear()
    bad = await client.post(f"{BASE}/supervisedFineTuningJobs", json={**body, "learningRateMultiplier": 2})
    assert bad.status_code == 400 and "learningRateMultiplier" in bad.json()["message"]
    assert len(fake.violations) == 1


async def test_dpo_job_through_the_sdk(fake: FakeFireworks, client: httpx.AsyncClient) -> None:
    await ready_dataset(client)
    sdk = AsyncFireworks(api_key=KEY, account_id=ACCOUNT, base_url=fake.host, max_retries=0)
    job = await sdk.dpo_jobs.create(
        dataset=f"accounts/{ACCOUNT}/datasets/ds-1",
        dpo_job_id="dpo-1",
        training_config={"base_model": "accounts/fireworks/models/qwen3-8b", "epochs": 1},
        loss_config={"method": "DPO", "dpo": {"beta": 0.1}},
    )
    assert job.state == "JOB_STATE_CREATING" and job.name == f"accounts/{ACCOUNT}/dpoJobs/dpo-1"
    assert fake.advance("dpo-1", to="JOB_STATE_COMPLETED") == "JOB_STATE_COMPLETED"
    got = await sdk.dpo_jobs.get("dpo-1")
    assert got.state == "JOB_STATE_COMPLETED"
    dataset = await sdk.datasets.get("ds-1")
    assert dataset.state == "READY"
    await sdk.close()
    assert fake.violations == []


# --- chat ----------------------------------------------------------------------------------------


async def test_chat_completions(fake: FakeFireworks, client: httpx.AsyncClient) -> None:
    request = {"model": fake.base_models[0], "messages": [{"role": "user", "content": "hi"}]}
    answer = await client.post("/inference/v1/chat/completions", json=request)
    assert answer.status_code == 200 and answer.json()["object"] == "chat.completion"
    async with client.stream(
        "POST", "/inference/v1/chat/completions", json={**request, "stream": True}
    ) as events:
        text = b"".join([chunk async for chunk in events.aiter_bytes()])
    assert text.startswith(b"data: ") and text.endswith(b"data: [DONE]\n\n")
    unknown = await client.post(
        "/inference/v1/chat/completions", json={**request, "model": "accounts/x/models/y"}
    )
    assert unknown.status_code == 404
    bad = await client.post(
        "/inference/v1/chat/completions", json={"model": fake.base_models[0], "messages": "hi"}
    )
    assert bad.status_code == 400
    assert len(fake.violations) == 1 and len(fake.chat_calls) == 4
