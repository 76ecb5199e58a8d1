"""Two `LocalProvider` replicas on one database and one blob store: whichever replica a call
reaches answers for every local job, cancel/pause/resume reach the runner wherever it is, and a
runner that dies mid-training is resumed from its newest checkpoint blob by another `train()`."""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from tunegate.server.blobs import LocalBlobStore
from tunegate.server.providers import LocalProvider, LocalSettings, SchedulerSettings
from tunegate.server.providers.local import LocalJobRunner, Needs, RunnerSettings
from tunegate.server.store import Database

from tests.server.local.test_provider import ACCOUNT, GOOD, until, upload, worker

__all__ = ["worker"]  # the scripted trainer fixture, shared

Replicas = tuple[LocalProvider, LocalProvider]


class _NoDispatch:
    """A dispatcher that runs nothing (the test drives the runner itself)."""

    async def start(self) -> None: ...

    async def aclose(self) -> None: ...

    async def submit_validate(self, job_id: str) -> None: ...

    async def submit_train(self, job_id: str, needs: Needs) -> None: ...


@pytest.fixture
async def databases(tmp_path: Path, database_url: str | None) -> AsyncIterator[tuple[Database, Database]]:
    """Two connections (engines) to one database, as two server processes would have."""
    url = database_url or f"sqlite:///{tmp_path / 'shared.db'}"
    first = await Database.open(url)
    second = await Database.open(url)
    yield first, second
    await second.close()
    await first.close()


@pytest.fixture
async def replicas(
    tmp_path: Path, worker: str, databases: tuple[Database, Database]
) -> AsyncIterator[Replicas]:
    blobs = LocalBlobStore(tmp_path / "blobs")
    settings = SchedulerSettings(python=worker, poll_interval=0.02, stop_grace=2.0, pause_wait=5.0)
    made = tuple(
        LocalProvider(
            LocalSettings(root=tmp_path / name, scheduler=settings, worker=name), store=db.local, blobs=blobs
        )
        for name, db in zip(("a", "b"), databases, strict=True)
    )
    for provider in made:
        await provider.start()
    yield made[0], made[1]
    for provider in made:
        await provider.aclose()


async def test_a_job_started_on_one_replica_is_served_by_the_other(
    tmp_path: Path, replicas: Replicas
) -> None:
    a, b = replicas
    file_id = await upload(a, GOOD)
    created = await a.create_job(
        ACCOUNT, {"model": "tunegate-tiny", "training_file": file_id}, tag="t-shared"
    )
    job_id = str(created["id"])
    await until(a, job_id, "running")
    assert (await b.get_job(ACCOUNT, job_id))["status"] == "running"
    assert job_id in [j["id"] for j in (await b.list_jobs(ACCOUNT, limit=100, page_token=None)).data]
    assert (await b.find_job_by_tag(ACCOUNT, "t-shared", created_after=0) or {}).get("id") == job_id

    # Paused through B: A's runner makes its trainer checkpoint and stop.
    assert (await b.pause_job(ACCOUNT, job_id))["status"] == "paused"
    for _ in range(500):
        if not a.dispatcher.is_running(job_id) and await b.store.checkpoints(job_id):  # type: ignore[union-attr]
            break
        await asyncio.sleep(0.02)
    checkpoints = await b.list_checkpoints(ACCOUNT, job_id, limit=1, page_token=None)
    assert checkpoints.data[0]["step_number"] == 1 and checkpoints.data[0]["id"].endswith("-1")

    # Resumed through B: B trains it now, from the checkpoint A left in the blob store.
    assert (await b.resume_job(ACCOUNT, job_id))["status"] in ("queued", "running")
    await until(a, job_id, "running")
    assert (await a.get_job(ACCOUNT, job_id))["status"] == "running"
    (tmp_path / "b" / "release").touch()
    done = await until(a, job_id, "succeeded")
    assert done["fine_tuned_model"].endswith(job_id.removeprefix("ftjob-local-"))

    events = await a.list_events(ACCOUNT, job_id, limit=3, page_token=None)
    assert events.has_more and events.data[0]["message"] == "The job has successfully completed"
    rest = await b.list_events(ACCOUNT, job_id, limit=100, page_token=events.next_token)
    messages = [e["message"] for e in events.data + rest.data]
    # "resumed": the trainer on B was told to resume (its checkpoint came from the blob store).
    assert {"Job paused", "Job resumed", "resumed", "Fine-tuning job resumed"} <= set(messages)
    assert rest.data[-1]["id"] == f"ftevent-{job_id.removeprefix('ftjob-local-')}-1"

    (result,) = done["result_files"]
    download = await a.download_file(ACCOUNT, result)
    assert b"".join([c async for c in download.chunks]).startswith(b"step,")
    # Chat on A loads the model B trained: fetched from its blob into A's cache once.
    found = await a.model_dir(done["fine_tuned_model"])
    assert found is not None and found[0] == job_id
    assert (found[1] / "config.json").read_text() == "{}"
    assert found[1].is_relative_to(tmp_path / "a" / "cache")


