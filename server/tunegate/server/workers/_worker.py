"""`QueueWorker`: one machine's training worker on the procrastinate queue — the body of
`tunegate worker`, and of `tunegate run`'s embedded worker with `[local] queue = "procrastinate"`.

It runs two procrastinate workers on one connection pool: the training worker on the queues its
capabilities fit (`_queues.train_queues`, `concurrency` jobs at once) and a light one for
validation and upkeep (stalled-job checks), so a worker whose training slots are all busy still
validates new jobs and still rescues the jobs of a dead worker. Both send heartbeats.

Stopping (`stop()`, or SIGTERM in `tunegate worker`) cancels the running tasks at once: the
runner asks its trainer to checkpoint and exit, and each task goes back to its queue for the
next worker (`_app._Retry`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

import procrastinate
from tunegate.server.workers._app import (
    Runner,
    ensure_schema,
    new_app,
    psycopg_conninfo,
    register_tasks,
)
from tunegate.server.workers._queues import light_queues, train_queues
from tunegate.server.workers._settings import Capabilities, WorkerSettings

__all__ = ["QueueWorker", "new_worker_app"]

_log = logging.getLogger(__name__)
_LIGHT_CONCURRENCY = 2
_FETCH_POLL_SECONDS = 5.0
"""Fallback polling; new jobs arrive at once through LISTEN/NOTIFY."""


def new_worker_app(database_url: str, settings: WorkerSettings) -> procrastinate.App:
    """A procrastinate app sized for one worker (its tasks are registered by `QueueWorker`)."""
    return new_app(psycopg_conninfo(database_url), max_connections=6 + settings.concurrency)


class QueueWorker:
    """Takes local jobs from the queue and runs them through `runner` (see the module doc).

    `start()` detects the capabilities (unless configured), creates the queue's schema if
    needed and starts taking jobs; `wait()` returns when a worker loop ends on its own (an
    error: the database went away); `stop()` hands running jobs back and closes the pool.
    `app` (from `new_worker_app`) lets the runner defer tasks through the same pool — a
    `QueueDispatcher(database_url, app=app)` — before the worker exists.
    """

    def __init__(
        self,
        database_url: str,
        runner: Runner,
        settings: WorkerSettings,
        *,
        app: procrastinate.App | None = None,
    ) -> None:
        self._conninfo = psycopg_conninfo(database_url)
        self._settings = settings
        self.app = app if app is not None else new_worker_app(database_url, settings)
        register_tasks(
            self.app,
            runner,
            stalled_seconds=settings.stalled_seconds,
            check_every_seconds=settings.stalled_check_seconds,
        )
        self.capabilities: Capabilities | None = None
        self._loops: list[asyncio.Task[None]] = []

    @property
    def name(self) -> str:
        return self._settings.worker_name()

    async def start(self) -> None:
        settings = self._settings
        self.capabilities = await asyncio.to_thread(settings.capabilities)
        await ensure_schema(self._conninfo)
        await self.app.open_async()
        common: dict[str, Any] = {
            "wait": True,
            "install_signal_handlers": False,
            "update_heartbeat_interval": settings.heartbeat_seconds,
            "stalled_worker_timeout": settings.stalled_seconds,
            "shutdown_graceful_timeout": 0,  # cancel at once: the runner checkpoints on cancel
            "fetch_job_polling_interval": _FETCH_POLL_SECONDS,
            "delete_jobs": "successful",
        }
        train = train_queues(self.capabilities)
        self._loops = [
            asyncio.create_task(
                self.app.run_worker_async(
                    queues=train, concurrency=settings.concurrency, name=f"{self.name}/train", **common
                ),
                name="queue-worker-train",
            ),
            asyncio.create_task(
                self.app.run_worker_async(
                    queues=light_queues(), concurrency=_LIGHT_CONCURRENCY, name=f"{self.name}/light", **common
                ),
                name="queue-worker-light",
            ),
        ]
        _log.info(
            "worker %s: %s, %d MiB, %d slot(s) on %s",
            self.name,
            self.capabilities.device,
            self.capabilities.memory_mb,
            settings.concurrency,
            ", ".join(train),
        )

    async def wait(self) -> None:
        """Returns (or raises) when a worker loop ends without being stopped."""
        if self._loops:
            done, _ = await asyncio.wait(self._loops, return_when=asyncio.FIRST_COMPLETED)
            for task in done:
                task.result()

    async def stop(self) -> None:
        loops, self._loops = self._loops, []
        for task in loops:
            task.cancel()
        for task in loops:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await self.app.close_async()
