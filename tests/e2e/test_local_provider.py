"""The `local` provider end to end: real (tiny) fine-tuning on this machine, driven with the
official `openai` SDK through the edge, every response checked against OpenAI's spec.

Kept cheap for CI: `tunegate-tiny` (116 k parameters), 12 examples, 1–2 epochs."""

from __future__ import annotations

import asyncio
import contextlib
import csv
import io
import json
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import httpx
import openai
import pytest
from google.api import httpbody_pb2
from tunegate.v1 import chat_pb2, chat_pb2_grpc

from tests.conftest import Gateway, start_gateway
from tests.e2e.local_rows import local_job, local_jobs
from tests.e2e.sdk import openai_client
from tests.openapi_schema import validate

MODEL = "tunegate-tiny"
TERMINAL = ("succeeded", "failed", "cancelled")


def _supervised(count: int = 12) -> str:
    lines = [
        {"messages": [{"role": "user", "content": f"Say {word}."}, {"role": "assistant", "content": word}]}
        for word in [f"w{i % 4}" for i in range(count)]
    ]
    return "".join(json.dumps(line) + "\n" for line in lines)


def _preference(count: int = 12) -> str:
    lines = [
        {
            "input": {"messages": [{"role": "user", "content": f"Greet {i}."}]},
            "preferred_output": [{"role": "assistant", "content": "Hello!"}],
            "non_preferred_output": [{"role": "assistant", "content": "Go away."}],
        }
        for i in range(count)
    ]
    return "".join(json.dumps(line) + "\n" for line in lines)


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    gw = start_gateway(
        tmp_path_factory.mktemp("local"), in_process=True, local_concurrency=2, local_train_threads=1
    )
    yield gw
    gw.close()


@pytest.fixture
def client(gateway: Gateway, api_key: str) -> openai.OpenAI:
    # No provider header: the gateway's default provider (`local`) serves the jobs.
    return openai_client(gateway.base_url, api_key, max_retries=0)


def upload(client: openai.OpenAI, tmp_path: Path, text: str, name: str = "train.jsonl") -> str:
    path = tmp_path / name
    path.write_text(text)
    with path.open("rb") as stream:
        return client.files.create(file=stream, purpose="fine-tune").id


