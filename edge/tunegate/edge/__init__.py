"""tunegate REST edge: OpenAI paths transcoded to the gRPC contract.

Sans-IO core: ``build_routes`` (route table), ``error_from_status`` (error mapping),
``forward_metadata`` (header allow-list), ``openapi_document`` (the OpenAPI document of the
routes, committed as ``openapi.json`` and served at ``GET /openapi.json``); the proto ⇄ OpenAI
JSON codec is ``tunegate.openai_json``.

I/O shell: ``EdgeHandler``, ``EdgeServer``, ``serve``: aiohttp's low-level server, with the limits
of ``EdgeConfig`` (``server_options``) and a request-head timeout (``_protocol``), calling one
handler over one grpc.aio channel.
"""

from __future__ import annotations

from tunegate.edge._app import EdgeHandler, EdgeServer, serve
from tunegate.edge._config import EdgeConfig, channel_options, server_options
from tunegate.edge._errors import (
    HTTP_STATUS,
    ErrorResponse,
    default_error_type,
    error_from_code,
    error_from_status,
    error_response,
    http_status,
)
from tunegate.edge._headers import (
    REQUEST_ID,
    forward_metadata,
    new_request_id,
    request_id_from,
    response_headers,
)
from tunegate.edge._openapi import (
    OPENAPI_PATH,
    document_bytes,
    openapi_document,
    proto_comments,
    served_document,
)
from tunegate.edge._redact import REDACTED, RedactingFilter, install_redaction, redact
from tunegate.edge._routes import Cardinality, Route, RouteError, UploadShape, build_routes, default_services

__all__ = [
    "HTTP_STATUS",
    "OPENAPI_PATH",
    "REDACTED",
    "REQUEST_ID",
    "Cardinality",
    "EdgeConfig",
    "EdgeHandler",
    "EdgeServer",
    "ErrorResponse",
    "RedactingFilter",
    "Route",
    "RouteError",
    "UploadShape",
    "build_routes",
    "channel_options",
    "default_error_type",
    "default_services",
    "document_bytes",
    "error_from_code",
    "error_from_status",
    "error_response",
    "forward_metadata",
    "http_status",
    "install_redaction",
    "new_request_id",
    "openapi_document",
    "proto_comments",
    "redact",
    "request_id_from",
    "response_headers",
    "serve",
    "served_document",
    "server_options",
]