async def test_cancel_through_either_replica_stops_the_trainer(tmp_path: Path, replicas: Replicas) -> None:
    a, b = replicas
    file_id = await upload(b, GOOD)
    job_id = str(
        (await b.create_job(ACCOUNT, {"model": "tunegate-tiny", "training_file": file_id}, tag="c"))["id"]
    )
    await until(b, job_id, "running")
    assert (await a.cancel_job(ACCOUNT, job_id))["status"] == "cancelled"
    for _ in range(500):
        if not b.dispatcher.is_running(job_id):  # type: ignore[union-attr]
            break
        await asyncio.sleep(0.02)
    assert not b.dispatcher.is_running(job_id)  # type: ignore[union-attr]
    assert (await b.get_job(ACCOUNT, job_id))["status"] == "cancelled"
    assert not (tmp_path / "b" / "work" / job_id).exists()  # the runner cleaned its scratch


async def test_a_dead_runner_is_resumed_from_its_checkpoint(
    tmp_path: Path, databases: tuple[Database, Database]
) -> None:
    """The real trainer: a runner dies (its task cancelled with no time to pause, its trainer
    killed); another `train()` resumes from the newest checkpoint blob and the steps continue."""
    db, _ = databases
    blobs = LocalBlobStore(tmp_path / "blobs")
    provider = LocalProvider(
        LocalSettings(root=tmp_path / "p"), store=db.local, blobs=blobs, dispatcher=_NoDispatch()
    )
    await provider.start()
    file_id = await upload(provider, GOOD)
    request = {
        "model": "tunegate-tiny",
        "training_file": file_id,
        "hyperparameters": {"n_epochs": 6, "batch_size": 1},
    }
    job_id = str((await provider.create_job(ACCOUNT, request, tag="dead"))["id"])
    env = {"OMP_NUM_THREADS": "1", "TUNEGATE_TRAIN_THREADS": "1"}

    def runner(name: str, stop_grace: float) -> LocalJobRunner:
        settings = RunnerSettings(
            work_dir=tmp_path / name / "work",
            models_dir=tmp_path / "models",
            poll_interval=0.05,
            stop_grace=stop_grace,
            python=sys.executable,
            env=env,
            worker=name,
        )
        return LocalJobRunner(db.local, blobs, settings)

    first = runner("first", stop_grace=0.0)
    assert await first.validate(job_id)
    task = asyncio.create_task(first.train(job_id))
    for _ in range(6000):
        if await db.local.checkpoints(job_id) or task.done():
            break
        await asyncio.sleep(0.05)
    assert await db.local.checkpoints(job_id), "no checkpoint before the runner died"
    pid = int((tmp_path / "first" / "work" / job_id / "worker.pid").read_text())
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    with pytest.raises(ProcessLookupError):  # killed with its runner, no time to checkpoint
        os.kill(pid, 0)
    assert (await provider.get_job(ACCOUNT, job_id))["status"] == "running"
    before = await db.local.checkpoints(job_id)  # what the dead runner left

    await runner("second", stop_grace=5.0).train(job_id)
    done = await provider.get_job(ACCOUNT, job_id)
    assert done["status"] == "succeeded", done["error"]
    after = await db.local.checkpoints(job_id)
    resumed_at = max(c.step for c in before)
    assert [c.seq for c in after] == list(range(len(after), 0, -1))  # numbering continues
    assert after[0].step == 60 and all(c.step > resumed_at for c in after[: len(after) - len(before)])
    messages = [
        e["message"] for e in (await provider.list_events(ACCOUNT, job_id, limit=500, page_token=None)).data
    ]
    assert f"Training resumed from step {resumed_at}" in messages
    await provider.aclose()
