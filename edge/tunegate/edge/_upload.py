"""Multipart upload → client-streaming RPC (``POST /v1/files``, ``POST /v1/uploads/{id}/parts``).

Theory of operation
-------------------

The request message is ``oneof payload { <Metadata> metadata; bytes chunk; }`` (``UploadShape``).
The HTTP form is read part by part by aiohttp's ``MultipartReader``, never buffered whole; every
step of it (a part's headers, a chunk of its bytes) may wait ``body_timeout`` seconds for bytes,
and a part must end at a delimiter, not with the body:

0. The gRPC call starts before any body byte is read, and the edge waits for the server's
   initial metadata: ``x-tunegate-accepted`` (`tunegate.metadata.ACCEPTED_KEY`) means the checks
   that need no body passed (an upload naming a provider has a route that resolves); a call
   that ends instead is answered with its error at once, and a client that sent
   ``Expect: 100-continue`` never gets its ``100 Continue`` (the connection closes after the
   answer). An accepted call gets its ``100 Continue`` now.
1. Text parts (capped at 64 KiB each) are parsed into a *pending* metadata message; path
   variables and ``(from_header)`` fields fill it too. Unknown names are a 400 naming them.
2. At the binary part (``shape.part``: ``file`` or ``data``), its filename and content type
   join the pending metadata, which is written first; then the part's bytes are written as
   ``chunk`` messages of ≥ 256 KiB, counted against the part's byte limit.
3. Text parts after the binary part (curl sends fields in command-line order) go into a fresh
   pending message, written once the form ends, together with the part's byte count (the
   metadata's ``bytes``). The server merges metadata messages and stores nothing unless that
   count matches what arrived: a call cut short by a cancel can never commit a truncated file.
4. ``done_writing()``, then ``await call`` gives the created object.

Invariants:

* Each write is awaited before the next read (one outstanding write is grpc.aio's rule and our
  backpressure: a slow server slows the HTTP read, it never grows the edge's memory).
* Every way out of the handler except a completed call cancels the call — over-limit (413),
  a body stalled for the body timeout (408), bad form, client gone (``OSError``/
  ``CancelledError`` while reading) — so the server discards the partial blob.
* A failed ``write()`` only says "INTERNAL"; the server's real status comes from ``await call``,
  so a failed write stops writing and awaits the call. grpc.aio also *overwrites* the call's
  status with that INTERNAL when the server's status arrived while the write was in flight
  (about 1 call in 300 when the server ends a fresh call at once), so ``_ServerStatus`` keeps
  the server's status, and that is the answer.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Mapping
from typing import Any, TypeVar, cast

import grpc
from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError
from aiohttp.multipart import BodyPartReader, MultipartReader
from aiohttp.web_urldispatcher import _default_expect_handler
from google.protobuf.message import Message
from tunegate.edge._config import EdgeConfig
from tunegate.edge._errors import error_response
from tunegate.edge._http import BodyStalled, CallContext, ErrorAnswer, ok_json, rpc_error
from tunegate.edge._routes import Route, UploadShape
from tunegate.metadata import ACCEPTED_KEY
from tunegate.openai_json import apply_form_field, apply_headers, apply_path_params, to_openai

__all__ = ["PART_FIELDS", "handle_upload"]

MIN_MESSAGE_BYTES = 256 * 1024
"""Bytes gathered into one ``chunk`` message (except the last): 8 KiB messages are 4x slower."""
MAX_TEXT_BYTES = 64 * 1024
"""Cap on one text form field."""
PART_FIELDS = ("filename", "content_type", "bytes")
"""The metadata fields the edge fills from the binary part itself (where the metadata message has
them): its filename, its ``Content-Type`` and how many bytes it held — not form fields to send."""
_FILENAME, _CONTENT_TYPE, _BYTES = PART_FIELDS


_T = TypeVar("_T")


class _ServerEnded(Exception):
    """A write failed: the server ended the call; its status is in ``await call``."""


_CODES = {code.value[0]: code for code in grpc.StatusCode}
_WRITE_FAILED = "Internal error from Core"
"""The details grpc.aio gives the status it sets when a write fails."""


class _ServerStatus:
    """The status the server ended a call with, whatever a failed write did to the call after.

    grpc.aio runs a call's done callbacks each time it sets the call's status, and a write that
    fails sets one too: INTERNAL, "Internal error from Core", no trailers. If the server's status
    arrived while that write was in flight, the write's INTERNAL replaces it and ``await call``
    reports it. This keeps the first status that is not the write's. The status is read through
    the Cython call (grpcio is pinned; ``tests/edge/test_app.py`` checks the race's outcome).
    The in-process channel's calls (``tunegate run``) end once, with their handler's outcome,
    and are not watched.
    """

    __slots__ = ("error",)

    def __init__(self, call: Any) -> None:
        self.error: grpc.aio.AioRpcError | None = None
        call.add_done_callback(self._done)

    def _done(self, call: Any) -> None:
        status = call._cython_call._status
        code = _CODES.get(status.code(), grpc.StatusCode.UNKNOWN)
        trailers: tuple[tuple[str, str | bytes], ...] = tuple(status.trailing_metadata() or ())
        written_off = code is grpc.StatusCode.INTERNAL and status.details() == _WRITE_FAILED and not trailers
        if self.error is None and not written_off:
            self.error = grpc.aio.AioRpcError(
                code,
                grpc.aio.Metadata(),
                grpc.aio.Metadata(*trailers),
                status.details(),
                status.debug_error_string(),
            )


def _bad_request(message: str, *, param: str | None, code: str | None = None) -> ErrorAnswer:
    return ErrorAnswer(error_response(400, message, param=param, code=code))


async def handle_upload(
    request: web.BaseRequest,
    route: Route,
    params: Mapping[str, str],
    channel: grpc.aio.Channel,
    config: EdgeConfig,
    ctx: CallContext,
) -> web.Response:
    """Stream one multipart request into ``route``'s client-streaming RPC; answer its result."""
    shape = route.upload
    assert shape is not None  # routes of CLIENT_STREAMING cardinality always carry one
    if not request.content_type.startswith("multipart/form-data"):
        raise _bad_request(
            f"{route.verb} {route.path} expects a multipart/form-data body.",
            param=None,
            code="invalid_content_type",
        )
    rpc = channel.stream_unary(
        route.method_path,
        request_serializer=route.request_cls.SerializeToString,
        response_deserializer=route.response_cls.FromString,
    )
    pending = shape.metadata_cls()
    apply_path_params(pending, params)
    apply_headers(pending, request.headers)

    call: Any = None
    server_status: _ServerStatus | None = None
    try:
        try:
            reader = MultipartReader(request.headers, request.content)
        except ValueError as exc:
            raise _malformed(exc) from None
        call = rpc(None, metadata=ctx.metadata, timeout=config.stream_timeout)  # write() style
        server_status = _ServerStatus(call) if isinstance(call, grpc.aio.Call) else None
        if ACCEPTED_KEY not in await call.initial_metadata():
            await _refused(call, server_status, expects="Expect" in request.headers)
        if "Expect" in request.headers:
            # aiohttp's own (web.Application's): `100 Continue`, or a 417 for another expectation.
            await _default_expect_handler(cast(web.Request, request))
        binary_seen = False
        stall = config.body_timeout
        while True:
            part = await _step(reader.next(), stall)
            if part is None:
                break
            if not isinstance(part, BodyPartReader):
                raise _bad_request("Nested multipart bodies are not supported.", param=None)
            name = part.name
            if not name:
                raise _bad_request("Every form part needs a name.", param=None, code="invalid_multipart")
            if name != shape.part:
                apply_form_field(pending, name, await _read_text(part, name, stall))
                continue
            if binary_seen:
                raise _bad_request(f"Only one '{name}' part is allowed.", param=name)
            binary_seen = True
            _describe_binary(pending, part, name)
            await _write(call, route.request_cls(**{shape.metadata_field: pending}))
            pending = shape.metadata_cls()
            sent = await _stream_part(call, route, shape, part, config)
            if _BYTES in pending.DESCRIPTOR.fields_by_name:
                # The end-of-part marker: the server stores nothing unless exactly this many
                # bytes arrived, so a call cut short by a cancel can never commit a truncated file.
                setattr(pending, _BYTES, sent)
        if not binary_seen:
            raise _bad_request(
                f"Missing required parameter: '{shape.part}'.",
                param=shape.part,
                code="missing_required_parameter",
            )
        if pending.ListFields():
            await _write(call, route.request_cls(**{shape.metadata_field: pending}))
        await _done_writing(call)
        result: Message = await call
    except _ServerEnded:
        result = await _outcome(call, server_status)
    except grpc.aio.AioRpcError as err:
        raise ErrorAnswer(rpc_error(err)) from None
    finally:
        if call is not None and not call.done():
            call.cancel()
    return ok_json(to_openai(result))


async def _refused(call: Any, server_status: _ServerStatus | None, *, expects: bool) -> None:
    """Raises the answer to a call the server ended on its metadata alone, before any body byte
    was read. A client waiting for ``100 Continue`` never gets it: the connection closes after
    the answer. Otherwise aiohttp reads and discards the body the client is sending anyway."""
    try:
        await _outcome(call, server_status)
    except ErrorAnswer as refusal:
        raise ErrorAnswer(refusal.error, close=expects) from None
    raise ErrorAnswer(error_response(502, "The server ended the upload without accepting or refusing it."))


async def _outcome(call: Any, server_status: _ServerStatus | None) -> Message:
    """The call's result after a failed write; an error is the server's status, not the write's."""
    try:
        result: Message = await call
    except grpc.aio.AioRpcError as err:
        ended = server_status.error if server_status is not None else None
        server_error = ended if ended is not None and ended.code() is not grpc.StatusCode.OK else err
        raise ErrorAnswer(rpc_error(server_error)) from None
    return result


async def _step(step: Awaitable[_T], stall: float) -> _T:
    """Await one step of the form reader (a part's headers, or a chunk of its bytes): no bytes
    for ``stall`` seconds is a stalled body (408), a malformed body a 400, not a 500."""
    try:
        async with asyncio.timeout(stall):
            return await step
    except TimeoutError:
        raise BodyStalled(stall) from None
    except (ValueError, AssertionError, RuntimeError, HttpProcessingError) as exc:
        raise _malformed(exc) from None


def _malformed(exc: Exception) -> ErrorAnswer:
    return _bad_request(f"Malformed multipart body: {exc}", param=None, code="invalid_multipart")


def _check_ended(part: BodyPartReader) -> None:
    """A part's bytes ran out: it must have ended at a delimiter, not with the body."""
    if not part.at_eof():
        raise _malformed(ValueError("the body ended before the closing delimiter"))


def _describe_binary(metadata: Message, part: BodyPartReader, name: str) -> None:
    """Put the part's filename and content type into the metadata, where it has such fields."""
    filename = part.filename or ""
    try:
        filename.encode("utf-8")  # aiohttp keeps undecodable header bytes as lone surrogates
    except UnicodeEncodeError:
        raise _bad_request("The filename must be valid UTF-8.", param=name, code="invalid_filename") from None
    fields = metadata.DESCRIPTOR.fields_by_name
    if _FILENAME in fields and filename:
        setattr(metadata, _FILENAME, filename)
    content_type = part.headers.get("Content-Type", "")
    if _CONTENT_TYPE in fields and content_type:
        setattr(metadata, _CONTENT_TYPE, content_type)


async def _read_text(part: BodyPartReader, name: str, stall: float) -> str:
    data = bytearray()
    while chunk := await _step(part.read_chunk(MAX_TEXT_BYTES), stall):
        data += chunk
        if len(data) > MAX_TEXT_BYTES:
            raise _bad_request(
                f"'{name}' is longer than {MAX_TEXT_BYTES} bytes.", param=name, code="string_above_max_length"
            )
    _check_ended(part)
    try:
        return data.decode(part.get_charset(default="utf-8"))
    except (UnicodeDecodeError, LookupError):
        raise _bad_request(f"'{name}' must be UTF-8 text.", param=name) from None


async def _stream_part(
    call: Any, route: Route, shape: UploadShape, part: BodyPartReader, config: EdgeConfig
) -> int:
    """Writes the part's bytes as chunk messages; returns how many bytes were sent."""
    limit = config.part_limit(shape.part)
    total = 0
    buffered: list[bytes] = []
    size = 0
    while chunk := await _step(part.read_chunk(config.chunk_bytes), config.body_timeout):
        total += len(chunk)
        if total > limit:
            raise ErrorAnswer(
                error_response(
                    413,
                    f"'{shape.part}' is larger than the {limit}-byte limit.",
                    param=shape.part,
                    code="file_too_large",
                )
            )
        buffered.append(chunk)
        size += len(chunk)
        if size >= MIN_MESSAGE_BYTES:
            await _write(call, route.request_cls(**{shape.chunk_field: b"".join(buffered)}))
            buffered.clear()
            size = 0
    _check_ended(part)
    if buffered:
        await _write(call, route.request_cls(**{shape.chunk_field: b"".join(buffered)}))
    return total


async def _write(call: Any, message: Message) -> None:
    try:
        await call.write(message)
    except (grpc.aio.AioRpcError, asyncio.InvalidStateError):
        raise _ServerEnded from None


async def _done_writing(call: Any) -> None:
    try:
        await call.done_writing()
    except (grpc.aio.AioRpcError, asyncio.InvalidStateError):
        raise _ServerEnded from None
