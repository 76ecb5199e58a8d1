"""Server-streaming RPC → server-sent events: a streamed chat answer (its ``HttpBody`` messages
relayed as they are) and a query route's stream (``GET …/events?stream=true``, each message
rendered by the codec as one event).

Sans-IO part: `stream_asked` (the query's ``stream`` parameter), `event_bytes` (one message as
its event) and `DONE`. I/O part: `relay_events`.

Theory of operation (`relay_events`)
------------------------------------

1. Start the call and await its *first* message before answering: until then nothing is sent,
   so a failure before it (bad request, unknown job, the provider's 429 with ``retry-after``)
   is the ordinary JSON error.
2. Then the response starts (``text/event-stream`` — or the first ``HttpBody``'s content type —
   ``Cache-Control: no-cache``, chunked) and each message is written as it arrives, awaiting
   each write — back-pressure: a slow client slows the gRPC reads, and gRPC's flow control
   slows the server.
3. A stream of typed messages (not ``HttpBody``) ends with ``data: [DONE]`` once the call has
   ended well, as OpenAI's streams do: an ``EventSource`` would otherwise reconnect when the
   response ends. An ``HttpBody`` stream carries its own end (the provider's ``[DONE]``).
4. A failure after the first message ends the stream the way OpenAI does: one more event,
   ``data: {"error": {…}}``, the same envelope the status maps to, then the end of the response
   (no ``[DONE]``).
5. A client that goes away cancels the call (``on_client_gone``; the edge does not cancel
   handlers itself), so the server stops its work — also while the handler waits for the next
   message, not only at its next write. The client's end of stream counts as leaving (a
   half-closed client cannot be told from a closed one without writing to it).
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Mapping
from typing import Any

import grpc
import orjson
from aiohttp import web
from google.api import httpbody_pb2
from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import Message
from tunegate.edge._config import EdgeConfig
from tunegate.edge._errors import error_response
from tunegate.edge._headers import REQUEST_ID
from tunegate.edge._http import CallContext, ErrorAnswer, rpc_error
from tunegate.edge._protocol import on_client_gone
from tunegate.openai_json import _options as opts
from tunegate.openai_json import to_openai

__all__ = ["DONE", "STREAM_PARAM", "cancelling", "event_bytes", "event_types", "relay_events", "stream_asked"]

logger = logging.getLogger("tunegate.edge")

DONE = b"data: [DONE]\n\n"
"""The last event of a typed stream that ended well."""
STREAM_PARAM = "stream"
"""The query parameter that asks a query route with ``(streamed_by)`` for its stream."""

_EVENT_STREAM = "text/event-stream"
_HTTP_BODY = httpbody_pb2.HttpBody.DESCRIPTOR.full_name
_EOF: object = grpc.aio.EOF  # type: ignore[attr-defined]  # grpc-stubs lacks the sentinel


def stream_asked(query: Mapping[str, str]) -> bool:
    """Whether a query asks for the stream: ``stream=true`` (or ``1``); ``false``, ``0`` or no
    ``stream`` asks for the unary answer. Case-insensitive; the last ``stream`` given counts.
    Raises ErrorAnswer (400 ``invalid_value``, param ``stream``) for any other value."""
    values = [value for key, value in query.items() if key == STREAM_PARAM]
    if not values:
        return False
    value = values[-1].strip().lower()
    if value in ("true", "1"):
        return True
    if value in ("false", "0"):
        return False
    raise ErrorAnswer(
        error_response(
            400,
            f"Invalid value for 'stream': expected 'true' or 'false', got {values[-1][:64]!r}.",
            param=STREAM_PARAM,
            code="invalid_value",
        )
    )


@functools.cache
def _union_members(desc: Descriptor) -> str | None:
    """The oneof a message's fields all belong to, when every member is a message; else None."""
    oneofs = list(desc.oneofs)
    fields: list[FieldDescriptor] = list(desc.fields)
    if len(oneofs) != 1 or not fields:
        return None
    oneof = oneofs[0]
    if any(f.containing_oneof is not oneof or f.type != FieldDescriptor.TYPE_MESSAGE for f in fields):
        return None
    return str(oneof.name)


