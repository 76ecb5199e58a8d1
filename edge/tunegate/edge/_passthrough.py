"""Pass-through routes: the request body travels as sent in a ``google.api.HttpBody`` field, the
answer is the server's ``HttpBody`` bytes (``POST /v1/chat/completions``).

Theory of operation
-------------------

0. The body is read whole (``max_json_bytes``, the body timeout) and checked only as far as the
   envelope needs: a JSON object (orjson, strict), nested at most ``MAX_JSON_DEPTH`` levels below
   each top-level key, ``model`` a string and ``stream`` a boolean (or null) — a 400 naming the
   parameter otherwise. The request message gets ``model`` and ``stream`` copied from it and the
   bytes, as sent, in the ``HttpBody`` field (``application/json``).
1. ``stream`` false (or absent): the unary RPC; its ``HttpBody`` is the answer, written with its
   ``content_type``.
2. ``stream`` true: the route's ``(streamed_by)`` RPC, with the same request, relayed by
   ``_sse.relay_events``: nothing is sent until its first message has arrived, so a failure
   before it (bad request, unknown model, the provider's 429 with ``retry-after``) is the
   ordinary JSON error; then each message's bytes are written as they arrive (back-pressure
   reaches the provider); a failure after the first message ends the stream the way OpenAI
   does, with one more event, ``data: {"error": {…}}``.
3. A client that goes away cancels the call (``on_client_gone``; the edge does not cancel
   handlers itself), so the server closes the provider's response or stops generating. For a
   stream, the client's end of stream counts as leaving (a half-closed client cannot be told
   from a closed one without writing to it); a unary call is cancelled only when the
   connection is lost.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any

import grpc
from aiohttp import web
from google.api import httpbody_pb2
from tunegate.edge._config import EdgeConfig
from tunegate.edge._errors import error_response
from tunegate.edge._headers import REQUEST_ID
from tunegate.edge._http import CallContext, ErrorAnswer, json_body, read_body, rpc_error
from tunegate.edge._protocol import on_client_gone
from tunegate.edge._routes import Route
from tunegate.edge._sse import cancelling, relay_events
from tunegate.openai_json import MAX_JSON_DEPTH, too_deep_param

__all__ = ["envelope", "handle_passthrough"]

_JSON = "application/json"


def _bad(message: str, param: str | None, code: str) -> ErrorAnswer:
    return ErrorAnswer(error_response(400, message, param=param, code=code))


def envelope(body: bytes) -> tuple[str, bool]:
    """``(model, stream)`` of a pass-through JSON body ("" and False when absent); raises
    ErrorAnswer (400) for a body that is not a JSON object, nests too deep, or has a ``model``
    that is not a string or a ``stream`` that is not a boolean."""
    document = json_body(body)
    if not isinstance(document, dict):
        raise _bad("The request body must be a JSON object.", None, "invalid_json")
    deep = too_deep_param(document)
    if deep is not None:
        raise _bad(
            f"Invalid value for '{deep}': objects and arrays may be nested at most "
            f"{MAX_JSON_DEPTH} levels deep.",
            deep,
            "invalid_value",
        )
    model = document.get("model", "")
    if not isinstance(model, str):
        raise _bad(
            f"Invalid type for 'model': expected a string, but got {_kind(model)}.", "model", "invalid_type"
        )
    stream = document.get("stream")
    if stream is not None and not isinstance(stream, bool):
        raise _bad(
            f"Invalid type for 'stream': expected a boolean, but got {_kind(stream)}.",
            "stream",
            "invalid_type",
        )
    return model, bool(stream)


def _kind(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    return "an array" if isinstance(value, list) else "an object"


async def handle_passthrough(
    request: web.BaseRequest,
    route: Route,
    params: Mapping[str, str],
    channel: grpc.aio.Channel,
    config: EdgeConfig,
    ctx: CallContext,
) -> web.StreamResponse:
    """Serve a pass-through route: the unary RPC, or its ``(streamed_by)`` RPC for a stream."""
    del params  # a pass-through route binds no path variables today
    body = await read_body(request, config.max_json_bytes, config.body_timeout)
    model, stream = envelope(body)
    message: Any = route.request_cls()
    message.model, message.stream = model, stream
    getattr(message, route.body).CopyFrom(httpbody_pb2.HttpBody(content_type=_JSON, data=body))
    if stream and route.streamed_by is not None:
        return await relay_events(
            request, route.streamed_by, message, httpbody_pb2.HttpBody, channel, config, ctx
        )
    return await _unary(request, route, message, channel, config, ctx)


async def _unary(
    request: web.BaseRequest,
    route: Route,
    message: Any,
    channel: grpc.aio.Channel,
    config: EdgeConfig,
    ctx: CallContext,
) -> web.StreamResponse:
    rpc = channel.unary_unary(
        route.method_path,
        request_serializer=route.request_cls.SerializeToString,
        response_deserializer=httpbody_pb2.HttpBody.FromString,
    )
    call: Any = rpc(message, metadata=ctx.metadata, timeout=config.stream_timeout)
    task = asyncio.ensure_future(call)

    def cancel() -> None:
        if hasattr(call, "cancel"):
            call.cancel()
        task.cancel()

    unregister = on_client_gone(request, cancel)
    try:
        answer = await task
    except grpc.aio.AioRpcError as err:
        raise ErrorAnswer(rpc_error(err)) from None
    except asyncio.CancelledError:
        if task.cancelled() and not cancelling():
            raise ConnectionError("the client went away") from None
        raise
    finally:
        unregister()
    response = web.Response(status=200, body=answer.data)
    response.headers["Content-Type"] = answer.content_type or _JSON
    response.headers[REQUEST_ID] = ctx.request_id
    return response
