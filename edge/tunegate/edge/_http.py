"""aiohttp-side glue shared by the edge's handlers: app state keys, per-request call context,
turning failed gRPC calls and edge-side failures into the one error envelope.

This is the I/O shell; the decisions live in the sans-IO modules (``_errors``, ``_headers``).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, cast

import grpc
import orjson
from aiohttp import web
from aiohttp.streams import StreamReader
from google.protobuf.message import Message
from grpc_status import rpc_status
from tunegate.edge._errors import ErrorResponse, error_from_code, error_from_status, error_response
from tunegate.edge._headers import REQUEST_ID, UnreadableCredential, forward_metadata
from tunegate.edge._routes import Route
from tunegate.openai_json import apply_headers, from_openai, from_query

__all__ = [
    "BodyStalled",
    "CallContext",
    "ErrorAnswer",
    "Incoming",
    "Reply",
    "build_message",
    "call_context",
    "error_json",
    "json_body",
    "ok_json",
    "query_message",
    "read_body",
    "read_step",
    "request_message",
    "rpc_error",
    "web_response",
]

logger = logging.getLogger("tunegate.edge")

_JSON = "application/json"


class ErrorAnswer(Exception):
    """Raised by a handler to answer with ``error`` (rendered by the edge middleware); with
    ``close``, the connection closes after the answer (what the client sends next cannot be
    framed, or it waits to send a body that is not wanted)."""

    def __init__(self, error: ErrorResponse, *, close: bool = False) -> None:
        super().__init__(error.body["error"]["message"])
        self.error = error
        self.close = close


class BodyStalled(ErrorAnswer):
    """A read of the request body got no bytes within the body timeout (a 408; the connection
    closes, since the rest of that body cannot be told from the next request)."""

    def __init__(self, seconds: float) -> None:
        super().__init__(
            error_response(
                408, f"The request body stalled: no bytes for {seconds:g} seconds.", code="request_timeout"
            ),
            close=True,
        )


async def read_step(content: StreamReader, stall: float) -> bytes:
    """The next bytes of a request body (b"" at its end), as soon as there are any; raises
    BodyStalled when none come within ``stall`` seconds."""
    try:
        async with asyncio.timeout(stall):
            chunk: bytes = await content.readany()
    except TimeoutError:
        raise BodyStalled(stall) from None
    return chunk


async def read_body(request: web.BaseRequest, limit: int, stall: float) -> bytes:
    """The whole (JSON) body, read step by step: each step may wait ``stall`` seconds for bytes
    (BodyStalled); more than ``limit`` bytes is a 413."""
    body = bytearray()
    while chunk := await read_step(request.content, stall):
        body += chunk
        if len(body) > limit:
            raise ErrorAnswer(
                error_response(
                    413, f"The request body is larger than {limit} bytes.", code="request_too_large"
                )
            )
    return bytes(body)


@dataclass(frozen=True, slots=True)
class CallContext:
    """What every gRPC call made for one HTTP request carries."""

    request_id: str
    metadata: tuple[tuple[str, str], ...]


@dataclass(frozen=True, slots=True)
class Incoming:
    """A request whose body, if any, has been read whole: what a unary route needs of it."""

    method: str
    path: str
    """Percent-decoded, for messages (routing has already happened: `EdgeHandler.resolve`)."""
    query: Mapping[str, str]
    """A multidict: ``items()`` yields repeats."""
    headers: Mapping[str, str]
    """Case-insensitive; a multidict."""
    remote: str | None
    body: bytes


@dataclass(frozen=True, slots=True)
class Reply:
    """A JSON answer (``application/json; charset=utf-8``): status, body, extra headers."""

    status: int
    body: bytes
    headers: Mapping[str, str]


def call_context(headers: Mapping[str, str], remote: str | None, request_id: str) -> CallContext:
    """The request id and the allow-listed metadata for a request with these headers."""
    try:
        metadata = forward_metadata(headers.items(), request_id=request_id, peer=remote)
    except UnreadableCredential as exc:
        raise ErrorAnswer(
            error_response(
                400,
                f"The {exc.name} header could not be read: credentials must be printable ASCII.",
                param=exc.name,
                code="invalid_header",
            )
        ) from None
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


def build_message(
    route: Route,
    params: Mapping[str, str],
    headers: Mapping[str, str],
    query: Mapping[str, str],
    body: bytes,
) -> Message:
    """``route``'s request message: from the JSON body (``body: "*"``) or the query string, with
    the path parameters and the ``(from_header)`` fields. Raises ErrorAnswer / CodecError."""
    if route.body == "*":
        return from_openai(json_body(body), route.request_cls, path_params=params, headers=headers)
    return query_message(route.request_cls, params, headers, query)


def query_message(
    request_cls: type[Message],
    params: Mapping[str, str],
    headers: Mapping[str, str],
    query: Mapping[str, str],
) -> Message:
    """A ``request_cls`` filled from the query string, the path parameters and the
    ``(from_header)`` headers. Raises CodecError."""
    message = from_query(query, request_cls, path_params=params)
    apply_headers(message, headers)
    return message


async def request_message(
    request: web.BaseRequest, route: Route, params: Mapping[str, str], *, limit: int, stall: float
) -> Message:
    """`build_message` for an aiohttp request, reading its body (`read_body`) when the route
    takes one."""
    body = await read_body(request, limit, stall) if route.body == "*" else b""
    return build_message(route, params, request.headers, request.query, body)


def ok_json(body: dict[str, Any]) -> web.Response:
    """A 200 JSON response."""
    return web_response(Reply(200, orjson.dumps(body), {}))


def error_json(error: ErrorResponse, request_id: str) -> Reply:
    """The answer for ``error``, carrying ``x-request-id``."""
    return Reply(error.status, orjson.dumps(error.body), {**error.headers, REQUEST_ID: request_id})


def web_response(reply: Reply) -> web.Response:
    """``reply`` as aiohttp's response."""
    return web.Response(
        body=reply.body, status=reply.status, headers=reply.headers, content_type=_JSON, charset="utf-8"
    )
