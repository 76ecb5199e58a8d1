"""A live watch of a fine-tuning job (`WatchFineTuningJob`, and over REST
`GET /v1/fine_tuning/jobs/{id}/events?stream=true` as server-sent events), on a real gateway
whose `openai` provider is the spec-checking fake; the test drives the job's states."""

from __future__ import annotations

import asyncio
import itertools
import json
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import httpx
import openai
import pytest
from tunegate.openai_json import to_openai
from tunegate.v1 import fine_tuning_pb2 as ft
from tunegate.v1 import fine_tuning_pb2_grpc

from tests.conftest import Gateway, start_gateway
from tests.e2e.providers import TRAINING, routing_for
from tests.e2e.sdk import openai_client
from tests.fakes import FakeOpenAI, start_fake_azure_in_thread, start_fake_openai_in_thread

MODEL = "gpt-4o-mini-2024-07-18"
POLL = 0.05
TERMINAL = ("succeeded", "failed", "cancelled")


@dataclass
class Stack:
    gateway: Gateway
    openai: FakeOpenAI


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    fake = start_fake_openai_in_thread(steps_per_get=0)  # only the test moves a job on
    azure = start_fake_azure_in_thread()
    gateway = start_gateway(
        tmp_path_factory.mktemp("watch"),
        routing=routing_for(fake, azure),
        reconcile_grace_seconds=0.0,
        watch_poll_seconds=POLL,
    )
    yield Stack(gateway, fake)
    gateway.close()
    fake.close()
    azure.close()


@pytest.fixture(autouse=True)
def no_violations(stack: Stack) -> Iterator[None]:
    yield
    assert stack.openai.violations == []


