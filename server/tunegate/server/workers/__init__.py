"""The local provider's training queue across machines: procrastinate on the gateway's
PostgreSQL (`QueueDispatcher` on the servers, `QueueWorker` in `tunegate worker`), queues by
what a job needs and what a worker has (`_queues`), `[worker]` settings (`WorkerSettings`)."""

from __future__ import annotations

from tunegate.server.workers._app import Runner, ensure_schema, psycopg_conninfo, requeue_stalled
from tunegate.server.workers._dispatcher import QueueDispatcher
from tunegate.server.workers._queues import (
    MAINTENANCE_QUEUE,
    VALIDATE_QUEUE,
    light_queues,
    train_queue,
    train_queues,
)
from tunegate.server.workers._role import open_local_runner
from tunegate.server.workers._settings import (
    Capabilities,
    WorkerSettings,
    detect_device,
    detect_memory_mb,
)
from tunegate.server.workers._worker import QueueWorker, new_worker_app

__all__ = [
    "MAINTENANCE_QUEUE",
    "VALIDATE_QUEUE",
    "Capabilities",
    "QueueDispatcher",
    "QueueWorker",
    "Runner",
    "WorkerSettings",
    "detect_device",
    "detect_memory_mb",
    "ensure_schema",
    "light_queues",
    "new_worker_app",
    "open_local_runner",
    "psycopg_conninfo",
    "requeue_stalled",
    "train_queue",
    "train_queues",
]