def event_types(desc: Descriptor) -> tuple[Descriptor, ...]:
    """The message types whose OpenAI JSON an event of a ``desc`` stream carries: the members
    of its one oneof when its fields form one (of messages), else ``desc`` itself."""
    oneof = _union_members(desc)
    if oneof is None:
        return (desc,)
    return tuple(opts.message_of(field) for field in desc.oneofs_by_name[oneof].fields)


def event_bytes(message: Message) -> bytes:
    """One stream message as what is written for it: an ``HttpBody``'s bytes as they are; any
    other message as one event, ``data: <OpenAI JSON>`` — of the member that is set when the
    message's fields form one oneof of messages (nothing when none is set), else of the message."""
    desc = opts.descriptor_of(message)
    if desc.full_name == _HTTP_BODY:
        return bytes(message.data)  # type: ignore[attr-defined]  # an HttpBody
    rendered = message
    oneof = _union_members(desc)
    if oneof is not None:
        which = message.WhichOneof(oneof)
        if which is None:
            return b""
        rendered = getattr(message, which)
    return b"data: " + orjson.dumps(to_openai(rendered)) + b"\n\n"


def cancelling() -> bool:
    """Whether the current task is being cancelled (rather than a call it awaits)."""
    task = asyncio.current_task()
    return task is not None and task.cancelling() > 0


async def relay_events(
    request: web.BaseRequest,
    method_path: str,
    message: Message,
    response_cls: type[Message],
    channel: grpc.aio.Channel,
    config: EdgeConfig,
    ctx: CallContext,
) -> web.StreamResponse:
    """Call the server-streaming ``method_path`` with ``message`` and write its messages to the
    client as server-sent events (see the module's theory of operation)."""
    rpc = channel.unary_stream(
        method_path,
        request_serializer=type(message).SerializeToString,
        response_deserializer=response_cls.FromString,
    )
    typed = response_cls.DESCRIPTOR.full_name != _HTTP_BODY
    call: Any = rpc(message, metadata=ctx.metadata, timeout=config.stream_timeout)
    gone = False

    def cancel() -> None:
        nonlocal gone
        gone = True
        call.cancel()

    unregister = on_client_gone(request, cancel, eof=True)
    response: web.StreamResponse | None = None
    try:
        try:
            first = await call.read()
        except grpc.aio.AioRpcError as err:
            raise ErrorAnswer(rpc_error(err)) from None
        response = web.StreamResponse(status=200)
        response.headers[REQUEST_ID] = ctx.request_id
        content_type = "" if typed or first is _EOF else first.content_type
        response.content_type = content_type or _EVENT_STREAM
        response.headers["Cache-Control"] = "no-cache"
        response.headers["X-Accel-Buffering"] = "no"
        await response.prepare(request)
        chunk = first
        try:
            while chunk is not _EOF:
                data = event_bytes(chunk)
                if data:
                    await response.write(data)
                chunk = await call.read()
        except grpc.aio.AioRpcError as err:
            if gone:
                return response
            logger.info("stream %s failed after its first event (%s)", ctx.request_id, err.code())
            event = b"data: " + orjson.dumps(rpc_error(err).body) + b"\n\n"
            try:
                await response.write(event)
            except ConnectionError:
                return response
        else:
            if typed:
                await response.write(DONE)
        await response.write_eof()
        return response
    except asyncio.CancelledError:
        if gone and not cancelling():
            if response is None:
                raise ConnectionError("the client went away") from None
            return response
        raise
    except ConnectionError:
        if response is None:
            raise
        return response  # the client left mid-stream; `finally` cancels the call
    finally:
        unregister()
        if not call.done():
            call.cancel()
