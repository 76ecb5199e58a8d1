"""An in-process gRPC channel: the edge's calls go straight to this process's servicers.

`tunegate run` hosts the edge and the server in one process. Sending each REST call through a
loopback HTTP/2 connection there would cross grpc's C core twice and a socket for nothing
(grpc-gateway offers the same shortcut, `RegisterXHandlerServer`). `InProcessChannel` has the
part of `grpc.aio.Channel` the edge uses — `unary_unary`, `unary_stream`, `stream_unary`,
`close` — and calls the registered method handlers, wrapped by the same error interceptor as on
the network path, with a `ServicerContext` look-alike.

What a caller observes is what the network path gives it:

- every message crosses as bytes: the caller's serializer and the handler's deserializer on the
  way in, the handler's serializer and the caller's deserializer on the way out, exactly as
  grpc applies them — so a response is always the caller's declared type, and neither side
  shares a message object with the other; a response that does not serialize is UNKNOWN;
- metadata arrives as the `(key, value)` pairs the caller sent, after a `user-agent`;
- a servicer's abort — every domain error goes through one, via the interceptor — surfaces as
  `grpc.aio.AioRpcError` with the same code, details and trailing metadata, so the rich
  `google.rpc.Status` and the edge's one error table apply unchanged;
- a timeout is DEADLINE_EXCEEDED (the servicer sees `time_remaining()`), an unknown method
  UNIMPLEMENTED;
- streams keep one message in flight (backpressure); `cancel()` cancels the servicer's task,
  which sees `asyncio.CancelledError` as it would when a network client goes away;
- after a client-streaming servicer has answered, `write()` raises `asyncio.InvalidStateError`
  and the answer is in `await call`, as with grpc.aio.

The gRPC port still serves gRPC clients; only the edge's hop is shortened.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import inspect
from collections.abc import AsyncIterator, Awaitable, Callable, Generator, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import grpc
import grpc.aio
from tunegate.server.interceptor import Admission, wrap_handler

__all__ = ["HandlerTable", "InProcessChannel"]

if TYPE_CHECKING:
    _Handler = grpc.RpcMethodHandler[Any, Any]
    _Generic = grpc.GenericRpcHandler[Any, Any]
else:
    _Handler = grpc.RpcMethodHandler
    _Generic = grpc.GenericRpcHandler

_Pairs = Sequence[tuple[str, str | bytes]]
_Convert = Callable[[Any], Any] | None
_EOF: object = grpc.aio.EOF  # type: ignore[attr-defined]  # grpc-stubs lacks the sentinel
_PEER = "in-process"
_USER_AGENT = ("user-agent", f"grpc-python-asyncio/{grpc.__version__} (in-process)")


class HandlerTable:
    """Collects method handlers the way `grpc.aio.Server` does, so the generated
    `add_<Service>Servicer_to_server(servicer, table)` functions fill it. Each handler is
    wrapped with the error interceptor's behaviour."""

    def __init__(self, guard: Admission | None = None) -> None:
        self._handlers: dict[str, _Handler] = {}
        self._generic: list[_Generic] = []
        self._guard = guard

    def add_registered_method_handlers(self, service: str, handlers: Mapping[str, _Handler]) -> None:
        for name, handler in handlers.items():
            method = f"/{service}/{name}"
            self._handlers[method] = wrap_handler(handler, method, self._guard)

    def add_generic_rpc_handlers(self, handlers: Iterable[_Generic]) -> None:
        # Generated code registers each service twice (generic + registered); the registered
        # table answers first, generic handlers only serve methods registered no other way.
        self._generic.extend(handlers)

    def lookup(self, method: str) -> _Handler | None:
        """The wrapped handler for `/package.Service/Method`, or None."""
        handler = self._handlers.get(method)
        if handler is None:
            for generic in self._generic:
                found = generic.service(_CallDetails(method))
                if found is not None:
                    handler = self._handlers[method] = wrap_handler(found, method, self._guard)
                    break
        return handler


class _CallDetails(grpc.HandlerCallDetails):
    def __init__(self, method: str) -> None:
        self.method = method
        self.invocation_metadata = ()


def _rpc_error(
    code: grpc.StatusCode, details: str, trailing: _Pairs = (), initial: _Pairs = ()
) -> grpc.aio.AioRpcError:
    return grpc.aio.AioRpcError(
        code,
        grpc.aio.Metadata(*initial),
        grpc.aio.Metadata(*trailing),
        details=details,
        debug_error_string=None,
    )


