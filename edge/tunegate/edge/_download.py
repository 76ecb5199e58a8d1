"""Server-streaming ``google.api.HttpBody`` → raw HTTP body (``GET /v1/files/{file_id}/content``,
``POST /v1/chat/completions``).

Theory of operation
-------------------

0. The request message comes from the path and query (``body: ""``) or, for ``body: "*"``, from
   the JSON body exactly as the unary handler builds it.
1. Start the call, await its initial metadata and its *first* message before answering: until
   then nothing is sent, so a failure (404, 403, …) is still an ordinary JSON error response.
2. The first message names the Content-Type; initial metadata may carry ``content-length`` and
   ``content-disposition``. Only then is the response prepared (status line + headers sent).
3. Each message's ``data`` is written with ``await resp.write()`` as it arrives — HTTP-side
   backpressure: a slow client slows the gRPC reads, and grpc's flow control slows the server.
   Nothing is buffered, so ``text/event-stream`` (server-sent events) works; such a response
   also gets ``Cache-Control: no-cache`` and ``X-Accel-Buffering: no`` (for proxies).
4. A gRPC failure after the first byte cannot become JSON (it would corrupt a binary body):
   the connection is aborted, so the client sees a truncated transfer, never a wrong file.
   A client that goes away cancels the call.

The OpenAI SDK asks with ``Accept: application/binary``; the edge does not negotiate.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import grpc
from aiohttp import web
from tunegate.edge._config import EdgeConfig
from tunegate.edge._headers import REQUEST_ID, response_headers
from tunegate.edge._http import CallContext, ErrorAnswer, request_message, rpc_error
from tunegate.edge._routes import Route

__all__ = ["handle_download"]

logger = logging.getLogger("tunegate.edge")

_DEFAULT_CONTENT_TYPE = "application/octet-stream"
_EVENT_STREAM = "text/event-stream"
_EOF: object = grpc.aio.EOF  # type: ignore[attr-defined]  # grpc-stubs lacks the sentinel


async def handle_download(
    request: web.BaseRequest,
    route: Route,
    params: Mapping[str, str],
    channel: grpc.aio.Channel,
    config: EdgeConfig,
    ctx: CallContext,
) -> web.StreamResponse:
    """Stream ``route``'s ``HttpBody`` messages to the client as one raw body."""
    message = await request_message(
        request, route, params, limit=config.max_json_bytes, stall=config.body_timeout
    )
    rpc = channel.unary_stream(
        route.method_path,
        request_serializer=route.request_cls.SerializeToString,
        response_deserializer=route.response_cls.FromString,
    )
    call: Any = rpc(message, metadata=ctx.metadata, timeout=config.stream_timeout)
    try:
        try:
            initial = await call.initial_metadata()
            first = await call.read()
        except grpc.aio.AioRpcError as err:
            raise ErrorAnswer(rpc_error(err)) from None

        response = web.StreamResponse(status=200)
        response.headers[REQUEST_ID] = ctx.request_id
        extra = response_headers(initial)
        length = extra.pop("content-length", None)
        response.headers.update(extra)
        if length is not None and length.isdigit():
            response.content_length = int(length)
        response.content_type = (
            first.content_type if first is not _EOF and first.content_type else _DEFAULT_CONTENT_TYPE
        )
        if response.content_type == _EVENT_STREAM:
            response.headers["Cache-Control"] = "no-cache"
            response.headers["X-Accel-Buffering"] = "no"
        await response.prepare(request)

        try:
            chunk = first
            while chunk is not _EOF:
                if chunk.data:
                    await response.write(chunk.data)
                chunk = await call.read()
        except grpc.aio.AioRpcError as err:
            logger.warning(
                "download %s failed after the first byte (%s); aborting the connection",
                ctx.request_id,
                err.code(),
            )
            _abort(request)
            return response
        except ConnectionError:
            return response  # the client left; `finally` cancels the call
        await response.write_eof()
        return response
    finally:
        if not call.done():
            call.cancel()


def _abort(request: web.BaseRequest) -> None:
    # Closing without the final chunk (or short of Content-Length) is how HTTP/1.1 says "this
    # body is incomplete"; aiohttp's own write_eof then fails quietly on the closed transport.
    transport = request.transport
    if transport is not None:
        transport.abort()
