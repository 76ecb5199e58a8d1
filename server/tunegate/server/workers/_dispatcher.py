"""`QueueDispatcher`: the local provider's `Dispatcher` on procrastinate — a job's validation
and training become tasks in PostgreSQL that any `tunegate worker` fitting its needs takes."""

from __future__ import annotations

import logging

import procrastinate
from procrastinate import exceptions as pq_exceptions
from tunegate.server.providers.local._dispatch import Needs
from tunegate.server.workers._app import (
    TRAIN_TASK,
    VALIDATE_TASK,
    ensure_schema,
    job_lock,
    new_app,
    psycopg_conninfo,
)
from tunegate.server.workers._queues import VALIDATE_QUEUE, train_queue

__all__ = ["QueueDispatcher"]

_log = logging.getLogger(__name__)


class QueueDispatcher:
    """Defers `validate_local_job` / `train_local_job` tasks (see `_app`).

    `database_url` is the gateway's (`postgresql+asyncpg://…`; anything else is a `ValueError`).
    `start()` creates the queue's schema if needed and opens a connection pool; `aclose()`
    closes it. Submitting a job that already waits in its queue does nothing, so callers may
    submit again after a restart without queueing a job twice.
    """

    def __init__(self, database_url: str, *, app: procrastinate.App | None = None) -> None:
        self._conninfo = psycopg_conninfo(database_url)
        self._owns_app = app is None
        self.app = app if app is not None else new_app(self._conninfo, max_connections=4)

    async def start(self) -> None:
        await ensure_schema(self._conninfo)
        if self._owns_app:
            await self.app.open_async()

    async def aclose(self) -> None:
        if self._owns_app:
            await self.app.close_async()

    async def submit_validate(self, job_id: str) -> None:
        await self._defer(VALIDATE_TASK, VALIDATE_QUEUE, job_id, f"validate:{job_id}")

    async def submit_train(self, job_id: str, needs: Needs) -> None:
        await self._defer(TRAIN_TASK, train_queue(needs), job_id, f"train:{job_id}")

    async def _defer(self, task: str, queue: str, job_id: str, queueing_lock: str) -> None:
        deferrer = self.app.configure_task(
            task, queue=queue, lock=job_lock(task, job_id), queueing_lock=queueing_lock
        )
        try:
            await deferrer.defer_async(job_id=job_id)
        except pq_exceptions.AlreadyEnqueued:
            _log.debug("%s for %s already waits in %s", task, job_id, queue)
