"""The one error vocabulary of the server.

Domain code raises these; the interceptor turns them into a `google.rpc.Status`, which the edge
maps to OpenAI's `{"error": {message, type, param, code}}` through one table::

    TunegateError                      grpc status          HTTP (edge)
    ├── InvalidArgument                INVALID_ARGUMENT     400
    │   └── Unsupported                INVALID_ARGUMENT     400  code unsupported_by_provider
    ├── FailedPrecondition             FAILED_PRECONDITION  400
    ├── NotFound                       NOT_FOUND            404  (also for another owner's ids)
    ├── Conflict                       ALREADY_EXISTS       409  (idempotency key reused)
    ├── PermissionDenied               PERMISSION_DENIED    403
    ├── Unauthenticated                UNAUTHENTICATED      401
    ├── ResourceExhausted              RESOURCE_EXHAUSTED   429  (+ RetryInfo)
    ├── Unimplemented                  UNIMPLEMENTED        501
    ├── Aborted                        ABORTED              409
    ├── Unavailable                    UNAVAILABLE          503  (+ RetryInfo)
    │   └── UpstreamError              UNAVAILABLE          502  a provider's 5xx (retryable)
    │       └── ProviderUnreachable    UNAVAILABLE          502  nothing reached the provider
    ├── DeadlineExceeded               DEADLINE_EXCEEDED    504  (also a provider timeout)
    └── Internal                       INTERNAL             500

`error_for_http_status` turns a provider's HTTP error into the matching class, so a provider
4xx stays that 4xx with the provider's message, and 5xx / timeouts become 502 / 504.

Wire contract (read by the edge): `Status.message` is OpenAI's `message`; `ErrorInfo.reason` is
the OpenAI `code` upper-cased (the edge lower-cases it back, so codes are snake_case);
`ErrorInfo.domain` is "tunegate"; `ErrorInfo.metadata["type"]` overrides the edge's per-status
default `type`; `ErrorInfo.metadata["http_status"]` overrides the edge's code → status table
(a provider's 422 stays 422, its 5xx becomes 502); the first `BadRequest.field_violations[].field`
is OpenAI's `param`.
"""

from __future__ import annotations

import logging
import math
import re
from typing import Any, ClassVar

import grpc
from google.protobuf import any_pb2, duration_pb2
from google.protobuf.message import Message
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_status import rpc_status

__all__ = [
    "Aborted",
    "Conflict",
    "DeadlineExceeded",
    "FailedPrecondition",
    "Internal",
    "InvalidArgument",
    "NotFound",
    "PermissionDenied",
    "ProviderUnreachable",
    "ResourceExhausted",
    "TunegateError",
    "Unauthenticated",
    "Unavailable",
    "Unimplemented",
    "Unsupported",
    "UpstreamError",
    "error_for_http_status",
    "gateway_model_not_found",
    "log_failure",
    "to_status",
]

ERROR_DOMAIN = "tunegate"
# AIP-193: ErrorInfo.reason is UPPER_SNAKE; we require codes to be lower snake_case so the
# round trip through the edge (`reason.lower()`) is exact.
_CODE = re.compile(r"[a-z][a-z0-9_]*[a-z0-9]")


class TunegateError(Exception):
    """A failure the caller should see, with OpenAI's error fields.

    `code` is OpenAI's machine-readable code (snake_case), `param` the offending request field
    (a proto field path such as `expires_after.seconds`), `type` an explicit OpenAI error type
    when the edge's per-status default would be wrong.
    """

    status_code: ClassVar[grpc.StatusCode] = grpc.StatusCode.UNKNOWN
    default_code: ClassVar[str] = "error"
    provider: str | None = None
    """The provider whose answer (or failed connection) this error reports; None when the
    gateway itself raised it. An error with a provider is expected: logged as one line."""

    def __init__(
        self,
        message: str,
        *,
        code: str | None = None,
        param: str | None = None,
        type: str | None = None,
        http_status: int | None = None,
    ) -> None:
        super().__init__(message)
        if http_status is not None and not 400 <= http_status <= 599:
            raise ValueError(f"http_status must be an error status, got {http_status}")
        self.http_status = http_status
        """When set, the HTTP status the edge answers instead of its table's (see module doc)."""
        self.message = message
        self.code = code if code is not None else self.default_code
        if not _CODE.fullmatch(self.code):
            raise ValueError(f"error code must be snake_case, got {self.code!r}")
        self.param = param
        self.type = type

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.message!r}, code={self.code!r}, param={self.param!r})"


