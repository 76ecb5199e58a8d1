"""The local provider's training queue across machines: procrastinate on the gateway's
PostgreSQL (`QueueDispatcher` on the servers, `QueueWorker` in `tunegate worker`), queues by
what a job needs and what a worker has (`_queues`), `[worker]` settings (`WorkerSettings`).

The settings and queue names import nothing heavy; the procrastinate parts (and psycopg) are
imported on first use, so `tunegate run` on the in-process default never loads them.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from tunegate.server.workers._queues import (
    MAINTENANCE_QUEUE,
    VALIDATE_QUEUE,
    light_queues,
    train_queue,
    train_queues,
)
from tunegate.server.workers._settings import (
    Capabilities,
    WorkerSettings,
    detect_device,
    detect_memory_mb,
)

if TYPE_CHECKING:
    from tunegate.server.workers._app import Runner, ensure_schema, psycopg_conninfo, requeue_stalled
    from tunegate.server.workers._dispatcher import QueueDispatcher
    from tunegate.server.workers._role import open_local_runner
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

_LAZY = {
    "Runner": "_app",
    "ensure_schema": "_app",
    "psycopg_conninfo": "_app",
    "requeue_stalled": "_app",
    "QueueDispatcher": "_dispatcher",
    "open_local_runner": "_role",
    "QueueWorker": "_worker",
    "new_worker_app": "_worker",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{module}"), name)
