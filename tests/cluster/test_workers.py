"""`local` jobs trained by `tunegate worker` processes through the procrastinate queue: two
servers, two edges, two workers on PostgreSQL and S3 (moto). The servers only record and queue
jobs; a worker takes each one. The tests of `test_local_jobs` run again on this cluster, and a
worker SIGKILLed mid-training loses its job to the other worker, which resumes it from its
newest checkpoint."""

from __future__ import annotations

import json
import secrets
import time
from pathlib import Path
from typing import Any

import psycopg
import pytest
import sqlalchemy as sa

from tests.cluster.conftest import S3, Cluster
from tests.cluster.test_local_jobs import (  # run again here, on workers
    MODEL,
    TERMINAL,
    TRAINING,
    test_a_job_made_through_edge_a_is_followed_and_chatted_with_through_edge_b,
    test_pause_resume_and_cancel_through_the_other_edge,
)
from tests.e2e.test_local_provider import upload, wait_for

__all__ = [
    "test_a_job_made_through_edge_a_is_followed_and_chatted_with_through_edge_b",
    "test_pause_resume_and_cancel_through_the_other_edge",
]


@pytest.fixture
def cluster(start_cluster: Any, s3: S3) -> Cluster:
    started: Cluster = start_cluster(blobs_url=f"s3://{s3.bucket}/{secrets.token_hex(4)}", s3=s3, workers=2)
    return started


def _row(cluster: Cluster, tag: str) -> dict[str, Any] | None:
    """The local job row (status, worker, body) of gateway job `tag`, read from PostgreSQL."""
    url = sa.engine.make_url(cluster.database_url).set(drivername="postgresql")
    with psycopg.connect(url.render_as_string(hide_password=False)) as conn:
        for status, worker, body in conn.execute("SELECT status, worker, body FROM local_jobs"):
            job = body if isinstance(body, dict) else json.loads(body)
            if job.get("metadata", {}).get("tunegate_job_id") == tag:
                return {"status": status, "worker": worker, "job": job}
    return None


def test_a_killed_worker_s_job_resumes_on_the_other_worker(cluster: Cluster, tmp_path: Path) -> None:
    a, b = cluster.clients()
    training = upload(a, tmp_path, TRAINING)
    job = a.fine_tuning.jobs.create(
        model=MODEL, training_file=training, hyperparameters={"n_epochs": 50, "batch_size": 1}
    )
    deadline = time.monotonic() + 120
    while not list(b.fine_tuning.jobs.checkpoints.list(job.id)):  # a checkpoint to resume from
        assert time.monotonic() < deadline, "no checkpoint"
        assert b.fine_tuning.jobs.retrieve(job.id).status not in TERMINAL
        time.sleep(0.2)
    row = _row(cluster, job.id)
    assert row is not None and row["status"] == "running", row
    (first,) = [w for w in cluster.workers if w.name == row["worker"]]
    (other,) = [w for w in cluster.workers if w is not first]
    first.kill()

    done = wait_for(b, job.id, TERMINAL, timeout=180)
    assert done.status == "succeeded", done
    row = _row(cluster, job.id)
    assert row is not None and row["worker"] == other.name
    messages = [e.message for e in b.fine_tuning.jobs.list_events(job.id, limit=100)]
    resumed = [m for m in messages if m.startswith("Training resumed from step ")]
    assert resumed, messages
    from_step = int(resumed[0].rsplit(" ", 1)[1])
    assert from_step > 0
    steps = sorted(c.step_number for c in b.fine_tuning.jobs.checkpoints.list(job.id, limit=100))
    assert steps[0] <= from_step < steps[-1]  # the curve goes on past the step it resumed from
    (result,) = done.result_files
    lines = a.files.content(result).read().decode().splitlines()
    logged = [int(line.split(",", 1)[0]) for line in lines[1:]]
    assert logged == sorted(set(logged)) and logged[-1] == 50 * 12  # every step once, to the end
