"""Bad uploads over raw HTTP: each gets a clear OpenAI-shaped error and stores nothing."""

from __future__ import annotations

import json
import socket
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest

from tests.conftest import Gateway, start_gateway
from tests.openapi_schema import validate

LIMIT = 256 * 1024


@pytest.fixture(scope="module", params=["grpc", "in-process"])
def small_gateway(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Gateway]:
    """A gateway whose per-file limit is 256 KiB, so over-limit uploads are cheap to test; once
    per way the edge reaches the server."""
    in_process = request.param == "in-process"
    gw = start_gateway(tmp_path_factory.mktemp("small"), in_process=in_process, max_file_bytes=LIMIT)
    yield gw
    gw.close()


def multipart(parts: list[tuple[bytes, bytes]]) -> tuple[bytes, str]:
    """Builds a multipart body by hand: (raw Content-Disposition params, payload) per part."""
    boundary = "b" + uuid.uuid4().hex
    body = b""
    for disposition, payload in parts:
        body += (
            b"--" + boundary.encode() + b"\r\nContent-Disposition: form-data; " + disposition + b"\r\n\r\n"
        )
        body += payload + b"\r\n"
    body += b"--" + boundary.encode() + b"--\r\n"
    return body, f"multipart/form-data; boundary={boundary}"


def post(gw: Gateway, api_key: str, parts: list[tuple[bytes, bytes]]) -> httpx.Response:
    body, content_type = multipart(parts)
    headers = {"Authorization": f"Bearer {api_key}", "Content-Type": content_type}
    return httpx.post(gw.base_url + "/files", content=body, headers=headers, timeout=30)


def assert_error(response: httpx.Response, status: int, param: str | None) -> dict[str, object]:
    assert response.status_code == status, response.text
    assert response.headers["x-request-id"]
    assert response.headers["x-should-retry"] == "false"
    body = response.json()
    validate("ErrorResponse", body)
    assert body["error"]["param"] == param
    assert body["error"]["message"]
    return dict(body["error"])


def listed(gw: Gateway, api_key: str) -> list[str]:
    response = httpx.get(gw.base_url + "/files", headers={"Authorization": f"Bearer {api_key}"})
    assert response.status_code == 200
    return [f["id"] for f in response.json()["data"]]


FILE = b'name="file"; filename="train.jsonl"'
PURPOSE = (b'name="purpose"', b"fine-tune")


def test_missing_purpose(small_gateway: Gateway, api_key: str) -> None:
    before = small_gateway.stored_files()
    assert_error(post(small_gateway, api_key, [(FILE, b"{}\n")]), 400, "purpose")
    assert listed(small_gateway, api_key) == []
    assert small_gateway.stored_files() == before


def test_unknown_purpose(small_gateway: Gateway, api_key: str) -> None:
    response = post(small_gateway, api_key, [(b'name="purpose"', b"weights"), (FILE, b"{}\n")])
    assert_error(response, 400, "purpose")
    assert listed(small_gateway, api_key) == []


def test_no_file_part(small_gateway: Gateway, api_key: str) -> None:
    assert_error(post(small_gateway, api_key, [PURPOSE]), 400, "file")
    assert listed(small_gateway, api_key) == []


def test_unknown_form_field(small_gateway: Gateway, api_key: str) -> None:
    response = post(small_gateway, api_key, [PURPOSE, (b'name="colour"', b"blue"), (FILE, b"{}\n")])
    assert_error(response, 400, "colour")
    assert listed(small_gateway, api_key) == []


def test_purpose_after_file_part_is_accepted(small_gateway: Gateway, api_key: str) -> None:
    response = post(small_gateway, api_key, [(FILE, b"{}\n"), PURPOSE])  # curl -F order varies
    assert response.status_code == 200, response.text
    assert response.json()["purpose"] == "fine-tune"


def test_over_limit_file_is_413_and_nothing_stored(small_gateway: Gateway, api_key: str) -> None:
    before = small_gateway.stored_files()
    response = post(small_gateway, api_key, [PURPOSE, (FILE, b"x" * (LIMIT + 1))])
    error = assert_error(response, 413, "file")
    assert error["code"] == "file_too_large"
    assert listed(small_gateway, api_key) == []
    assert small_gateway.stored_files() == before
    exactly = post(small_gateway, api_key, [PURPOSE, (FILE, b"x" * LIMIT)])
    assert exactly.status_code == 200, exactly.text
    assert exactly.json()["bytes"] == LIMIT


