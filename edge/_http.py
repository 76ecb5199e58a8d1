"""aiohttp-side glue shared by the edge's handlers: app state keys, per-request call context,
turning failed gRPC calls and edge-side failures into the one error envelope.

This is the I/O shell; the decisions live in the sans-IO modules (``_errors``, ``_headers``).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, cast

import grpc
import orjson
from aiohttp import web
from google.protobuf.message import Message
from grpc_status import rpc_status
from tunegate.openai_json import apply_headers, from_openai, from_query

from edge._errors import ErrorResponse, error_from_code, error_from_status, error_response
from edge._headers import REQUEST_ID, forward_metadata
from edge._routes import Route

__all__ = [
    "CallContext",
    "ErrorAnswer",
    "call_context",
    "error_json",
    "json_body",
    "ok_json",
    "request_message",
    "rpc_error",
]

logger = logging.getLogger("tunegate.edge")

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


def call_context(request: web.BaseRequest, request_id: str) -> CallContext:
    """The request id and the allow-listed metadata for ``request``."""
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


async def request_message(request: web.BaseRequest, route: Route, params: Mapping[str, str]) -> Message:
    """``route``'s request message: from the JSON body (``body: "*"``) or the query string, with
    the path parameters and the ``(from_header)`` fields. Raises ErrorAnswer / CodecError."""
    if route.body == "*":
        body = json_body(await request.read())
        return from_openai(body, route.request_cls, path_params=params, headers=request.headers)
    message = from_query(request.query, route.request_cls, path_params=params)
    apply_headers(message, request.headers)
    return message


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
