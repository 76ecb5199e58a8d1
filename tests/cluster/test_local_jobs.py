"""`local` provider jobs in a cluster whose servers share PostgreSQL and an S3 bucket: a job
made through edge A (trained by the server that took it) is followed, paused, resumed,
cancelled and chatted with through edge B, whose server holds none of it locally."""

from __future__ import annotations

import json
import secrets
from pathlib import Path
from typing import Any

import pytest

from tests.cluster.conftest import S3, Cluster
from tests.e2e.test_local_provider import upload, wait_for

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


def test_a_job_made_through_edge_a_is_followed_and_chatted_with_through_edge_b(
    cluster: Cluster, tmp_path: Path
) -> None:
    a, b = cluster.clients()
    training = upload(a, tmp_path, TRAINING)
    job = a.fine_tuning.jobs.create(
        model=MODEL, training_file=training, hyperparameters={"n_epochs": 2, "batch_size": 2}
    )
    assert job.id in {j.id for j in b.fine_tuning.jobs.list()}
    done = wait_for(b, job.id, TERMINAL)
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
    # The tiny model may well answer with its end-of-turn token at once: what matters is that
    # edge B's server loaded the weights the other machine trained and generated from them.
    assert reply.model == done.fine_tuned_model
    assert reply.choices[0].finish_reason in ("stop", "length")
    assert done.fine_tuned_model in {m.id for m in b.models.list()}


def test_pause_resume_and_cancel_through_the_other_edge(cluster: Cluster, tmp_path: Path) -> None:
    a, b = cluster.clients()
    training = upload(a, tmp_path, TRAINING)
    job = a.fine_tuning.jobs.create(
        model=MODEL, training_file=training, hyperparameters={"n_epochs": 40, "batch_size": 1}
    )
    wait_for(b, job.id, ("running",))
    paused: str = b.fine_tuning.jobs.pause(job.id).status  # `paused` is newer than the SDK's enum
    assert paused == "paused"
    assert wait_for(a, job.id, ("paused", *TERMINAL)).status == "paused"
    assert b.fine_tuning.jobs.resume(job.id).status in ("queued", "running")
    wait_for(a, job.id, ("running",))
    assert b.fine_tuning.jobs.cancel(job.id).status == "cancelled"
    assert wait_for(a, job.id, TERMINAL).status == "cancelled"
    messages = [e.message for e in a.fine_tuning.jobs.list_events(job.id, limit=100)]
    assert "Job paused" in messages and "Job resumed" in messages