def wait_for(client: openai.OpenAI, job_id: str, statuses: tuple[str, ...], timeout: float = 90.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        job = client.fine_tuning.jobs.retrieve(job_id)
        if job.status in statuses:
            return job
        assert time.monotonic() < deadline, f"{job_id} still {job.status}"
        time.sleep(0.2)


def wait_until_training(gateway: Gateway, client: openai.OpenAI, job_id: str) -> Path:
    """Wait until the job's worker has finished at least one step; returns the job directory."""
    wait_for(client, job_id, ("running",))
    deadline = time.monotonic() + 60
    while True:
        native = local_job(gateway.data_dir, tag=job_id)
        if native is not None:  # the runner's scratch directory for the job
            progress = gateway.data_dir / "local" / "work" / str(native["id"]) / "progress.json"
            with contextlib.suppress(OSError, ValueError):
                if json.loads(progress.read_text())["step"] >= 1:
                    return progress.parent
        assert time.monotonic() < deadline, "the worker never made a step"
        time.sleep(0.1)


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"


def test_supervised_job_from_upload_to_chat(gateway: Gateway, client: openai.OpenAI, tmp_path: Path) -> None:
    training = upload(client, tmp_path, _supervised())
    job = client.fine_tuning.jobs.create(
        model=MODEL,
        training_file=training,
        suffix="e2e",
        seed=3,
        metadata={"team": "local"},
        method={"type": "supervised", "supervised": {"hyperparameters": {"n_epochs": 2, "batch_size": 2}}},
    )
    assert job.id.startswith("ftjob-") and job.status == "validating_files"
    assert job.training_file == training and job.metadata == {"team": "local"}

    job = wait_for(client, job.id, TERMINAL)
    assert job.status == "succeeded", job.error
    assert job.fine_tuned_model and job.fine_tuned_model.startswith("ft:tunegate-tiny:local:e2e:")
    assert job.trained_tokens and job.trained_tokens > 0 and isinstance(job.finished_at, int)
    assert job.hyperparameters.n_epochs == 2 and job.hyperparameters.batch_size == 2

    # Checkpoints, paged newest first; the loss falls.
    checkpoints = list(client.fine_tuning.jobs.checkpoints.list(job.id, limit=1))
    assert len(checkpoints) >= 2 and len({c.id for c in checkpoints}) == len(checkpoints)
    steps = [c.step_number for c in checkpoints]
    assert steps == sorted(steps, reverse=True)
    first_loss, last_loss = checkpoints[-1].metrics.train_loss, checkpoints[0].metrics.train_loss
    assert first_loss is not None and last_loss is not None and last_loss < first_loss * 0.9

    # Events, paged newest first, include the lifecycle and the worker's metrics.
    events = list(client.fine_tuning.jobs.list_events(job.id, limit=3))
    assert len(events) > 6 and len({e.id for e in events}) == len(events)
    messages = [e.message for e in events]
    assert messages[0] == "The job has successfully completed"
    assert messages[-1].startswith("Created fine-tuning job")
    assert any(e.type == "metrics" for e in events)

    # The result file is a gateway file of the owner, CSV with one row per step.
    (result_id,) = job.result_files
    assert result_id.startswith("file-")
    meta = client.files.retrieve(result_id)
    assert meta.purpose == "fine-tune-results" and meta.filename == "step_metrics.csv"
    rows = list(csv.DictReader(io.StringIO(client.files.content(result_id).text)))
    assert rows and float(rows[-1]["train_loss"]) < float(rows[0]["train_loss"])
    assert client.fine_tuning.jobs.retrieve(job.id).result_files == [result_id]  # imported once

    # The fine-tuned model answers, whole and streamed.
    completion = client.chat.completions.create(
        model=job.fine_tuned_model,
        messages=[{"role": "user", "content": "Say w1."}],
        max_tokens=8,
        temperature=0,
        seed=1,
    )
    validate("CreateChatCompletionResponse", completion.model_dump(mode="json", exclude_unset=True))
    choice = completion.choices[0]
    assert choice.message.role == "assistant" and isinstance(choice.message.content, str)
    assert choice.finish_reason in ("stop", "length") and completion.model == job.fine_tuned_model
    assert completion.usage is not None and 0 < completion.usage.completion_tokens <= 8

    chunks = list(
        client.chat.completions.create(
            model=job.fine_tuned_model,
            messages=[{"role": "user", "content": "Say w1."}],
            max_completion_tokens=8,
            temperature=0,
            seed=1,
            stream=True,
        )
    )
    for chunk in chunks:
        validate("CreateChatCompletionStreamResponse", chunk.model_dump(mode="json", exclude_unset=True))
    assert chunks[0].choices[0].delta.role == "assistant"
    assert chunks[-1].choices[0].finish_reason in ("stop", "length")
    streamed = "".join(c.choices[0].delta.content or "" for c in chunks)
    assert streamed == choice.message.content  # greedy: the same text either way

    with pytest.raises(openai.BadRequestError) as bad:
        client.chat.completions.create(
            model=job.fine_tuned_model, messages=[{"role": "user", "content": "hi"}], n=2
        )
    assert bad.value.body["param"] == "n"  # type: ignore[index]

    # The same model through the async SDK, raw HTTP and gRPC: the same greedy text each way.
    asyncio.run(_async_sdk_answers(client, job.fine_tuned_model, choice.message.content))
    request = {
        "model": job.fine_tuned_model,
        "messages": [{"role": "user", "content": "Say w1."}],
        "max_tokens": 8,
        "temperature": 0,
        "seed": 1,
    }
    headers = {"Authorization": f"Bearer {client.api_key}"}
    with httpx.stream(
        "POST", str(client.base_url) + "chat/completions", json={**request, "stream": True}, headers=headers
    ) as raw:
        assert raw.headers["content-type"].startswith("text/event-stream")
        lines = [line for line in raw.iter_lines() if line]
    assert lines[-1] == "data: [DONE]"
    asyncio.run(_grpc_answers(gateway.grpc_target, client, request, choice.message.content))


async def _async_sdk_answers(client: openai.OpenAI, model: str, text: str | None) -> None:
    async with openai.AsyncOpenAI(base_url=client.base_url, api_key=client.api_key, max_retries=0) as aclient:
        kwargs: dict[str, Any] = {
            "model": model,
            "messages": [{"role": "user", "content": "Say w1."}],
            "max_tokens": 8,
            "temperature": 0,
            "seed": 1,
        }
        whole = await aclient.chat.completions.create(**kwargs)
        assert whole.choices[0].message.content == text
        stream = await aclient.chat.completions.create(**kwargs, stream=True)
        assert "".join([c.choices[0].delta.content or "" async for c in stream]) == text


async def _grpc_answers(
    target: str, client: openai.OpenAI, request: dict[str, Any], text: str | None
) -> None:
    metadata = (("authorization", f"Bearer {client.api_key}"),)
    async with grpc.aio.insecure_channel(target) as channel:
        stub = chat_pb2_grpc.ChatCompletionsStub(channel)
        whole = await stub.CreateChatCompletion(
            chat_pb2.CreateChatCompletionRequest(
                body=httpbody_pb2.HttpBody(content_type="application/json", data=json.dumps(request).encode())
            ),
            metadata=metadata,
        )
        assert whole.content_type == "application/json"
        assert json.loads(whole.data)["choices"][0]["message"]["content"] == text
        streamed = stub.StreamChatCompletion(
            chat_pb2.CreateChatCompletionRequest(
                stream=True,
                body=httpbody_pb2.HttpBody(
                    content_type="application/json", data=json.dumps({**request, "stream": True}).encode()
                ),
            ),
            metadata=metadata,
        )
        data = b"".join([message.data async for message in streamed])
    assert data.endswith(b"data: [DONE]\n\n")
    deltas = [
        json.loads(event[6:])["choices"][0]["delta"].get("content") or ""
        for event in data.decode().split("\n\n")
        if event.startswith("data: {")
    ]
    assert "".join(deltas) == text


def test_dpo_job(client: openai.OpenAI, tmp_path: Path) -> None:
    training = upload(client, tmp_path, _preference())
    job = client.fine_tuning.jobs.create(
        model=MODEL,
        training_file=training,
        method={"type": "dpo", "dpo": {"hyperparameters": {"n_epochs": 1, "batch_size": 4, "beta": 0.2}}},
    )
    job = wait_for(client, job.id, TERMINAL)
    assert job.status == "succeeded", job.error
    assert job.method is not None and job.method.type == "dpo"
    assert job.fine_tuned_model and job.result_files


def test_bad_training_file_fails_validation(client: openai.OpenAI, tmp_path: Path) -> None:
    lines = _supervised().splitlines()
    lines[6] = '{"messages": "not a list"}'
    training = upload(client, tmp_path, "\n".join(lines) + "\n")
    job = client.fine_tuning.jobs.create(model=MODEL, training_file=training)
    job = wait_for(client, job.id, TERMINAL, timeout=30)
    assert job.status == "failed" and job.error is not None
    assert job.error.param == "training_file" and "7" in job.error.message and "ine" in job.error.message
    assert job.fine_tuned_model is None


def test_cancel_a_running_job(gateway: Gateway, client: openai.OpenAI, tmp_path: Path) -> None:
    training = upload(client, tmp_path, _supervised())
    job = client.fine_tuning.jobs.create(
        model=MODEL, training_file=training, hyperparameters={"n_epochs": 50, "batch_size": 1}
    )
    job_dir = wait_until_training(gateway, client, job.id)
    pid = int((job_dir / "worker.pid").read_text())
    started = time.monotonic()
    cancelled = client.fine_tuning.jobs.cancel(job.id)
    assert cancelled.status == "cancelled" and time.monotonic() - started < 6
    assert not pid_alive(pid)
    assert client.fine_tuning.jobs.retrieve(job.id).status == "cancelled"
    with pytest.raises(openai.BadRequestError):
        client.fine_tuning.jobs.resume(job.id)


def test_pause_then_resume_to_success(gateway: Gateway, client: openai.OpenAI, tmp_path: Path) -> None:
    training = upload(client, tmp_path, _supervised())
    job = client.fine_tuning.jobs.create(
        model=MODEL, training_file=training, hyperparameters={"n_epochs": 25, "batch_size": 1}
    )
    job_dir = wait_until_training(gateway, client, job.id)
    paused: str = client.fine_tuning.jobs.pause(job.id).status  # `paused` is newer than the SDK's enum
    assert paused == "paused"
    assert not (job_dir / "worker.pid").exists()  # the slot is free
    status: str = client.fine_tuning.jobs.retrieve(job.id).status
    assert status == "paused"
    resumed = client.fine_tuning.jobs.resume(job.id)
    assert resumed.status in ("queued", "running")
    done = wait_for(client, job.id, TERMINAL)
    assert done.status == "succeeded", done.error
    messages = [e.message for e in client.fine_tuning.jobs.list_events(job.id, limit=100)]
    assert "Job paused" in messages and "Job resumed" in messages


def test_the_base_model_answers_anyone_for_comparison(gateway: Gateway, api_key: str) -> None:
    """`tunegate-tiny` itself chats (untrained, so its words are noise), for every owner: it is
    what a tuned model is compared with."""
    answers = []
    for key in (api_key, api_key + "-other"):
        client = openai_client(gateway.base_url, key)
        completion = client.chat.completions.create(
            model=MODEL, messages=[{"role": "user", "content": "Say w1."}], max_tokens=6, temperature=0
        )
        validate("CreateChatCompletionResponse", completion.model_dump(mode="json", exclude_unset=True))
        assert completion.model == MODEL and completion.usage is not None
        assert 0 < completion.usage.completion_tokens <= 6
        answers.append(completion.choices[0].message.content)
    assert answers[0] == answers[1]  # greedy, one model for everyone
    # Models named by directory are for training only.
    with pytest.raises(openai.NotFoundError):
        client.chat.completions.create(model="local:/tmp", messages=[{"role": "user", "content": "hi"}])


def test_unknown_and_foreign_models_are_not_found(gateway: Gateway, client: openai.OpenAI) -> None:
    with pytest.raises(openai.NotFoundError) as missing:
        client.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "hi"}])
    assert missing.value.body["code"] == "model_not_found"  # type: ignore[index]
    assert missing.value.body["param"] == "model"  # type: ignore[index]
    message = missing.value.body["message"]  # type: ignore[index]
    assert "gateway" in message and "x-portkey-provider" in message  # its own answer, never OpenAI's
    # Another owner's fine-tuned model is just as unknown.
    succeeded = [job for job in local_jobs(gateway.data_dir) if job["status"] == "succeeded"]
    if succeeded:
        with pytest.raises(openai.NotFoundError):
            client.chat.completions.create(
                model=succeeded[0]["fine_tuned_model"], messages=[{"role": "user", "content": "hi"}]
            )


