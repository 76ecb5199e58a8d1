"""aiohttp-side glue shared by the edge's handlers: app state keys, per-request call context,
turning failed gRPC calls and edge-side failures into the one error envelope.

This is the I/O shell; the decisions live in the sans-IO modules (``_errors``, ``_headers``).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, cast

import grpc
import orjson
from aiohttp import web
from grpc_status import rpc_status

from edge._config import EdgeConfig
from edge._errors import ErrorResponse, error_from_code, error_from_status, error_response
from edge._headers import REQUEST_ID, forward_metadata

__all__ = [
    "CHANNEL_KEY",
    "CONFIG_KEY",
    "REQUEST_ID_KEY",
    "CallContext",
    "ErrorAnswer",
    "call_context",
    "error_json",
    "json_body",
    "ok_json",
    "rpc_error",
]

logger = logging.getLogger("tunegate.edge")

CONFIG_KEY = web.AppKey("config", EdgeConfig)
CHANNEL_KEY = web.AppKey("channel", grpc.aio.Channel)
REQUEST_ID_KEY = web.RequestKey("request_id", str)
_JSON = "application/json"


class ErrorAnswer(Exception):
    """Raised by a handler to answer with ``error`` (rendered by the edge middleware)."""

    def __init__(self, error: ErrorResponse) -> None:
        super().__init__(error.body["error"]["message"])
        self.error = error


@dataclass(frozen=True, slots=True)
class CallContext:
    """What every gRPC call made for one HTTP request carries."""

    request_id: str
    metadata: tuple[tuple[str, str], ...]


def call_context(request: web.Request) -> CallContext:
    """The request id (set by the middleware) and the allow-listed metadata for ``request``."""
    request_id = request[REQUEST_ID_KEY]
    metadata = forward_metadata(request.headers.items(), request_id=request_id, peer=request.remote)
    return CallContext(request_id=request_id, metadata=metadata)


def rpc_error(err: grpc.aio.AioRpcError) -> ErrorResponse:
    """Map a failed call: its rich ``google.rpc.Status`` when attached, else code + details."""
    try:
        # from_call only needs code()/details()/trailing_metadata(), which AioRpcError has.
        status = rpc_status.from_call(cast(grpc.Call, err))
    except ValueError:  # the rich status disagrees with the call's own code/message
        status = None
    if status is not None:
        return error_from_status(status)
    code = err.code()
    return error_from_code(code.value[0] if code is not None else 2, err.details() or "")


def json_body(raw: bytes) -> Any:
    """Parse a JSON request body; an empty body is ``{}``. Raises ErrorAnswer(400 invalid_json)."""
    if not raw.strip():
        return {}
    try:
        return orjson.loads(raw)  # strict RFC 8259: no NaN/Infinity, valid UTF-8 only
    except orjson.JSONDecodeError:
        raise ErrorAnswer(
            error_response(
                400,
                "We could not parse the JSON body of your request. The body must be a JSON object "
                "sent with Content-Type: application/json.",
                code="invalid_json",
            )
        ) from None


def ok_json(body: dict[str, Any]) -> web.Response:
    """A 200 JSON response."""
    return web.Response(body=orjson.dumps(body), content_type=_JSON, charset="utf-8")


def error_json(error: ErrorResponse, request_id: str) -> web.Response:
    """The HTTP response for ``error``, carrying ``x-request-id``."""
    headers = {**error.headers, REQUEST_ID: request_id}
    return web.Response(
        body=orjson.dumps(error.body),
        status=error.status,
        headers=headers,
        content_type=_JSON,
        charset="utf-8",
    )
