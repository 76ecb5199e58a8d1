"""tunegate gRPC server: servicers, domain, stores.

Public API::

    config = ServerConfig(data_dir=Path("data"), port=0)
    gateway = await GatewayServer.start(config)   # gateway.port is the bound port
    ...
    await gateway.stop()

or `await serve(config)` to run until SIGTERM/SIGINT.
"""

from __future__ import annotations

import os

# The server starts its training workers as subprocesses; under uvloop a spawn is a real fork(),
# and grpc's fork handlers (read when grpc is first imported, which is below) then print
# "Other threads are currently calling into gRPC, skipping fork() handlers" for each. The
# workers exec a fresh interpreter and never use the parent's gRPC state, so the handlers have
# nothing to do. An operator's own setting wins.
os.environ.setdefault("GRPC_ENABLE_FORK_SUPPORT", "false")

from tunegate.server.app import SERVICE_NAMES, GatewayServer, serve
from tunegate.server.blobs import BlobStore, BlobWriter, LocalBlobStore
from tunegate.server.config import ServerConfig, grpc_server_options
from tunegate.server.errors import (
    Conflict,
    DeadlineExceeded,
    FailedPrecondition,
    Internal,
    InvalidArgument,
    NotFound,
    PermissionDenied,
    ResourceExhausted,
    TunegateError,
    Unauthenticated,
    Unavailable,
    Unimplemented,
    Unsupported,
    to_status,
)
from tunegate.server.files import FileService
from tunegate.server.interceptor import ErrorInterceptor
from tunegate.server.jobs import JobService, JobSettings
from tunegate.server.owner import owner_from_metadata
from tunegate.server.uploads import UploadService

__all__ = [
    "SERVICE_NAMES",
    "BlobStore",
    "BlobWriter",
    "Conflict",
    "DeadlineExceeded",
    "ErrorInterceptor",
    "FailedPrecondition",
    "FileService",
    "GatewayServer",
    "Internal",
    "InvalidArgument",
    "JobService",
    "JobSettings",
    "LocalBlobStore",
    "NotFound",
    "PermissionDenied",
    "ResourceExhausted",
    "ServerConfig",
    "TunegateError",
    "Unauthenticated",
    "Unavailable",
    "Unimplemented",
    "Unsupported",
    "UploadService",
    "grpc_server_options",
    "owner_from_metadata",
    "serve",
    "to_status",
]