def test_restart_resumes_running_and_queued_jobs(tmp_path: Path, api_key: str) -> None:
    data_dir = tmp_path / "data"
    gw = start_gateway(data_dir, local_concurrency=1, local_train_threads=1)
    try:
        client = openai_client(gw.base_url, api_key, max_retries=0)
        training = upload(client, tmp_path, _supervised())
        first = client.fine_tuning.jobs.create(
            model=MODEL, training_file=training, hyperparameters={"n_epochs": 25, "batch_size": 1}
        )
        job_dir = wait_until_training(gw, client, first.id)
        second = client.fine_tuning.jobs.create(
            model=MODEL, training_file=training, hyperparameters={"n_epochs": 1, "batch_size": 4}
        )
        assert wait_for(client, second.id, ("queued",)).status == "queued"
        pid = int((job_dir / "worker.pid").read_text())
    finally:
        gw.close()
    assert not pid_alive(pid)  # workers stop with the server
    assert (local_job(data_dir, native_id=job_dir.name) or {}).get("status") == "running"

    gw = start_gateway(data_dir, local_concurrency=1, local_train_threads=1)
    try:
        client = openai_client(gw.base_url, api_key, max_retries=0)
        for job_id in (first.id, second.id):
            done = wait_for(client, job_id, TERMINAL)
            assert done.status == "succeeded", done.error
        messages = [e.message for e in client.fine_tuning.jobs.list_events(first.id, limit=100)]
        assert any("restarted" in m for m in messages) and "Fine-tuning job resumed" in messages
    finally:
        gw.close()
