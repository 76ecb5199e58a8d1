"""Provider (OpenAI) jobs in a two-server, two-edge cluster on PostgreSQL: whatever one edge
created, the other serves; the job monitor follows each job from one replica at a time; a
SIGKILLed server leaves the survivor serving and following every job."""

from __future__ import annotations

import itertools
import secrets
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import openai

from tests.cluster.conftest import S3, Cluster
from tests.fakes import FakeOpenAI
from tests.server.support import poll_counts

MODEL = "gpt-4o-mini-2024-07-18"
TRAINING = b'{"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]}\n' * 10


def _upload(client: openai.OpenAI, tmp_path: Path) -> str:
    path = tmp_path / f"train-{secrets.token_hex(4)}.jsonl"
    path.write_bytes(TRAINING)
    file_id: str = client.files.create(file=path, purpose="fine-tune").id
    return file_id


def _native(fake: FakeOpenAI, gateway_id: str) -> str:
    natives: list[str] = [
        job.id
        for job in fake.call(lambda: list(fake.jobs.values()))
        if (job.metadata or {}).get("tunegate_job_id") == gateway_id
    ]
    (native,) = natives
    return native


def test_what_edge_a_created_edge_b_serves(
    start_cluster: Any, fake_openai: FakeOpenAI, tmp_path: Path
) -> None:
    cluster: Cluster = start_cluster()
    a, b = cluster.clients(**{"x-portkey-virtual-key": "team"})

    training = _upload(a, tmp_path)
    assert training in {f.id for f in b.files.list()}
    assert b.files.retrieve(training).bytes == len(TRAINING)
    assert a.files.content(training).read() == TRAINING

    job = a.fine_tuning.jobs.create(model=MODEL, training_file=training, metadata={"team": "x"})
    seen = b.fine_tuning.jobs.retrieve(job.id)
    assert (seen.id, seen.training_file, seen.metadata) == (job.id, training, {"team": "x"})
    assert job.id in {j.id for j in b.fine_tuning.jobs.list()}

    native = _native(fake_openai, job.id)
    fake_openai.advance(native, "succeeded")
    done = b.fine_tuning.jobs.retrieve(job.id)
    assert done.status == "succeeded" and done.fine_tuned_model
    assert a.fine_tuning.jobs.retrieve(job.id).fine_tuned_model == done.fine_tuned_model
    assert list(b.fine_tuning.jobs.list_events(job.id, limit=100))
    checkpoints = list(b.fine_tuning.jobs.checkpoints.list(job.id))
    assert checkpoints and all(c.fine_tuning_job_id == job.id for c in checkpoints)

    other = a.fine_tuning.jobs.create(model=MODEL, training_file=training)
    assert b.fine_tuning.jobs.cancel(other.id).status == "cancelled"
    assert a.fine_tuning.jobs.retrieve(other.id).status == "cancelled"
    assert fake_openai.jobs[_native(fake_openai, other.id)].status == "cancelled"
    assert fake_openai.violations == []


def test_one_replica_follows_each_job_and_a_killed_server_leaves_the_survivor_serving(
    start_cluster: Any, fake_openai: FakeOpenAI, tmp_path: Path
) -> None:
    cluster: Cluster = start_cluster()
    a, b = cluster.clients(**{"x-portkey-virtual-key": "team"})
    training = _upload(a, tmp_path)
    ids = [a.fine_tuning.jobs.create(model=MODEL, training_file=training).id for _ in range(12)]
    natives = {_native(fake_openai, job): job for job in ids}

    time.sleep(4.0)  # several 1 s monitor intervals, both replicas running
    cluster.servers[0].kill()
    at_kill = poll_counts(cluster.database_url)
    assert all(at_kill.get(job, 0) >= 1 for job in ids), at_kill

    # Edge B (in front of server B) serves every job, old and new, with server A gone.
    assert set(ids) <= {j.id for j in b.fine_tuning.jobs.list(limit=100)}
    assert b.fine_tuning.jobs.retrieve(ids[0]).id == ids[0]
    fresh = b.fine_tuning.jobs.create(model=MODEL, training_file=_upload(b, tmp_path))
    assert b.fine_tuning.jobs.retrieve(fresh.id).status in ("validating_files", "queued")

    time.sleep(5.0)  # server A's leases (2 s) expire; server B takes its jobs over
    at_end = poll_counts(cluster.database_url)
    assert all(at_end[job] > at_kill[job] for job in ids), (at_kill, at_end)
    # A job read alone is never read twice within its 1 s interval, by either replica.
    for job, times in _single_reads(fake_openai, natives).items():
        gaps = [later - earlier for earlier, later in itertools.pairwise(times)]
        assert all(gap >= 0.9 for gap in gaps), (job, gaps)
    assert fake_openai.violations == []


def _single_reads(fake: FakeOpenAI, natives: dict[str, str]) -> dict[str, list[float]]:
    """When the fake served each followed job alone (GET /fine_tuning/jobs/<id>)."""
    times: dict[str, list[float]] = defaultdict(list)
    for request in fake.call(lambda: list(fake.requests)):
        job = request.path.rstrip("/").rsplit("/", 1)[-1]
        if request.method == "GET" and job in natives:
            times[job].append(request.at)
    return times


def test_with_blobs_in_s3_any_server_reads_any_file(
    start_cluster: Any, fake_openai: FakeOpenAI, s3: S3, tmp_path: Path
) -> None:
    cluster: Cluster = start_cluster(blobs_url=f"s3://{s3.bucket}/{secrets.token_hex(4)}", s3=s3)
    a, b = cluster.clients(**{"x-portkey-virtual-key": "team"})
    training = _upload(a, tmp_path)
    assert b.files.content(training).read() == TRAINING
    # Server B copies a file server A received to the provider.
    job = b.fine_tuning.jobs.create(model=MODEL, training_file=training)
    native = fake_openai.jobs[_native(fake_openai, job.id)]
    assert fake_openai.files[native.training_file].path.read_bytes() == TRAINING
    b.files.delete(training)
    assert training not in {f.id for f in a.files.list()}
    assert fake_openai.violations == []
