"""`HttpClient`: retries for idempotent requests only, Retry-After, error mapping, timeouts."""

from __future__ import annotations

import email.utils
import logging
from collections.abc import AsyncIterator

import httpx
import pytest
from tunegate.server.errors import (
    DeadlineExceeded,
    InvalidArgument,
    NotFound,
    ResourceExhausted,
    Unauthenticated,
    UpstreamError,
)
from tunegate.server.providers import HttpSettings
from tunegate.server.providers._http import Endpoint, HttpClient, retry_after_seconds

from .support import SECRET, MockUpstream, Sleeps

ENDPOINT = Endpoint("http://upstream.test/v1", {"Authorization": f"Bearer {SECRET}"}, {"api-version": "x"})
OK = httpx.Response(200, json={"ok": True})


def client(upstream: MockUpstream, sleeps: Sleeps, **settings: float) -> HttpClient:
    return HttpClient(
        "openai",
        HttpSettings(**settings),  # type: ignore[arg-type]
        transport=upstream.transport,
        sleep=sleeps,
        jitter=lambda: 0.5,
    )


def error_body(status: int, **error: object) -> httpx.Response:
    return httpx.Response(status, json={"error": error})


async def test_request_shape_and_common_params() -> None:
    upstream, sleeps = MockUpstream().on("GET", "/v1/things", OK), Sleeps()
    http = client(upstream, sleeps)
    assert await http.request_json("GET", ENDPOINT, "/things", params={"limit": 3}) == {"ok": True}
    (request,) = upstream.requests
    assert request.url.params["api-version"] == "x" and request.url.params["limit"] == "3"
    assert request.headers["authorization"] == f"Bearer {SECRET}"
    assert SECRET not in repr(ENDPOINT)
    await http.aclose()


async def test_a_query_in_the_url_is_kept() -> None:
    # A signed upload URL carries its signature in the query; no endpoint params are added to it.
    upstream, sleeps = MockUpstream().on("PUT", "/bucket/object", OK), Sleeps()
    http = client(upstream, sleeps)
    signed = Endpoint("http://storage.test/bucket/object?X-Goog-Signature=abc%2Fd&b=1", {}, {})
    await http.request("PUT", signed, "", content=b"x")
    (request,) = upstream.requests
    assert request.url.query == b"X-Goog-Signature=abc%2Fd&b=1"
    assert "authorization" not in request.headers
    await http.aclose()


@pytest.mark.parametrize("status", [429, 500, 502, 503, 504])
async def test_get_is_retried_with_full_jitter_backoff(status: int) -> None:
    upstream, sleeps = (
        MockUpstream().on("GET", "/v1/x", httpx.Response(status), httpx.Response(status), OK),
        Sleeps(),
    )
    assert await client(upstream, sleeps).request_json("GET", ENDPOINT, "/x") == {"ok": True}
    assert len(upstream.requests) == 3
    assert sleeps.delays == [0.5 * 0.5, 0.5 * 1.0]  # jitter × min(max, base · 2^attempt)


async def test_backoff_is_capped() -> None:
    upstream, sleeps = MockUpstream().on("GET", "/v1/x", httpx.Response(500)), Sleeps()
    http = client(upstream, sleeps, max_retries=6, backoff_base_seconds=1.0, backoff_max_seconds=4.0)
    with pytest.raises(UpstreamError):
        await http.request("GET", ENDPOINT, "/x")
    assert sleeps.delays == [0.5, 1.0, 2.0, 2.0, 2.0, 2.0]


async def test_retries_are_bounded_then_the_last_error_is_raised() -> None:
    upstream, sleeps = (
        MockUpstream().on("GET", "/v1/x", error_body(503, message="busy", type="server_error")),
        Sleeps(),
    )
    with pytest.raises(UpstreamError) as caught:
        await client(upstream, sleeps).request("GET", ENDPOINT, "/x")
    assert len(upstream.requests) == 3 and len(sleeps.delays) == 2
    assert caught.value.http_status == 502 and "busy" in caught.value.message


