"""tunegate gRPC server: servicers, domain, stores.

Public API::

    config = ServerConfig(data_dir=Path("data"), port=0)
    gateway = await GatewayServer.start(config)   # gateway.port is the bound port
    ...
    await gateway.stop()

or `await serve(config)` to run until SIGTERM/SIGINT.
"""

from __future__ import annotations

from server.app import SERVICE_NAMES, GatewayServer, serve
from server.blobs import BlobStore, BlobWriter, LocalBlobStore
from server.config import ServerConfig, grpc_server_options
from server.errors import (
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
from server.files import FileService
from server.interceptor import ErrorInterceptor
from server.jobs import JobService, JobSettings
from server.owner import owner_from_metadata
from server.uploads import UploadService

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
