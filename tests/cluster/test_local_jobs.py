"""`local` provider jobs in a cluster whose servers share PostgreSQL and an S3 bucket: a job
made through edge A (trained by the server that took it) is followed, paused, resumed,
cancelled and chatted with through edge B, whose server holds none of it locally."""

from __future__ import annotations

import json
import secrets
import time
from pathlib import Path
from typing import Any

import openai
import pytest

from tests.cluster.conftest import S3, Cluster
from tests.e2e.sdk import openai_client

MODEL = "tunegate-tiny"
TERMINAL = ("succeeded", "failed", "cancelled")
TRAINING = "".join(
    json.dumps(
        {
            "messages": [
                {"role": "user", "content": f"Say w{i % 4}."},
                {"role": "assistant", "content": f"w{i % 4}"},
            ]
        }
    )
    + "\n"
    for i in range(12)
)


@pytest.fixture
def cluster(start_cluster: Any, s3: S3) -> Cluster:
    started: Cluster = start_cluster(blobs_url=f"s3://{s3.bucket}/{secrets.token_hex(4)}", s3=s3)
    return started


def _clients(cluster: Cluster) -> list[openai.OpenAI]:
    """No provider header: the gateway's default provider (`local`) serves the jobs."""
    api_key = "sk-cluster-" + secrets.token_hex(8)
    return [openai_client(edge.base_url, api_key, max_retries=0) for edge in cluster.edges]


def _upload(client: openai.OpenAI, tmp_path: Path) -> str:
    path = tmp_path / f"train-{secrets.token_hex(4)}.jsonl"
    path.write_text(TRAINING)
    file_id: str = client.files.create(file=path, purpose="fine-tune").id
    return file_id


def _wait(client: openai.OpenAI, job_id: str, statuses: tuple[str, ...]) -> Any:
    """The job once its status is one of `statuses` (fails after a minute and a half)."""
    deadline = time.monotonic() + 90
    while True:
        job = client.fine_tuning.jobs.retrieve(job_id)
        if job.status in statuses:
            return job
        assert time.monotonic() < deadline, f"{job_id} still {job.status}"
        time.sleep(0.2)


def test_a_job_made_through_edge_a_is_followed_and_chatted_with_through_edge_b(
    cluster: Cluster, tmp_path: Path
) -> None:
    a, b = _clients(cluster)
    training = _upload(a, tmp_path)
    job = a.fine_tuning.jobs.create(
        model=MODEL, training_file=training, hyperparameters={"n_epochs": 2, "batch_size": 2}
    )
    assert job.id in {j.id for j in b.fine_tuning.jobs.list()}
    done = _wait(b, job.id, TERMINAL)
    assert done.status == "succeeded" and done.fine_tuned_model, done
    steps = [c.step_number for c in b.fine_tuning.jobs.checkpoints.list(job.id)]
    assert len(steps) == 2 and steps == sorted(steps, reverse=True)
    messages = [e.message for e in b.fine_tuning.jobs.list_events(job.id, limit=100)]
    assert "The job has successfully completed" in messages
    (result,) = done.result_files
    assert b.files.content(result).read().startswith(b"step,")
    reply = b.chat.completions.create(
        model=done.fine_tuned_model, messages=[{"role": "user", "content": "Say w1."}], max_tokens=4
    )
    assert reply.choices[0].message.content
    assert done.fine_tuned_model in {m.id for m in b.models.list()}


def test_pause_resume_and_cancel_through_the_other_edge(cluster: Cluster, tmp_path: Path) -> None:
    a, b = _clients(cluster)
    training = _upload(a, tmp_path)
    job = a.fine_tuning.jobs.create(
        model=MODEL, training_file=training, hyperparameters={"n_epochs": 40, "batch_size": 1}
    )
    _wait(b, job.id, ("running",))
    paused: str = b.fine_tuning.jobs.pause(job.id).status  # `paused` is newer than the SDK's enum
    assert paused == "paused"
    assert _wait(a, job.id, ("paused", *TERMINAL)).status == "paused"
    assert b.fine_tuning.jobs.resume(job.id).status in ("queued", "running")
    _wait(a, job.id, ("running",))
    assert b.fine_tuning.jobs.cancel(job.id).status == "cancelled"
    assert _wait(a, job.id, TERMINAL).status == "cancelled"
    messages = [e.message for e in a.fine_tuning.jobs.list_events(job.id, limit=100)]
    assert "Job paused" in messages and "Job resumed" in messages
