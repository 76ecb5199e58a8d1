"""The procrastinate side of the local provider's queue: the connection (from the gateway's
`database_url`), the schema (applied once, whoever starts first), and the tasks a worker runs.

Tasks (`job_id` is the local provider's native job id):

- `validate_local_job` on `local-validate`, `train_local_job` on a training queue (`_queues`):
  both call the worker's `Runner` and carry a lock per task kind (`job_lock`), so a job is
  never validated twice at once nor trained twice at once. Each is deferred with a queueing
  lock too (`validate:<id>`, `train:<id>`): deferring a job that already waits is a no-op.
- A worker that shuts down cancels its tasks (the runner pauses the trainer at a checkpoint);
  the task is then put back in its queue at once (`_RETRY`), for any worker that fits.
- `retry_stalled_jobs` (periodic, on `tunegate-maintenance`): a job whose worker stopped
  sending heartbeats (killed, machine gone) goes back to its queue; the runner that takes it
  resumes from the newest checkpoint.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Protocol

import procrastinate
import psycopg
import sqlalchemy as sa
from procrastinate import exceptions as pq_exceptions
from procrastinate.jobs import Job
from procrastinate.retry import BaseRetryStrategy, RetryDecision
from procrastinate.schema import SchemaManager
from tunegate.server.workers._queues import MAINTENANCE_QUEUE

__all__ = [
    "STALLED_TASK",
    "TRAIN_TASK",
    "VALIDATE_TASK",
    "Runner",
    "ensure_schema",
    "job_lock",
    "new_app",
    "psycopg_conninfo",
    "register_tasks",
]

_log = logging.getLogger(__name__)

VALIDATE_TASK = "validate_local_job"
TRAIN_TASK = "train_local_job"
STALLED_TASK = "retry_stalled_jobs"
_MAX_FAILURES = 3
"""A task that raises (not a shutdown) is tried again this many times, with growing waits."""
_SCHEMA_LOCK_KEY = 0x7475_6E65_6761_7465 >> 1  # "tunegate", an advisory lock id of our own


class Runner(Protocol):
    """One machine's side of a local job (the local provider's `JobRunner`)."""

    async def validate(self, job_id: str) -> None: ...

    async def train(self, job_id: str) -> None: ...


def psycopg_conninfo(database_url: str) -> str:
    """The libpq URL for the gateway's `postgresql+asyncpg://…` `database_url`.

    Raises `ValueError` for any other database: the queue lives in PostgreSQL."""
    url = sa.engine.make_url(database_url)
    if url.get_backend_name() != "postgresql":
        raise ValueError(
            f"the procrastinate queue needs PostgreSQL; database_url is {url.get_backend_name()}"
        )
    query = dict(url.query)
    ssl = query.pop("ssl", None)  # asyncpg spells libpq's sslmode `ssl`
    if ssl is not None and "sslmode" not in query:
        query["sslmode"] = ssl
    return url.set(drivername="postgresql", query=query).render_as_string(hide_password=False)


def new_app(conninfo: str, *, max_connections: int = 6) -> procrastinate.App:
    """A procrastinate app on its own small connection pool (open it with `open_async`)."""
    connector = procrastinate.PsycopgConnector(conninfo=conninfo, min_size=1, max_size=max_connections)
    return procrastinate.App(connector=connector)


async def ensure_schema(conninfo: str) -> None:
    """Create procrastinate's tables unless they exist. Servers and workers all call this at
    start; the advisory lock makes concurrent starts wait for the first one instead of racing
    it (procrastinate's schema script is not idempotent)."""
    async with await psycopg.AsyncConnection.connect(conninfo) as conn, conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock(%s)", (_SCHEMA_LOCK_KEY,))
        cursor = await conn.execute("SELECT to_regclass('procrastinate_jobs') IS NOT NULL")
        row = await cursor.fetchone()
        if not (row and row[0]):
            _log.info("creating procrastinate's schema")
            await conn.execute(SchemaManager.get_schema())


def job_lock(task: str, job_id: str) -> str:
    """The procrastinate lock a task of one local job carries: one lock per task kind, so a job
    is never validated twice at once nor trained twice at once. Validation and training do not
    share one: a training task deferred by the validation that is still finishing would wait
    for that lock's release, which wakes no worker (no notification), until the next poll."""
    return f"{task}:{job_id}"


class _Retry(BaseRetryStrategy):
    """Back in the queue at once after a shutdown (the task was cancelled); after a failure,
    up to `_MAX_FAILURES` more tries, 5 s further apart each time."""

    def get_retry_decision(self, *, exception: BaseException, job: Job) -> RetryDecision | None:
        if isinstance(exception, asyncio.CancelledError | pq_exceptions.JobAborted):
            return RetryDecision(retry_in={"seconds": 0})
        if job.attempts < _MAX_FAILURES:
            return RetryDecision(retry_in={"seconds": 5 * (job.attempts + 1)})
        return None


_RETRY = _Retry()


def register_tasks(
    app: procrastinate.App, runner: Runner, *, stalled_seconds: float, check_every_seconds: int
) -> None:
    """Register the local provider's tasks on a worker's `app`, run by `runner`; a worker
    counts as dead after `stalled_seconds` without a heartbeat, checked every
    `check_every_seconds` (1-59)."""

    @app.task(name=VALIDATE_TASK, retry=_RETRY)
    async def validate_local_job(job_id: str) -> None:
        await runner.validate(job_id)

    @app.task(name=TRAIN_TASK, retry=_RETRY)
    async def train_local_job(job_id: str) -> None:
        await runner.train(job_id)

    # A sixth cron field counts seconds. The queueing lock keeps one check waiting at most.
    @app.periodic(cron=f"* * * * * */{check_every_seconds}", periodic_id="stalled")
    @app.task(name=STALLED_TASK, queue=MAINTENANCE_QUEUE, queueing_lock=STALLED_TASK)
    async def retry_stalled_jobs(timestamp: int) -> None:
        del timestamp
        await requeue_stalled(app, stalled_seconds)

    del validate_local_job, train_local_job, retry_stalled_jobs


async def requeue_stalled(app: procrastinate.App, stalled_seconds: float) -> list[int]:
    """Put every job whose worker went silent for `stalled_seconds` back in its queue;
    returns their procrastinate job ids."""
    manager = app.job_manager
    pruned = await manager.prune_stalled_workers(stalled_seconds)
    if pruned:
        _log.warning("workers %s stopped sending heartbeats", ", ".join(map(str, pruned)))
    requeued: list[int] = []
    for job in await manager.get_stalled_jobs(seconds_since_heartbeat=stalled_seconds):
        try:
            await manager.retry_job(job)
        except pq_exceptions.ConnectorException as exc:  # it finished or was taken meanwhile
            _log.info("stalled job %s not requeued: %s", job.id, exc)
            continue
        assert job.id is not None
        requeued.append(job.id)
        _log.warning("requeued %s %s (its worker died)", job.task_name, job.task_kwargs)
    return requeued