class InvalidArgument(TunegateError):
    status_code = grpc.StatusCode.INVALID_ARGUMENT
    default_code = "invalid_request"


class Unsupported(InvalidArgument):
    """The chosen provider lacks this operation; never answered with a different operation."""

    default_code = "unsupported_by_provider"


class FailedPrecondition(TunegateError):
    status_code = grpc.StatusCode.FAILED_PRECONDITION
    default_code = "invalid_state"


class NotFound(TunegateError):
    status_code = grpc.StatusCode.NOT_FOUND
    default_code = "not_found"


def gateway_model_not_found(model: str) -> NotFound:
    """The gateway's own 404 for a model it does not serve to this caller (no provider named):
    worded as the gateway's answer, naming the header that routes to a provider."""
    return NotFound(
        f"The gateway has no model '{model}' for this caller: without a provider it serves its "
        "local base models and the caller's own fine-tuned models. To reach a provider's models, "
        "send the 'x-portkey-provider' header with that provider's credentials (or a virtual key).",
        code="model_not_found",
        param="model",
    )


class Conflict(TunegateError):
    """A repeated idempotency key with a different body (the SDK must not retry)."""

    status_code = grpc.StatusCode.ALREADY_EXISTS
    default_code = "idempotency_key_reused"


class PermissionDenied(TunegateError):
    status_code = grpc.StatusCode.PERMISSION_DENIED
    default_code = "permission_denied"


class Unauthenticated(TunegateError):
    status_code = grpc.StatusCode.UNAUTHENTICATED
    default_code = "invalid_api_key"


class Unimplemented(TunegateError):
    status_code = grpc.StatusCode.UNIMPLEMENTED
    default_code = "not_implemented"


class DeadlineExceeded(TunegateError):
    status_code = grpc.StatusCode.DEADLINE_EXCEEDED
    default_code = "timeout"


class Internal(TunegateError):
    status_code = grpc.StatusCode.INTERNAL
    default_code = "internal_error"


class _Retryable(TunegateError):
    """An error that carries an optional `retry_after` hint (seconds), sent as `RetryInfo`."""

    def __init__(
        self,
        message: str,
        *,
        code: str | None = None,
        param: str | None = None,
        type: str | None = None,
        http_status: int | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message, code=code, param=param, type=type, http_status=http_status)
        if retry_after is not None and (retry_after < 0 or not math.isfinite(retry_after)):
            raise ValueError("retry_after must be a finite, non-negative number of seconds")
        self.retry_after = retry_after


class ResourceExhausted(_Retryable):
    status_code = grpc.StatusCode.RESOURCE_EXHAUSTED
    default_code = "rate_limit_exceeded"


class Unavailable(_Retryable):
    status_code = grpc.StatusCode.UNAVAILABLE
    default_code = "service_unavailable"


class UpstreamError(Unavailable):
    """A provider answered 5xx or the connection to it failed: HTTP 502, retryable."""

    default_code = "upstream_error"

    def __init__(self, message: str, *, code: str | None = None, retry_after: float | None = None) -> None:
        super().__init__(message, code=code, type="server_error", http_status=502, retry_after=retry_after)


class ProviderUnreachable(UpstreamError):
    """No byte of the request reached the provider (DNS, connect refused or timed out, TLS): the
    provider did nothing, so a paid operation may be sent again safely."""

    default_code = "provider_unreachable"


