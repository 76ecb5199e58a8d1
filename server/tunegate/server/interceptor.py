"""The error-normalising server interceptor.

Every handler, whatever its cardinality, is wrapped in a handler of the same cardinality so that:

- a raised `TunegateError` aborts the call with `to_status(err)` (code, message, details); one
  that reports a provider's failure (`err.provider` set) is first logged as one WARNING line
  (provider, operation, status, request id), without a traceback;
- any other exception is logged with its traceback and aborts with a generic INTERNAL status
  (code `internal_error`); the stack never leaves the process;
- `asyncio.CancelledError` (client gone, server stopping) and grpc's own abort propagate;
- a single request message that cannot be decoded (protobuf refuses messages nested more than
  100 levels deep) or whose open-ended JSON (`Struct`/`Value` fields) nests deeper than
  `tunegate.openai_json.MAX_JSON_DEPTH` is refused with INVALID_ARGUMENT naming the field,
  before the servicer sees it. (grpc itself would answer a request its deserializer cannot
  read with INTERNAL.)
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TYPE_CHECKING, Any, NoReturn, Protocol

import grpc
import grpc.aio
from google.protobuf.message import DecodeError
from tunegate.openai_json import MAX_JSON_DEPTH, too_deep_field
from tunegate.server.errors import Internal, InvalidArgument, TunegateError, log_failure, to_status

__all__ = ["Admission", "ErrorInterceptor", "wrap_handler"]

logger = logging.getLogger("tunegate.server")

if TYPE_CHECKING:
    _Interceptor = grpc.aio.ServerInterceptor[Any, Any]
    _Context = grpc.aio.ServicerContext[Any, Any]
    _Handler = grpc.RpcMethodHandler[Any, Any]
else:
    _Interceptor = grpc.aio.ServerInterceptor
    _Context = grpc.aio.ServicerContext
    _Handler = grpc.RpcMethodHandler

_Behavior = Callable[..., Any]


async def _abort(context: _Context, err: TunegateError) -> NoReturn:
    status = to_status(err)
    # Equivalent to `abort_with_status(status)`, which the aio typing stubs lack.
    await context.abort(status.code, status.details, status.trailing_metadata)


async def _abort_for(context: _Context, method: str, exc: Exception) -> NoReturn:
    if isinstance(exc, TunegateError):
        if exc.provider is not None:
            log_failure(logger, exc, method, _request_id(context))
        await _abort(context, exc)
    logger.error("unhandled exception in %s", method, exc_info=exc)
    await _abort(context, Internal("The server had an error while processing your request."))


def _request_id(context: _Context) -> str | None:
    for key, value in context.invocation_metadata() or ():
        if key == "x-request-id":
            return value if isinstance(value, str) else value.decode("ascii", "replace")
    return None


class _Undecodable:
    """What a request deserializer hands the behaviour instead of raising (see `_decoding`)."""

    def __init__(self, error: DecodeError) -> None:
        self.error = error


def _decoding(deserializer: Callable[[bytes], Any] | None) -> Callable[[bytes], Any] | None:
    if deserializer is None:
        return None

    def decode(data: bytes) -> Any:
        try:
            return deserializer(data)
        except DecodeError as exc:
            return _Undecodable(exc)

    return decode


def _check_request(request: Any) -> None:
    """Raises InvalidArgument for an undecodable request or one nested too deeply."""
    if isinstance(request, _Undecodable):
        raise InvalidArgument(f"The request could not be decoded: {request.error}")
    if hasattr(request, "ListFields"):
        path = too_deep_field(request)
        if path is not None:
            raise InvalidArgument(
                f"Invalid value for '{path}': objects and arrays may be nested at most "
                f"{MAX_JSON_DEPTH} levels deep.",
                param=path,
            )


class Admission(Protocol):
    """What decides, before a servicer runs, whether the call may proceed (`tunegate.server.auth.Guard`)."""

    async def admit(self, method: str, metadata: Any) -> Any: ...


def _wrap_unary_response(behavior: _Behavior, method: str, guard: Admission | None) -> _Behavior:
    async def wrapper(request: Any, context: _Context) -> Any:
        try:
            if guard is not None:
                await guard.admit(method, context.invocation_metadata())
            _check_request(request)  # a no-op for a request stream
            return await behavior(request, context)
        except grpc.aio.AbortError:
            raise
        except Exception as exc:
            await _abort_for(context, method, exc)

    return wrapper


def _wrap_stream_response(behavior: _Behavior, method: str, guard: Admission | None) -> _Behavior:
    if inspect.isasyncgenfunction(behavior):

        async def generator(request: Any, context: _Context) -> AsyncIterator[Any]:
            try:
                if guard is not None:
                    await guard.admit(method, context.invocation_metadata())
                _check_request(request)
                async for response in behavior(request, context):
                    yield response
            except grpc.aio.AbortError:
                raise
            except Exception as exc:
                await _abort_for(context, method, exc)

        return generator
    # A coroutine that writes with `context.write` (e.g. health's Watch): same shape as unary.
    return _wrap_unary_response(behavior, method, guard)


# Per cardinality: the handler's attribute, grpc's constructor, and how its behaviour is wrapped.
_CARDINALITIES: tuple[
    tuple[str, Callable[..., _Handler], Callable[[_Behavior, str, Admission | None], _Behavior]], ...
] = (
    ("unary_unary", grpc.unary_unary_rpc_method_handler, _wrap_unary_response),
    ("unary_stream", grpc.unary_stream_rpc_method_handler, _wrap_stream_response),
    ("stream_unary", grpc.stream_unary_rpc_method_handler, _wrap_unary_response),
    ("stream_stream", grpc.stream_stream_rpc_method_handler, _wrap_stream_response),
)


def wrap_handler(handler: _Handler, method: str, guard: Admission | None = None) -> _Handler:
    """`handler` with every behaviour wrapped as described above (same cardinality, same
    (de)serializers), `guard` admitting each call first. Used by `ErrorInterceptor` and by the
    in-process channel."""
    for attribute, make, wrap in _CARDINALITIES:
        behavior = getattr(handler, attribute)
        if behavior is not None:
            unary_request = attribute.startswith("unary_")
            return make(
                wrap(behavior, method, guard),
                request_deserializer=(
                    _decoding(handler.request_deserializer) if unary_request else handler.request_deserializer
                ),
                response_serializer=handler.response_serializer,
            )
    return handler


class ErrorInterceptor(_Interceptor):
    """Turns exceptions raised by servicers into well-formed `google.rpc.Status` aborts, after
    `guard` (if any) admitted the call."""

    def __init__(self, guard: Admission | None = None) -> None:
        self._guard = guard

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[_Handler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> _Handler:
        # None for an unknown method: grpc then answers UNIMPLEMENTED itself.
        handler: _Handler | None = await continuation(handler_call_details)
        if handler is None:
            return handler  # type: ignore[return-value]  # the stubs omit the None case
        return wrap_handler(handler, handler_call_details.method, self._guard)