def _headers(api_key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {api_key}", "x-portkey-provider": "openai"}


def _metadata(api_key: str) -> tuple[tuple[str, str], ...]:
    return tuple((k.lower(), v) for k, v in _headers(api_key).items())


def _client(stack: Stack, api_key: str) -> openai.OpenAI:
    return openai_client(
        stack.gateway.base_url, api_key, max_retries=0, default_headers={"x-portkey-provider": "openai"}
    )


def _new_job(stack: Stack, api_key: str, tmp_path: Path) -> tuple[str, str]:
    """A new job on the fake: (gateway id, native id)."""
    path = tmp_path / "train.jsonl"
    path.write_bytes(TRAINING)
    client = _client(stack, api_key)
    training = client.files.create(file=path.open("rb"), purpose="fine-tune")
    job = client.fine_tuning.jobs.create(model=MODEL, training_file=training.id)
    (native,) = [j for j in stack.openai.jobs.values() if (j.metadata or {}).get("tunegate_job_id") == job.id]
    return job.id, native.id


def _drive(stack: Stack, native_id: str, started: threading.Event) -> threading.Thread:
    """Moves the fake's job one step every few polls, once `started` is set, until it is done."""

    def run() -> None:
        started.wait(30)
        while stack.openai.advance(native_id) not in TERMINAL:
            time.sleep(POLL * 3)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def _all_events_oldest_first(stack: Stack, api_key: str, job_id: str) -> list[dict[str, Any]]:
    page = _client(stack, api_key).fine_tuning.jobs.list_events(job_id, limit=100)
    assert not page.has_more
    return [event.model_dump(mode="json") for event in reversed(page.data)]


def _check_watch(
    updates: list[tuple[str, dict[str, Any]]], events: list[dict[str, Any]], job_id: str
) -> None:
    """Job first; then events oldest first, each once, and the job again on each status change;
    the last job sent is terminal and nothing comes after the events up to then."""
    kind, first = updates[0]
    assert kind == "job" and first["id"] == job_id and first["object"] == "fine_tuning.job"
    jobs = [body for kind, body in updates if kind == "job"]
    statuses = [job["status"] for job in jobs]
    assert all(a != b for a, b in itertools.pairwise(statuses)), statuses
    assert statuses[-1] == "succeeded" and updates[-1] == ("job", jobs[-1])
    assert jobs[-1]["fine_tuned_model"] and jobs[-1]["finished_at"]
    assert {"queued", "running"} <= set(statuses)
    sent = [body for kind, body in updates if kind == "event"]
    assert all(e["object"] == "fine_tuning.job.event" for e in sent)
    assert [e["id"] for e in sent] == [e["id"] for e in events]  # all of them, oldest first, once
    assert sent == [{**e, "data": e.get("data")} for e in sent]  # plain JSON objects
    assert len(sent) >= 4


def test_a_grpc_watch_sends_the_job_then_events_and_ends_at_a_terminal_state(
    stack: Stack, api_key: str, tmp_path: Path
) -> None:
    job_id, native_id = _new_job(stack, api_key, tmp_path)
    started = threading.Event()
    driver = _drive(stack, native_id, started)
    updates: list[tuple[str, dict[str, Any]]] = []
    with grpc.insecure_channel(stack.gateway.grpc_target) as channel:
        stub = fine_tuning_pb2_grpc.FineTuningStub(channel)
        call = stub.WatchFineTuningJob(
            ft.WatchFineTuningJobRequest(fine_tuning_job_id=job_id), metadata=_metadata(api_key), timeout=60
        )
        for update in call:
            which = update.WhichOneof("update")
            assert which in ("job", "event")
            updates.append((which, to_openai(getattr(update, which))))
            started.set()
        assert call.code() is grpc.StatusCode.OK
    driver.join(10)
    events = _all_events_oldest_first(stack, api_key, job_id)
    _check_watch(updates, events, job_id)
    assert updates[0][1]["status"] in ("validating_files", "queued")

    # A finished job: the job, its events, the end — at once.
    with grpc.insecure_channel(stack.gateway.grpc_target) as channel:
        stub = fine_tuning_pb2_grpc.FineTuningStub(channel)
        again = list(
            stub.WatchFineTuningJob(
                ft.WatchFineTuningJobRequest(fine_tuning_job_id=job_id),
                metadata=_metadata(api_key),
                timeout=10,
            )
        )
        assert again[0].WhichOneof("update") == "job" and again[0].job.status == ft.JOB_STATUS_SUCCEEDED
        assert [u.event.id for u in again[1:]] == [e["id"] for e in events]
        # `after` resumes after an event the caller has seen.
        resumed = list(
            stub.WatchFineTuningJob(
                ft.WatchFineTuningJobRequest(fine_tuning_job_id=job_id, after=events[1]["id"]),
                metadata=_metadata(api_key),
                timeout=10,
            )
        )
        assert [u.event.id for u in resumed[1:]] == [e["id"] for e in events[2:]]


def _sse(lines: Iterator[str]) -> Iterator[str]:
    """The `data` of each server-sent event (one `data:` line each here)."""
    data: list[str] = []
    for line in lines:
        if line == "":
            if data:
                yield "\n".join(data)
            data = []
        elif line.startswith("data: "):
            data.append(line[len("data: ") :])
        else:
            assert line.startswith(":"), f"unexpected SSE line {line!r}"
    assert data == [], "the stream ended inside an event"


def test_rest_watch_is_server_sent_events_and_the_unary_path_is_unchanged(
    stack: Stack, api_key: str, tmp_path: Path
) -> None:
    job_id, native_id = _new_job(stack, api_key, tmp_path)
    url = f"{stack.gateway.base_url}/fine_tuning/jobs/{job_id}/events"
    started = threading.Event()
    driver = _drive(stack, native_id, started)
    payloads: list[str] = []
    with httpx.Client(timeout=60, headers=_headers(api_key)) as http:
        with http.stream("GET", url, params={"stream": "true"}) as response:
            assert response.status_code == 200
            assert response.headers["content-type"].startswith("text/event-stream")
            assert response.headers["cache-control"] == "no-cache" and response.headers["x-request-id"]
            for data in _sse(response.iter_lines()):
                payloads.append(data)
                started.set()
        driver.join(10)
        assert payloads[-1] == "[DONE]" and payloads.count("[DONE]") == 1
        objects = [json.loads(p) for p in payloads[:-1]]
        kinds = {"fine_tuning.job": "job", "fine_tuning.job.event": "event"}
        updates = [(kinds[o["object"]], o) for o in objects]
        events = _all_events_oldest_first(stack, api_key, job_id)
        _check_watch(updates, events, job_id)
        # The last job is rendered exactly as GET /v1/fine_tuning/jobs/{id} renders it.
        assert updates[-1][1] == http.get(f"{stack.gateway.base_url}/fine_tuning/jobs/{job_id}").json()

        # Without stream=true (or with stream=false) the path is still the unary list.
        for params in ({}, {"stream": "false"}, {"limit": "2"}):
            unary = http.get(url, params=params)
            assert unary.status_code == 200 and unary.headers["content-type"].startswith("application/json")
            page = unary.json()
            assert page["object"] == "list" and page["data"][0]["id"] == events[-1]["id"]
        assert http.get(url, params={"limit": "2"}).json()["has_more"] is True
        assert http.get(url).json()["data"] == list(reversed(events))  # newest first, as OpenAI
        bad = http.get(url, params={"stream": "maybe"})
        assert bad.status_code == 400 and bad.json()["error"]["param"] == "stream"


def test_another_owner_and_a_bad_cursor_get_ordinary_errors(
    stack: Stack, api_key: str, tmp_path: Path
) -> None:
    job_id, _ = _new_job(stack, api_key, tmp_path)
    url = f"{stack.gateway.base_url}/fine_tuning/jobs/{job_id}/events"
    with httpx.Client(timeout=10) as http:
        for headers, query, status, param in (
            (_headers("sk-someone-else"), {"stream": "true"}, 404, "fine_tuning_job_id"),
            (_headers(api_key), {"stream": "true", "after": "ftevent-nope"}, 400, "after"),
        ):
            answer = http.get(url, params=query, headers=headers)
            assert answer.status_code == status, answer.text
            assert answer.headers["content-type"].startswith("application/json")
            assert answer.json()["error"]["param"] == param
        missing = http.get(
            f"{stack.gateway.base_url}/fine_tuning/jobs/ftjob-missing/events",
            params={"stream": "true"},
            headers=_headers(api_key),
        )
        assert missing.status_code == 404 and missing.json()["error"]["code"] == "job_not_found"
    with grpc.insecure_channel(stack.gateway.grpc_target) as channel:
        stub = fine_tuning_pb2_grpc.FineTuningStub(channel)
        foreign: Any = stub.WatchFineTuningJob(
            ft.WatchFineTuningJobRequest(fine_tuning_job_id=job_id),
            metadata=_metadata("sk-someone-else"),
            timeout=10,
        )
        with pytest.raises(grpc.RpcError) as raised:
            next(foreign)
        assert raised.value.code() is grpc.StatusCode.NOT_FOUND


def _tasks(gateway: Gateway) -> int:
    """How many asyncio tasks the gateway's event loop runs (each RPC in flight is one)."""

    async def count() -> int:
        return len(asyncio.all_tasks())

    return asyncio.run_coroutine_threadsafe(count(), gateway._loop).result(5)


def _settles_to(gateway: Gateway, baseline: int) -> bool:
    """Whether the gateway's task count comes back to `baseline` within two seconds."""
    deadline = time.monotonic() + 2.0
    while time.monotonic() < deadline:
        if _tasks(gateway) <= baseline:
            return True
        time.sleep(POLL)
    return False


def test_a_client_that_goes_away_stops_the_watch(stack: Stack, api_key: str, tmp_path: Path) -> None:
    job_id, native_id = _new_job(stack, api_key, tmp_path)
    url = f"{stack.gateway.base_url}/fine_tuning/jobs/{job_id}/events"
    time.sleep(POLL * 4)
    baseline = _tasks(stack.gateway)
    with (
        httpx.Client(timeout=10, headers=_headers(api_key)) as http,
        http.stream("GET", url, params={"stream": "true"}) as response,
    ):
        events = _sse(response.iter_lines())  # kept: a dropped iterator closes the response
        assert json.loads(next(events))["status"] == "validating_files"
        time.sleep(POLL * 6)
    assert _settles_to(stack.gateway, baseline)  # the edge's handler and the server's loop ended

    with grpc.insecure_channel(stack.gateway.grpc_target) as channel:
        stub = fine_tuning_pb2_grpc.FineTuningStub(channel)
        call: Any = stub.WatchFineTuningJob(
            ft.WatchFineTuningJobRequest(fine_tuning_job_id=job_id), metadata=_metadata(api_key), timeout=10
        )
        assert next(call).WhichOneof("update") == "job"
        time.sleep(POLL * 6)
        call.cancel()
        assert _settles_to(stack.gateway, baseline)
    assert stack.openai.advance(native_id) == "queued"  # the job itself is untouched