class Aborted(TunegateError):
    """A conflict with the resource's current state (HTTP 409; the SDK retries it)."""

    status_code = grpc.StatusCode.ABORTED
    default_code = "conflict"


_BY_HTTP_STATUS: dict[int, type[TunegateError]] = {
    401: Unauthenticated,
    403: PermissionDenied,
    404: NotFound,
    408: DeadlineExceeded,
    409: Aborted,
}


def error_for_http_status(
    status: int,
    message: str,
    *,
    code: str | None = None,
    param: str | None = None,
    type: str | None = None,
    retry_after: float | None = None,
) -> TunegateError:
    """The error for a provider's HTTP error answer, keeping its class: a 4xx stays that 4xx
    (same status, the provider's message, code and param); any 5xx becomes a retryable 502.
    A provider's code is normalised to snake_case (`invalidPayload` → `invalid_payload`)."""
    code = _snake_code(code)
    if status >= 500:
        return UpstreamError(message, code=code, retry_after=retry_after)
    kwargs: dict[str, Any] = {"code": code, "param": param, "type": type, "http_status": status}
    if status == 429:
        return ResourceExhausted(message, retry_after=retry_after, **kwargs)
    return _BY_HTTP_STATUS.get(status, InvalidArgument)(message, **kwargs)


def log_failure(
    logger: logging.Logger, exc: BaseException, operation: str, request_id: str | None = None
) -> None:
    """Log `exc`, which ended `operation`. An expected provider failure (a `TunegateError` with a
    `provider`) is one WARNING line — provider, operation, the status the caller gets, request id,
    message — without a traceback; anything else is a bug and is logged at ERROR with its own."""
    if isinstance(exc, TunegateError) and exc.provider is not None:
        status = exc.http_status if exc.http_status is not None else exc.status_code.name
        logger.warning(
            "provider %s failed %s: %s %s (request %s)",
            exc.provider,
            operation,
            status,
            exc.message,
            request_id or "-",
        )
    else:
        logger.error("%s failed", operation, exc_info=exc)


def _snake_code(code: str | None) -> str | None:
    if not code:
        return None
    snake = re.sub(r"(?<=[a-z0-9])(?=[A-Z])", "_", code).lower()
    snake = re.sub(r"[^a-z0-9]+", "_", snake).strip("_")
    snake = snake.lstrip("0123456789_")
    return snake if _CODE.fullmatch(snake) else None


def _pack(message: Message) -> any_pb2.Any:
    packed = any_pb2.Any()
    packed.Pack(message)
    return packed


def to_status(err: TunegateError) -> grpc.Status:
    """The `grpc.Status` (code, message, `grpc-status-details-bin`) for `err`."""
    info = error_details_pb2.ErrorInfo(reason=err.code.upper(), domain=ERROR_DOMAIN)
    if err.type:
        info.metadata["type"] = err.type
    if err.http_status is not None:
        info.metadata["http_status"] = str(err.http_status)
    details = [_pack(info)]
    if err.param:
        violation = error_details_pb2.BadRequest.FieldViolation(field=err.param, description=err.message)
        details.append(_pack(error_details_pb2.BadRequest(field_violations=[violation])))
    retry_after = getattr(err, "retry_after", None)
    if retry_after is not None:
        delay = duration_pb2.Duration()
        delay.FromNanoseconds(int(retry_after * 1e9))
        details.append(_pack(error_details_pb2.RetryInfo(retry_delay=delay)))
    status = status_pb2.Status(code=_rpc_code(err.status_code), message=err.message, details=details)
    result: grpc.Status = rpc_status.to_status(status)
    return result


def _rpc_code(code: grpc.StatusCode) -> int:
    value = code.value[0]
    assert isinstance(value, int)
    # code_pb2 and grpc.StatusCode share numbering (google/rpc/code.proto); checked for sanity.
    assert code_pb2.Code.Name(value) == code.name
    return value