def _serialized(message: Any, to_bytes: _Convert) -> Any:
    # grpc's `serialize`: text is encoded first; no serializer passes the value on as it is.
    if isinstance(message, str):
        message = message.encode()
    return message if to_bytes is None else to_bytes(message)


def _crossed(message: Any, to_bytes: _Convert, from_bytes: _Convert) -> Any:
    """``message`` as the other side of a connection receives it."""
    message = _serialized(message, to_bytes)
    return message if from_bytes is None else from_bytes(message)


def _response_crossed(message: Any, to_bytes: _Convert, from_bytes: _Convert) -> Any:
    """A response as the caller receives it; a response the handler's serializer rejects is
    the UNKNOWN status grpc's server answers with."""
    try:
        message = _serialized(message, to_bytes)
    except Exception as exc:
        raise _rpc_error(grpc.StatusCode.UNKNOWN, f"Unexpected {type(exc)}: {exc}") from None
    return message if from_bytes is None else from_bytes(message)


class _Aborted(grpc.aio.AbortError):
    """Raised by `_Context.abort`; the interceptor lets AbortError through untouched."""

    def __init__(self, code: grpc.StatusCode, details: str, trailing: _Pairs) -> None:
        super().__init__(details)
        self.error = _rpc_error(code, details, trailing)


class _Context:
    """The `grpc.aio.ServicerContext` methods tunegate's servicers and grpc's health servicer use."""

    def __init__(self, metadata: _Pairs, deadline: float | None) -> None:
        self._metadata = (_USER_AGENT, *metadata)
        self._deadline = deadline
        self._code = grpc.StatusCode.OK
        self._details = ""
        self._trailing: _Pairs = ()
        self.on_initial_metadata: Callable[[_Pairs], None] = lambda _metadata: None
        self.on_write: Callable[[Any], Awaitable[None]] | None = None

    def invocation_metadata(self) -> _Pairs:
        return self._metadata

    def peer(self) -> str:
        return _PEER

    def time_remaining(self) -> float | None:
        if self._deadline is None:
            return None
        return max(0.0, self._deadline - asyncio.get_running_loop().time())

    async def abort(self, code: grpc.StatusCode, details: str = "", trailing_metadata: _Pairs = ()) -> None:
        raise _Aborted(code, details, tuple(trailing_metadata))

    async def send_initial_metadata(self, metadata: _Pairs) -> None:
        self.on_initial_metadata(tuple(metadata))

    async def write(self, message: Any) -> None:
        if self.on_write is None:
            raise RuntimeError("write() is only valid on a server-streaming call")
        await self.on_write(message)

    def set_code(self, code: grpc.StatusCode) -> None:
        self._code = code

    def set_details(self, details: str) -> None:
        self._details = details

    def set_trailing_metadata(self, metadata: _Pairs) -> None:
        self._trailing = tuple(metadata)

    def failure(self) -> grpc.aio.AioRpcError | None:
        """The error a servicer set with `set_code` (and returned normally), if any."""
        if self._code is grpc.StatusCode.OK:
            return None
        return _rpc_error(self._code, self._details, self._trailing)


def _deadline(timeout: float | None) -> float | None:
    return None if timeout is None else asyncio.get_running_loop().time() + timeout


def _deadline_exceeded() -> grpc.aio.AioRpcError:
    return _rpc_error(grpc.StatusCode.DEADLINE_EXCEEDED, "Deadline Exceeded")


def _cancelled() -> grpc.aio.AioRpcError:
    return _rpc_error(grpc.StatusCode.CANCELLED, "Locally cancelled by application!")


class _Pipe:
    """One-message-in-flight hand-over between two tasks, ended once (with an error or not)."""

    def __init__(self) -> None:
        self._items: collections.deque[Any] = collections.deque()
        self._ready = asyncio.Event()
        self._room = asyncio.Event()
        self._room.set()
        self.ended = False
        self.error: BaseException | None = None

    async def put(self, item: Any) -> None:
        """Wait until the previous item was taken (or the pipe ended), then hand `item` over.
        Returns without handing over when the pipe has ended."""
        while not self._room.is_set():
            await self._room.wait()
        if self.ended:
            return
        self._items.append(item)
        self._room.clear()
        self._ready.set()

    async def get(self) -> Any:
        """The next item; `_EOF` once ended cleanly; raises the error it ended with."""
        while True:
            if self._items:
                item = self._items.popleft()
                self._room.set()
                if not self.ended:
                    self._ready.clear()
                return item
            if self.ended:
                if self.error is not None:
                    raise self.error
                return _EOF
            await self._ready.wait()

    def end(self, error: BaseException | None = None) -> None:
        if not self.ended:
            self.ended = True
            self.error = error
        self._ready.set()
        self._room.set()  # a producer blocked in put() must not wait forever