@pytest.mark.parametrize(
    "filename",
    # In a quoted-string a doubled backslash is one literal backslash; a lone one escapes the next char.
    [b"../../etc/passwd", b"..", b"dir/train.jsonl", b"a\\\\b.jsonl", b"\xff\xfebad.jsonl", b""],
)
def test_bad_filenames(small_gateway: Gateway, api_key: str, filename: bytes) -> None:
    before = small_gateway.stored_files()
    part = (b'name="file"; filename="' + filename + b'"', b"{}\n")
    assert_error(post(small_gateway, api_key, [PURPOSE, part]), 400, "file")
    assert listed(small_gateway, api_key) == []
    assert small_gateway.stored_files() == before


def test_expires_after_bounds(small_gateway: Gateway, api_key: str) -> None:
    anchor = (b'name="expires_after[anchor]"', b"created_at")
    too_short = (b'name="expires_after[seconds]"', b"60")
    response = post(small_gateway, api_key, [PURPOSE, anchor, too_short, (FILE, b"{}\n")])
    error = assert_error(response, 400, "expires_after.seconds")
    assert "3600" in str(error["message"])
    ok = (b'name="expires_after[seconds]"', b"3600")
    created = post(small_gateway, api_key, [PURPOSE, anchor, ok, (FILE, b"{}\n")]).json()
    assert created["expires_at"] == created["created_at"] + 3600


def test_client_aborting_mid_upload_leaves_nothing(small_gateway: Gateway, api_key: str) -> None:
    before = small_gateway.stored_files()
    boundary = "abort" + uuid.uuid4().hex
    head = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="purpose"\r\n\r\nfine-tune\r\n'
        f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="a.jsonl"\r\n\r\n'
    ).encode()
    url = urlsplit(small_gateway.base_url)
    with socket.create_connection((url.hostname, url.port)) as sock:
        request = (
            f"POST /v1/files HTTP/1.1\r\nHost: {url.netloc}\r\nAuthorization: Bearer {api_key}\r\n"
            f"Content-Type: multipart/form-data; boundary={boundary}\r\nContent-Length: {LIMIT}\r\n\r\n"
        ).encode()
        sock.sendall(request + head + b"y" * (LIMIT // 2))
        time.sleep(0.3)  # let the edge start streaming the part to the server
    deadline = time.monotonic() + 10
    while small_gateway.stored_files() != before and time.monotonic() < deadline:
        time.sleep(0.05)
    assert small_gateway.stored_files() == before
    assert listed(small_gateway, api_key) == []


def test_errors_carry_request_id_and_json_envelope(small_gateway: Gateway, api_key: str) -> None:
    headers = {"Authorization": f"Bearer {api_key}", "X-Request-Id": "req_client_supplied_1"}
    response = httpx.get(small_gateway.base_url + "/files/file-doesnotexist", headers=headers)
    assert response.status_code == 404
    assert response.headers["x-request-id"] == "req_client_supplied_1"
    validate("ErrorResponse", response.json())
    unknown = httpx.get(small_gateway.base_url + "/nothing/here", headers=headers)
    assert unknown.status_code == 404
    validate("ErrorResponse", unknown.json())
    wrong_verb = httpx.put(small_gateway.base_url + "/files", headers=headers)
    assert wrong_verb.status_code == 405
    validate("ErrorResponse", wrong_verb.json())
    bad_json = httpx.post(
        small_gateway.base_url + "/uploads",
        content=b"{not json",
        headers={**headers, "Content-Type": "application/json"},
    )
    assert bad_json.status_code == 400
    validate("ErrorResponse", bad_json.json())
    assert json.loads(bad_json.text)["error"]["type"] == "invalid_request_error"


def test_no_credential_is_the_default_scope(small_gateway: Gateway, tmp_path: Path) -> None:
    body, content_type = multipart([PURPOSE, (FILE, b"{}\n")])
    created = httpx.post(
        small_gateway.base_url + "/files", content=body, headers={"Content-Type": content_type}
    )
    assert created.status_code == 200, created.text
    file_id = created.json()["id"]
    anonymous = httpx.get(small_gateway.base_url + f"/files/{file_id}")
    assert anonymous.status_code == 200
    keyed = httpx.get(small_gateway.base_url + f"/files/{file_id}", headers={"Authorization": "Bearer sk-x"})
    assert keyed.status_code == 404
