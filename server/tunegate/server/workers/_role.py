"""What a worker process needs besides the queue: the local provider's `JobRunner` over the
gateway's database and blob store, built from the same `ServerConfig` the servers use."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

from tunegate.server.config import ServerConfig
from tunegate.server.workers._app import Runner

__all__ = ["open_local_runner"]


@contextlib.asynccontextmanager
async def open_local_runner(config: ServerConfig) -> AsyncIterator[Runner]:
    """The local provider's runner on this machine; its database and blob store are closed on
    exit."""
    if config:  # always: the runner arrives with the local-shared branch
        raise NotImplementedError("needs the local provider's JobRunner (branch local-shared)")
    yield NotImplemented
