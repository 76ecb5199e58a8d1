"""What a worker process needs besides the queue: the local provider's `LocalJobRunner` over the
gateway's database and blob store, built from the same `ServerConfig` the servers use."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

import procrastinate
from tunegate.server.app import local_settings
from tunegate.server.blobs import close_blob_store, open_blob_store
from tunegate.server.config import ServerConfig
from tunegate.server.providers.local import LocalJobRunner, needs_of
from tunegate.server.store import Database, LocalStore
from tunegate.server.workers._app import Runner
from tunegate.server.workers._dispatcher import QueueDispatcher

__all__ = ["open_local_runner"]


class _QueuedRunner:
    """A `LocalJobRunner` whose validated jobs go on to the training queue that fits them."""

    def __init__(self, runner: LocalJobRunner, store: LocalStore, dispatcher: QueueDispatcher) -> None:
        self._runner = runner
        self._store = store
        self._dispatcher = dispatcher

    async def validate(self, job_id: str) -> None:
        if not await self._runner.validate(job_id):
            return  # failed, or no longer waiting for validation
        record = await self._store.get_job(job_id)
        if record is not None:
            await self._dispatcher.submit_train(job_id, needs_of(record.body))

    async def train(self, job_id: str) -> None:
        await self._runner.train(job_id)


@contextlib.asynccontextmanager
async def open_local_runner(
    config: ServerConfig, app: procrastinate.App, *, worker: str
) -> AsyncIterator[Runner]:
    """The local provider's runner on this machine (named `worker` in the job rows); validated
    jobs are deferred through `app`, the worker's own procrastinate app. The database and blob
    store are closed on exit."""
    database = await Database.open(config.resolved_database_url)
    try:
        blobs = open_blob_store(config.blobs, config.data_dir)
        try:
            settings = local_settings(config, worker=worker).runner()
            for path in (settings.work_dir, settings.models_dir):
                path.mkdir(parents=True, exist_ok=True)
            runner = LocalJobRunner(database.local, blobs, settings)
            dispatcher = QueueDispatcher(config.resolved_database_url, app=app)
            yield _QueuedRunner(runner, database.local, dispatcher)
        finally:
            await close_blob_store(blobs)
    finally:
        await database.close()
