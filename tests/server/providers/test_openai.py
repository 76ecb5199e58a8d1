"""`OpenAIProvider` against a scripted upstream on 127.0.0.1 (real sockets): request shapes, the
tag, pages, errors."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from tunegate.server.errors import (
    DeadlineExceeded,
    Internal,
    InvalidArgument,
    NotFound,
    ResourceExhausted,
    UpstreamError,
)
from tunegate.server.providers import TAG_KEY, Capability, OpenAIProvider, Provider, ProviderFile

from tests.openapi_schema import validate

from .support import SECRET, Sleeps, Upstream, openai_account, openai_job, page

TAG = "ftjob-gw-0001"


def provider(sleeps: Sleeps | None = None) -> OpenAIProvider:
    return OpenAIProvider(sleep=sleeps or Sleeps(), jitter=lambda: 0.0)


def echo_job(request: httpx.Request) -> httpx.Response:
    body = json.loads(request.content)
    return httpx.Response(200, json=openai_job(model=body["model"], metadata=body.get("metadata")))


def test_conforms_to_the_protocol() -> None:
    adapter: Provider = OpenAIProvider()
    assert adapter.name == "openai" and adapter.capabilities == frozenset(Capability) - {
        Capability.RESULT_FILES,
        Capability.STAGED_FILES,
    }


async def test_create_job_request_shape() -> None:
    upstream = Upstream().on("POST", "/v1/fine_tuning/jobs", echo_job)
    request: dict[str, Any] = {
        "model": "gpt-4o-mini-2024-07-18",
        "training_file": "file-train",
        "validation_file": None,
        "suffix": None,
        "seed": 7,
        "method": {
            "type": "supervised",
            "supervised": {"hyperparameters": {"n_epochs": 3, "batch_size": "auto"}},
        },
        "metadata": {"team": "search"},
        "request_id": "req-1",
        "portkey_options": {"x": 1},
        "provider_options": {"y": 2},
    }
    account = openai_account(upstream, organization="org-9", project="proj_1")
    job = await provider().create_job(account, request, tag=TAG)

    (sent,) = upstream.requests
    assert sent.method == "POST" and str(sent.url) == f"{upstream.url}/v1/fine_tuning/jobs"
    assert sent.headers["authorization"] == f"Bearer {SECRET}"
    assert sent.headers["openai-organization"] == "org-9" and sent.headers["openai-project"] == "proj_1"
    body = json.loads(sent.content)
    validate("CreateFineTuningJobRequest", body)
    assert body == {
        "model": "gpt-4o-mini-2024-07-18",
        "training_file": "file-train",
        "seed": 7,
        "method": {
            "type": "supervised",
            "supervised": {"hyperparameters": {"n_epochs": 3, "batch_size": "auto"}},
        },
        "metadata": {"team": "search", TAG_KEY: TAG},
    }
    assert job["metadata"] == {"team": "search"}  # the tag never reaches the caller
    validate("FineTuningJob", job)


@pytest.mark.parametrize(("sent", "answered"), [(None, None), ({}, {})])
async def test_create_job_without_user_metadata(sent: dict[str, str] | None, answered: object) -> None:
    upstream = Upstream().on("POST", "/v1/fine_tuning/jobs", echo_job)
    request = {"model": "gpt-4o-mini", "training_file": "file-1", "metadata": sent}
    job = await provider().create_job(openai_account(upstream), request, tag=TAG)
    assert upstream.last_json()["metadata"] == {TAG_KEY: TAG}
    validate("CreateFineTuningJobRequest", upstream.last_json())
    assert job["metadata"] == answered


async def test_no_headers_for_absent_org_and_project() -> None:
    upstream = Upstream().on("GET", "/v1/fine_tuning/jobs/ftjob-abc", httpx.Response(200, json=openai_job()))
    await provider().get_job(openai_account(upstream), "ftjob-abc")
    headers = upstream.requests[0].headers
    assert "openai-organization" not in headers and "openai-project" not in headers


@pytest.mark.parametrize(
    "metadata", [{f"k{i}": "v" for i in range(16)}, {TAG_KEY: "mine"}], ids=["sixteen-pairs", "reserved-key"]
)
async def test_metadata_must_leave_room_for_the_tag(metadata: dict[str, str]) -> None:
    upstream = Upstream()
    adapter = provider()
    request = {"model": "m", "training_file": "f", "metadata": metadata}
    with pytest.raises(InvalidArgument) as caught:
        adapter.check_request(openai_account(upstream), request)
    assert caught.value.param == "metadata"
    with pytest.raises(InvalidArgument):
        await adapter.create_job(openai_account(upstream), request, tag=TAG)
    assert upstream.requests == []
    adapter.check_request(
        openai_account(upstream), {**request, "metadata": {f"k{i}": "v" for i in range(15)}}
    )


@pytest.mark.parametrize("reply", [httpx.Response(500), httpx.ReadTimeout("slow"), httpx.Response(429)])
async def test_create_job_is_never_retried(reply: httpx.Response | Exception) -> None:
    upstream, sleeps = Upstream().on("POST", "/v1/fine_tuning/jobs", reply, echo_job), Sleeps()
    with pytest.raises((UpstreamError, DeadlineExceeded, ResourceExhausted)):
        await provider(sleeps).create_job(
            openai_account(upstream), {"model": "m", "training_file": "f"}, tag=TAG
        )
    assert len(upstream.requests) == 1 and sleeps.delays == []


async def test_get_job_strips_tag_and_retries() -> None:
    tagged = openai_job(metadata={TAG_KEY: TAG})
    upstream = Upstream().on(
        "GET", "/v1/fine_tuning/jobs/ftjob-abc", httpx.Response(502), httpx.Response(200, json=tagged)
    )
    job = await provider().get_job(openai_account(upstream), "ftjob-abc")
    assert job["metadata"] is None and len(upstream.requests) == 2


async def test_get_job_errors_keep_their_class() -> None:
    missing = httpx.Response(
        404,
        json={
            "error": {"message": "No such job", "type": "invalid_request_error", "param": None, "code": None}
        },
    )
    upstream = Upstream().on("GET", "/v1/fine_tuning/jobs/ftjob-x", missing)
    with pytest.raises(NotFound) as caught:
        await provider().get_job(openai_account(upstream), "ftjob-x")
    assert caught.value.message == "No such job" and caught.value.http_status == 404


async def test_ids_cannot_escape_their_path_segment() -> None:
    upstream = Upstream()
    with pytest.raises(NotFound):
        await provider().get_job(openai_account(upstream), "../files")
    assert upstream.requests[0].url.raw_path == b"/v1/fine_tuning/jobs/..%2Ffiles"
    with pytest.raises(NotFound):
        await provider().get_job(openai_account(upstream), "..")


async def test_list_jobs_pages_with_after() -> None:
    jobs = [openai_job("ftjob-2", metadata={TAG_KEY: "t", "a": "b"}), openai_job("ftjob-1")]
    upstream = Upstream().on(
        "GET", "/v1/fine_tuning/jobs", page(jobs, has_more=True), page([], has_more=False)
    )
    adapter = provider()
    first = await adapter.list_jobs(openai_account(upstream), limit=2, page_token=None)
    assert [j["id"] for j in first.data] == ["ftjob-2", "ftjob-1"]
    assert first.has_more and first.next_token == "ftjob-1"
    assert first.data[0]["metadata"] == {"a": "b"}
    assert dict(upstream.requests[0].url.params) == {"limit": "2"}
    second = await adapter.list_jobs(openai_account(upstream), limit=2, page_token=first.next_token)
    assert dict(upstream.requests[1].url.params) == {"limit": "2", "after": "ftjob-1"}
    assert (second.data, second.has_more, second.next_token) == ([], False, None)


@pytest.mark.parametrize("action", ["cancel", "pause", "resume"])
async def test_job_actions(action: str) -> None:
    path = f"/v1/fine_tuning/jobs/ftjob-abc/{action}"
    upstream = Upstream().on("POST", path, httpx.Response(200, json=openai_job(status="cancelled")))
    job = await getattr(provider(), f"{action}_job")(openai_account(upstream), "ftjob-abc")
    assert job["id"] == "ftjob-abc" and upstream.requests[0].content == b""


async def test_job_actions_are_not_retried() -> None:
    upstream, sleeps = (
        Upstream().on("POST", "/v1/fine_tuning/jobs/ftjob-abc/cancel", httpx.Response(503)),
        Sleeps(),
    )
    with pytest.raises(UpstreamError):
        await provider(sleeps).cancel_job(openai_account(upstream), "ftjob-abc")
    assert len(upstream.requests) == 1


async def test_events_and_checkpoints_pass_through() -> None:
    event = {
        "object": "fine_tuning.job.event",
        "id": "ftevent-1",
        "created_at": 1,
        "level": "warn",
        "message": "m",
        "type": "message",
        "data": {},
    }
    checkpoint = {
        "object": "fine_tuning.job.checkpoint",
        "id": "ftckpt_1",
        "created_at": 1,
        "fine_tuned_model_checkpoint": "ft:x:ckpt-step-1",
        "fine_tuning_job_id": "ftjob-abc",
        "step_number": 1,
        "metrics": {"step": 1, "train_loss": 0.5},
    }
    upstream = (
        Upstream()
        .on("GET", "/v1/fine_tuning/jobs/ftjob-abc/events", page([event], has_more=True))
        .on("GET", "/v1/fine_tuning/jobs/ftjob-abc/checkpoints", page([checkpoint]))
    )
    adapter = provider()
    events = await adapter.list_events(openai_account(upstream), "ftjob-abc", limit=1, page_token="ftevent-9")
    assert events.data == [event] and events.next_token == "ftevent-1"
    assert dict(upstream.requests[0].url.params) == {"limit": "1", "after": "ftevent-9"}
    checkpoints = await adapter.list_checkpoints(
        openai_account(upstream), "ftjob-abc", limit=10, page_token=None
    )
    assert checkpoints.data == [checkpoint] and checkpoints.next_token is None


async def test_find_job_by_tag_uses_the_metadata_filter() -> None:
    match = openai_job("ftjob-new", created_at=2_000, metadata={TAG_KEY: TAG, "a": "b"})
    upstream = Upstream().on("GET", "/v1/fine_tuning/jobs", page([match]))
    job = await provider().find_job_by_tag(openai_account(upstream), TAG, created_after=1_990)
    assert job is not None and job["id"] == "ftjob-new" and job["metadata"] == {"a": "b"}
    params = upstream.requests[0].url.params
    assert params[f"metadata[{TAG_KEY}]"] == TAG and params["limit"] == "100"


async def test_find_job_by_tag_pages_and_checks_created_after() -> None:
    other = openai_job("ftjob-other", created_at=3_000, metadata={TAG_KEY: "someone-else"})
    too_old = openai_job("ftjob-old", created_at=1_000, metadata={TAG_KEY: TAG})
    upstream = Upstream().on(
        "GET", "/v1/fine_tuning/jobs", page([other], has_more=True), page([too_old], has_more=True)
    )
    assert await provider().find_job_by_tag(openai_account(upstream), TAG, created_after=2_000) is None
    assert len(upstream.requests) == 2  # the second page predates the intent: the search stops
    assert upstream.requests[1].url.params["after"] == "ftjob-other"


async def test_find_job_by_tag_none() -> None:
    upstream = Upstream().on("GET", "/v1/fine_tuning/jobs", page([]))
    assert await provider().find_job_by_tag(openai_account(upstream), TAG, created_after=0) is None


async def test_upload_file_streams_multipart() -> None:
    chunks = [b'{"messages": []}\n' * 100, b'{"messages": [1]}\n' * 50]
    size = sum(map(len, chunks))

    async def source() -> AsyncIterator[bytes]:
        for chunk in chunks:
            yield chunk

    record = {
        "id": "file-1",
        "object": "file",
        "bytes": size,
        "created_at": 1,
        "filename": "t.jsonl",
        "purpose": "fine-tune",
        "status": "processed",
    }
    upstream = Upstream().on("POST", "/v1/files", httpx.Response(200, json=record))
    result = await provider().upload_file(
        openai_account(upstream), filename="t.jsonl", purpose="fine-tune", size=size, chunks=source()
    )
    assert result == ProviderFile("file-1", "processed")
    (sent,) = upstream.requests
    assert int(sent.headers["content-length"]) == len(sent.content)
    assert "transfer-encoding" not in sent.headers
    assert sent.headers["content-type"].startswith("multipart/form-data; boundary=")
    assert b'name="purpose"\r\n\r\nfine-tune\r\n' in sent.content
    assert b"".join(chunks) in sent.content


class StreamingTransport(httpx.AsyncBaseTransport):
    """Reads the request body chunk by chunk, logging each, as a socket writer would."""

    def __init__(self, log: list[str]) -> None:
        self.log = log

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        assert isinstance(request.stream, httpx.AsyncByteStream)
        async for part in request.stream:
            self.log.append(f"send {len(part)}")
        return httpx.Response(200, json={"id": "file-2", "status": "uploaded"})


async def test_upload_file_does_not_buffer() -> None:
    log: list[str] = []

    async def source() -> AsyncIterator[bytes]:
        for _ in range(3):
            log.append("produce")
            yield b"x" * 1000

    adapter = OpenAIProvider(transport=StreamingTransport(log))
    await adapter.upload_file(
        openai_account(), filename="f.jsonl", purpose="fine-tune", size=3000, chunks=source()
    )
    # Each chunk is sent before the next is produced: the file is never held whole.
    assert log[1:] == ["produce", "send 1000", "produce", "send 1000", "produce", "send 1000", log[-1]]
    await adapter.aclose()


async def test_get_file() -> None:
    record = {"id": "file-1", "status": "error", "status_details": "bad line 3"}
    upstream = Upstream().on("GET", "/v1/files/file-1", httpx.Response(200, json=record))
    assert await provider().get_file(openai_account(upstream), "file-1") == ProviderFile(
        "file-1", "error", "bad line 3"
    )


async def test_upload_of_a_short_stream_fails_loudly() -> None:
    async def source() -> AsyncIterator[bytes]:
        yield b"only this"

    upstream = Upstream().on(
        "POST", "/v1/files", httpx.Response(200, json={"id": "file-1", "status": "processed"})
    )
    with pytest.raises(Internal):
        await provider().upload_file(
            openai_account(upstream), filename="f.jsonl", purpose="fine-tune", size=100, chunks=source()
        )