def _retrieve(task: asyncio.Task[Any]) -> None:
    # The edge may cancel a call that already failed without awaiting it again; the outcome
    # was delivered (or nobody wants it), so the task's exception must not be reported as lost.
    if not task.cancelled():
        task.exception()


async def _answer(
    handler: _Handler | None,
    behavior: Any,
    request: Any,
    metadata: _Pairs,
    seconds: float | None,
    response_deserializer: _Convert,
    on_initial_metadata: Callable[[_Pairs], None] | None = None,
) -> Any:
    """Run a single-response behaviour (unary or client-streaming) and return its response as
    the caller receives it, or raise the `AioRpcError` the network path would."""
    if handler is None or behavior is None:
        raise _rpc_error(grpc.StatusCode.UNIMPLEMENTED, "Method not found!")
    context = _Context(metadata, _deadline(seconds))
    if on_initial_metadata is not None:
        context.on_initial_metadata = on_initial_metadata
    try:
        async with asyncio.timeout(seconds):
            response = await behavior(request, context)
    except _Aborted as aborted:
        raise aborted.error from None
    except TimeoutError:
        raise _deadline_exceeded() from None
    failure = context.failure()
    if failure is not None:
        raise failure
    return _response_crossed(response, handler.response_serializer, response_deserializer)


class _UnaryUnary:
    def __init__(
        self, table: HandlerTable, method: str, request_serializer: _Convert, response_deserializer: _Convert
    ) -> None:
        self._table = table
        self._method = method
        self._request_serializer = request_serializer
        self._response_deserializer = response_deserializer

    def __call__(
        self, request: Any, *, timeout: float | None = None, metadata: _Pairs | None = None, **_: Any
    ) -> Awaitable[Any]:
        return self._invoke(request, timeout, metadata or ())

    async def _invoke(self, request: Any, seconds: float | None, metadata: _Pairs) -> Any:
        handler = self._table.lookup(self._method)
        behavior = None
        if handler is not None and handler.unary_unary is not None:
            behavior = handler.unary_unary
            request = _crossed(request, self._request_serializer, handler.request_deserializer)
        return await _answer(handler, behavior, request, metadata, seconds, self._response_deserializer)


class _InitialMetadata:
    """The server's initial metadata of a call: set once (by the handler, by its first response,
    or empty when it ends without either), awaited by the caller."""

    _initial: asyncio.Future[grpc.aio.Metadata]

    def _send_initial(self, metadata: _Pairs = ()) -> None:
        if not self._initial.done():
            self._initial.set_result(grpc.aio.Metadata(*metadata))

    async def initial_metadata(self) -> grpc.aio.Metadata:
        return await self._initial


class _UnaryStreamCall(_InitialMetadata):
    """The server-streaming call object: `initial_metadata()`, `read()`, `done()`, `cancel()`."""

    def __init__(
        self,
        handler: _Handler | None,
        request: Any,
        metadata: _Pairs,
        timeout: float | None,
        serializers: tuple[_Convert, _Convert],
    ) -> None:
        self._request_serializer, self._response_deserializer = serializers
        self._response_serializer = None if handler is None else handler.response_serializer
        loop = asyncio.get_running_loop()
        self._initial = loop.create_future()
        self._responses = _Pipe()
        self._task = loop.create_task(self._run(handler, request, metadata, timeout))
        self._task.add_done_callback(_retrieve)

    async def _emit(self, message: Any) -> None:
        message = _response_crossed(message, self._response_serializer, self._response_deserializer)
        self._send_initial()
        await self._responses.put(message)

    async def _run(
        self, handler: _Handler | None, request: Any, metadata: _Pairs, seconds: float | None
    ) -> None:
        error: BaseException | None = None
        try:
            if handler is None or handler.unary_stream is None:
                raise _Aborted(grpc.StatusCode.UNIMPLEMENTED, "Method not found!", ())
            request = _crossed(request, self._request_serializer, handler.request_deserializer)
            context = _Context(metadata, _deadline(seconds))
            context.on_initial_metadata = self._send_initial
            context.on_write = self._emit
            async with asyncio.timeout(seconds):
                behavior: Any = handler.unary_stream  # grpc-stubs types behaviours as sync
                result = behavior(request, context)
                if inspect.isasyncgen(result):
                    async with contextlib.aclosing(result):
                        async for message in result:
                            await self._emit(message)
                else:
                    await result
            error = context.failure()
        except _Aborted as aborted:
            error = aborted.error
        except grpc.aio.AioRpcError as rejected:  # a response that does not serialize
            error = rejected
        except TimeoutError:
            error = _deadline_exceeded()
        except asyncio.CancelledError:
            self._send_initial()
            self._responses.end(_cancelled())
            raise
        self._send_initial()
        self._responses.end(error)

    async def read(self) -> Any:
        return await self._responses.get()

    def done(self) -> bool:
        return self._task.done()

    def cancel(self) -> bool:
        return self._task.cancel()


