"""tunegate.edge._errors: google.rpc.Status → HTTP status + OpenAI error envelope + retry headers."""

from __future__ import annotations

import pytest
from google.protobuf import any_pb2, duration_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2
from tunegate.edge import HTTP_STATUS, error_from_code, error_from_status, error_response, http_status

from tests.openapi_schema import validate

CODE_TO_HTTP = {
    "OK": 200,
    "CANCELLED": 499,
    "UNKNOWN": 500,
    "INVALID_ARGUMENT": 400,
    "DEADLINE_EXCEEDED": 504,
    "NOT_FOUND": 404,
    "ALREADY_EXISTS": 409,
    "PERMISSION_DENIED": 403,
    "RESOURCE_EXHAUSTED": 429,
    "FAILED_PRECONDITION": 400,
    "ABORTED": 409,
    "OUT_OF_RANGE": 400,
    "UNIMPLEMENTED": 501,
    "INTERNAL": 500,
    "UNAVAILABLE": 503,
    "DATA_LOSS": 500,
    "UNAUTHENTICATED": 401,
}


def test_table_is_code_proto() -> None:
    assert {code_pb2.Code.Name(c): s for c, s in HTTP_STATUS.items()} == CODE_TO_HTTP
    assert http_status(99) == 500


@pytest.mark.parametrize(
    ("code", "status", "type_", "retry"),
    [
        (code_pb2.INVALID_ARGUMENT, 400, "invalid_request_error", "false"),
        (code_pb2.NOT_FOUND, 404, "invalid_request_error", "false"),
        (code_pb2.ALREADY_EXISTS, 409, "invalid_request_error", "false"),
        (code_pb2.UNAUTHENTICATED, 401, "authentication_error", "false"),
        (code_pb2.PERMISSION_DENIED, 403, "permission_error", "false"),
        (code_pb2.RESOURCE_EXHAUSTED, 429, "rate_limit_error", "true"),
        (code_pb2.UNIMPLEMENTED, 501, "server_error", "false"),
        (code_pb2.INTERNAL, 500, "server_error", "true"),
        (code_pb2.UNAVAILABLE, 503, "server_error", "true"),
        (code_pb2.DEADLINE_EXCEEDED, 504, "server_error", "true"),
    ],
)
def test_bare_code(code: int, status: int, type_: str, retry: str) -> None:
    error = error_from_code(code, "boom")
    assert error.status == status
    assert error.body == {"error": {"message": "boom", "type": type_, "param": None, "code": None}}
    assert error.headers == {"x-should-retry": retry}
    validate("ErrorResponse", error.body)


def _pack(*details: object) -> list[any_pb2.Any]:
    packed = []
    for detail in details:
        holder = any_pb2.Any()
        holder.Pack(detail)  # type: ignore[arg-type]
        packed.append(holder)
    return packed


def test_rich_status() -> None:
    status = status_pb2.Status(
        code=code_pb2.INVALID_ARGUMENT,
        message="Invalid value for 'purpose'.",
        details=_pack(
            error_details_pb2.ErrorInfo(reason="INVALID_PURPOSE", domain="tunegate", metadata={}),
            error_details_pb2.BadRequest(
                field_violations=[
                    error_details_pb2.BadRequest.FieldViolation(field="purpose", description="x")
                ]
            ),
        ),
    )
    error = error_from_status(status)
    assert error.status == 400
    assert error.body["error"] == {
        "message": "Invalid value for 'purpose'.",
        "type": "invalid_request_error",
        "param": "purpose",
        "code": "invalid_purpose",
    }
    assert error.headers == {"x-should-retry": "false"}


def test_type_override_and_retry_info() -> None:
    status = status_pb2.Status(
        code=code_pb2.RESOURCE_EXHAUSTED,
        message="Slow down.",
        details=_pack(
            error_details_pb2.ErrorInfo(reason="QUOTA", metadata={"type": "insufficient_quota"}),
            error_details_pb2.RetryInfo(retry_delay=duration_pb2.Duration(seconds=1, nanos=500_000_000)),
        ),
    )
    error = error_from_status(status)
    assert error.status == 429
    assert error.body["error"]["type"] == "insufficient_quota"
    assert error.body["error"]["code"] == "quota"
    assert error.headers == {"x-should-retry": "true", "retry-after": "2", "retry-after-ms": "1500"}


def test_status_without_details_or_message() -> None:
    error = error_from_status(status_pb2.Status(code=code_pb2.NOT_FOUND))
    assert error.status == 404 and error.body["error"]["message"]
    assert error.body["error"]["code"] is None and error.body["error"]["param"] is None


def test_edge_side_errors_share_the_envelope() -> None:
    error = error_response(413, "too big", code="file_too_large", param="file")
    assert error.body == {
        "error": {
            "message": "too big",
            "type": "invalid_request_error",
            "param": "file",
            "code": "file_too_large",
        }
    }
    assert error.headers["x-should-retry"] == "false"
    for status in (408, 429, 500, 502, 503, 504):
        assert error_response(status, "m").headers["x-should-retry"] == "true"
    validate("ErrorResponse", error.body)


@pytest.mark.parametrize(("override", "expected"), [("422", 422), ("502", 502), ("200", 400), ("x", 400)])
def test_http_status_override_from_error_info(override: str, expected: int) -> None:
    info = error_details_pb2.ErrorInfo(
        reason="UPSTREAM", domain="tunegate", metadata={"http_status": override}
    )
    status = status_pb2.Status(code=code_pb2.INVALID_ARGUMENT, message="m", details=_pack(info))
    answer = error_from_status(status)
    assert answer.status == expected
    validate("ErrorResponse", answer.body)
