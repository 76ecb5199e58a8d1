"""tunegate.server.errors: provider HTTP errors keep their class; the status carries the HTTP override."""

from __future__ import annotations

import grpc
import pytest
from google.rpc import error_details_pb2, status_pb2
from tunegate.server.errors import (
    Aborted,
    InvalidArgument,
    NotFound,
    ResourceExhausted,
    Unauthenticated,
    UpstreamError,
    error_for_http_status,
    to_status,
)


@pytest.mark.parametrize(
    ("status", "cls", "grpc_code", "http"),
    [
        (400, InvalidArgument, grpc.StatusCode.INVALID_ARGUMENT, 400),
        (401, Unauthenticated, grpc.StatusCode.UNAUTHENTICATED, 401),
        (404, NotFound, grpc.StatusCode.NOT_FOUND, 404),
        (409, Aborted, grpc.StatusCode.ABORTED, 409),
        (422, InvalidArgument, grpc.StatusCode.INVALID_ARGUMENT, 422),
        (429, ResourceExhausted, grpc.StatusCode.RESOURCE_EXHAUSTED, 429),
        (500, UpstreamError, grpc.StatusCode.UNAVAILABLE, 502),
        (503, UpstreamError, grpc.StatusCode.UNAVAILABLE, 502),
    ],
)
def test_provider_errors_keep_their_class(
    status: int, cls: type, grpc_code: grpc.StatusCode, http: int
) -> None:
    err = error_for_http_status(status, "from the provider", code="invalidPayload", param="model")
    assert type(err) is cls
    assert err.http_status == http
    rich = to_status(err)
    assert rich.code == grpc_code
    decoded = status_pb2.Status.FromString(dict(rich.trailing_metadata)["grpc-status-details-bin"])
    info = error_details_pb2.ErrorInfo()
    decoded.details[0].Unpack(info)
    assert info.metadata["http_status"] == str(http)
    if status < 500:
        assert err.code == "invalid_payload" and err.param == "model"


def test_unusable_provider_codes_are_dropped() -> None:
    assert error_for_http_status(400, "m", code="123").code == "invalid_request"
    assert error_for_http_status(400, "m", code="!!").code == "invalid_request"