class _StreamUnaryCall(_InitialMetadata):
    """The client-streaming call object: `initial_metadata()`, `write()`, `done_writing()`,
    `await call`, `done()`, `cancel()`."""

    def __init__(
        self,
        handler: _Handler | None,
        metadata: _Pairs,
        timeout: float | None,
        serializers: tuple[_Convert, _Convert],
    ) -> None:
        self._request_serializer, self._response_deserializer = serializers
        self._request_deserializer = None if handler is None else handler.request_deserializer
        self._requests = _Pipe()
        loop = asyncio.get_running_loop()
        self._initial = loop.create_future()
        self._task = loop.create_task(self._run(handler, metadata, timeout))
        self._task.add_done_callback(self._finished)

    def _finished(self, task: asyncio.Task[Any]) -> None:
        _retrieve(task)
        self._send_initial()  # a call that ends before sending any has empty initial metadata
        self._requests.end()  # wakes a writer waiting for room; its write then fails

    async def _incoming(self) -> AsyncIterator[Any]:
        while (message := await self._requests.get()) is not _EOF:
            yield _crossed(message, self._request_serializer, self._request_deserializer)

    async def _run(self, handler: _Handler | None, metadata: _Pairs, seconds: float | None) -> Any:
        behavior = None if handler is None else handler.stream_unary
        incoming, deserializer = self._incoming(), self._response_deserializer
        return await _answer(handler, behavior, incoming, metadata, seconds, deserializer, self._send_initial)

    async def write(self, message: Any) -> None:
        if self._requests.ended or self._task.done():
            raise asyncio.InvalidStateError("the call has ended")
        await self._requests.put(message)
        if self._task.done():
            raise asyncio.InvalidStateError("the call has ended")

    async def done_writing(self) -> None:
        if self._task.done():
            raise asyncio.InvalidStateError("the call has ended")
        await self._requests.put(_EOF)  # `_incoming` stops at the marker

    def __await__(self) -> Generator[Any, None, Any]:
        return self._outcome().__await__()

    async def _outcome(self) -> Any:
        try:
            return await self._task
        except asyncio.CancelledError:
            if self._task.cancelled():
                raise _cancelled() from None
            raise

    def done(self) -> bool:
        return self._task.done()

    def cancel(self) -> bool:
        return self._task.cancel()


class InProcessChannel:
    """A `grpc.aio.Channel` stand-in for callers in the server's own process (see the module
    docstring). Build it from the server's `HandlerTable`; use it on the server's event loop."""

    def __init__(self, table: HandlerTable) -> None:
        self._table = table

    def unary_unary(
        self,
        method: str,
        request_serializer: _Convert = None,
        response_deserializer: _Convert = None,
        *_: Any,
        **__: Any,
    ) -> _UnaryUnary:
        return _UnaryUnary(self._table, method, request_serializer, response_deserializer)

    def unary_stream(
        self,
        method: str,
        request_serializer: _Convert = None,
        response_deserializer: _Convert = None,
        *_: Any,
        **__: Any,
    ) -> Callable[..., _UnaryStreamCall]:
        serializers = (request_serializer, response_deserializer)

        def call(
            request: Any, *, timeout: float | None = None, metadata: _Pairs | None = None, **_: Any
        ) -> _UnaryStreamCall:
            return _UnaryStreamCall(self._table.lookup(method), request, metadata or (), timeout, serializers)

        return call

    def stream_unary(
        self,
        method: str,
        request_serializer: _Convert = None,
        response_deserializer: _Convert = None,
        *_: Any,
        **__: Any,
    ) -> Callable[..., _StreamUnaryCall]:
        serializers = (request_serializer, response_deserializer)

        def call(
            request_iterator: None = None,
            *,
            timeout: float | None = None,
            metadata: _Pairs | None = None,
            **_: Any,
        ) -> _StreamUnaryCall:
            if request_iterator is not None:
                raise NotImplementedError("the in-process channel takes write()-style streams only")
            return _StreamUnaryCall(self._table.lookup(method), metadata or (), timeout, serializers)

        return call

    async def close(self, grace: float | None = None) -> None:
        """Nothing to release: the servicers belong to the server."""