@pytest.mark.parametrize(
    ("headers", "expected"),
    [({"retry-after": "3"}, 3.0), ({"retry-after-ms": "1500", "retry-after": "9"}, 1.5)],
)
async def test_retry_after_is_honoured(headers: dict[str, str], expected: float) -> None:
    limited = httpx.Response(429, headers=headers, json={"error": {"message": "slow down"}})
    upstream, sleeps = MockUpstream().on("GET", "/v1/x", limited, OK), Sleeps()
    await client(upstream, sleeps).request("GET", ENDPOINT, "/x")
    assert sleeps.delays == [expected]


def test_retry_after_http_date() -> None:
    date = email.utils.formatdate(1_000_010.0, usegmt=True)
    assert retry_after_seconds(httpx.Headers({"retry-after": date}), now=1_000_000.0) == 10.0
    assert retry_after_seconds(httpx.Headers({"retry-after": date}), now=1_000_100.0) == 0.0
    assert retry_after_seconds(httpx.Headers({"retry-after": "soon"})) is None
    assert retry_after_seconds(httpx.Headers({})) is None


async def test_a_retry_after_beyond_the_cap_is_not_waited_out() -> None:
    limited = httpx.Response(429, headers={"retry-after": "120"}, json={"error": {"message": "quota"}})
    upstream, sleeps = MockUpstream().on("GET", "/v1/x", limited, OK), Sleeps()
    with pytest.raises(ResourceExhausted) as caught:
        await client(upstream, sleeps).request("GET", ENDPOINT, "/x")
    assert len(upstream.requests) == 1 and sleeps.delays == []
    assert caught.value.retry_after == 120.0 and caught.value.http_status == 429


@pytest.mark.parametrize(
    "reply",
    [httpx.Response(500), httpx.Response(429), httpx.ReadTimeout("slow"), httpx.ConnectError("refused")],
)
async def test_post_is_not_retried(reply: httpx.Response | Exception) -> None:
    upstream, sleeps = MockUpstream().on("POST", "/v1/x", reply, OK), Sleeps()
    with pytest.raises((UpstreamError, ResourceExhausted, DeadlineExceeded)):
        await client(upstream, sleeps).request("POST", ENDPOINT, "/x", json={})
    assert len(upstream.requests) == 1 and sleeps.delays == []


async def test_post_marked_idempotent_is_retried() -> None:
    upstream, sleeps = MockUpstream().on("POST", "/v1/x", httpx.Response(502), OK), Sleeps()
    await client(upstream, sleeps).request("POST", ENDPOINT, "/x", json={}, idempotent=True)
    assert len(upstream.requests) == 2


async def test_streamed_body_is_never_retried() -> None:
    async def body() -> AsyncIterator[bytes]:
        yield b"data"

    upstream, sleeps = MockUpstream().on("PUT", "/v1/x", httpx.Response(503), OK), Sleeps()
    with pytest.raises(UpstreamError):
        await client(upstream, sleeps).request("PUT", ENDPOINT, "/x", content=body())
    assert len(upstream.requests) == 1


async def test_timeout_is_retried_then_deadline_exceeded() -> None:
    upstream, sleeps = MockUpstream().on("GET", "/v1/x", httpx.ReadTimeout("slow")), Sleeps()
    with pytest.raises(DeadlineExceeded) as caught:
        await client(upstream, sleeps, timeout_seconds=7).request("GET", ENDPOINT, "/x")
    assert len(upstream.requests) == 3
    assert (
        caught.value.http_status == 504
        and "'openai'" in caught.value.message
        and "7 s" in caught.value.message
    )


async def test_timeout_then_success() -> None:
    upstream, sleeps = MockUpstream().on("GET", "/v1/x", httpx.ReadTimeout("slow"), OK), Sleeps()
    assert await client(upstream, sleeps).request_json("GET", ENDPOINT, "/x") == {"ok": True}


@pytest.mark.parametrize("exc", [httpx.ConnectError("refused"), httpx.ConnectTimeout("no route")])
async def test_connection_failure_is_upstream_error(exc: Exception) -> None:
    upstream, sleeps = MockUpstream().on("GET", "/v1/x", exc), Sleeps()
    with pytest.raises(UpstreamError) as caught:
        await client(upstream, sleeps).request("GET", ENDPOINT, "/x")
    assert caught.value.http_status == 502 and len(upstream.requests) == 3


