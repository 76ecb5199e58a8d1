"""One error vocabulary: ``google.rpc.Status`` (or an edge-side failure) → OpenAI error response.

Sans-IO: protobuf messages in, an ``ErrorResponse`` (status, JSON body, headers) out.

Every error the edge answers, whether the server raised it or the edge found it itself, goes
through ``error_response``, so every error body is exactly::

    {"error": {"message": str, "type": str, "param": str | null, "code": str | null}}

How the server's rich status maps (AIP-193):

* HTTP status   ← ``Status.code`` through ``HTTP_STATUS`` (google/rpc/code.proto's table);
* ``message``   ← ``Status.message``;
* ``code``      ← ``ErrorInfo.reason`` lower-cased (``JOB_NOT_FOUND`` → ``job_not_found``);
* ``param``     ← the first ``BadRequest.field_violations[].field``;
* ``type``      ← ``ErrorInfo.metadata["type"]``, else the default for the HTTP status;
* ``retry-after`` / ``retry-after-ms`` ← ``RetryInfo.retry_delay``.

``x-should-retry`` is always sent, so the OpenAI SDK never falls back to its own guess (it
retries every 409, which would repeat a conflicting idempotent create).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from google.protobuf.message import DecodeError
from google.rpc import code_pb2, error_details_pb2, status_pb2

__all__ = [
    "ERROR_HEADERS",
    "ERROR_SCHEMA",
    "HTTP_STATUS",
    "ErrorResponse",
    "default_error_type",
    "error_from_code",
    "error_from_status",
    "error_response",
    "http_status",
]

HTTP_STATUS: Mapping[int, int] = {
    code_pb2.OK: 200,
    code_pb2.CANCELLED: 499,
    code_pb2.UNKNOWN: 500,
    code_pb2.INVALID_ARGUMENT: 400,
    code_pb2.DEADLINE_EXCEEDED: 504,
    code_pb2.NOT_FOUND: 404,
    code_pb2.ALREADY_EXISTS: 409,
    code_pb2.PERMISSION_DENIED: 403,
    code_pb2.RESOURCE_EXHAUSTED: 429,
    code_pb2.FAILED_PRECONDITION: 400,
    code_pb2.ABORTED: 409,
    code_pb2.OUT_OF_RANGE: 400,
    code_pb2.UNIMPLEMENTED: 501,
    code_pb2.INTERNAL: 500,
    code_pb2.UNAVAILABLE: 503,
    code_pb2.DATA_LOSS: 500,
    code_pb2.UNAUTHENTICATED: 401,
}
"""gRPC status code → HTTP status, exactly google/rpc/code.proto's "HTTP Mapping"."""

ERROR_SCHEMA: Mapping[str, Any] = {
    "type": "object",
    "properties": {
        "error": {
            "type": "object",
            "properties": {
                "message": {"type": "string", "description": "What went wrong, for a person."},
                "type": {
                    "type": "string",
                    "description": "The kind of error (`invalid_request_error`, `server_error`, …).",
                },
                "param": {"type": ["string", "null"], "description": "The request field at fault."},
                "code": {"type": ["string", "null"], "description": "A stable code for programs."},
            },
            "required": ["message", "type", "param", "code"],
            "additionalProperties": False,
        }
    },
    "required": ["error"],
    "additionalProperties": False,
}
"""The JSON Schema of every error body the edge writes (``error_response``'s)."""

ERROR_HEADERS: Mapping[str, str] = {
    "x-should-retry": "`true` when the request may be sent again as it is, else `false`.",
    "retry-after": "Seconds to wait before a retry (rate limits, a draining gateway).",
    "retry-after-ms": "The same wait in milliseconds.",
}
"""The headers an error answer may carry besides ``x-request-id``, with their meaning."""

_TYPE_BY_STATUS: Mapping[int, str] = {
    401: "authentication_error",
    403: "permission_error",
    429: "rate_limit_error",
}
# The statuses after which the OpenAI SDK may safely try again.
_RETRYABLE = frozenset({408, 429, 500, 502, 503, 504})


@dataclass(frozen=True, slots=True)
class ErrorResponse:
    """An HTTP error answer: status, OpenAI error body, and headers to add."""

    status: int
    body: dict[str, Any]
    headers: dict[str, str] = field(default_factory=dict)


def http_status(code: int) -> int:
    """HTTP status for a gRPC status code; an unknown code is a 500."""
    return HTTP_STATUS.get(code, 500)


def default_error_type(status: int) -> str:
    """OpenAI's ``error.type`` for an HTTP status when the server named none."""
    if status >= 500:
        return "server_error"
    return _TYPE_BY_STATUS.get(status, "invalid_request_error")


def error_response(
    status: int,
    message: str,
    *,
    code: str | None = None,
    param: str | None = None,
    type: str | None = None,
    retry_delay_s: float | None = None,
) -> ErrorResponse:
    """Build the one error envelope, with ``x-should-retry`` and optional retry-after headers."""
    headers = {"x-should-retry": "true" if status in _RETRYABLE else "false"}
    if retry_delay_s is not None and retry_delay_s >= 0:
        headers["retry-after"] = str(max(0, math.ceil(retry_delay_s)))
        headers["retry-after-ms"] = str(round(retry_delay_s * 1000))
    body = {
        "error": {
            "message": message,
            "type": type or default_error_type(status),
            "param": param or None,
            "code": code or None,
        }
    }
    return ErrorResponse(status=status, body=body, headers=headers)


def error_from_code(code: int, message: str) -> ErrorResponse:
    """Map a bare gRPC code and details string (no rich status attached)."""
    return error_response(http_status(code), message or _fallback_message(code))


def error_from_status(status: status_pb2.Status) -> ErrorResponse:
    """Map a ``google.rpc.Status`` with its details (ErrorInfo, BadRequest, RetryInfo).

    Details that fail to unpack are ignored: a malformed detail must not hide the error.
    """
    reason: str | None = None
    error_type: str | None = None
    param: str | None = None
    retry_delay_s: float | None = None
    status_override: int | None = None
    for detail in status.details:
        if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR) and reason is None:
            info = error_details_pb2.ErrorInfo()
            if _unpack(detail, info):
                reason = info.reason.lower() or None
                error_type = info.metadata.get("type") or None
                param = param or info.metadata.get("param") or None
                status_override = _status_override(info.metadata.get("http_status"))
        elif detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
            bad = error_details_pb2.BadRequest()
            if _unpack(detail, bad) and bad.field_violations:
                param = bad.field_violations[0].field or param
        elif detail.Is(error_details_pb2.RetryInfo.DESCRIPTOR):
            retry = error_details_pb2.RetryInfo()
            if _unpack(detail, retry):
                delay = retry.retry_delay
                retry_delay_s = delay.seconds + delay.nanos / 1e9
    return error_response(
        status_override or http_status(status.code),
        status.message or _fallback_message(status.code),
        code=reason,
        param=param,
        type=error_type,
        retry_delay_s=retry_delay_s,
    )


def _status_override(value: str | None) -> int | None:
    """`ErrorInfo.metadata["http_status"]`: the server's explicit HTTP status (a provider's 422
    kept as 422, its 5xx as 502); only error statuses are honoured."""
    if value is None or not value.isdigit():
        return None
    status = int(value)
    return status if 400 <= status <= 599 else None


def _unpack(detail: Any, into: Any) -> bool:
    try:
        return bool(detail.Unpack(into))
    except DecodeError:
        return False


def _fallback_message(code: int) -> str:
    name = code_pb2.Code.Name(code) if code in HTTP_STATUS else str(code)
    return f"The gateway answered {name}."
