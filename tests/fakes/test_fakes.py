"""The fakes are honest: valid requests succeed with spec-valid objects, every kind of invalid
request is rejected *and* recorded, jobs progress deterministically, and faults behave."""

from __future__ import annotations

import json
import secrets
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.fakes import FakeAzureOpenAI, FakeOpenAI, start_fake_azure_in_thread, start_fake_openai_in_thread
from tests.fakes import _azure_schemas as dated
from tests.openapi_schema import validate

CHAT = json.dumps(
    {"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]}
)
GOOD_JSONL = ("\n".join([CHAT] * 12) + "\n").encode()
V = {"api-version": "2024-10-21"}
AZ_MODEL = "gpt-4o-mini-2024-07-18"


@pytest.fixture(scope="module")
def openai_fake() -> Iterator[FakeOpenAI]:
    fake = start_fake_openai_in_thread(steps_per_get=0)
    yield fake
    fake.close()


@pytest.fixture
def oai(openai_fake: FakeOpenAI) -> Iterator[httpx.Client]:
    openai_fake.reset()
    headers = {"Authorization": f"Bearer sk-{secrets.token_hex(8)}"}
    with httpx.Client(base_url=openai_fake.base_url, headers=headers, timeout=5) as client:
        yield client


@pytest.fixture(scope="module")
def azure_fake() -> Iterator[FakeAzureOpenAI]:
    fake = start_fake_azure_in_thread(steps_per_get=0)
    yield fake
    fake.close()


@pytest.fixture
def az(azure_fake: FakeAzureOpenAI) -> Iterator[httpx.Client]:
    azure_fake.reset()
    resource = "res" + secrets.token_hex(4)
    with httpx.Client(base_url=azure_fake.base_url(resource), headers={"api-key": "k"}, timeout=5) as client:
        yield client


def upload(
    client: httpx.Client,
    content: bytes = GOOD_JSONL,
    name: str = "train.jsonl",
    params: dict[str, str] | None = None,
) -> Any:
    response = client.post(
        "/files", params=params, files={"file": (name, content)}, data={"purpose": "fine-tune"}
    )
    assert response.status_code in (200, 201), response.text
    return response.json()


# -- OpenAI -------------------------------------------------------------------------------------


def test_openai_lifecycle_objects_fit_the_spec(oai: httpx.Client, openai_fake: FakeOpenAI) -> None:
    file = upload(oai)
    validate("OpenAIFile", file)
    body = {"model": "gpt-4o-mini", "training_file": file["id"], "suffix": "s1", "metadata": {"tg": "a"}}
    job = oai.post("/fine_tuning/jobs", json=body).json()
    validate("FineTuningJob", job)
    assert job["status"] == "validating_files" and job["metadata"] == {"tg": "a"}

    seen = []
    for _ in range(6):
        openai_fake.advance(job["id"])
        seen.append(oai.get(f"/fine_tuning/jobs/{job['id']}").json()["status"])
    assert seen == ["queued", "running", "running", "running", "running", "succeeded"]
    done = oai.get(f"/fine_tuning/jobs/{job['id']}").json()
    assert done["fine_tuned_model"] == f"ft:gpt-4o-mini:fake-org:s1:{job['id'][-8:]}"
    assert done["trained_tokens"] > 0 and done["finished_at"] and done["hyperparameters"]["n_epochs"] == 3
    result = oai.get(f"/files/{done['result_files'][0]}/content")
    assert result.text.startswith("step,")

    events = oai.get(f"/fine_tuning/jobs/{job['id']}/events", params={"limit": 50}).json()
    validate("ListFineTuningJobEventsResponse", events)
    assert [e["data"]["step"] for e in events["data"] if e["type"] == "metrics"] == [3, 2, 1]
    checkpoints = oai.get(f"/fine_tuning/jobs/{job['id']}/checkpoints", params={"limit": 2}).json()
    assert checkpoints["has_more"] is True
    assert checkpoints["data"][0]["fine_tuned_model_checkpoint"].endswith(":ckpt-step-3")
    rest = oai.get(
        f"/fine_tuning/jobs/{job['id']}/checkpoints", params={"after": checkpoints["last_id"]}
    ).json()
    assert [c["step_number"] for c in rest["data"]] == [1] and rest["has_more"] is False

    other = oai.post("/fine_tuning/jobs", json={"model": "gpt-4o-mini", "training_file": file["id"]}).json()
    assert [j["id"] for j in oai.get("/fine_tuning/jobs").json()["data"]] == [other["id"], job["id"]]
    assert [j["id"] for j in oai.get("/fine_tuning/jobs", params={"metadata[tg]": "a"}).json()["data"]] == [
        job["id"]
    ]
    page1 = oai.get("/fine_tuning/jobs", params={"limit": 1}).json()
    assert page1["has_more"] is True
    page2 = oai.get("/fine_tuning/jobs", params={"limit": 1, "after": page1["data"][0]["id"]}).json()
    assert page2["data"][0]["id"] == job["id"] and page2["has_more"] is False
    assert openai_fake.violations == []


def test_openai_pause_resume_cancel_and_wrong_states(oai: httpx.Client, openai_fake: FakeOpenAI) -> None:
    file = upload(oai)
    job = oai.post("/fine_tuning/jobs", json={"model": "gpt-4o-mini", "training_file": file["id"]}).json()
    wrong = oai.post(f"/fine_tuning/jobs/{job['id']}/pause")
    assert wrong.status_code == 400 and wrong.json()["error"]["type"] == "invalid_request_error"
    openai_fake.advance(job["id"], to="running")
    assert oai.post(f"/fine_tuning/jobs/{job['id']}/pause").json()["status"] == "paused"
    assert oai.post(f"/fine_tuning/jobs/{job['id']}/resume").json()["status"] == "running"
    assert oai.post(f"/fine_tuning/jobs/{job['id']}/cancel").json()["status"] == "cancelled"
    assert oai.post(f"/fine_tuning/jobs/{job['id']}/cancel").status_code == 400
    assert openai_fake.violations == []  # state conflicts are provider answers, not gateway bugs


def test_openai_bad_training_data_fails_the_job(oai: httpx.Client, openai_fake: FakeOpenAI) -> None:
    file = upload(oai, b'{"messages": []}\nnot json\n')
    job = oai.post("/fine_tuning/jobs", json={"model": "gpt-4o-mini", "training_file": file["id"]}).json()
    assert openai_fake.advance(job["id"]) == "failed"
    failed = oai.get(f"/fine_tuning/jobs/{job['id']}").json()
    assert failed["error"]["param"] == "training_file" and failed["finished_at"]
    assert openai_fake.violations == []


def test_openai_steps_per_get_advances_on_retrieve(oai: httpx.Client, openai_fake: FakeOpenAI) -> None:
    job = oai.post(
        "/fine_tuning/jobs", json={"model": "gpt-4o-mini", "training_file": upload(oai)["id"]}
    ).json()
    openai_fake.steps_per_get = 1
    try:
        assert oai.get(f"/fine_tuning/jobs/{job['id']}").json()["status"] == "queued"
    finally:
        openai_fake.steps_per_get = 0


@pytest.mark.parametrize(
    ("method", "path", "kwargs", "status", "param"),
    [
        (
            "POST",
            "/fine_tuning/jobs",
            {"json": {"model": "m", "training_file": "$F", "extra": 1}},
            400,
            "extra",
        ),
        ("POST", "/fine_tuning/jobs", {"json": {"model": "m"}}, 400, None),
        (
            "POST",
            "/fine_tuning/jobs",
            {"json": {"model": "m", "training_file": "file-x"}},
            400,
            "training_file",
        ),
        (
            "POST",
            "/fine_tuning/jobs",
            {"json": {"model": "m", "training_file": "$F", "suffix": ""}},
            400,
            "suffix",
        ),
        (
            "POST",
            "/fine_tuning/jobs",
            {"json": {"model": "m", "training_file": "$F", "seed": -1}},
            400,
            "seed",
        ),
        (
            "POST",
            "/fine_tuning/jobs",
            {"json": {"model": "m", "training_file": "$F", "hyperparameters": {"n_epochs": 0}}},
            400,
            "hyperparameters",
        ),
        (
            "POST",
            "/fine_tuning/jobs",
            {"json": {"model": "m", "training_file": "$F", "metadata": {f"k{i}": "v" for i in range(17)}}},
            400,
            "metadata",
        ),
        (
            "POST",
            "/fine_tuning/jobs",
            {"content": b"{nope", "headers": {"content-type": "application/json"}},
            400,
            None,
        ),
        ("GET", "/fine_tuning/jobs", {"params": {"limit": "0"}}, 400, "limit"),
        ("GET", "/fine_tuning/jobs", {"params": {"limit": "ten"}}, 400, "limit"),
        ("GET", "/fine_tuning/jobs", {"params": {"order": "asc"}}, 400, "order"),
        ("GET", "/fine_tuning/jobs", {"params": {"after": "ftjob-unknown"}}, 400, "after"),
        (
            "POST",
            "/files",
            {"files": {"file": ("a.jsonl", b"{}")}, "data": {"purpose": "nope"}},
            400,
            "purpose",
        ),
        ("POST", "/files", {"data": {"purpose": "fine-tune"}, "files": {"x": ("a", b"")}}, 400, "x"),
        (
            "POST",
            "/files",
            {"files": {"file": ("a.txt", b"{}")}, "data": {"purpose": "fine-tune"}},
            400,
            "file",
        ),
        ("POST", "/files", {"json": {"purpose": "fine-tune"}}, 400, None),
        ("GET", "/assistants", {}, 404, None),
    ],
)
def test_openai_rejects_and_records_invalid_requests(
    oai: httpx.Client,
    openai_fake: FakeOpenAI,
    method: str,
    path: str,
    kwargs: dict[str, Any],
    status: int,
    param: Any,
) -> None:
    file_id = upload(oai)["id"]
    if "json" in kwargs and isinstance(kwargs["json"], dict) and kwargs["json"].get("training_file") == "$F":
        kwargs = {**kwargs, "json": {**kwargs["json"], "training_file": file_id}}
    response = oai.request(method, path, **kwargs)
    assert response.status_code == status, response.text
    validate("ErrorResponse", response.json())
    assert response.json()["error"]["param"] == param
    assert len(openai_fake.violations) == 1, openai_fake.violations


def test_openai_auth_and_ownership(oai: httpx.Client, openai_fake: FakeOpenAI) -> None:
    file_id = upload(oai)["id"]
    anonymous = httpx.get(f"{openai_fake.base_url}/fine_tuning/jobs")
    assert anonymous.status_code == 401 and anonymous.json()["error"]["type"] == "invalid_request_error"
    with httpx.Client(base_url=openai_fake.base_url, headers={"Authorization": "Bearer sk-other"}) as other:
        assert other.get(f"/files/{file_id}").status_code == 404
        stolen = other.post("/fine_tuning/jobs", json={"model": "m", "training_file": file_id})
        assert stolen.status_code == 400 and stolen.json()["error"]["param"] == "training_file"
    assert len(openai_fake.violations) == 2
    recorded = openai_fake.requests_to("POST", "/v1/fine_tuning/jobs")[-1]
    assert recorded.headers["authorization"] == "***" and recorded.json["training_file"] == file_id


def test_openai_faults(oai: httpx.Client, openai_fake: FakeOpenAI) -> None:
    file_id = upload(oai)["id"]
    create = {"model": "gpt-4o-mini", "training_file": file_id}
    openai_fake.inject("500", r"/fine_tuning/jobs$", method="POST")
    failed = oai.post("/fine_tuning/jobs", json=create)
    assert failed.status_code == 500 and failed.json()["error"]["type"] == "server_error"
    openai_fake.inject("429", r"/fine_tuning/jobs$", retry_after=7, times=2)
    limited = [oai.get("/fine_tuning/jobs") for _ in range(3)]
    assert [r.status_code for r in limited] == [429, 429, 200] and limited[0].headers["Retry-After"] == "7"

    before = len(openai_fake.jobs)
    openai_fake.inject("timeout", r"/fine_tuning/jobs$", method="POST", delay=1.0)
    with pytest.raises(httpx.ReadTimeout):
        oai.post("/fine_tuning/jobs", json=create, timeout=0.2)
    assert len(openai_fake.jobs) == before  # timed out before the operation: nothing created

    openai_fake.inject("drop_after_create", r"/fine_tuning/jobs$", method="POST")
    with pytest.raises(httpx.RemoteProtocolError):
        oai.post("/fine_tuning/jobs", json=create)
    assert len(openai_fake.jobs) == before + 1  # created, but the client never heard of it

    armed = httpx.post(f"{openai_fake.host}/_fake/faults", json={"kind": "disconnect", "path": "/files"})
    assert armed.status_code == 200
    with pytest.raises(httpx.RemoteProtocolError):
        oai.get(f"/files/{file_id}")
    state = httpx.get(f"{openai_fake.host}/_fake/state").json()
    assert state["jobs"] == len(openai_fake.jobs) and state["violations"] == []
    assert openai_fake.violations == []


async def test_openai_async_runner_and_control_advance() -> None:
    fake = FakeOpenAI(steps_per_get=0)
    await fake.start()
    try:
        async with httpx.AsyncClient(base_url=fake.base_url, headers={"Authorization": "Bearer k"}) as client:
            files = {"file": ("t.jsonl", GOOD_JSONL)}
            file = (await client.post("/files", files=files, data={"purpose": "fine-tune"})).json()
            job = (
                await client.post("/fine_tuning/jobs", json={"model": "m", "training_file": file["id"]})
            ).json()
            moved = await client.post(
                f"{fake.host}/_fake/advance", json={"job_id": job["id"], "to": "succeeded"}
            )
            assert moved.json()["status"] == "succeeded"
        assert fake.violations == []
    finally:
        await fake.stop()


def test_openai_cli_serves_until_terminated() -> None:
    process = subprocess.Popen(
        [sys.executable, "-m", "tests.fakes.openai_upstream", "--port", "0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        word, base_url = process.stdout.readline().split()
        assert word == "listening"
        response = httpx.get(
            f"{base_url}/fine_tuning/jobs", headers={"Authorization": "Bearer k"}, timeout=10
        )
        assert response.json() == {"object": "list", "data": [], "has_more": False}
    finally:
        process.terminate()
        assert process.wait(timeout=10) == 0
        assert process.stderr is not None and process.stderr.read() == ""  # no runpy warning


# -- Azure --------------------------------------------------------------------------------------


def test_azure_dated_lifecycle(az: httpx.Client, azure_fake: FakeAzureOpenAI) -> None:
    created = az.post(
        "/files", params=V, files={"file": ("t.jsonl", GOOD_JSONL)}, data={"purpose": "fine-tune"}
    )
    assert created.status_code == 201 and created.headers["Location"].endswith(
        f"{created.json()['id']}?api-version=2024-10-21"
    )
    file = created.json()
    dated.check("File", file)
    assert file["status"] == "pending"
    body = {
        "model": AZ_MODEL,
        "training_file": file["id"],
        "suffix": "my_model-1",
        "hyperparameters": {"n_epochs": 2},
    }
    early = az.post("/fine_tuning/jobs", params=V, json=body)
    assert early.status_code == 400 and early.json()["error"]["code"] == "invalidPayload"
    assert len(azure_fake.violations) == 1
    azure_fake.reset()
    assert azure_fake.advance_file(file["id"], steps=1) == "running"
    assert azure_fake.advance_file(file["id"], steps=1) == "processed"

    job_response = az.post("/fine_tuning/jobs", params=V, json=body)
    assert job_response.status_code == 201 and "Location" in job_response.headers
    job = job_response.json()
    dated.check("FineTuningJob", job)
    assert job["status"] == "pending" and "organisation_id" in job and "validation_file" not in job
    statuses = []
    for _ in range(6):
        azure_fake.advance(job["id"])
        statuses.append(az.get(f"/fine_tuning/jobs/{job['id']}", params=V).json()["status"])
    assert statuses == ["pending", "running", "running", "running", "running", "succeeded"]
    done = az.get(f"/fine_tuning/jobs/{job['id']}", params=V).json()
    assert done["fine_tuned_model"].startswith(f"{AZ_MODEL}.ft-") and done["hyperparameters"]["n_epochs"] == 2

    files = {"file": ("few.jsonl", (CHAT + "\n").encode())}
    few = az.post("/files", params=V, files=files, data={"purpose": "fine-tune"}).json()
    azure_fake.advance_file(few["id"])
    small = az.post(
        "/fine_tuning/jobs", params=V, json={"model": AZ_MODEL, "training_file": few["id"]}
    ).json()
    azure_fake.advance(small["id"], to="succeeded")
    events = az.get(f"/fine_tuning/jobs/{small['id']}/events", params=V).json()
    dated.check("FineTuningJobEventList", events)
    assert "warning" in {e["level"] for e in events["data"]}
    checkpoints = az.get(f"/fine_tuning/jobs/{small['id']}/checkpoints", params=V).json()
    dated.check("FineTuningJobCheckpointList", checkpoints)
    assert len(checkpoints["data"]) == 3
    assert az.delete(f"/fine_tuning/jobs/{small['id']}", params=V).status_code == 204
    assert azure_fake.violations == []


def test_azure_bad_jsonl_ends_in_file_error(az: httpx.Client, azure_fake: FakeAzureOpenAI) -> None:
    file = upload(az, b"not json\n", params=V)
    assert azure_fake.advance_file(file["id"]) == "error"
    details = az.get(f"/files/{file['id']}", params=V).json()
    assert details["status"] == "error" and "JSON" in details["status_details"]
    assert azure_fake.violations == []


@pytest.mark.parametrize(
    ("method", "path", "params", "body", "status", "code"),
    [
        ("GET", "/fine_tuning/jobs", {}, None, 404, "notFound"),
        ("GET", "/fine_tuning/jobs", {"api-version": "2023-05-15"}, None, 400, "invalidPayload"),
        (
            "POST",
            "/fine_tuning/jobs",
            V,
            {"model": AZ_MODEL, "training_file": "$F", "metadata": {}},
            400,
            "invalidPayload",
        ),
        (
            "POST",
            "/fine_tuning/jobs",
            V,
            {"model": AZ_MODEL, "training_file": "$F", "method": {}},
            400,
            "invalidPayload",
        ),
        (
            "POST",
            "/fine_tuning/jobs",
            V,
            {"model": AZ_MODEL, "training_file": "$F", "hyperparameters": {"n_epochs": "auto"}},
            400,
            "invalidPayload",
        ),
        (
            "POST",
            "/fine_tuning/jobs",
            V,
            {"model": AZ_MODEL, "training_file": "$F", "suffix": "x" * 41},
            400,
            "invalidPayload",
        ),
        (
            "POST",
            "/fine_tuning/jobs",
            V,
            {"model": AZ_MODEL, "training_file": "$F", "suffix": "a.b"},
            400,
            "invalidPayload",
        ),
        (
            "POST",
            "/fine_tuning/jobs",
            V,
            {"model": "gpt-4o-mini-2024.07.18", "training_file": "$F"},
            400,
            "invalidPayload",
        ),
        (
            "POST",
            "/fine_tuning/jobs",
            V,
            {"model": AZ_MODEL, "training_file": "$F", "validation_file": None},
            400,
            "invalidPayload",
        ),
        (
            "POST",
            "/fine_tuning/jobs",
            V,
            {"model": AZ_MODEL, "training_file": "file-unknown"},
            400,
            "invalidPayload",
        ),
        ("POST", "/fine_tuning/jobs/ftjob-x/pause", V, None, 404, "notFound"),
        ("GET", "/fine_tuning/jobs", {**V, "limit": "-1"}, None, 400, "invalidPayload"),
    ],
)
def test_azure_dated_rejects_and_records(
    az: httpx.Client,
    azure_fake: FakeAzureOpenAI,
    method: str,
    path: str,
    params: dict[str, str],
    body: Any,
    status: int,
    code: str,
) -> None:
    file = upload(az, params=V)
    azure_fake.advance_file(file["id"])
    if isinstance(body, dict) and body.get("training_file") == "$F":
        body = {**body, "training_file": file["id"]}
    response = az.request(method, path, params=params, json=body)
    assert response.status_code == status, response.text
    dated.check("ErrorResponse", response.json())
    assert response.json()["error"]["code"] == code and "type" not in response.json()["error"]
    assert len(azure_fake.violations) == 1, azure_fake.violations


def test_azure_auth_is_required(az: httpx.Client, azure_fake: FakeAzureOpenAI) -> None:
    response = httpx.get(f"{az.base_url}fine_tuning/jobs", params=V)
    assert response.status_code == 401 and response.json()["error"]["code"] == "unauthorized"
    bearer = httpx.get(f"{az.base_url}fine_tuning/jobs", params=V, headers={"Authorization": "Bearer t"})
    assert bearer.status_code == 200
    assert len(azure_fake.violations) == 1


def test_azure_v1_surface(azure_fake: FakeAzureOpenAI) -> None:
    azure_fake.reset()
    base = azure_fake.v1_base_url("resv1")
    with httpx.Client(base_url=base, headers={"Authorization": "Bearer tok"}, timeout=5) as v1:
        files = {"file": ("t.jsonl", GOOD_JSONL)}
        data = {
            "purpose": "fine-tune",
            "expires_after[anchor]": "created_at",
            "expires_after[seconds]": "3600",
        }
        file = v1.post("/files", files=files, data=data)
        assert file.status_code == 200 and file.json()["status"] == "pending"
        azure_fake.advance_file(file.json()["id"])
        method = {"type": "supervised", "supervised": {"hyperparameters": {"n_epochs": "auto"}}}
        body = {
            "model": AZ_MODEL,
            "training_file": file.json()["id"],
            "metadata": {"tg": "1"},
            "method": method,
        }
        job = v1.post("/fine_tuning/jobs", json=body).json()
        validate("FineTuningJob", job)
        assert job["metadata"] == {"tg": "1"} and job["status"] == "validating_files"
        azure_fake.advance(job["id"], to="running")
        assert v1.post(f"/fine_tuning/jobs/{job['id']}/pause").json()["status"] == "paused"
        assert v1.post(f"/fine_tuning/jobs/{job['id']}/resume").json()["status"] == "running"
        assert azure_fake.violations == []
        validate(
            "ListPaginatedFineTuningJobsResponse",
            v1.get("/fine_tuning/jobs", params={"api-version": "preview"}).json(),
        )
        events = v1.get(f"/fine_tuning/jobs/{job['id']}/events").json()
        validate("ListFineTuningJobEventsResponse", events)

        wrong = v1.get("/fine_tuning/jobs", params={"api-version": "2024-10-21"})
        error = wrong.json()["error"]
        assert (
            wrong.status_code == 400
            and error["type"] == "error"
            and set(error) == {"code", "message", "param", "type"}
        )
        assert v1.get("/fine_tuning/jobs", params={"metadata[tg]": "1"}).status_code == 400  # §4.2: no filter
        assert len(azure_fake.violations) == 2

        dated_view = httpx.get(
            f"{azure_fake.base_url('resv1')}/fine_tuning/jobs/{job['id']}", params=V, headers={"api-key": "k"}
        )
        dated.check("FineTuningJob", dated_view.json())
        assert dated_view.json()["status"] == "running" and "metadata" not in dated_view.json()


def test_azure_faults_use_azure_envelope(az: httpx.Client, azure_fake: FakeAzureOpenAI) -> None:
    azure_fake.inject("429", "/fine_tuning/jobs", retry_after=3)
    response = az.get("/fine_tuning/jobs", params=V)
    assert response.status_code == 429 and response.headers["Retry-After"] == "3"
    assert response.json() == {
        "error": {"code": "tooManyRequests", "message": "Rate limit reached (injected)."}
    }
    assert "apim-request-id" in response.headers
    file = upload(az, params=V)
    azure_fake.advance_file(file["id"])
    azure_fake.inject("drop_after_create", "/fine_tuning/jobs$", method="POST")
    before = len(azure_fake.jobs)
    with pytest.raises(httpx.RemoteProtocolError):
        az.post("/fine_tuning/jobs", params=V, json={"model": AZ_MODEL, "training_file": file["id"]})
    assert len(azure_fake.jobs) == before + 1
    assert azure_fake.violations == []


# -- the official SDKs, as the gateway's own tests will use them ----------------------------------


def test_official_sdks_pass_the_fakes_checks(openai_fake: FakeOpenAI, azure_fake: FakeAzureOpenAI) -> None:
    import openai

    openai_fake.reset()
    azure_fake.reset()
    client = openai.OpenAI(base_url=openai_fake.base_url, api_key="sk-sdk", max_retries=0)
    file = client.files.create(file=("t.jsonl", GOOD_JSONL), purpose="fine-tune")
    job = client.fine_tuning.jobs.create(
        model="gpt-4o-mini",
        training_file=file.id,
        metadata={"tg": "1"},
        method={"type": "supervised", "supervised": {"hyperparameters": {"n_epochs": 2}}},
    )
    openai_fake.advance(job.id, to="succeeded")
    assert client.fine_tuning.jobs.retrieve(job.id).fine_tuned_model
    assert len(list(client.fine_tuning.jobs.checkpoints.list(job.id))) == 3
    assert [j.id for j in client.fine_tuning.jobs.list(metadata={"tg": "1"})] == [job.id]
    assert client.files.content(file.id).read() == GOOD_JSONL
    assert openai_fake.violations == []

    azure = openai.AzureOpenAI(
        azure_endpoint=azure_fake.endpoint("sdkres"), api_key="k", api_version="2024-10-21", max_retries=0
    )
    azure_file = azure.files.create(file=("t.jsonl", GOOD_JSONL), purpose="fine-tune")
    azure_fake.advance_file(azure_file.id)
    azure_job = azure.fine_tuning.jobs.create(model=AZ_MODEL, training_file=azure_file.id)
    assert azure_fake.advance(azure_job.id, to="succeeded") == "succeeded"
    assert azure.fine_tuning.jobs.retrieve(azure_job.id).status == "succeeded"
    assert azure_fake.violations == []


# -- chat completions and models ---------------------------------------------------------------


def test_openai_chat_through_the_sdk(openai_fake: FakeOpenAI) -> None:
    import openai

    openai_fake.reset()
    client = openai.OpenAI(api_key="sk-chat", base_url=openai_fake.base_url, max_retries=0)
    messages: Any = [{"role": "user", "content": "Hello!"}]
    answer = client.chat.completions.create(model="gpt-4o-mini", messages=messages)
    assert answer.choices[0].message.content == "x" * 24 and answer.object == "chat.completion"
    chunks = list(client.chat.completions.create(model="gpt-4o-mini", messages=messages, stream=True))
    assert "".join(c.choices[0].delta.content or "" for c in chunks) == "x" * 24
    assert chunks[-1].choices[0].finish_reason == "stop"
    assert [m.id for m in client.models.list()] == list(openai_fake.base_models)
    assert client.models.retrieve(openai_fake.base_models[0]).owned_by == "system"
    with pytest.raises(openai.NotFoundError) as raised:
        client.models.retrieve("ft:nope")
    assert raised.value.code == "model_not_found"
    assert openai_fake.violations == []
    calls = openai_fake.chat_calls[-2:]
    assert [c.stream for c in calls] == [False, True] and all(c.completed for c in calls)


def test_openai_chat_rejects_requests_against_the_spec(oai: httpx.Client, openai_fake: FakeOpenAI) -> None:
    openai_fake.reset()
    for body, param in (
        ({"messages": [{"role": "user", "content": "x"}]}, None),
        ({"model": "m", "messages": [{"role": "nobody", "content": "x"}]}, "messages"),
        ({"model": "m", "messages": [{"role": "user", "content": "x"}], "temperature": "hot"}, "temperature"),
    ):
        response = oai.post("/chat/completions", json=body)
        assert response.status_code == 400, response.text
        validate("ErrorResponse", response.json())
        assert response.json()["error"]["param"] == param
    assert len(openai_fake.violations) == 3
    openai_fake.reset()


def test_azure_chat_through_the_sdk(azure_fake: FakeAzureOpenAI) -> None:
    import openai

    azure_fake.reset()
    messages: Any = [{"role": "user", "content": "Hello!"}]
    dated_client = openai.AzureOpenAI(
        api_key="k",
        api_version="2024-10-21",
        azure_endpoint=azure_fake.endpoint("res"),
        azure_deployment="my-deployment",
        max_retries=0,
    )
    answer = dated_client.chat.completions.create(model="ignored", messages=messages)
    assert answer.model == "my-deployment"
    streamed = list(dated_client.chat.completions.create(model="ignored", messages=messages, stream=True))
    assert streamed[-1].choices[0].finish_reason == "stop"
    v1 = openai.OpenAI(api_key="k", base_url=azure_fake.v1_base_url("res"), max_retries=0)
    assert v1.chat.completions.create(model="dep", messages=messages).model == "dep"
    assert [m.id for m in v1.models.list()] == list(azure_fake.base_models)
    paths = [c.path for c in azure_fake.chat_calls[-3:]]
    assert paths == ["/res/openai/deployments/my-deployment/chat/completions"] * 2 + [
        "/res/openai/v1/chat/completions"
    ]
    assert azure_fake.violations == []