async def test_openai_400_keeps_status_message_code_param_type() -> None:
    body = error_body(
        400, message="bad suffix", type="invalid_request_error", param="suffix", code="invalid_value"
    )
    upstream, sleeps = MockUpstream().on("POST", "/v1/x", body), Sleeps()
    with pytest.raises(InvalidArgument) as caught:
        await client(upstream, sleeps).request("POST", ENDPOINT, "/x", json={})
    err = caught.value
    assert (err.http_status, err.message, err.param, err.code, err.type) == (
        400,
        "bad suffix",
        "suffix",
        "invalid_value",
        "invalid_request_error",
    )


@pytest.mark.parametrize(
    ("status", "cls"),
    [(401, Unauthenticated), (404, NotFound), (422, InvalidArgument), (429, ResourceExhausted)],
)
async def test_4xx_keep_their_class_and_status(status: int, cls: type[Exception]) -> None:
    upstream, sleeps = (
        MockUpstream().on("POST", "/v1/x", error_body(status, message="nope", code=None)),
        Sleeps(),
    )
    with pytest.raises(cls) as caught:
        await client(upstream, sleeps).request("POST", ENDPOINT, "/x")
    assert caught.value.http_status == status  # type: ignore[attr-defined]
    assert caught.value.message == "nope"  # type: ignore[attr-defined]


async def test_azure_dated_error_body() -> None:
    body = error_body(400, code="invalidPayload", message="The training file is bad.", target="training_file")
    upstream, sleeps = MockUpstream().on("POST", "/v1/x", body), Sleeps()
    with pytest.raises(InvalidArgument) as caught:
        await client(upstream, sleeps).request("POST", ENDPOINT, "/x")
    assert (caught.value.code, caught.value.param) == ("invalid_payload", "training_file")


async def test_azure_v1_error_type_error_is_dropped() -> None:
    body = error_body(404, code="notFound", message="missing", param=None, type="error")
    upstream, sleeps = MockUpstream().on("GET", "/v1/x", body), Sleeps()
    with pytest.raises(NotFound) as caught:
        await client(upstream, sleeps).request("GET", ENDPOINT, "/x")
    assert caught.value.type is None and caught.value.code == "not_found"


async def test_non_json_5xx_is_upstream_error() -> None:
    upstream, sleeps = (
        MockUpstream().on("GET", "/v1/x", httpx.Response(500, text="<html>oops</html>")),
        Sleeps(),
    )
    with pytest.raises(UpstreamError) as caught:
        await client(upstream, sleeps, max_retries=0).request("GET", ENDPOINT, "/x")
    assert caught.value.http_status == 502 and "HTTP 500" in caught.value.message


async def test_non_object_json_answer_is_upstream_error() -> None:
    upstream, sleeps = MockUpstream().on("GET", "/v1/x", httpx.Response(200, json=[1])), Sleeps()
    with pytest.raises(UpstreamError):
        await client(upstream, sleeps).request_json("GET", ENDPOINT, "/x")


async def test_credentials_never_logged(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    upstream, sleeps = (
        MockUpstream().on("GET", "/v1/x", httpx.Response(500), httpx.ConnectError("x"), OK),
        Sleeps(),
    )
    await client(upstream, sleeps).request("GET", ENDPOINT, "/x")
    assert "retry 1/2" in caplog.text and SECRET not in caplog.text


def test_settings_are_validated() -> None:
    with pytest.raises(ValueError, match="max_retries"):
        HttpSettings(max_retries=-1)
    with pytest.raises(ValueError, match="backoff"):
        HttpSettings(backoff_base_seconds=10, backoff_max_seconds=1)
    timeout = HttpSettings(timeout_seconds=30, connect_timeout_seconds=2).timeout()
    assert (timeout.connect, timeout.read, timeout.write, timeout.pool) == (2, 30, 30, 30)
